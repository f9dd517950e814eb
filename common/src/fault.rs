//! The lab's network fault injector, shared by its tc programs (`dataplane-ebpf/src/faults.rs`)
//! and its user-space relay (`control::lab::fault`): what netem would do, on a kernel without
//! netem.
//!
//! A link is the veth between a host (server or client namespace) and the ToR; its two
//! directions are faulted apart, by a tc program on the host's end: on egress for packets to
//! the switch, on ingress for packets from it (the switch's XDP redirects bypass the ToR
//! end's qdiscs). For the `n`-th packet of a direction the program asks [`decide`]: drop it,
//! or hand a copy to the relay (through a ring buffer) to send after a delay, as a duplicate
//! (the packet itself goes on at once) or as the packet itself (held back: delay and
//! reordering). The relay sends held and duplicated frames back into the link, marked so that
//! the program lets them through untouched: on egress by the socket mark [`REINJECTED_MARK`],
//! on ingress (sent from the ToR end) by the source MAC [`REINJECTED_MAC`].
//!
//! Every decision and every delay is a function of the seed, the direction and the packet's
//! number in its direction ([`draw`]), so a run is replayed by its seed (packet numbers
//! follow arrival order).

/// Name of the array of two [`LinkFaults`]: index [`Direction`].
pub const MAP_FAULT_CONFIG: &str = "FAULT_CONFIG";
/// Name of the array of two `u64` packet counters, by [`Direction`].
pub const MAP_FAULT_SEQUENCE: &str = "FAULT_SEQUENCE";
/// Name of the per-CPU array of two [`FaultCounts`], by [`Direction`].
pub const MAP_FAULT_COUNTS: &str = "FAULT_COUNTS";
/// Name of the ring buffer of [`HeldFrame`]s for the relay.
pub const MAP_FAULT_FRAMES: &str = "FAULT_FRAMES";
/// Bytes of the ring buffer: 1,024 frames in flight to the relay.
pub const FAULT_FRAMES_RING_BYTES: u32 = 2 << 20;
/// The tc program on the host end's egress (packets to the switch).
pub const PROGRAM_FAULT_TO_SWITCH: &str = "fault_to_switch";
/// The tc program on the host end's ingress (packets from the switch).
pub const PROGRAM_FAULT_FROM_SWITCH: &str = "fault_from_switch";

/// Longest frame the relay carries (an Ethernet frame of a 1,500-byte MTU); a longer one is
/// never held or duplicated.
pub const FRAME_MAX: usize = 1514;
/// The socket mark of frames the relay sends out of the host end.
pub const REINJECTED_MARK: u32 = 0x5047_fa17;
/// The source MAC of frames the relay sends into the host end (from the ToR end).
pub const REINJECTED_MAC: [u8; 6] = [0x02, 0x50, 0x47, 0xfa, 0x17, 0x01];

/// Probabilities are in millionths.
pub const PPM: u32 = 1_000_000;

/// A link direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Direction {
    /// From the host to the switch.
    ToSwitch = 0,
    /// From the switch to the host.
    FromSwitch = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::ToSwitch, Direction::FromSwitch];

    pub const fn from_u32(v: u32) -> Option<Direction> {
        match v {
            0 => Some(Direction::ToSwitch),
            1 => Some(Direction::FromSwitch),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Direction::ToSwitch => "to-switch",
            Direction::FromSwitch => "from-switch",
        }
    }
}

/// The faults of one direction of a link.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkFaults {
    /// Packets dropped, in millionths.
    pub drop_ppm: u32,
    /// Packets duplicated (the copy goes through the relay), in millionths.
    pub duplicate_ppm: u32,
    /// Packets held back and sent later by the relay, in millionths.
    pub hold_ppm: u32,
    pub _pad: u32,
    pub seed: u64,
}

/// What happens to one packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultDecision {
    pub drop: bool,
    pub duplicate: bool,
    pub hold: bool,
}

/// SplitMix64: a good 64-bit mix of any input.
#[inline(always)]
pub const fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `which`-th random draw for packet `n` of `direction`: uniform in `0..PPM`.
#[inline(always)]
pub const fn draw(seed: u64, direction: Direction, n: u64, which: u32) -> u32 {
    let lane = ((direction as u64) << 62) ^ ((which as u64) << 56);
    (splitmix64(seed ^ lane ^ splitmix64(n)) % PPM as u64) as u32
}

/// The fate of packet `n` of `direction`. A dropped packet is neither held nor duplicated.
#[inline(always)]
pub const fn decide(faults: &LinkFaults, direction: Direction, n: u64) -> FaultDecision {
    let drop = draw(faults.seed, direction, n, 0) < faults.drop_ppm;
    FaultDecision {
        drop,
        duplicate: !drop && draw(faults.seed, direction, n, 1) < faults.duplicate_ppm,
        hold: !drop && draw(faults.seed, direction, n, 2) < faults.hold_ppm,
    }
}

/// What the injector counted in one direction (per CPU; summed by the relay).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Packets the program decided on (not counting frames the relay sent back).
    pub seen: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub held: u64,
    /// Frames the relay sent back that the program let through.
    pub reinjected: u64,
    /// Copies lost because the ring buffer was full (the packet went on unfaulted) or the
    /// frame was too long to carry.
    pub not_carried: u64,
}

/// A frame on its way to the relay.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HeldFrame {
    /// The packet's number in its direction.
    pub n: u64,
    /// [`Direction`].
    pub direction: u32,
    /// 1: the packet itself was held back (the relay sends it after its delay).
    pub held: u8,
    /// 1: the packet is duplicated (the relay sends a copy after the copy's delay).
    pub duplicate: u8,
    pub len: u16,
    pub bytes: [u8; FRAME_MAX],
    pub _pad: [u8; 6],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data, `#[repr(C)]`, every bit pattern valid.
    unsafe impl aya::Pod for super::LinkFaults {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FaultCounts {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_follow_their_probabilities_and_the_seed() {
        let faults = LinkFaults {
            drop_ppm: 100_000,
            duplicate_ppm: 200_000,
            hold_ppm: 500_000,
            seed: 42,
            ..LinkFaults::default()
        };
        let n = 200_000u64;
        let (mut drop, mut dup, mut hold) = (0u64, 0u64, 0u64);
        for i in 0..n {
            let d = decide(&faults, Direction::ToSwitch, i);
            assert!(!(d.drop && (d.duplicate || d.hold)));
            drop += d.drop as u64;
            dup += d.duplicate as u64;
            hold += d.hold as u64;
        }
        let near = |got: u64, share: f64| (got as f64 / n as f64 - share).abs() < 0.01;
        assert!(near(drop, 0.1), "{drop}");
        assert!(near(dup, 0.9 * 0.2), "{dup}");
        assert!(near(hold, 0.9 * 0.5), "{hold}");
        // The same seed decides the same; another seed or direction does not.
        let same = (0..1000).all(|i| {
            decide(&faults, Direction::ToSwitch, i) == decide(&faults, Direction::ToSwitch, i)
        });
        assert!(same);
        let other = LinkFaults { seed: 43, ..faults };
        let differ = (0..1000)
            .filter(|&i| {
                decide(&faults, Direction::ToSwitch, i) != decide(&other, Direction::ToSwitch, i)
            })
            .count();
        assert!(differ > 300, "{differ}");
        let reverse = (0..1000)
            .filter(|&i| {
                decide(&faults, Direction::ToSwitch, i) != decide(&faults, Direction::FromSwitch, i)
            })
            .count();
        assert!(reverse > 300, "{reverse}");
    }

    #[test]
    fn no_faults_decide_nothing() {
        let faults = LinkFaults::default();
        assert!(
            (0..10_000)
                .all(|i| decide(&faults, Direction::FromSwitch, i) == FaultDecision::default())
        );
    }
}
