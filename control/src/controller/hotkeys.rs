//! Hot-key detection: which keys the directory should hold, from the switch's samples.
//!
//! - [`TopK`] counts sampled keys with the **space-saving** algorithm (Metwally, Agrawal and
//!   El Abbadi, 2005): at most `capacity` counters; a key without one takes the counter of the
//!   least counted key and starts from that count (an overestimate by at most it, which the key
//!   carries as its *error*), so every key with more than `samples / capacity` samples is
//!   tracked. Keys are ranked by their **guaranteed** count (count minus error: the samples it
//!   surely had), so that under an even load, where every counter is mostly inherited error,
//!   no key looks hot. Counts **decay** at the end of every statistics epoch ([`decay_for`]):
//!   they halve every [`HALF_LIFE_EPOCHS`] epochs, or every `half_life_samples` samples when
//!   the rack is quiet and that takes longer ([`half_life_samples`]: enough samples to rank as
//!   many keys as it should keep), so that the ranking follows the last ~50 ms of a busy rack
//!   and still has something to say about a quiet one. Each key's *recent* share, over the last
//!   [`HALF_LIFE_EPOCHS`] epochs whatever the rate, sizes its replica set: a key that just
//!   became hot gets its replicas within a few epochs, however long the ranking remembers.
//!   Counts are fixed-point, in [`ONE_SAMPLE`] units.
//! - [`decide`] turns the ranking and the current directory into keys to add and to evict,
//!   with **hysteresis**: a newcomer must rank among the `hot_keys` most counted, with at least
//!   `min_count`, clear of the keys outside the top (a quarter more than the best of them),
//!   and is added at once if the directory has room; a hot key leaves only when it has fallen
//!   far from the top (below rank `4 x hot_keys`, or below a quarter of the count of the
//!   `hot_keys`-th key, once that count is large enough to say so), or to make room for a key
//!   counted more than twice as often. A key on the edge therefore stays where it is instead
//!   of flapping in and out, and sampling noise evicts nothing.
//! - [`sample_period_for`] picks how sparsely the switch samples: every request of a quiet
//!   rack, one in several of a busy one, so that the controller sees about a target number of
//!   samples a second whatever the rate.
//!
//! All are plain data structures and functions, unit-tested here; `crate::controller` runs
//! them every epoch.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

/// Counters the top-k keeps for each hot key it is asked for: enough that the keys just below
/// the top are tracked too (their counts are what hysteresis compares with).
pub const COUNTERS_PER_HOT_KEY: usize = 16;
/// Fewest counters a [`TopK`] keeps.
pub const COUNTERS_MIN: usize = 256;
/// One sample's weight in a count (counts are fixed-point, so that they can decay smoothly).
pub const ONE_SAMPLE: u64 = 256;
/// Default length of a statistics interval (here called an epoch; not the version epoch), in
/// milliseconds (`--stats-interval-ms`): with a half-life of [`HALF_LIFE_EPOCHS`], the ranking
/// follows the last ~50 ms.
pub const STATS_INTERVAL_MS_DEFAULT: u64 = 10;
/// Epochs over which a count halves (at least: see [`half_life_samples`]).
pub const HALF_LIFE_EPOCHS: f64 = 5.0;
/// Samples a half-life spans at least, per hot key the controller keeps: the `k`-th most
/// requested key of a skewed load has about a `k`-th of the top key's requests, so ranking
/// `k` keys takes samples in proportion to `k`. (256 before the statistical add test: a new hot
/// set then took 100-220 ms to balance, now 80 ms, as the old hot keys' counts decay twice as
/// fast; the add test keeps the noisier counts from churning.)
pub const HALF_LIFE_SAMPLES_PER_HOT_KEY: u64 = 128;
/// Fewest samples a half-life spans: the statistical add test ([`stands_out`]) needs counts
/// of tens of samples to tell the few keys of a small `--hot-keys` apart (at 512, with 4 or 8
/// hot keys asked, Zipf 0.99 on 8 servers got 1-2 keys and busiest/mean 1.15).
pub const HALF_LIFE_SAMPLES_MIN: u64 = 2048;
/// Samples a second the controller aims for by default (`--sample-target`): enough to rank
/// hundreds of keys within a second, a small fraction of one core to count.
pub const SAMPLES_PER_SECOND_DEFAULT: u32 = 20_000;
/// Most samples a second the controller may aim for.
pub const SAMPLE_TARGET_MAX: u32 = 1_000_000;
/// Counts below this are forgotten when they decay.
const FORGET_BELOW: u64 = ONE_SAMPLE / 4;

/// The factor (in 1/65,536) that counts are multiplied by at the end of a busy epoch: one
/// [`HALF_LIFE_EPOCHS`]-th of a half-life.
pub fn decay_per_epoch() -> u64 {
    (65_536.0 * 0.5f64.powf(1.0 / HALF_LIFE_EPOCHS)).round() as u64
}

/// Samples a half-life spans at least when the controller keeps `hot_keys` hot keys.
pub fn half_life_samples(hot_keys: usize) -> u64 {
    (hot_keys as u64 * HALF_LIFE_SAMPLES_PER_HOT_KEY).max(HALF_LIFE_SAMPLES_MIN)
}

/// The factor (in 1/65,536) that counts are multiplied by at the end of an epoch in which
/// `samples` were observed: the epoch ages the counts by `1 / HALF_LIFE_EPOCHS` of a
/// half-life, or by `samples / half_life_samples` when that is less. A busy rack's ranking
/// therefore follows the last [`HALF_LIFE_EPOCHS`] epochs; a quiet one's, the last
/// `half_life_samples` samples (an idle rack forgets nothing).
pub fn decay_for(samples: u64, half_life_samples: u64) -> u64 {
    assert!(half_life_samples > 0, "a half-life spans samples");
    let age = (samples as f64 / half_life_samples as f64).min(1.0 / HALF_LIFE_EPOCHS);
    (65_536.0 * 0.5f64.powf(age)).round() as u64
}

/// The sample period (one request in N) that gives about `target` samples a second at
/// `requests_per_second`, between every request and `sparsest` (the configured period). A
/// period in use, `current`, is kept while it gives between half and twice the target, so
/// that the period does not hop with the load's noise. `target` 0: always `sparsest`.
pub fn sample_period_for(
    requests_per_second: u64,
    target: u32,
    current: u16,
    sparsest: u16,
) -> u16 {
    if target == 0 || sparsest <= 1 {
        return sparsest;
    }
    let target = u64::from(target);
    let wanted = requests_per_second
        .div_ceil(target)
        .clamp(1, u64::from(sparsest)) as u16;
    let samples_now = requests_per_second / u64::from(current.max(1));
    let in_band = samples_now * 2 >= target && samples_now <= 2 * target;
    if (1..=sparsest).contains(&current) && (in_band || wanted == current) {
        current
    } else {
        wanted
    }
}

/// How often [`SamplePacer`] looks at the rate again.
pub const SAMPLE_PERIOD_REVIEW: Duration = Duration::from_millis(250);

/// Keeps the switch's sample period at what gives about `target` samples a second
/// ([`sample_period_for`]): fed the samples of every epoch, it estimates the rate (samples ×
/// period) every [`SAMPLE_PERIOD_REVIEW`] and says when the period should change.
#[derive(Debug)]
pub struct SamplePacer {
    target: u32,
    sparsest: u16,
    period: u16,
    samples: u64,
    since: Instant,
}

impl SamplePacer {
    /// A pacer for a switch sampling one in `period` now, aiming at `target` samples a second
    /// (0: never changes it), never sparser than `sparsest`.
    pub fn new(target: u32, sparsest: u16, period: u16, now: Instant) -> SamplePacer {
        SamplePacer {
            target,
            sparsest,
            period,
            samples: 0,
            since: now,
        }
    }

    /// The period in use.
    pub fn period(&self) -> u16 {
        self.period
    }

    /// Counts an epoch's `samples`; returns the new period when it should change now.
    pub fn observe(&mut self, samples: u64, now: Instant) -> Option<u16> {
        self.samples += samples;
        let elapsed = now.saturating_duration_since(self.since);
        if self.target == 0 || elapsed < SAMPLE_PERIOD_REVIEW {
            return None;
        }
        let requests = self.samples * u64::from(self.period.max(1));
        let rate = (requests as f64 / elapsed.as_secs_f64()) as u64;
        (self.samples, self.since) = (0, now);
        let next = sample_period_for(rate, self.target, self.period, self.sparsest);
        (next != self.period).then(|| {
            self.period = next;
            next
        })
    }
}

/// A tracked key: its estimated count, the part of it inherited from the key whose counter it
/// took (its error), its recent count (samples since it took its counter, over the last
/// [`HALF_LIFE_EPOCHS`] epochs only: its share now, see [`TopK::recent_share_ppm`]), and the
/// key itself (the controller needs it).
#[derive(Clone, Debug)]
struct Tracked {
    count: u64,
    error: u64,
    recent: u64,
    key: Vec<u8>,
}

/// Space-saving top-k with per-epoch decay (see the module docs).
#[derive(Debug)]
pub struct TopK {
    capacity: usize,
    tracked: HashMap<u64, Tracked>,
    /// (count, keyhash) of every tracked key, least counted first.
    order: BTreeSet<(u64, u64)>,
    /// Every sample observed, decayed as the recent counts are: the denominator of a key's
    /// recent share.
    recent_total: u64,
}

impl TopK {
    /// A top-k with `capacity` counters (at least 1).
    pub fn new(capacity: usize) -> TopK {
        assert!(capacity >= 1, "a top-k needs a counter");
        TopK {
            capacity,
            tracked: HashMap::with_capacity(capacity),
            order: BTreeSet::new(),
            recent_total: 0,
        }
    }

    /// Counts one sample of `key` (whose hash is `keyhash`).
    pub fn observe(&mut self, keyhash: u64, key: &[u8]) {
        self.recent_total += ONE_SAMPLE;
        if let Some(t) = self.tracked.get_mut(&keyhash) {
            self.order.remove(&(t.count, keyhash));
            t.count += ONE_SAMPLE;
            t.recent += ONE_SAMPLE;
            self.order.insert((t.count, keyhash));
            return;
        }
        let error = if self.tracked.len() < self.capacity {
            0
        } else {
            // Take over the least counted key's counter.
            let (least, evicted) = self.order.pop_first().expect("full, so not empty");
            self.tracked.remove(&evicted);
            least
        };
        let count = error + ONE_SAMPLE;
        self.tracked.insert(
            keyhash,
            Tracked {
                count,
                error,
                recent: ONE_SAMPLE,
                key: key.to_vec(),
            },
        );
        self.order.insert((count, keyhash));
        debug_assert_eq!(self.tracked.len(), self.order.len());
        debug_assert!(self.tracked.len() <= self.capacity);
    }

    /// Ends a statistics epoch: every count is multiplied by `factor` / 65,536 (see
    /// [`decay_for`]), every recent count by [`decay_per_epoch`]; keys counted below a quarter
    /// sample are forgotten.
    pub fn end_epoch(&mut self, factor: u64) {
        assert!(factor <= 65_536, "a decay never raises counts");
        let recent_factor = decay_per_epoch();
        let decay_recent = |c: u64| ((c as u128 * recent_factor as u128) >> 16) as u64;
        self.recent_total = decay_recent(self.recent_total);
        let order = std::mem::take(&mut self.order);
        for (count, keyhash) in order {
            let decayed = |c: u64| ((c as u128 * factor as u128) >> 16) as u64;
            let halved = decayed(count);
            if halved < FORGET_BELOW {
                self.tracked.remove(&keyhash);
            } else {
                let tracked = self
                    .tracked
                    .get_mut(&keyhash)
                    .expect("order and tracked agree");
                tracked.count = halved;
                tracked.error = decayed(tracked.error).min(halved);
                tracked.recent = decay_recent(tracked.recent);
                self.order.insert((halved, keyhash));
            }
        }
    }

    /// Every tracked key as (keyhash, guaranteed count in [`ONE_SAMPLE`] units: its count
    /// less its error), most counted first (ties: smaller hash first). Keys whose whole count
    /// is inherited are left out.
    pub fn ranking(&self) -> Vec<(u64, u64)> {
        let mut ranking: Vec<(u64, u64)> = self
            .tracked
            .iter()
            .map(|(&h, t)| (h, t.count - t.error))
            .filter(|&(_, guaranteed)| guaranteed > 0)
            .collect();
        ranking.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        ranking
    }

    /// The count any untracked key may have had, in [`ONE_SAMPLE`] units: the least tracked
    /// count once every counter is taken (space-saving's bound), 0 before. A key surely
    /// counted no more than this is not told apart from the crowd: under an even load every
    /// key's count is about this.
    pub fn floor(&self) -> u64 {
        if self.tracked.len() < self.capacity {
            0
        } else {
            self.order.first().map_or(0, |&(count, _)| count)
        }
    }

    /// The estimated count of a key, in [`ONE_SAMPLE`] units (0 when not tracked).
    pub fn count(&self, keyhash: u64) -> u64 {
        self.tracked.get(&keyhash).map_or(0, |t| t.count)
    }

    /// A key's share of the requests sampled over the last [`HALF_LIFE_EPOCHS`] epochs
    /// (whatever the rack's rate: its load now, for sizing its replica set), in parts per
    /// million. Counted since the key took its counter: a key that holds one all along (every
    /// hot key) is counted exactly.
    pub fn recent_share_ppm(&self, keyhash: u64) -> u32 {
        if self.recent_total == 0 {
            return 0;
        }
        let recent = self.tracked.get(&keyhash).map_or(0, |t| t.recent);
        let share = recent as u128 * 1_000_000 / self.recent_total as u128;
        share.min(1_000_000) as u32
    }

    /// Requests sampled over the last [`HALF_LIFE_EPOCHS`] epochs (decayed as the recent
    /// counts are): how much the recent shares can be trusted.
    pub fn recent_samples(&self) -> u64 {
        self.recent_total / ONE_SAMPLE
    }

    /// The key whose hash is `keyhash`, if tracked.
    pub fn key(&self, keyhash: u64) -> Option<&[u8]> {
        self.tracked.get(&keyhash).map(|t| t.key.as_slice())
    }

    /// Tracked keys.
    pub fn len(&self) -> usize {
        self.tracked.len()
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.tracked.is_empty()
    }
}

/// What [`decide`] aims for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotSetRules {
    /// Keys the directory should hold: the most counted ones.
    pub hot_keys: usize,
    /// Fewest (decayed) samples a key needs to be added, in [`ONE_SAMPLE`] units.
    pub min_count: u64,
    /// Most keys the directory holds (its capacity): a hard limit.
    pub capacity: usize,
    /// Standard deviations by which a newcomer's count must lead the best key outside the top
    /// ([`stands_out`]; 0: no statistical test, the margin alone).
    pub add_sigmas: u64,
}

/// [`HotSetRules::add_sigmas`] by default: a newcomer's lead over the best key outside the top
/// must be 3 standard deviations of sampling noise (a chance of about 1 in 700 for a key with
/// no real lead; the edge is looked at every epoch, but the counts draw new noise only about
/// once a half-life, and a key that keeps waiting must lead by more: [`Waiting`]).
pub const ADD_SIGMAS_DEFAULT: u64 = 3;

/// Epochs a key of the top waits unadded for the bar it must clear to rise by one standard
/// deviation (a second at the default epoch). A newly hot key leads by many deviations at once
/// and is added within epochs; a key of a stationary load that sampling noise keeps near the
/// bar would cross it now and then (the ranking has a new draw of noise every half-life), and
/// the rising bar leaves it out for good. So the directory settles within the first seconds
/// and stays, yet still follows a load that changes.
pub const EPOCHS_PER_EXTRA_SIGMA: u32 = 100;

/// How long each key of the top that is not hot has waited to be added, in epochs
/// ([`EPOCHS_PER_EXTRA_SIGMA`]).
#[derive(Clone, Debug, Default)]
pub struct Waiting {
    epochs: HashMap<u64, u32>,
}

impl Waiting {
    /// After an epoch's decision: each key of the top `hot_keys` of `ranking` that is neither
    /// `hot` nor just `added` waits an epoch more; a key that is hot, or has fallen out of the
    /// top `FAR_RANKS x hot_keys` (it has cooled: were it to come back, it would be news), is
    /// forgotten.
    pub fn record(&mut self, ranking: &[(u64, u64)], hot_keys: usize, hot: &[u64], added: &[u64]) {
        // Sets, not the slices: a 64-server rack's directory holds hundreds of keys, and this
        // runs every epoch.
        let in_directory: std::collections::HashSet<u64> =
            hot.iter().chain(added).copied().collect();
        let kept: std::collections::HashSet<u64> = ranking
            .iter()
            .take(FAR_RANKS * hot_keys)
            .map(|&(h, _)| h)
            .filter(|h| !in_directory.contains(h))
            .collect();
        self.epochs.retain(|h, _| kept.contains(h));
        for &(h, _) in ranking.iter().take(hot_keys) {
            if kept.contains(&h) {
                let waited = self.epochs.entry(h).or_default();
                *waited = waited.saturating_add(1);
            }
        }
    }

    /// Standard deviations key `keyhash` must lead by: `base`, one more for every
    /// [`EPOCHS_PER_EXTRA_SIGMA`] it has waited (none when `base` is 0: no test at all).
    pub fn sigmas(&self, base: u64, keyhash: u64) -> u64 {
        let waited = self.epochs.get(&keyhash).copied().unwrap_or(0);
        match base {
            0 => 0,
            base => base + u64::from(waited / EPOCHS_PER_EXTRA_SIGMA),
        }
    }
}

/// Whether a count `count` leads `other` by `sigmas` standard deviations of the difference of
/// two sample counts (counts in [`ONE_SAMPLE`] units). A decayed count of Poisson arrivals
/// has a variance of half its mean (each sample weighs `w = 2^-age/half-life`, the variance
/// sums `w²`), which is what is used. With `other` 0 it asks for `sigmas²/2` samples: a key
/// seen a handful of times is not told from noise.
pub fn stands_out(count: u64, other: u64, sigmas: u64) -> bool {
    if count <= other {
        return false;
    }
    let lead = u128::from(count - other);
    // In samples: lead / S >= z sqrt((count + other) / 2S), squared and times 2S².
    2 * lead * lead
        >= u128::from(sigmas).pow(2)
            * (u128::from(count) + u128::from(other))
            * u128::from(ONE_SAMPLE)
}

/// How far a hot key outside the top must fall before it is evicted: below rank
/// `FAR_RANKS x hot_keys`, or below the `hot_keys`-th count divided by `FAR_RANKS`. Far
/// enough that sampling noise around the top's edge moves no key in and out (a key of rank
/// 2k under Zipf 1.2 is counted 0.44x the k-th key), near enough that the directory keeps
/// room (its capacity is at least twice the hot keys, and a newcomer displaces a fallen key
/// when it is full).
pub const FAR_RANKS: usize = 4;

/// A key of the top not yet hot is added only when counted at least `1 + 1/ADD_MARGIN_DIVISOR`
/// times the best key outside the top: clear of the top's edge, so that keys around rank
/// `hot_keys`, whose order sampling noise keeps changing, are not added one after the other
/// (each carries a small share of the load; under Zipf 1.2 the keys within 17% of the edge
/// wait). Under a uniform load no key is clear of the others, and none is added.
pub const ADD_MARGIN_DIVISOR: u64 = 4;

/// Keys to add and to evict, by hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Most counted first.
    pub add: Vec<u64>,
    /// Least counted first.
    pub evict: Vec<u64>,
}

/// The changes that bring the directory's keys `hot` towards the `rules.hot_keys` most counted
/// keys of `ranking` (most counted first, as [`TopK::ranking`]), with hysteresis:
///
/// - every key among the top `hot_keys` with at least `min_count`, and clear of the keys
///   outside the top (by a quarter, [`ADD_MARGIN_DIVISOR`], and by `add_sigmas` standard
///   deviations of sampling noise, more the longer it has been `waiting`, [`stands_out`]), is
///   added while the directory has room
///   (`capacity`); when it has none, the candidate displaces the least counted hot key
///   outside the top, if counted more than twice as often;
/// - a hot key outside the top is evicted once it has fallen far ([`FAR_RANKS`]): below rank
///   `4 x hot_keys`, or below a quarter of the `hot_keys`-th count; never while that count is
///   too small to tell (below twice `min_count`: an idle or barely sampled rack keeps its
///   keys);
/// - keys in the top are never evicted.
///
/// So the directory holds the top keys plus, for a while, those that just left it (at most
/// `capacity` in all), and a key at the edge of the top does not flap in and out.
pub fn decide(
    rules: &HotSetRules,
    ranking: &[(u64, u64)],
    hot: &[u64],
    waiting: &Waiting,
) -> Changes {
    let k = rules.hot_keys;
    let rank: HashMap<u64, usize> = ranking
        .iter()
        .enumerate()
        .map(|(i, &(h, _))| (h, i))
        .collect();
    let count_of = |h: u64| rank.get(&h).map_or(0, |&i| ranking[i].1);
    let in_top = |h: u64| rank.get(&h).is_some_and(|&i| i < k);
    // The count a key needs to be among the top: the k-th key's (0 if fewer keys).
    let kth = match k {
        0 => u64::MAX,
        k => ranking.get(k - 1).map_or(0, |&(_, c)| c),
    };
    let informative = kth >= rules.min_count.saturating_mul(2);
    let mut changes = Changes::default();
    // Hot keys outside the top, least counted first: evicted when they have fallen far,
    // displaceable otherwise.
    let mut outside: Vec<(u64, u64)> = hot
        .iter()
        .filter(|&&h| !in_top(h))
        .map(|&h| (h, count_of(h)))
        .collect();
    outside.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    let mut displaceable = Vec::new();
    for (h, c) in outside {
        let far = rank.get(&h).is_none_or(|&i| i >= FAR_RANKS * k)
            || c.saturating_mul(FAR_RANKS as u64) < kth;
        if k == 0 || (informative && far) {
            changes.evict.push(h);
        } else {
            displaceable.push((h, c));
        }
    }
    let hot_now: std::collections::HashSet<u64> = hot.iter().copied().collect();
    let mut room = rules
        .capacity
        .saturating_sub(hot.len() - changes.evict.len());
    let mut next_displaced = 0;
    // A newcomer stands clear of the keys just outside the top (by a quarter of the best
    // one's count), where sampling noise would move keys in and out.
    let outside_best = ranking.get(k).map_or(0, |&(_, c)| c);
    let edge = outside_best.saturating_add(outside_best / ADD_MARGIN_DIVISOR);
    let candidates = ranking.iter().take(k).filter(|(h, c)| {
        !hot_now.contains(h)
            && *c >= rules.min_count.max(1).max(edge)
            && stands_out(*c, outside_best, waiting.sigmas(rules.add_sigmas, *h))
    });
    for &(h, c) in candidates {
        if room > 0 {
            room -= 1;
            changes.add.push(h);
        } else if let Some(&(d, dc)) = displaceable.get(next_displaced)
            && c > dc.saturating_mul(2)
        {
            next_displaced += 1;
            changes.evict.push(d);
            changes.add.push(h);
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules(hot_keys: usize) -> HotSetRules {
        HotSetRules {
            hot_keys,
            min_count: 2,
            capacity: 2 * hot_keys,
            add_sigmas: 0,
        }
    }

    /// [`rules`] with the statistical add test of the running controller.
    fn sure(hot_keys: usize) -> HotSetRules {
        HotSetRules {
            add_sigmas: ADD_SIGMAS_DEFAULT,
            ..rules(hot_keys)
        }
    }

    fn tight(hot_keys: usize) -> HotSetRules {
        HotSetRules {
            capacity: hot_keys,
            ..rules(hot_keys)
        }
    }

    /// Counts in samples, for readable expectations.
    fn in_samples(ranking: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
        ranking
            .into_iter()
            .map(|(h, c)| (h, c / ONE_SAMPLE))
            .collect()
    }

    #[test]
    fn space_saving_counts_exactly_while_there_is_room() {
        let mut top = TopK::new(4);
        for (h, n) in [(1u64, 5), (2, 3), (3, 1)] {
            for _ in 0..n {
                top.observe(h, &h.to_be_bytes());
            }
        }
        assert_eq!(in_samples(top.ranking()), vec![(1, 5), (2, 3), (3, 1)]);
        assert_eq!(top.key(2), Some(&2u64.to_be_bytes()[..]));
        assert_eq!(top.count(9), 0);
        assert_eq!(top.count(1), 5 * ONE_SAMPLE);
    }

    #[test]
    fn a_new_key_takes_over_the_least_counted() {
        let mut top = TopK::new(2);
        for h in [1u64, 1, 1, 2, 3] {
            top.observe(h, b"k");
        }
        // 3 replaced 2 (count 1) and starts from 1 + 1, of which 1 is inherited: ranked by
        // the one sample it surely had.
        assert_eq!(top.count(3), 2 * ONE_SAMPLE);
        assert_eq!(in_samples(top.ranking()), vec![(1, 3), (3, 1)]);
        assert_eq!(top.len(), 2);
    }

    #[test]
    fn an_even_load_ranks_no_key_above_what_it_surely_had() {
        // 2,000 keys sampled evenly, 3 times each, through 64 counters: every counter is
        // mostly inherited, and no key is guaranteed more than the samples it got since it
        // took its counter.
        let mut top = TopK::new(64);
        for _ in 0..3 {
            for h in 0..2_000u64 {
                top.observe(h, b"k");
            }
        }
        let ranking = in_samples(top.ranking());
        assert!(ranking.iter().all(|&(_, c)| c <= 1), "{ranking:?}");
        assert!(
            top.count(1_999) > 50 * ONE_SAMPLE,
            "raw counts are inflated"
        );
        // A key sampled often among them stands out by what it surely had.
        for h in 0..2_000u64 {
            top.observe(h, b"k");
            if h % 20 == 0 {
                top.observe(5_000, b"hot");
            }
        }
        assert_eq!(top.ranking()[0].0, 5_000);
        assert_eq!(top.ranking()[0].1, 100 * ONE_SAMPLE);
    }

    #[test]
    fn the_floor_is_the_least_count_once_every_counter_is_taken() {
        let mut top = TopK::new(3);
        for h in [1u64, 1, 1, 2, 2] {
            top.observe(h, b"k");
        }
        assert_eq!(
            top.floor(),
            0,
            "a counter is free: an untracked key was never seen"
        );
        top.observe(3, b"k");
        assert_eq!(top.floor(), ONE_SAMPLE);
        // 4 takes 3's counter: an untracked key may now have had up to 2 samples.
        top.observe(4, b"k");
        assert_eq!(top.floor(), 2 * ONE_SAMPLE);
        assert_eq!(top.count(3), 0);
    }

    #[test]
    fn decay_follows_epochs_on_a_busy_rack_and_samples_on_a_quiet_one() {
        let half_life = half_life_samples(16);
        assert_eq!(half_life, 16 * HALF_LIFE_SAMPLES_PER_HOT_KEY);
        assert_eq!(half_life_samples(0), HALF_LIFE_SAMPLES_MIN);
        // Busy: at least a fifth of a half-life's samples in an epoch: the epoch's decay.
        assert_eq!(decay_for(half_life, half_life), decay_per_epoch());
        assert_eq!(decay_for(half_life / 5 + 1, half_life), decay_per_epoch());
        // Quiet: a half-life's samples over many epochs halve a count, however many epochs.
        for epochs in [10u64, 64, 1_024] {
            let per_epoch = half_life / epochs;
            let mut count = 1_000_000u64;
            for _ in 0..epochs {
                count = (count * decay_for(per_epoch, half_life)) >> 16;
            }
            let ratio = count as f64 / 500_000.0;
            assert!((0.97..1.03).contains(&ratio), "{epochs} epochs: {ratio}");
        }
        // Idle: nothing is forgotten.
        assert_eq!(decay_for(0, half_life), 65_536);
    }

    #[test]
    fn the_pacer_reviews_the_rate_every_quarter_second() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // Configured one in 8; 5,000 requests/s: 625 samples/s at first.
        let mut pacer = SamplePacer::new(20_000, 8, 8, t0);
        assert_eq!(
            pacer.observe(100, ms(200)),
            None,
            "not a quarter second yet"
        );
        // 156 samples in 250 ms at 1 in 8: ~5,000 requests/s: every request.
        assert_eq!(pacer.observe(56, ms(250)), Some(1));
        assert_eq!(pacer.period(), 1);
        // Now 1,250 samples in 250 ms: 5,000/s at 1 in 1: in band, kept.
        assert_eq!(pacer.observe(1_250, ms(500)), None);
        // The rack speeds up to 200,000/s: 50,000 samples in 250 ms; 1 in 8 at most.
        assert_eq!(pacer.observe(50_000, ms(750)), Some(8));
        // Target 0: never changes.
        let mut fixed = SamplePacer::new(0, 8, 8, t0);
        assert_eq!(fixed.observe(10, ms(1_000)), None);
    }

    #[test]
    fn the_sample_period_follows_the_rate() {
        let target = 20_000;
        // A quiet rack: every request.
        assert_eq!(sample_period_for(5_000, target, 8, 8), 1);
        assert_eq!(sample_period_for(20_000, target, 8, 8), 1);
        // A busy one: about the target, never sparser than configured.
        assert_eq!(sample_period_for(100_000, target, 1, 8), 5);
        assert_eq!(sample_period_for(1_000_000, target, 1, 8), 8);
        // Within a factor of two of the target, the period in use stays.
        assert_eq!(sample_period_for(30_000, target, 1, 8), 1);
        assert_eq!(sample_period_for(35_000, target, 2, 8), 2);
        assert_eq!(sample_period_for(60_000, target, 1, 8), 3);
        // Target 0, or a configured period of 0 (no sampling) or 1: as configured.
        assert_eq!(sample_period_for(5_000, 0, 4, 8), 8);
        assert_eq!(sample_period_for(5_000, target, 0, 0), 0);
        assert_eq!(sample_period_for(500_000, target, 1, 1), 1);
        // A period out of range (before the first review) is replaced.
        assert_eq!(sample_period_for(5_000, target, 0, 8), 1);
    }

    #[test]
    fn decay_halves_over_its_half_life_and_forgets() {
        let mut top = TopK::new(8);
        for _ in 0..8 {
            top.observe(1, b"a");
        }
        top.observe(2, b"b");
        top.end_epoch(32_768);
        assert_eq!(
            top.ranking(),
            vec![(1, 4 * ONE_SAMPLE), (2, ONE_SAMPLE / 2)]
        );
        top.end_epoch(32_768);
        assert_eq!(top.len(), 2, "a quarter sample is still remembered");
        top.end_epoch(32_768);
        assert_eq!(
            in_samples(top.ranking()),
            vec![(1, 1)],
            "below a quarter: forgotten"
        );
        for _ in 0..4 {
            top.end_epoch(32_768);
        }
        assert!(top.is_empty());
        // The per-epoch factor halves a count over HALF_LIFE_EPOCHS epochs.
        let mut count = 1_000 * ONE_SAMPLE;
        for _ in 0..HALF_LIFE_EPOCHS as usize {
            count = (count * decay_per_epoch()) >> 16;
        }
        assert!(
            (count as f64 / (500 * ONE_SAMPLE) as f64 - 1.0).abs() < 0.01,
            "{count}"
        );
    }

    proptest! {
        /// Space-saving's guarantee: a key with more than n / capacity samples is tracked, and
        /// no tracked count underestimates the true count.
        #[test]
        fn frequent_keys_are_tracked_and_never_undercounted(
            stream in proptest::collection::vec(0u64..40, 1..600),
            capacity in 2usize..16,
        ) {
            let mut top = TopK::new(capacity);
            let mut truth: HashMap<u64, u64> = HashMap::new();
            for &h in &stream {
                top.observe(h, b"k");
                *truth.entry(h).or_default() += 1;
            }
            let n = stream.len() as u64;
            for (&h, &c) in &truth {
                if c > n / capacity as u64 {
                    prop_assert!(top.count(h) >= c, "key {h} ({c} of {n}) lost");
                }
                if top.count(h) > 0 {
                    prop_assert!(top.count(h) >= c);
                }
            }
            prop_assert!(top.len() <= capacity);
        }

        /// Whatever the counts, the decision never fills the directory beyond its capacity,
        /// never adds a key twice or one that is hot, only evicts hot keys, and never evicts
        /// a key of the top.
        #[test]
        fn decisions_respect_the_limits(
            counts in proptest::collection::vec((0u64..60, 0u64..50), 0..40),
            hot in proptest::collection::btree_set(0u64..60, 0..20),
            hot_keys in 0usize..12,
            extra in 0usize..8,
        ) {
            let mut ranking: Vec<(u64, u64)> =
                counts.into_iter().collect::<HashMap<_, _>>().into_iter().collect();
            ranking.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let hot: Vec<u64> = hot.into_iter().collect();
            let r = HotSetRules {
                hot_keys,
                min_count: 2,
                capacity: hot.len().max(hot_keys + extra),
                add_sigmas: 0,
            };
            let c = decide(&r, &ranking, &hot, &Waiting::default());
            let after = hot.len() - c.evict.len() + c.add.len();
            prop_assert!(after <= r.capacity, "{} keys after, capacity {}", after, r.capacity);
            for h in &c.evict {
                prop_assert!(hot.contains(h));
                let top = ranking.iter().take(hot_keys).any(|(k, _)| k == h);
                prop_assert!(!top, "evicted {} of the top", h);
            }
            for h in &c.add { prop_assert!(!hot.contains(h)); }
            let unique: std::collections::HashSet<_> = c.add.iter().chain(&c.evict).collect();
            prop_assert_eq!(unique.len(), c.add.len() + c.evict.len());
        }
    }

    #[test]
    fn sampling_noise_evicts_nothing() {
        // The 3rd key has 1 (< 2 x min_count 2): too few samples to call anyone cooled, and
        // too few to be added.
        let ranking = [(10, 9), (11, 5), (12, 1)];
        assert_eq!(
            decide(&rules(3), &ranking, &[10, 11, 77], &Waiting::default()),
            Changes::default()
        );
    }

    #[test]
    fn the_hottest_keys_are_added_while_there_is_room() {
        let ranking = [(10, 50), (11, 40), (12, 30), (13, 1)];
        let c = decide(&rules(3), &ranking, &[], &Waiting::default());
        assert_eq!(c.add, vec![10, 11, 12]);
        assert!(c.evict.is_empty());
        // Too few samples: not added.
        let c = decide(&rules(4), &ranking, &[10, 11, 12], &Waiting::default());
        assert!(c.add.is_empty(), "13 has 1 sample, below min_count");
        // A new top key is added at once, next to the one it pushed out of the top.
        let ranking = [(10, 50), (13, 45), (11, 40), (12, 30)];
        let c = decide(&rules(3), &ranking, &[10, 11, 12], &Waiting::default());
        assert_eq!(c.add, vec![13]);
        assert!(
            c.evict.is_empty(),
            "12 is just outside the top: it stays for now"
        );
    }

    #[test]
    fn a_key_on_the_edge_does_not_flap() {
        // In a full directory, 13 overtakes 12 slightly: nothing changes.
        let ranking = [(10, 50), (11, 40), (13, 31), (12, 30)];
        let c = decide(&tight(3), &ranking, &[10, 11, 12], &Waiting::default());
        assert_eq!(c, Changes::default());
        // And back: still nothing.
        let ranking = [(10, 50), (11, 40), (12, 31), (13, 30)];
        assert_eq!(
            decide(&tight(3), &ranking, &[10, 11, 12], &Waiting::default()),
            Changes::default()
        );
        // Even with room, 13 stays out: it is not clear of 12, the best key outside the top.
        let ranking = [(10, 50), (11, 40), (13, 31), (12, 30)];
        let c = decide(&rules(3), &ranking, &[10, 11, 12], &Waiting::default());
        assert_eq!(c, Changes::default());
        // Once clear of it (a quarter more), 13 comes in, and 12 stays while it is close.
        let ranking = [(10, 50), (11, 40), (13, 38), (12, 30)];
        let c = decide(&rules(3), &ranking, &[10, 11, 12], &Waiting::default());
        assert_eq!((c.add, c.evict), (vec![13], vec![]));
        let ranking = [(10, 50), (11, 40), (12, 31), (13, 30)];
        assert_eq!(
            decide(&rules(3), &ranking, &[10, 11, 12, 13], &Waiting::default()),
            Changes::default()
        );
    }

    #[test]
    fn a_lead_that_sampling_noise_could_make_adds_nothing() {
        let s = ONE_SAMPLE;
        let sure = sure(3);
        // 13 leads 12, the best key outside the top, by half: over 10 vs 15 samples that is
        // 1.4 standard deviations, over 100 vs 150, 4.5.
        let few = [(10, 500 * s), (11, 400 * s), (13, 15 * s), (12, 10 * s)];
        assert_eq!(
            decide(&sure, &few, &[10, 11], &Waiting::default()),
            Changes::default()
        );
        assert_eq!(
            decide(&rules(3), &few, &[10, 11], &Waiting::default()).add,
            vec![13],
            "the margin alone"
        );
        let many = [(10, 500 * s), (11, 400 * s), (13, 150 * s), (12, 100 * s)];
        assert_eq!(
            decide(&sure, &many, &[10, 11], &Waiting::default()).add,
            vec![13]
        );
        // With nothing outside the top, a key needs sigmas²/2 samples.
        assert!(!stands_out(4 * s, 0, 3) && stands_out(5 * s, 0, 3));
        assert!(stands_out(1, 0, 0), "0 sigmas: any lead");
        assert!(!stands_out(5 * s, 5 * s, 0), "no lead");
    }

    #[test]
    fn the_longer_a_key_waits_the_more_it_must_lead() {
        let s = ONE_SAMPLE;
        let sure = sure(3);
        // 13 leads 12 by 3.7 standard deviations: enough for a key that just got to the top.
        let ranking = [(10, 500 * s), (11, 400 * s), (13, 140 * s), (12, 100 * s)];
        let mut waiting = Waiting::default();
        assert_eq!(decide(&sure, &ranking, &[10, 11], &waiting).add, vec![13]);
        // Not for one that has waited a second in the top: it is noise near the bar.
        for _ in 0..EPOCHS_PER_EXTRA_SIGMA {
            waiting.record(&ranking, 3, &[10, 11], &[]);
        }
        assert_eq!(
            waiting.sigmas(ADD_SIGMAS_DEFAULT, 13),
            ADD_SIGMAS_DEFAULT + 1
        );
        assert_eq!(
            waiting.sigmas(ADD_SIGMAS_DEFAULT, 10),
            ADD_SIGMAS_DEFAULT,
            "hot: no wait"
        );
        assert_eq!(waiting.sigmas(0, 13), 0, "no test, no wait");
        assert!(decide(&sure, &ranking, &[10, 11], &waiting).add.is_empty());
        // A lead of 6.8 deviations still gets it in.
        let clear = [(10, 500 * s), (11, 400 * s), (13, 180 * s), (12, 100 * s)];
        assert_eq!(decide(&sure, &clear, &[10, 11], &waiting).add, vec![13]);
        // Added, or fallen far from the top: forgotten (were it to come back, it is news).
        let mut added = waiting.clone();
        added.record(&ranking, 3, &[10, 11], &[13]);
        assert_eq!(added.sigmas(ADD_SIGMAS_DEFAULT, 13), ADD_SIGMAS_DEFAULT);
        let far: Vec<(u64, u64)> = (20..40).map(|h| (h, 1000 * s)).chain([(13, s)]).collect();
        waiting.record(&far, 3, &[], &[]);
        assert_eq!(waiting.sigmas(ADD_SIGMAS_DEFAULT, 13), ADD_SIGMAS_DEFAULT);
    }

    #[test]
    fn a_much_hotter_key_displaces_the_coldest_when_the_directory_is_full() {
        let ranking = [(13, 100), (10, 50), (11, 40), (12, 30)];
        let c = decide(&tight(3), &ranking, &[10, 11, 12], &Waiting::default());
        assert_eq!(c.add, vec![13]);
        assert_eq!(c.evict, vec![12]);
    }

    #[test]
    fn keys_that_fell_far_leave_even_without_a_replacement() {
        // 12 fell below a quarter of the 3rd key's count.
        let ranking = [(10, 50), (11, 40), (14, 30), (12, 7)];
        let c = decide(&rules(3), &ranking, &[10, 11, 12], &Waiting::default());
        assert_eq!(c.evict, vec![12]);
        assert_eq!(c.add, vec![14]);
        // A hot key no longer sampled at all has fallen far too.
        let c = decide(
            &rules(2),
            &[(10, 50), (11, 40)],
            &[10, 77],
            &Waiting::default(),
        );
        assert_eq!(c.evict, vec![77]);
        assert_eq!(c.add, vec![11]);
        // Below rank 4 x hot_keys, even with a fair count; above it, it stays.
        let ranking: Vec<(u64, u64)> = (1..=9).map(|h| (h, 51 - h)).collect();
        let c = decide(&rules(2), &ranking, &[1, 2, 8, 9], &Waiting::default());
        assert_eq!(c.evict, vec![9]);
    }

    #[test]
    fn an_idle_rack_keeps_its_hot_keys() {
        assert_eq!(
            decide(&rules(3), &[], &[10, 11], &Waiting::default()),
            Changes::default()
        );
    }

    #[test]
    fn no_hot_keys_wanted_evicts_them_all() {
        let ranking = [(10, 50), (11, 40), (12, 30)];
        let c = decide(&rules(0), &ranking, &[12, 11, 10], &Waiting::default());
        assert_eq!(c.evict, vec![12, 11, 10]);
        assert!(c.add.is_empty());
    }

    #[test]
    fn shares_are_of_every_sample_and_decay_alike() {
        let mut top = TopK::new(2);
        for _ in 0..6 {
            top.observe(1, b"a");
        }
        for _ in 0..3 {
            top.observe(2, b"b");
        }
        top.observe(3, b"c"); // takes over b's counter (space-saving)
        assert_eq!(top.recent_share_ppm(1), 600_000);
        top.end_epoch(decay_per_epoch());
        assert!(
            (top.recent_share_ppm(1) as i64 - 600_000).abs() <= 1_000,
            "a decay keeps shares"
        );
        assert_eq!(top.recent_share_ppm(99), 0);
        assert_eq!(TopK::new(1).recent_share_ppm(1), 0);
    }

    #[test]
    fn recent_shares_follow_the_load_while_the_ranking_remembers() {
        let mut top = TopK::new(16);
        let quiet = decay_for(10, half_life_samples(16));
        // 1 takes every sample for a while, then 2 does: 10 samples an epoch, a quiet rack.
        for (key, epochs) in [(1u64, 100), (2, 20)] {
            for _ in 0..epochs {
                for _ in 0..10 {
                    top.observe(key, b"k");
                }
                top.end_epoch(quiet);
            }
        }
        // 20 epochs are four of the recent half-lives: 2 has almost all of the recent samples.
        assert!(
            top.recent_share_ppm(2) > 900_000,
            "{}",
            top.recent_share_ppm(2)
        );
        assert!(
            top.recent_share_ppm(1) < 100_000,
            "{}",
            top.recent_share_ppm(1)
        );
        // The ranking spans a half-life of 1,024 samples: 1's 1,000 samples still lead.
        assert_eq!(top.ranking()[0].0, 1);
    }
}
