//! Which key a workload touches next: uniform, or Zipf-distributed over a key space of `keys`
//! keys named by rank ([`key_name`]), rank 0 the most popular. Placement hashes key names, so
//! popular ranks land on servers at random, as in a real skewed workload.

use rand::Rng;
use rand_distr::{Distribution, Zipf};

/// How popularity is spread over the key space.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Popularity {
    Uniform,
    /// Zipf with this exponent (YCSB's default is 0.99; the Pegasus paper uses up to 1.2).
    Zipf(f64),
}

/// Largest key space.
pub const KEYS_MAX: u64 = 1 << 32;

/// Why a key space cannot be sampled.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WorkloadError {
    #[error("the key space needs 1 to {KEYS_MAX} keys, not {0}")]
    Keys(u64),
    #[error("a Zipf exponent must be finite and positive, not {0}")]
    Exponent(f64),
}

/// Samples key ranks.
#[derive(Clone, Debug)]
pub struct KeyChooser {
    keys: u64,
    zipf: Option<Zipf<f64>>,
}

impl KeyChooser {
    pub fn new(keys: u64, popularity: Popularity) -> Result<KeyChooser, WorkloadError> {
        if keys == 0 || keys > KEYS_MAX {
            return Err(WorkloadError::Keys(keys));
        }
        let zipf = match popularity {
            Popularity::Uniform => None,
            Popularity::Zipf(s) if s.is_finite() && s > 0.0 => {
                Some(Zipf::new(keys as f64, s).expect("parameters were checked: n >= 1, s > 0"))
            }
            Popularity::Zipf(s) => return Err(WorkloadError::Exponent(s)),
        };
        Ok(KeyChooser { keys, zipf })
    }

    /// The number of keys.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// A rank in `0..keys`, 0 the most popular.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        match &self.zipf {
            // Zipf samples 1..=n as floats.
            Some(z) => (z.sample(rng) as u64).clamp(1, self.keys) - 1,
            None => rng.random_range(0..self.keys),
        }
    }
}

/// An abrupt change of the hot set: from `at` on, the `count` most popular ranks trade places
/// with `count` ranks from `offset` on (cold ones, for an offset deep in the key space), so
/// that the hottest keys suddenly become cold and cold ones hot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotSwap {
    pub count: u64,
    pub offset: u64,
}

impl HotSwap {
    /// The rank a sampled rank stands for once the swap has happened.
    pub fn apply(&self, rank: u64) -> u64 {
        if rank < self.count {
            rank + self.offset
        } else if (self.offset..self.offset + self.count).contains(&rank) {
            rank - self.offset
        } else {
            rank
        }
    }
}

/// The name of the key of `rank`.
pub fn key_name(rank: u64) -> String {
    format!("user{rank}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    #[test]
    fn zipf_favours_low_ranks_as_the_law_says() {
        let chooser = KeyChooser::new(100_000, Popularity::Zipf(1.2)).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let n = 200_000;
        let mut top = [0u32; 2];
        for _ in 0..n {
            let r = chooser.sample(&mut rng);
            assert!(r < 100_000);
            if r < 2 {
                top[r as usize] += 1;
            }
        }
        // P(rank 0) = 1 / H(100000, 1.2) ~ 0.197; rank 1 is 2^-1.2 ~ 0.435 of that.
        let p0 = top[0] as f64 / n as f64;
        assert!((0.18..0.21).contains(&p0), "{p0}");
        let ratio = top[1] as f64 / top[0] as f64;
        assert!((0.40..0.47).contains(&ratio), "{ratio}");
    }

    #[test]
    fn uniform_covers_the_space_evenly() {
        let chooser = KeyChooser::new(10, Popularity::Uniform).unwrap();
        let mut rng = StdRng::seed_from_u64(2);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[chooser.sample(&mut rng) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_hot_swap_trades_the_top_ranks_with_cold_ones() {
        let swap = HotSwap {
            count: 16,
            offset: 50_000,
        };
        assert_eq!(swap.apply(0), 50_000);
        assert_eq!(swap.apply(15), 50_015);
        assert_eq!(swap.apply(50_000), 0);
        assert_eq!(swap.apply(50_015), 15);
        assert_eq!(swap.apply(16), 16);
        assert_eq!(swap.apply(50_016), 50_016);
        // A permutation: applying it twice gives every rank back.
        for rank in (0..60_000).step_by(7) {
            assert_eq!(swap.apply(swap.apply(rank)), rank);
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert_eq!(
            KeyChooser::new(0, Popularity::Uniform).unwrap_err(),
            WorkloadError::Keys(0)
        );
        assert!(KeyChooser::new(10, Popularity::Zipf(0.0)).is_err());
        assert!(KeyChooser::new(10, Popularity::Zipf(f64::NAN)).is_err());
        assert_eq!(key_name(7), "user7");
    }
}
