//! The fault injector injects what it says: across a veth pair between two namespaces, the
//! packets that arrive (counted and timed by sequence number and send time) show the drops,
//! duplicates, delays and reordering asked for, and the injector's own counts agree with what
//! arrived. Needs root.

use pegasus_control::lab::{
    fault::{DirectionFaults, Injector, Link, LinkPlan, LinkReport},
    netns::{self, ScopedNetns},
};
use std::{
    collections::HashMap,
    net::UdpSocket,
    time::{Duration, Instant},
};

const HOST_IP: &str = "10.9.0.2";
const TOR_IP: &str = "10.9.0.1";
const PORT: u16 = 7999;
const PACKETS: u32 = 1000;

/// Two namespaces joined by a veth pair: `eth0` in the host, `p0` in the "ToR", with static
/// neighbours (no ARP to fault) and software checksums.
struct Pair {
    host: ScopedNetns,
    tor: ScopedNetns,
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let host = ScopedNetns::new(tag).unwrap();
        let tor = ScopedNetns::new(tag).unwrap();
        let (h, t) = (host.name(), tor.name());
        let run = |ns: &str, args: &[&str]| netns::exec_in(ns, args[0], &args[1..]).unwrap();
        // No IPv6: its neighbour discovery would add packets of its own to the counts.
        for ns in [h, t] {
            for scope in ["all", "default"] {
                let key = format!("net.ipv6.conf.{scope}.disable_ipv6=1");
                run(ns, &["sysctl", "-qw", &key]);
            }
        }
        netns::ip(&[
            "link", "add", "fi0", "netns", h, "type", "veth", "peer", "name", "p0", "netns", t,
        ])
        .unwrap();
        run(h, &["ip", "link", "set", "fi0", "name", "eth0"]);
        for (ns, dev, ip, mac, peer_ip, peer_mac) in [
            (
                h,
                "eth0",
                HOST_IP,
                "02:09:00:00:00:02",
                TOR_IP,
                "02:09:00:00:00:01",
            ),
            (
                t,
                "p0",
                TOR_IP,
                "02:09:00:00:00:01",
                HOST_IP,
                "02:09:00:00:00:02",
            ),
        ] {
            run(ns, &["ip", "link", "set", dev, "address", mac]);
            run(ns, &["ip", "addr", "add", &format!("{ip}/24"), "dev", dev]);
            run(ns, &["ip", "link", "set", dev, "up"]);
            run(ns, &["ethtool", "-K", dev, "tx", "off"]);
            netns::set_neighbour(ns, peer_ip, peer_mac, dev).unwrap();
        }
        Pair { host, tor }
    }

    fn link(&self) -> Link {
        Link {
            host_ns: self.host.name().into(),
            host_interface: "eth0".into(),
            tor_ns: self.tor.name().into(),
            tor_interface: "p0".into(),
        }
    }
}

/// The wall clock in nanoseconds: the clock of the kernel's receive timestamps.
fn realtime_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut t) };
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Asks the kernel to timestamp every datagram `socket` receives (`SO_TIMESTAMPNS`).
fn timestamp_arrivals(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and an int option of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_TIMESTAMPNS: {}", std::io::Error::last_os_error());
}

/// Receives one datagram into `buf`: its length and when the kernel received it (wall clock
/// ns), so that a receiving thread that runs late does not make a packet look late. `None`
/// when the socket's read timeout passed.
fn recv_timestamped(socket: &UdpSocket, buf: &mut [u8]) -> Option<(usize, u64)> {
    use std::os::fd::AsRawFd;
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // Room for one cmsg carrying a timespec, 8-byte aligned.
    let mut control = [0u64; 8];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` describes live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return None;
    }
    // SAFETY: the cmsg macros walk the control buffer the kernel filled, within its length.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let t = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::timespec);
                return Some((
                    n as usize,
                    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64,
                ));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    panic!("a datagram without its receive timestamp");
}

/// What arrived: for each sequence number, the delay of each copy, in arrival order.
struct Arrivals {
    copies: HashMap<u32, Vec<Duration>>,
    /// Packets that arrived after a packet with a larger sequence number.
    reordered: u32,
}

/// Sends `PACKETS` datagrams from namespace `from` to `to_ip` (one every 500 us), each with
/// its sequence number and send time, and collects what arrives in namespace `to` until
/// `listen` has passed since the last send. A copy's delay runs from its send time to the
/// kernel's receive timestamp (not to when the receiving thread got to it).
fn exchange(from: &str, to: &str, to_ip: &str, listen: Duration) -> Arrivals {
    let to = to.to_owned();
    let receiver = std::thread::spawn(move || {
        netns::enter_current_thread(&to).unwrap();
        let socket = UdpSocket::bind(("0.0.0.0", PORT)).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        timestamp_arrivals(&socket);
        let mut arrivals = Arrivals {
            copies: HashMap::new(),
            reordered: 0,
        };
        let mut highest = None;
        let mut buf = [0u8; 64];
        let started = Instant::now();
        let deadline = started + Duration::from_millis(PACKETS as u64 / 2) + listen;
        while Instant::now() < deadline {
            let Some((n, received)) = recv_timestamped(&socket, &mut buf) else {
                continue;
            };
            assert_eq!(n, 12);
            let seq = u32::from_be_bytes(buf[..4].try_into().unwrap());
            let sent = u64::from_be_bytes(buf[4..12].try_into().unwrap());
            let delay = Duration::from_nanos(received.saturating_sub(sent));
            if highest.is_some_and(|h| seq < h) {
                arrivals.reordered += 1;
            }
            highest = highest.max(Some(seq));
            arrivals.copies.entry(seq).or_default().push(delay);
        }
        arrivals
    });
    // Let the receiver bind first.
    std::thread::sleep(Duration::from_millis(100));
    let (from, to_ip) = (from.to_owned(), to_ip.to_owned());
    std::thread::spawn(move || {
        netns::enter_current_thread(&from).unwrap();
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        let start = Instant::now();
        for seq in 0..PACKETS {
            let mut payload = [0u8; 12];
            payload[..4].copy_from_slice(&seq.to_be_bytes());
            payload[4..].copy_from_slice(&realtime_ns().to_be_bytes());
            socket.send_to(&payload, (to_ip.as_str(), PORT)).unwrap();
            let next = start + Duration::from_micros(500 * (seq as u64 + 1));
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    })
    .join()
    .unwrap();
    receiver.join().unwrap()
}

fn share(n: usize) -> f64 {
    n as f64 / PACKETS as f64
}

#[test]
fn to_the_switch_drops_duplicates_delays_and_reorders_as_asked() {
    assert!(netns::is_root(), "needs root (network namespaces)");
    let pair = Pair::new("fiout");
    let plan = LinkPlan {
        to_switch: DirectionFaults {
            drop: 0.1,
            duplicate: 0.2,
            duplicate_delay: (Duration::from_millis(40), Duration::from_millis(60)),
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(10),
            reorder: 0.0,
        },
        seed: 7,
        ..LinkPlan::default()
    };
    let injector = Injector::start(&pair.link(), &plan).unwrap();
    let arrivals = exchange(
        pair.host.name(),
        pair.tor.name(),
        TOR_IP,
        Duration::from_millis(500),
    );
    let report: LinkReport = injector.stop().unwrap();
    let r = report.to_switch;
    let arrived = arrivals.copies.len();
    let duplicated = arrivals.copies.values().filter(|c| c.len() == 2).count();
    assert!(arrivals.copies.values().all(|c| c.len() <= 2));
    // What arrived is what the injector says it did, exactly.
    assert_eq!(r.dropped as usize, PACKETS as usize - arrived, "{report:?}");
    assert_eq!(r.duplicated as usize, duplicated, "{report:?}");
    assert_eq!(
        r.held as usize, arrived,
        "every packet not dropped is delayed"
    );
    assert_eq!((r.not_carried, r.send_errors), (0, 0), "{report:?}");
    assert_eq!(r.packets, PACKETS as u64, "{report:?}");
    // And it is what was asked, within sampling noise.
    assert!((share(PACKETS as usize - arrived) - 0.1).abs() < 0.04);
    assert!((share(duplicated) - 0.9 * 0.2).abs() < 0.05);
    // Delays: 20 ms plus or minus 10, give or take how late the relay sent anything (it
    // reports its worst lateness: a busy machine delays a frame, never sends it early).
    let late = Duration::from_micros(r.worst_lateness_us) + Duration::from_millis(2);
    let slack = late + Duration::from_millis(5);
    for copies in arrivals.copies.values() {
        let first = copies.iter().min().unwrap();
        assert!(*first >= Duration::from_millis(10), "{first:?}");
        assert!(*first <= Duration::from_millis(30) + slack, "{first:?}");
        if let [a, b] = copies[..] {
            let gap = a.max(b) - a.min(b);
            assert!(
                gap + late >= Duration::from_millis(40),
                "a duplicate {gap:?} after ({late:?} late at worst)"
            );
            assert!(gap <= Duration::from_millis(60) + slack, "{gap:?}");
        }
    }
    // A jitter of 10 ms on packets 0.5 ms apart reorders many.
    assert!(arrivals.reordered > 100, "{}", arrivals.reordered);
}

#[test]
fn from_the_switch_duplicates_arrive_late_and_the_rest_untouched() {
    assert!(netns::is_root(), "needs root (network namespaces)");
    let pair = Pair::new("fiin");
    let plan = LinkPlan {
        from_switch: DirectionFaults {
            duplicate: 0.3,
            duplicate_delay: (Duration::from_millis(200), Duration::from_millis(400)),
            ..DirectionFaults::default()
        },
        seed: 11,
        ..LinkPlan::default()
    };
    let injector = Injector::start(&pair.link(), &plan).unwrap();
    let arrivals = exchange(
        pair.tor.name(),
        pair.host.name(),
        HOST_IP,
        Duration::from_millis(700),
    );
    let report = injector.stop().unwrap();
    let r = report.from_switch;
    assert_eq!(arrivals.copies.len(), PACKETS as usize, "nothing dropped");
    let duplicated = arrivals.copies.values().filter(|c| c.len() == 2).count();
    assert_eq!(r.duplicated as usize, duplicated, "{report:?}");
    assert_eq!((r.dropped, r.held), (0, 0));
    assert!((share(duplicated) - 0.3).abs() < 0.05);
    for copies in arrivals.copies.values() {
        assert!(copies[0] < Duration::from_millis(20), "{:?}", copies[0]);
        if let [first, copy] = copies[..] {
            assert!(
                copy - first >= Duration::from_millis(195),
                "{:?}",
                copy - first
            );
            assert!(
                copy - first <= Duration::from_millis(420),
                "{:?}",
                copy - first
            );
        }
    }
    // The other direction was left alone.
    assert_eq!(report.to_switch.dropped + report.to_switch.duplicated, 0);
}

#[test]
fn bad_plans_are_refused_with_reasons() {
    let link = Link {
        host_ns: "none".into(),
        host_interface: "eth0".into(),
        tor_ns: "none".into(),
        tor_interface: "p0".into(),
    };
    let refuse = |faults: DirectionFaults| {
        let plan = LinkPlan {
            to_switch: faults,
            ..LinkPlan::default()
        };
        format!("{:#}", Injector::start(&link, &plan).err().unwrap())
    };
    assert!(refuse(DirectionFaults::loss(1.5)).contains("share from 0 to 1"));
    let jittery = DirectionFaults {
        delay: Duration::from_millis(1),
        jitter: Duration::from_millis(2),
        ..DirectionFaults::default()
    };
    assert!(refuse(jittery).contains("exceeds the delay"));
    let backwards = DirectionFaults {
        duplicate_delay: (Duration::from_millis(5), Duration::from_millis(1)),
        ..DirectionFaults::default()
    };
    assert!(refuse(backwards).contains("empty"));
}
