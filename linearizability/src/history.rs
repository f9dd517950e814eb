//! Recorded histories: one JSON object per operation and line, from any number of clients,
//! split per key and checked key by key.

use crate::register::{self, Action, InputError, Operation, Value, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Read or write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    Read,
    Write,
}

/// One operation as a client recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Who ran it (for reports only).
    pub client: String,
    pub key: String,
    pub kind: RecordKind,
    /// The value written, or the value read (`None`: the key did not exist).
    pub value: Option<String>,
    /// Call and return times, in nanoseconds of a clock every client shares (on one host:
    /// `CLOCK_MONOTONIC`).
    pub call_ns: u64,
    /// `None` if no reply came: a write may then have taken effect or not; a read is ignored.
    pub return_ns: Option<u64>,
    /// The server that answered, and the version it reported (for reports only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

/// The verdict on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum KeyVerdict {
    Linearizable,
    NotLinearizable {
        /// The operation no order could place, and the last operations of the deepest
        /// order the search found, oldest first.
        stuck: Record,
        linearized: usize,
        tail: Vec<Record>,
        /// The value the register held at that point.
        value: Option<String>,
    },
    Unknown {
        steps: u64,
    },
    /// The key's records are malformed.
    Invalid {
        reason: String,
    },
}

/// What the checker found for one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyReport {
    pub key: String,
    pub reads: usize,
    pub writes: usize,
    /// Writes with no reply (kept; they may have happened).
    pub writes_unanswered: usize,
    /// Reads with no reply (left out).
    pub reads_unanswered: usize,
    /// Servers that answered reads of this key.
    pub read_servers: BTreeSet<u8>,
    #[serde(flatten)]
    pub verdict: KeyVerdict,
}

/// What the checker found for a whole history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    pub operations: usize,
    pub keys: usize,
    pub linearizable_keys: usize,
    pub not_linearizable_keys: usize,
    pub unknown_keys: usize,
    pub invalid_keys: usize,
    /// Every key's report, by key.
    pub per_key: Vec<KeyReport>,
}

impl Report {
    /// True when every key was found linearizable.
    pub fn linearizable(&self) -> bool {
        self.linearizable_keys == self.keys
    }
}

/// Checks a history, key by key (P-compositionality: the whole is linearizable exactly when
/// every key's sub-history is). Every key starts absent. `step_limit` bounds each key's search.
pub fn check_records(records: &[Record], step_limit: u64) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in records {
        by_key.entry(&r.key).or_default().push(r);
    }
    let per_key: Vec<KeyReport> = by_key
        .into_iter()
        .map(|(key, records)| check_key(key, &records, step_limit))
        .collect();
    let count = |f: fn(&KeyVerdict) -> bool| per_key.iter().filter(|k| f(&k.verdict)).count();
    Report {
        operations: records.len(),
        keys: per_key.len(),
        linearizable_keys: count(|v| matches!(v, KeyVerdict::Linearizable)),
        not_linearizable_keys: count(|v| matches!(v, KeyVerdict::NotLinearizable { .. })),
        unknown_keys: count(|v| matches!(v, KeyVerdict::Unknown { .. })),
        invalid_keys: count(|v| matches!(v, KeyVerdict::Invalid { .. })),
        per_key,
    }
}

fn check_key(key: &str, records: &[&Record], step_limit: u64) -> KeyReport {
    let mut values = Interner::default();
    let mut report = KeyReport {
        key: key.to_string(),
        reads: 0,
        writes: 0,
        writes_unanswered: 0,
        reads_unanswered: 0,
        read_servers: BTreeSet::new(),
        verdict: KeyVerdict::Linearizable,
    };
    // The checked operations, and the record each came from.
    let mut ops = Vec::with_capacity(records.len());
    let mut origin = Vec::with_capacity(records.len());
    for &r in records {
        match r.kind {
            RecordKind::Read => {
                report.reads += 1;
                if r.return_ns.is_none() {
                    report.reads_unanswered += 1;
                    continue;
                }
                report.read_servers.extend(r.server);
                ops.push(Operation {
                    call: r.call_ns,
                    ret: r.return_ns,
                    action: Action::Read(values.intern(r.value.as_deref())),
                });
            }
            RecordKind::Write => {
                report.writes += 1;
                let Some(value) = values.intern(r.value.as_deref()) else {
                    report.verdict = KeyVerdict::Invalid {
                        reason: format!("a write without a value: {r:?}"),
                    };
                    return report;
                };
                if r.return_ns.is_none() {
                    report.writes_unanswered += 1;
                }
                ops.push(Operation {
                    call: r.call_ns,
                    ret: r.return_ns,
                    action: Action::Write(value),
                });
            }
        }
        origin.push(r);
    }
    report.verdict = match register::check_register(&ops, None, step_limit) {
        Ok(Verdict::Linearizable) => KeyVerdict::Linearizable,
        Ok(Verdict::NotLinearizable(v)) => KeyVerdict::NotLinearizable {
            stuck: origin[v.stuck].clone(),
            linearized: v.linearized,
            tail: v.tail.iter().map(|&i| origin[i].clone()).collect(),
            value: v.value.map(|id| values.names[id as usize].to_string()),
        },
        Ok(Verdict::Unknown { steps }) => KeyVerdict::Unknown { steps },
        Err(e @ (InputError::ReturnBeforeCall { .. } | InputError::TooManyOperations(_))) => {
            KeyVerdict::Invalid {
                reason: e.to_string(),
            }
        }
    };
    report
}

/// Values become ids; the same string is the same value.
#[derive(Default)]
struct Interner<'a> {
    ids: HashMap<&'a str, Value>,
    names: Vec<&'a str>,
}

impl<'a> Interner<'a> {
    fn intern(&mut self, value: Option<&'a str>) -> Option<Value> {
        let value = value?;
        Some(*self.ids.entry(value).or_insert_with(|| {
            self.names.push(value);
            (self.names.len() - 1) as Value
        }))
    }
}

/// Reads records from JSON lines (blank lines skipped). Errors name the line.
pub fn parse_lines(text: &str) -> Result<Vec<Record>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|e| format!("line {}: {e}: {line}", n + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(
        client: &str,
        key: &str,
        kind: RecordKind,
        value: Option<&str>,
        t: (u64, u64),
    ) -> Record {
        Record {
            client: client.into(),
            key: key.into(),
            kind,
            value: value.map(str::to_string),
            call_ns: t.0,
            return_ns: Some(t.1),
            server: Some(1),
            version: None,
        }
    }

    #[test]
    fn keys_are_checked_apart_and_a_violation_names_its_operations() {
        let records = vec![
            rec("a", "x", RecordKind::Write, Some("1"), (0, 1)),
            rec("a", "y", RecordKind::Write, Some("1"), (0, 1)),
            rec("b", "x", RecordKind::Write, Some("2"), (2, 3)),
            // Stale read on x; y is fine (its own write), though the same value string.
            rec("c", "x", RecordKind::Read, Some("1"), (4, 5)),
            rec("c", "y", RecordKind::Read, Some("1"), (4, 5)),
        ];
        let report = check_records(&records, 1000);
        assert_eq!((report.keys, report.linearizable_keys), (2, 1));
        assert!(!report.linearizable());
        let x = &report.per_key[0];
        assert_eq!(x.key, "x");
        let KeyVerdict::NotLinearizable {
            stuck, tail, value, ..
        } = &x.verdict
        else {
            panic!("{x:?}")
        };
        assert_eq!(stuck, &records[3]);
        assert_eq!(tail, &vec![records[0].clone(), records[2].clone()]);
        assert_eq!(value.as_deref(), Some("2"));
    }

    #[test]
    fn unanswered_reads_are_left_out_and_unanswered_writes_kept() {
        let mut lost_read = rec("a", "x", RecordKind::Read, Some("junk"), (0, 0));
        lost_read.return_ns = None;
        let mut lost_write = rec("a", "x", RecordKind::Write, Some("1"), (0, 0));
        lost_write.return_ns = None;
        let seen = rec("b", "x", RecordKind::Read, Some("1"), (5, 6));
        let report = check_records(&[lost_read, lost_write, seen], 1000);
        assert!(report.linearizable(), "{report:?}");
        assert_eq!(report.per_key[0].reads_unanswered, 1);
        assert_eq!(report.per_key[0].writes_unanswered, 1);
    }

    #[test]
    fn malformed_records_make_the_key_invalid() {
        let backwards = rec("a", "x", RecordKind::Read, None, (5, 4));
        let no_value = rec("a", "y", RecordKind::Write, None, (0, 1));
        let report = check_records(&[backwards, no_value], 1000);
        assert_eq!(report.invalid_keys, 2);
        assert!(!report.linearizable());
    }

    #[test]
    fn json_lines_round_trip_and_errors_name_the_line() {
        let r = rec("a", "x", RecordKind::Write, Some("v"), (1, 2));
        let text = format!("{}\n\n{}\n", serde_json::to_string(&r).unwrap(), "{oops");
        let err = parse_lines(&text).unwrap_err();
        assert!(err.starts_with("line 3:"), "{err}");
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(parse_lines(&text).unwrap(), vec![r]);
    }
}
