//! What a benchmark phase measured, and how it is told: latency histograms per operation
//! (HdrHistogram, microseconds, 3 significant figures), outcomes, replies per server and an
//! optional per-server timeline; the summary as YCSB-like lines or as JSON.

use hdrhistogram::Histogram;
use pegasus_common::{cache::SWITCH_SERVER_ID, directory::SERVERS_MAX};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

/// Longest latency told apart; longer ones are counted as this (one minute).
const LATENCY_MAX_US: u64 = 60_000_000;
/// Significant figures of the latency histograms.
const LATENCY_FIGURES: u8 = 3;

/// The operations of a workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Update,
}

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered by this server (or by the switch's cache: [`SWITCH_SERVER_ID`]).
    Ok { server: u8 },
    /// No reply after every attempt.
    Timeout,
    /// Refused, or the reply made no sense.
    Error,
}

/// One operation's tally.
struct OpStats {
    latency_us: Histogram<u64>,
    timeouts: u64,
    errors: u64,
}

impl OpStats {
    fn new() -> OpStats {
        OpStats {
            latency_us: Histogram::new_with_bounds(1, LATENCY_MAX_US, LATENCY_FIGURES)
                .expect("valid histogram bounds"),
            timeouts: 0,
            errors: 0,
        }
    }

    fn summary(&self) -> OpSummary {
        OpSummary {
            operations: self.latency_us.len(),
            timeouts: self.timeouts,
            errors: self.errors,
            latency_us: Latency::of(&self.latency_us),
        }
    }
}

/// Replies per server in consecutive intervals from the start of the run.
struct TimelineRecorder {
    start: Instant,
    interval: Duration,
    intervals: Vec<[u64; SERVERS_MAX as usize]>,
}

/// Collects what a phase measured.
pub struct Recorder {
    read: OpStats,
    update: OpStats,
    replies: [u64; SERVERS_MAX as usize],
    /// Replies the switch's cache answered.
    switch_replies: u64,
    timeline: Option<TimelineRecorder>,
}

impl Recorder {
    /// `timeline`: the run's start and the interval of a per-server timeline, if wanted.
    pub fn new(timeline: Option<(Instant, Duration)>) -> Recorder {
        Recorder {
            read: OpStats::new(),
            update: OpStats::new(),
            replies: [0; SERVERS_MAX as usize],
            switch_replies: 0,
            timeline: timeline.map(|(start, interval)| TimelineRecorder {
                start,
                interval,
                intervals: Vec::new(),
            }),
        }
    }

    /// Counts a request of `op` that took `latency` and ended with `outcome`.
    pub fn record(&mut self, op: OpKind, latency: Duration, outcome: Outcome) {
        let stats = match op {
            OpKind::Read => &mut self.read,
            OpKind::Update => &mut self.update,
        };
        match outcome {
            Outcome::Ok { server } => {
                let us = (latency.as_micros() as u64).clamp(1, LATENCY_MAX_US);
                stats
                    .latency_us
                    .record(us)
                    .expect("clamped into the histogram's range");
                if server == SWITCH_SERVER_ID {
                    self.switch_replies += 1;
                    return;
                }
                let server = server as usize % SERVERS_MAX as usize;
                self.replies[server] += 1;
                if let Some(t) = &mut self.timeline {
                    let i = (t.start.elapsed().as_nanos() / t.interval.as_nanos().max(1)) as usize;
                    if i >= t.intervals.len() {
                        t.intervals.resize(i + 1, [0; SERVERS_MAX as usize]);
                    }
                    t.intervals[i][server] += 1;
                }
            }
            Outcome::Timeout => stats.timeouts += 1,
            Outcome::Error => stats.errors += 1,
        }
    }

    /// The summary of a phase whose measured part lasted `seconds`, on a rack of `servers`.
    pub fn summarize(&self, setup: Setup, seconds: f64, servers: usize) -> Summary {
        let (read, update) = (self.read.summary(), self.update.summary());
        let mut all = self.read.latency_us.clone();
        all.add(&self.update.latency_us)
            .expect("histograms of the same bounds");
        let operations = read.operations + update.operations;
        let per_server: BTreeMap<u8, u64> = self
            .replies
            .iter()
            .enumerate()
            .filter(|&(_, &n)| n > 0)
            .map(|(s, &n)| (s as u8, n))
            .collect();
        let total: u64 = per_server.values().sum();
        let mean = total as f64 / servers.max(per_server.len()).max(1) as f64;
        let busiest = per_server.values().copied().max().unwrap_or(0);
        let timeline = self.timeline.as_ref().map(|t| {
            let width = t
                .intervals
                .iter()
                .filter_map(|iv| iv.iter().rposition(|&n| n > 0))
                .max()
                .map_or(0, |last| last + 1)
                .max(servers)
                .min(SERVERS_MAX as usize);
            Timeline {
                interval_ms: t.interval.as_millis() as u64,
                swap_at_ms: setup.swap_at_seconds.map(|s| (s * 1000.0) as u64),
                intervals: t.intervals.iter().map(|iv| iv[..width].to_vec()).collect(),
            }
        });
        Summary {
            seconds,
            operations,
            ops_per_second: operations as f64 / seconds.max(1e-9),
            errors: read.errors + update.errors + read.timeouts + update.timeouts,
            timeouts: read.timeouts + update.timeouts,
            latency_us: Latency::of(&all),
            read,
            update,
            server_share: per_server
                .iter()
                .map(|(&s, &n)| (s, n as f64 / total.max(1) as f64))
                .collect(),
            per_server,
            switch_answered: self.switch_replies,
            max_over_mean: if mean > 0.0 {
                busiest as f64 / mean
            } else {
                0.0
            },
            timeline,
            setup,
        }
    }
}

/// Which phase a summary is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Every key written once.
    Load,
    /// A mix of reads and updates.
    Run,
}

/// How keys were chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyOrder {
    /// Each key once, in rank order (the load phase).
    Sequential,
    Uniform,
    Zipf,
    Hotspot,
}

/// How requests were paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaceKind {
    /// A fixed number of requests outstanding.
    Closed,
    /// A fixed rate, whatever the replies.
    Open,
}

/// What was run: every setting that shapes the numbers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Setup {
    pub phase: Phase,
    pub keys: u64,
    /// Bytes per key name; `None`: unpadded names (`user42`).
    pub key_size: Option<usize>,
    pub value_size: usize,
    /// Fraction of requests that are reads.
    pub read_ratio: f64,
    /// With `theta` (Zipf) or `hotspot_fraction`/`hotspot_share` (hotspot).
    pub distribution: KeyOrder,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub theta: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hotspot_fraction: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hotspot_share: Option<f64>,
    /// Closed (`concurrency` requests outstanding) or open (`target_rate` requests/s,
    /// latency counted from each request's intended send time).
    pub pace: PaceKind,
    pub concurrency: Option<u32>,
    pub target_rate: Option<f64>,
    pub warmup_seconds: f64,
    /// When the hot set changed, in seconds from the start of the run (warm-up included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_at_seconds: Option<f64>,
    /// Clients (client ids) the requests were spread over; absent in summaries written
    /// before the generator had more than one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<u16>,
    pub seed: u64,
}

/// Latency percentiles, in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub mean: f64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            mean: h.mean(),
            min: h.min(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// One operation's part of the summary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OpSummary {
    /// Answered requests.
    pub operations: u64,
    pub timeouts: u64,
    pub errors: u64,
    pub latency_us: Latency,
}

/// Replies per server per interval, from the start of the run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timeline {
    pub interval_ms: u64,
    pub swap_at_ms: Option<u64>,
    /// `intervals[i][server]`: replies from `server` received in interval i.
    pub intervals: Vec<Vec<u64>>,
}

/// What a phase did (the `--json` document).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub setup: Setup,
    /// Length of the measured part (after the warm-up).
    pub seconds: f64,
    /// Answered requests in the measured part.
    pub operations: u64,
    pub ops_per_second: f64,
    /// Requests that failed (timeouts included).
    pub errors: u64,
    pub timeouts: u64,
    /// Every answered request.
    pub latency_us: Latency,
    pub read: OpSummary,
    pub update: OpSummary,
    /// Replies per answering server.
    pub per_server: BTreeMap<u8, u64>,
    /// Replies the switch answered from its cache (the cache baseline), in no server's count.
    pub switch_answered: u64,
    /// Each answering server's share of the replies.
    pub server_share: BTreeMap<u8, f64>,
    /// Busiest server's replies over the mean per server (servers of the cluster that
    /// answered nothing count).
    pub max_over_mean: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
}

impl Summary {
    /// The summary as YCSB prints it: `[SECTION], Metric, value` lines.
    pub fn ycsb_lines(&self) -> String {
        let mut out = String::new();
        let mut line = |section: &str, metric: &str, value: String| {
            out.push_str(&format!("[{section}], {metric}, {value}\n"));
        };
        line(
            "OVERALL",
            "RunTime(ms)",
            format!("{:.0}", self.seconds * 1000.0),
        );
        line(
            "OVERALL",
            "Throughput(ops/sec)",
            format!("{:.1}", self.ops_per_second),
        );
        for (section, op) in [("READ", &self.read), ("UPDATE", &self.update)] {
            if op.operations + op.timeouts + op.errors == 0 {
                continue;
            }
            let l = &op.latency_us;
            line(section, "Operations", op.operations.to_string());
            line(section, "AverageLatency(us)", format!("{:.1}", l.mean));
            line(section, "MinLatency(us)", l.min.to_string());
            line(section, "MaxLatency(us)", l.max.to_string());
            line(section, "50thPercentileLatency(us)", l.p50.to_string());
            line(section, "90thPercentileLatency(us)", l.p90.to_string());
            line(section, "99thPercentileLatency(us)", l.p99.to_string());
            line(section, "99.9PercentileLatency(us)", l.p999.to_string());
            line(section, "Return=OK", op.operations.to_string());
            if op.timeouts > 0 {
                line(section, "Return=TIMEOUT", op.timeouts.to_string());
            }
            if op.errors > 0 {
                line(section, "Return=ERROR", op.errors.to_string());
            }
        }
        for (server, share) in &self.server_share {
            line(
                &format!("SERVER {server}"),
                "Share(%)",
                format!("{:.2}", share * 100.0),
            );
        }
        if self.switch_answered > 0 {
            line("SWITCH", "Answered", self.switch_answered.to_string());
        }
        line(
            "SERVERS",
            "BusiestOverMean",
            format!("{:.3}", self.max_over_mean),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Setup {
        Setup {
            phase: Phase::Run,
            keys: 10,
            key_size: None,
            value_size: 8,
            read_ratio: 0.5,
            distribution: KeyOrder::Uniform,
            theta: None,
            hotspot_fraction: None,
            hotspot_share: None,
            pace: PaceKind::Closed,
            concurrency: Some(1),
            target_rate: None,
            warmup_seconds: 0.0,
            swap_at_seconds: None,
            clients: Some(4),
            seed: 1,
        }
    }

    #[test]
    fn the_summary_reads_back_as_it_was_written() {
        let mut r = Recorder::new(None);
        r.record(
            OpKind::Read,
            Duration::from_micros(7),
            Outcome::Ok { server: 2 },
        );
        let written = r.summarize(setup(), 1.0, 3);
        let json = serde_json::to_string(&written).unwrap();
        let read: Summary = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&read).unwrap(), json);
        assert_eq!(read.setup.phase, Phase::Run);
        assert_eq!(read.per_server, BTreeMap::from([(2, 1)]));
        // The documented spelling of the enums (docs/bench.md).
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["setup"]["distribution"], "uniform");
        assert_eq!(value["setup"]["pace"], "closed");
        // A renamed or missing field is an error, not a silent 0.
        let broken = json.replace("\"ops_per_second\"", "\"ops_per_sec\"");
        assert!(serde_json::from_str::<Summary>(&broken).is_err());
    }

    #[test]
    fn outcomes_and_latencies_are_tallied_per_operation_and_server() {
        let mut r = Recorder::new(None);
        for us in 1..=100u64 {
            r.record(
                OpKind::Read,
                Duration::from_micros(us * 10),
                Outcome::Ok { server: 0 },
            );
        }
        r.record(
            OpKind::Update,
            Duration::from_micros(5),
            Outcome::Ok { server: 1 },
        );
        r.record(OpKind::Update, Duration::from_secs(1), Outcome::Timeout);
        r.record(OpKind::Read, Duration::from_secs(1), Outcome::Error);
        // Answered by the switch's cache: an operation, but no server's.
        r.record(
            OpKind::Read,
            Duration::from_micros(20),
            Outcome::Ok {
                server: SWITCH_SERVER_ID,
            },
        );
        let s = r.summarize(setup(), 2.0, 4);
        assert_eq!(s.switch_answered, 1);
        assert_eq!(
            (s.read.operations, s.read.errors, s.read.timeouts),
            (101, 1, 0)
        );
        assert_eq!((s.update.operations, s.update.timeouts), (1, 1));
        assert_eq!((s.operations, s.errors, s.timeouts), (102, 2, 1));
        assert_eq!(s.ops_per_second, 51.0);
        // 3 significant figures.
        assert!((495..=505).contains(&s.read.latency_us.p50), "{:?}", s.read);
        assert!(
            (985..=1000).contains(&s.read.latency_us.p99),
            "{:?}",
            s.read
        );
        assert_eq!(s.read.latency_us.max, 1000);
        assert_eq!(s.latency_us.min, 5);
        assert_eq!(s.per_server, BTreeMap::from([(0, 100), (1, 1)]));
        // The mean counts the two servers that answered nothing.
        assert!((s.max_over_mean - 100.0 / (101.0 / 4.0)).abs() < 1e-9);
        let lines = s.ycsb_lines();
        assert!(lines.contains("[READ], Operations, 101\n"), "{lines}");
        assert!(lines.contains("[SWITCH], Answered, 1\n"), "{lines}");
        assert!(lines.contains("[READ], Return=ERROR, 1\n"), "{lines}");
        assert!(lines.contains("[UPDATE], Return=TIMEOUT, 1\n"), "{lines}");
        assert!(lines.contains("[SERVER 1], Share(%), 0.99\n"), "{lines}");
    }

    #[test]
    fn a_timeline_counts_replies_per_interval() {
        let start = Instant::now() - Duration::from_millis(25);
        let mut r = Recorder::new(Some((start, Duration::from_millis(10))));
        r.record(OpKind::Read, Duration::ZERO, Outcome::Ok { server: 2 });
        let s = r.summarize(setup(), 1.0, 3);
        let t = s.timeline.unwrap();
        assert_eq!(t.interval_ms, 10);
        assert_eq!(
            t.intervals,
            vec![vec![0, 0, 0], vec![0, 0, 0], vec![0, 0, 1]]
        );
    }
}
