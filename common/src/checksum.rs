//! Incremental Internet checksum updates (RFC 1624, eqn. 3: `HC' = ~(~HC + ~m + m')`).
//!
//! The switch rewrites a few 16-bit words of a packet (the IPv4 TTL, the version field of a
//! Pegasus header, later the destination address); it updates the IPv4 and UDP checksums for
//! just those words instead of summing the whole packet again.

/// Folds a 32-bit one's-complement sum into 16 bits.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Adds one word replacement (`old` becomes `new`) to a running one's-complement sum.
#[inline(always)]
const fn add_replacement(sum: u32, old: u16, new: u16) -> u32 {
    sum + (!old as u32) + (new as u32)
}

/// The checksum after one 16-bit word of the covered data changed from `old` to `new`.
/// All values are in network byte order read as big-endian integers.
#[inline(always)]
pub const fn replace_u16(check: u16, old: u16, new: u16) -> u16 {
    !fold(add_replacement(!check as u32, old, new))
}

/// The checksum after a 32-bit field changed.
#[inline(always)]
pub const fn replace_u32(check: u16, old: u32, new: u32) -> u16 {
    let mut sum = !check as u32;
    sum = add_replacement(sum, (old >> 16) as u16, (new >> 16) as u16);
    sum = add_replacement(sum, old as u16, new as u16);
    !fold(sum)
}

/// The checksum after a 64-bit field changed.
#[inline(always)]
pub const fn replace_u64(check: u16, old: u64, new: u64) -> u16 {
    let mut sum = !check as u32;
    sum = add_replacement(sum, (old >> 48) as u16, (new >> 48) as u16);
    sum = add_replacement(sum, (old >> 32) as u16, (new >> 32) as u16);
    sum = fold(sum) as u32;
    sum = add_replacement(sum, (old >> 16) as u16, (new >> 16) as u16);
    sum = add_replacement(sum, old as u16, new as u16);
    !fold(sum)
}

/// Applies an update to a UDP checksum field: 0 means "no checksum" over IPv4 and stays 0, and
/// a computed 0 is sent as 0xffff (RFC 768).
#[inline(always)]
pub const fn udp_fixup(original: u16, updated: u16) -> u16 {
    if original == 0 {
        0
    } else if updated == 0 {
        0xffff
    } else {
        updated
    }
}

/// The full Internet checksum of `data` (an even or odd number of bytes), with `initial` as the
/// starting sum (e.g. a pseudo-header). Used by tests and by user space, not on the fast path.
pub fn full(initial: u32, data: &[u8]) -> u16 {
    let mut sum: u64 = initial as u64;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u64) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> [u8; 20] {
        [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ]
    }

    #[test]
    fn full_checksum_of_a_known_ipv4_header() {
        // The classic example header: its checksum is 0xb861.
        assert_eq!(full(0, &sample()), 0xb861);
    }

    #[test]
    fn incremental_updates_match_a_full_recomputation() {
        let mut data = sample();
        let check = full(0, &data);
        // TTL/protocol word at offset 8.
        let old = u16::from_be_bytes([data[8], data[9]]);
        data[8] -= 1;
        let new = u16::from_be_bytes([data[8], data[9]]);
        assert_eq!(replace_u16(check, old, new), full(0, &data));

        let old32 = u32::from_be_bytes(data[16..20].try_into().unwrap());
        data[16..20].copy_from_slice(&0x0a01_0302_u32.to_be_bytes());
        let c1 = replace_u16(check, old, new);
        assert_eq!(replace_u32(c1, old32, 0x0a01_0302), full(0, &data));

        let mut long = [0u8; 24];
        long[..20].copy_from_slice(&sample());
        let before = full(0, &long);
        let old64 = u64::from_be_bytes(long[12..20].try_into().unwrap());
        let new64 = 0xffff_ffff_0000_0001_u64;
        long[12..20].copy_from_slice(&new64.to_be_bytes());
        assert_eq!(replace_u64(before, old64, new64), full(0, &long));
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        assert_eq!(udp_fixup(0, 0x1234), 0);
        assert_eq!(udp_fixup(5, 0), 0xffff);
        assert_eq!(udp_fixup(5, 7), 7);
    }
}
