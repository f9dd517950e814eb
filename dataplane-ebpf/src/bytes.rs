//! Parsing and byte access: frame offsets, bounds-checked views of header bytes ([`Bytes`]),
//! the parse of Ethernet/IPv4/UDP and the Pegasus header, and checksum fixing. Nothing here
//! decides anything.

use crate::*;

pub(crate) const ETH_HDR_LEN: usize = 14;
pub(crate) const ETH_P_IPV4: u16 = 0x0800;
pub(crate) const IPV4_HDR_LEN: usize = 20;
pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const UDP_HDR_LEN: usize = 8;
pub(crate) const AF_INET: u8 = 2;
/// Offsets from the start of the frame.
pub(crate) const IP_OFF: usize = ETH_HDR_LEN;
pub(crate) const UDP_OFF: usize = IP_OFF + IPV4_HDR_LEN;
pub(crate) const PAYLOAD_OFF: usize = UDP_OFF + UDP_HDR_LEN;
/// Offsets within the IPv4 header.
pub(crate) mod ipv4 {
    pub const TOS: usize = 1;
    pub const TOT_LEN: usize = 2;
    pub const FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECK: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}
/// Offset of the checksum within the UDP header.
pub(crate) const UDP_CHECK: usize = 6;

/// The Ethernet, IPv4 and UDP headers of a frame.
pub(crate) type Headers = Bytes<{ PAYLOAD_OFF }>;
/// The Pegasus header.
pub(crate) type Header = Bytes<{ wire::HEADER_LEN }>;

/// Ethernet / IPv4 (no options, not a fragment) / UDP, classified; `None` when the packet is
/// none of the switch's business (`process` does the same in place).
#[inline(always)]
pub(crate) fn parse(
    ctx: &XdpContext,
    config: &SwitchConfig,
) -> Option<(Headers, Option<Header>, PacketClass)> {
    let frame = Headers::at(ctx, 0)?;
    if frame.u16(12) != ETH_P_IPV4
        || frame.u8(IP_OFF) != 0x45
        || frame.u16(IP_OFF + ipv4::FRAG) & 0x3fff != 0
        || frame.u8(IP_OFF + ipv4::PROTOCOL) != IPPROTO_UDP
    {
        return None;
    }
    let src_port = frame.u16(UDP_OFF);
    let dst_port = frame.u16(UDP_OFF + 2);
    let header = Header::at(ctx, PAYLOAD_OFF);
    let class = switch::classify(
        config.store_port,
        src_port,
        dst_port,
        header.map(header_prefix),
    );
    Some((frame, header, class))
}

/// Applies `update` to the UDP checksum (an incremental update of the one's complement sum),
/// keeping "no checksum" (0) as it is.
#[inline(always)]
pub(crate) fn fix_udp_checksum(frame: Headers, update: impl FnOnce(u16) -> u16) {
    let sum = frame.u16(UDP_OFF + UDP_CHECK);
    frame.set_u16(UDP_OFF + UDP_CHECK, checksum::udp_fixup(sum, update(sum)));
}

/// The fields of the Pegasus header that classification looks at.
#[inline(always)]
pub(crate) fn header_prefix(h: Header) -> HeaderPrefix {
    HeaderPrefix {
        magic: h.u16(offset::MAGIC),
        proto_version: h.u8(offset::PROTO_VERSION),
        op_code: h.u8(offset::OP),
        flags: h.u8(offset::FLAGS),
    }
}

/// `LEN` bytes of the packet, bounds-checked once against `data_end` (as the verifier
/// insists): every access after that is a single load or store at a constant offset. Fields
/// are big-endian and may be unaligned (the eBPF build allows misaligned access, which the
/// kernel permits for packet data on the architectures that handle it).
#[derive(Clone, Copy)]
pub(crate) struct Bytes<const LEN: usize>(*mut u8);

impl<const LEN: usize> Bytes<LEN> {
    /// The `LEN` bytes at byte `at` of the packet, if all of them lie before `data_end`.
    #[inline(always)]
    pub(crate) fn at(ctx: &XdpContext, at: usize) -> Option<Self> {
        let start = ctx.data();
        if start + at + LEN > ctx.data_end() {
            return None;
        }
        Some(Bytes((start + at) as *mut u8))
    }

    #[inline(always)]
    pub(crate) fn load<T: Copy>(self, at: usize) -> T {
        assert!(at + core::mem::size_of::<T>() <= LEN);
        // SAFETY: within the LEN bounds-checked bytes (asserted; the offsets are constants).
        unsafe { core::ptr::read_unaligned(self.0.add(at) as *const T) }
    }

    #[inline(always)]
    pub(crate) fn store<T: Copy>(self, at: usize, value: T) {
        assert!(at + core::mem::size_of::<T>() <= LEN);
        // SAFETY: as in `load`.
        unsafe { core::ptr::write_unaligned(self.0.add(at) as *mut T, value) }
    }

    #[inline(always)]
    pub(crate) fn u8(self, at: usize) -> u8 {
        self.load(at)
    }
    #[inline(always)]
    pub(crate) fn u16(self, at: usize) -> u16 {
        u16::from_be(self.load(at))
    }
    #[inline(always)]
    pub(crate) fn u32(self, at: usize) -> u32 {
        u32::from_be(self.load(at))
    }
    #[inline(always)]
    pub(crate) fn u64(self, at: usize) -> u64 {
        u64::from_be(self.load(at))
    }
    /// A MAC address, as the low 48 bits (big-endian).
    #[inline(always)]
    pub(crate) fn u48(self, at: usize) -> u64 {
        (self.u16(at) as u64) << 32 | self.u32(at + 2) as u64
    }
    #[inline(always)]
    pub(crate) fn set_u8(self, at: usize, value: u8) {
        self.store(at, value)
    }
    #[inline(always)]
    pub(crate) fn set_u16(self, at: usize, value: u16) {
        self.store(at, value.to_be())
    }
    #[inline(always)]
    pub(crate) fn set_u32(self, at: usize, value: u32) {
        self.store(at, value.to_be())
    }
    #[inline(always)]
    pub(crate) fn set_u64(self, at: usize, value: u64) {
        self.store(at, value.to_be())
    }
    #[inline(always)]
    pub(crate) fn set_u48(self, at: usize, value: u64) {
        self.set_u16(at, (value >> 32) as u16);
        self.set_u32(at + 2, value as u32);
    }
    #[inline(always)]
    pub(crate) fn set_bytes<const N: usize>(self, at: usize, value: [u8; N]) {
        self.store(at, value)
    }
}
