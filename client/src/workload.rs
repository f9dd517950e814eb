//! Which key a workload touches next: uniform, Zipf or hotspot popularity over a key space of
//! `keys` keys named by rank ([`KeyNames`]), rank 0 the most popular.
//!
//! **The Zipf variant.** Ranks are drawn from the exact Zipf law P(rank r) ∝ 1/(r+1)^theta
//! over `0..keys`, for any theta > 0 (below, at and above 1), by rejection inversion
//! (Hörmann and Derflinger; `rand_distr::Zipf`). This is not YCSB's "scrambled zipfian",
//! which draws from a zipfian over a fixed 10 billion items and hashes the draw into the key
//! space, so that colliding ranks make it only roughly Zipf. Here the scramble is the
//! placement: a rank's key name is hashed onto the ring (`crate::placement`), so popular ranks
//! land on servers at random, and the popularity of each key is exactly the law's.

use rand::Rng;
use rand_distr::{Distribution, Zipf};

/// How popularity is spread over the key space.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Popularity {
    Uniform,
    /// Zipf with this exponent theta (YCSB's default is 0.99; the Pegasus paper uses up to 1.2).
    Zipf(f64),
    /// YCSB's hotspot: the `hot_fraction` lowest ranks get `hot_share` of the requests, each
    /// part uniformly.
    Hotspot {
        hot_fraction: f64,
        hot_share: f64,
    },
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
    #[error("a hotspot's fraction of keys and share of requests are in [0, 1], not {0} and {1}")]
    Hotspot(f64, f64),
    #[error("keys of {size} bytes cannot name {keys} keys (at least {min}, at most {max} bytes)")]
    KeySize {
        size: usize,
        keys: u64,
        min: usize,
        max: usize,
    },
}

/// Samples key ranks.
#[derive(Clone, Debug)]
pub struct KeyChooser {
    keys: u64,
    law: Law,
}

#[derive(Clone, Debug)]
enum Law {
    Uniform,
    Zipf(Zipf<f64>),
    /// Ranks below `hot_keys` get `hot_share` of the draws.
    Hotspot {
        hot_keys: u64,
        hot_share: f64,
    },
}

impl KeyChooser {
    pub fn new(keys: u64, popularity: Popularity) -> Result<KeyChooser, WorkloadError> {
        if keys == 0 || keys > KEYS_MAX {
            return Err(WorkloadError::Keys(keys));
        }
        let law = match popularity {
            Popularity::Uniform => Law::Uniform,
            Popularity::Zipf(s) if s.is_finite() && s > 0.0 => Law::Zipf(
                Zipf::new(keys as f64, s).expect("parameters were checked: n >= 1, s > 0"),
            ),
            Popularity::Zipf(s) => return Err(WorkloadError::Exponent(s)),
            Popularity::Hotspot {
                hot_fraction,
                hot_share,
            } => {
                if !(0.0..=1.0).contains(&hot_fraction) || !(0.0..=1.0).contains(&hot_share) {
                    return Err(WorkloadError::Hotspot(hot_fraction, hot_share));
                }
                Law::Hotspot {
                    hot_keys: ((keys as f64 * hot_fraction).round() as u64).min(keys),
                    hot_share,
                }
            }
        };
        Ok(KeyChooser { keys, law })
    }

    /// The number of keys.
    pub fn keys(&self) -> u64 {
        self.keys
    }

    /// A rank in `0..keys`, 0 the most popular.
    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        match &self.law {
            // Zipf samples 1..=n as floats.
            Law::Zipf(z) => (z.sample(rng) as u64).clamp(1, self.keys) - 1,
            Law::Uniform => rng.random_range(0..self.keys),
            Law::Hotspot {
                hot_keys,
                hot_share,
            } => {
                let hot = *hot_keys > 0 && (*hot_keys == self.keys || rng.random_bool(*hot_share));
                if hot {
                    rng.random_range(0..*hot_keys)
                } else {
                    rng.random_range(*hot_keys..self.keys)
                }
            }
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

/// Names keys by rank: `user` and the rank, zero-padded to a fixed key size (as YCSB's
/// `user...` keys), or unpadded (`user42`) with no size given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyNames {
    /// Digits of the rank: 0 for unpadded.
    width: usize,
}

/// What every key name starts with.
const KEY_PREFIX: &str = "user";

impl KeyNames {
    /// Names for `keys` keys of exactly `size` bytes each; `None`: unpadded names.
    pub fn new(keys: u64, size: Option<usize>) -> Result<KeyNames, WorkloadError> {
        let Some(size) = size else {
            return Ok(KeyNames { width: 0 });
        };
        let digits = keys.saturating_sub(1).max(1).ilog10() as usize + 1;
        let (min, max) = (KEY_PREFIX.len() + digits, pegasus_common::wire::MAX_KEY_LEN);
        if !(min..=max).contains(&size) {
            return Err(WorkloadError::KeySize {
                size,
                keys,
                min,
                max,
            });
        }
        Ok(KeyNames {
            width: size - KEY_PREFIX.len(),
        })
    }

    /// The name of the key of `rank`.
    pub fn name(&self, rank: u64) -> String {
        format!("{KEY_PREFIX}{rank:0width$}", width = self.width)
    }
}

/// The unpadded name of the key of `rank` (`user42`).
pub fn key_name(rank: u64) -> String {
    KeyNames { width: 0 }.name(rank)
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

    /// Pearson's chi-square of `draws` against the exact Zipf law over `keys` ranks, on the top
    /// `TOP` ranks one by one and the rest as one bucket (TOP degrees of freedom).
    fn zipf_chi_square(draws: &[u64], keys: u64, theta: f64) -> f64 {
        let weight = |rank: u64| ((rank + 1) as f64).powf(-theta);
        let total: f64 = (0..keys).map(weight).sum();
        let mut observed = [0u64; TOP + 1];
        for &r in draws {
            observed[(r as usize).min(TOP)] += 1;
        }
        let n = draws.len() as f64;
        let mut expected: Vec<f64> = (0..TOP as u64).map(|r| n * weight(r) / total).collect();
        expected.push(n - expected.iter().sum::<f64>());
        observed
            .iter()
            .zip(&expected)
            .map(|(&o, &e)| (o as f64 - e).powi(2) / e)
            .sum()
    }

    const TOP: usize = 50;
    /// The chi-square distribution's 0.999 quantile for 50 degrees of freedom: a correct
    /// sampler exceeds it once in a thousand seeds (the seeds are fixed).
    const CHI_SQUARE_50_999: f64 = 86.66;

    #[test]
    fn zipf_fits_the_law_on_the_top_ranks() {
        let keys = 10_000;
        for (i, theta) in [0.5, 0.99, 1.2, 2.0].into_iter().enumerate() {
            let chooser = KeyChooser::new(keys, Popularity::Zipf(theta)).unwrap();
            let mut rng = StdRng::seed_from_u64(10 + i as u64);
            let draws: Vec<u64> = (0..200_000).map(|_| chooser.sample(&mut rng)).collect();
            let fit = zipf_chi_square(&draws, keys, theta);
            assert!(fit < CHI_SQUARE_50_999, "theta {theta}: chi-square {fit}");
            // The test has power: the same draws one rank off, or against a nearby theta, fail.
            let shifted: Vec<u64> = draws.iter().map(|r| r + 1).collect();
            assert!(zipf_chi_square(&shifted, keys, theta) > 10.0 * CHI_SQUARE_50_999);
            assert!(zipf_chi_square(&draws, keys, theta + 0.05) > CHI_SQUARE_50_999);
        }
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
    fn a_hotspot_gives_its_share_to_its_keys() {
        let hotspot = Popularity::Hotspot {
            hot_fraction: 0.2,
            hot_share: 0.8,
        };
        let chooser = KeyChooser::new(1000, hotspot).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let n = 100_000;
        let hot = (0..n).filter(|_| chooser.sample(&mut rng) < 200).count();
        let share = hot as f64 / n as f64;
        assert!((0.79..0.81).contains(&share), "{share}");
        // Every key is hot: all draws land in the space.
        let all = KeyChooser::new(
            10,
            Popularity::Hotspot {
                hot_fraction: 1.0,
                hot_share: 0.5,
            },
        )
        .unwrap();
        assert!((0..1000).all(|_| all.sample(&mut rng) < 10));
    }

    #[test]
    fn key_names_have_the_size_asked_for() {
        let names = KeyNames::new(100_000, Some(16)).unwrap();
        assert_eq!(names.name(42), "user000000000042");
        assert_eq!(names.name(99_999).len(), 16);
        assert_eq!(KeyNames::new(100_000, None).unwrap().name(42), "user42");
        assert_eq!(
            KeyNames::new(100_000, Some(8)).unwrap_err(),
            WorkloadError::KeySize {
                size: 8,
                keys: 100_000,
                min: 9,
                max: pegasus_common::wire::MAX_KEY_LEN
            }
        );
        assert!(KeyNames::new(1, Some(5)).is_ok());
        assert!(KeyNames::new(10, Some(pegasus_common::wire::MAX_KEY_LEN + 1)).is_err());
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert_eq!(
            KeyChooser::new(0, Popularity::Uniform).unwrap_err(),
            WorkloadError::Keys(0)
        );
        assert!(KeyChooser::new(10, Popularity::Zipf(0.0)).is_err());
        assert!(KeyChooser::new(10, Popularity::Zipf(f64::NAN)).is_err());
        let hotspot = |hot_fraction, hot_share| Popularity::Hotspot {
            hot_fraction,
            hot_share,
        };
        assert!(KeyChooser::new(10, hotspot(1.5, 0.5)).is_err());
        assert!(KeyChooser::new(10, hotspot(0.5, -0.1)).is_err());
        assert_eq!(key_name(7), "user7");
    }
}
