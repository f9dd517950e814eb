//! The key hash: one fixed 64-bit function of the key bytes, used by clients (placement), the
//! store, the switch (directory index) and the controller.
//!
//! FNV-1a (64-bit) over the key bytes, followed by the MurmurHash3 `fmix64` finalizer. FNV-1a
//! alone mixes the last bytes of a key poorly (keys `user1`..`user9` differ in few bits);
//! the finalizer gives full avalanche, which matters for consistent hashing. 64 bits keep the
//! chance of a collision between a hot and a cold key negligible at millions of keys.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Hashes a key. Deterministic across machines, processes and versions of this crate.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h = FNV_OFFSET_BASIS;
    for &b in key {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    fmix64(h)
}

/// `fmix64`'s multipliers (named for the P4 programs, which restate the finalizer).
pub const FMIX64_C1: u64 = 0xff51_afd7_ed55_8ccd;
pub const FMIX64_C2: u64 = 0xc4ce_b9fe_1a85_ec53;

/// MurmurHash3's 64-bit finalizer: a bijection with full avalanche.
pub const fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(FMIX64_C1);
    k ^= k >> 33;
    k = k.wrapping_mul(FMIX64_C2);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_never_change() {
        // Pinned: changing the hash would move every key to another home server.
        // The values were computed by an independent implementation (Python, docs/protocol.md).
        assert_eq!(key_hash(b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(key_hash(b"a"), 0x82a2_a958_a9be_ce5b);
        assert_eq!(key_hash(b"user1"), 0xcaf6_72d6_3552_cd57);
        assert_eq!(key_hash(b"hello world"), 0x7c6d_8c01_9b6e_e5d5);
        let h1 = key_hash(b"user1");
        let h2 = key_hash(b"user2");
        assert_ne!(h1, h2);
        // Neighbouring keys differ in about half of the bits.
        let differing = (h1 ^ h2).count_ones();
        assert!(
            (16..=48).contains(&differing),
            "poor avalanche: {differing} bits"
        );
    }

    #[test]
    fn fmix64_is_a_bijection_on_samples() {
        let mut seen = [0u64; 64];
        for (i, slot) in seen.iter_mut().enumerate() {
            *slot = fmix64(i as u64);
        }
        for i in 0..seen.len() {
            for j in i + 1..seen.len() {
                assert_ne!(seen[i], seen[j]);
            }
        }
    }
}
