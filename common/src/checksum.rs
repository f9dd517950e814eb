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

/// Several covered fields' replacements, summed before one fold: a rewrite of several fields
/// updates a checksum once instead of once per field (each update folds the sum twice). The
/// result is the same as applying them one after the other: one's-complement addition is
/// associative, and a non-zero sum folds to the one value of 1..=0xffff it is congruent to.
/// At most 2^15 words may be replaced (the sum stays below 2^32 and two folds suffice); the
/// switch replaces at most 13.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replacements(u32);

impl Replacements {
    /// No word replaced yet.
    pub const NONE: Replacements = Replacements(0);

    /// One more 16-bit word replaced.
    #[inline(always)]
    pub const fn u16(self, old: u16, new: u16) -> Replacements {
        Replacements(add_replacement(self.0, old, new))
    }

    /// A 32-bit field replaced.
    #[inline(always)]
    pub const fn u32(self, old: u32, new: u32) -> Replacements {
        self.u16((old >> 16) as u16, (new >> 16) as u16)
            .u16(old as u16, new as u16)
    }

    /// A 64-bit field replaced.
    #[inline(always)]
    pub const fn u64(self, old: u64, new: u64) -> Replacements {
        self.u32((old >> 32) as u32, (new >> 32) as u32)
            .u32(old as u32, new as u32)
    }

    /// The checksum `check` after every replacement.
    #[inline(always)]
    pub const fn apply(self, check: u16) -> u16 {
        // !check < 2^16 and at most 2^15 words of < 2^17 each: no overflow of 32 bits.
        !fold((!check as u32) + self.0)
    }
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
    fn replacements_summed_once_match_one_update_per_field() {
        // Fields of every width, over the same data, against a full recomputation and against
        // updating the checksum once per field; edge words (0, 0xffff) included.
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..20_000 {
            let mut data = [0u8; 24];
            for b in data.iter_mut() {
                *b = next() as u8;
            }
            if round % 7 == 0 {
                data[..8].copy_from_slice(&[0xff; 8]);
            }
            if round % 11 == 0 {
                data[8..16].copy_from_slice(&[0; 8]);
            }
            let check = full(0, &data);
            let (old16, old32, old64) = (
                u16::from_be_bytes(data[0..2].try_into().unwrap()),
                u32::from_be_bytes(data[4..8].try_into().unwrap()),
                u64::from_be_bytes(data[16..24].try_into().unwrap()),
            );
            let (new16, new32, new64) = match round % 5 {
                0 => (0, 0, 0),
                1 => (0xffff, 0xffff_ffff, u64::MAX),
                _ => (next() as u16, next() as u32, next()),
            };
            data[0..2].copy_from_slice(&new16.to_be_bytes());
            data[4..8].copy_from_slice(&new32.to_be_bytes());
            data[16..24].copy_from_slice(&new64.to_be_bytes());
            let summed = Replacements::NONE
                .u16(old16, new16)
                .u32(old32, new32)
                .u64(old64, new64)
                .apply(check);
            let one_by_one = replace_u64(
                replace_u32(replace_u16(check, old16, new16), old32, new32),
                old64,
                new64,
            );
            assert_eq!(summed, one_by_one, "round {round}");
            // The full sum says 0 or 0xffff for a zero sum: the same in one's complement.
            let full_now = full(0, &data);
            assert!(
                summed == full_now || (summed | full_now) == 0xffff && summed & full_now == 0,
                "round {round}: {summed:#x} vs {full_now:#x}"
            );
        }
        assert_eq!(Replacements::NONE.apply(0x1234), 0x1234, "nothing replaced");
    }

    #[test]
    fn udp_zero_checksum_stays_zero() {
        assert_eq!(udp_fixup(0, 0x1234), 0);
        assert_eq!(udp_fixup(5, 0), 0xffff);
        assert_eq!(udp_fixup(5, 7), 7);
    }
}
