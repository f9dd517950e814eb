//! Programs that are not a part of the switch: the yardsticks of `pegasus switch cost` (the
//! least an XDP program that answers or forwards UDP must do, measured in the same run as the
//! switch), and the traffic generator and sink of `pegasus switch capacity`.

use crate::*;

/// The yardstick of `pegasus switch cost`, not a part of the switch: the least an XDP
/// program that answers UDP must do. Parses Ethernet, IPv4 (no options) and UDP, swaps the
/// MAC addresses, IPv4 addresses and UDP ports (no checksum changes: a swap keeps both sums)
/// and sends the frame back out of its port. Everything else is passed.
#[xdp]
pub fn baseline_reflect(ctx: XdpContext) -> u32 {
    reflect(&ctx)
}

#[inline(always)]
pub(crate) fn reflect(ctx: &XdpContext) -> u32 {
    let Some(frame) = Bytes::<{ PAYLOAD_OFF }>::at(ctx, 0) else {
        return XDP_PASS;
    };
    if frame.u16(12) != ETH_P_IPV4
        || frame.u8(IP_OFF) != 0x45
        || frame.u8(IP_OFF + ipv4::PROTOCOL) != IPPROTO_UDP
    {
        return XDP_PASS;
    }
    let (dst_mac, src_mac) = (frame.u48(0), frame.u48(6));
    frame.set_u48(0, src_mac);
    frame.set_u48(6, dst_mac);
    let (src_ip, dst_ip) = (frame.u32(IP_OFF + ipv4::SRC), frame.u32(IP_OFF + ipv4::DST));
    frame.set_u32(IP_OFF + ipv4::SRC, dst_ip);
    frame.set_u32(IP_OFF + ipv4::DST, src_ip);
    let (src_port, dst_port) = (frame.u16(UDP_OFF), frame.u16(UDP_OFF + 2));
    frame.set_u16(UDP_OFF, dst_port);
    frame.set_u16(UDP_OFF + 2, src_port);
    XDP_TX
}

/// The port `baseline_forward` sends to (set by the benchmark).
#[map(name = "BASELINE_PORT")]
pub(crate) static BASELINE_PORT: Array<u32> = Array::with_max_entries(1, 0);

/// The second yardstick of `pegasus switch cost`: `baseline_reflect`, but the frame leaves
/// through the `PORTS` DEVMAP like every packet the switch forwards.
#[xdp]
pub fn baseline_forward(ctx: XdpContext) -> u32 {
    if reflect(&ctx) != XDP_TX {
        return XDP_PASS;
    }
    let port = BASELINE_PORT.get(0).copied().unwrap_or(0);
    match PORTS.redirect(port, XDP_PASS as u64) {
        Ok(action) | Err(action) => action,
    }
}

/// The third yardstick: `baseline_reflect`, then the switch's one atomic operation, the
/// fetch-add on `VERSION_COUNTER` that stamps a fresh write. Measured alone and on both CPUs
/// at once, it shows what the shared counter costs under contention, apart from the rest of
/// the stamping path (which a repeated test run of one write cannot exercise: its copies
/// reuse their version).
#[xdp]
pub fn baseline_stamp(ctx: XdpContext) -> u32 {
    if reflect(&ctx) != XDP_TX {
        return XDP_PASS;
    }
    let Some(counter) = VERSION_COUNTER.get_ptr_mut(0) else {
        return XDP_PASS;
    };
    // SAFETY: a live map value, an aligned u64; the same operation as in `stamp_write`.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(counter, 1) };
    XDP_TX
}

/// Where `traffic_generator` sends its frames: an interface index of the namespace the
/// generator runs in (set by `pegasus switch capacity`).
#[map(name = "GENERATOR_PORT")]
pub(crate) static GENERATOR_PORT: Array<u32> = Array::with_max_entries(1, 0);

/// The traffic generator of `pegasus switch capacity`, not a part of the switch: test-run
/// with live frames (`BPF_F_TEST_XDP_LIVE_FRAMES`), every run sends its frame, unchanged, out
/// of the port in `GENERATOR_PORT`. In the kernel, with no user-space copy or system call
/// per packet, it can offer a port more than one CPU of the ToR can forward.
#[xdp]
pub fn traffic_generator(_ctx: XdpContext) -> u32 {
    let port = GENERATOR_PORT.get(0).copied().unwrap_or(0);
    // SAFETY: bpf_redirect has no preconditions; it returns XDP_REDIRECT, or XDP_ABORTED for
    // flags it does not know.
    unsafe { bpf_redirect(port, 0) as u32 }
}

/// Frames `traffic_sink` has taken, per CPU.
#[map(name = "SINK_COUNT")]
pub(crate) static SINK_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The receiving end of `pegasus switch capacity`: counts every frame and drops it, so that
/// what reaches the sink costs as little as it can on the sink's CPU.
#[xdp]
pub fn traffic_sink(_ctx: XdpContext) -> u32 {
    if let Some(count) = SINK_COUNT.get_ptr_mut(0) {
        // SAFETY: a per-CPU map value: only this CPU touches it.
        unsafe { *count += 1 };
    }
    XDP_DROP
}
