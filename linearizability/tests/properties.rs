//! Property tests of the checker: it accepts every history a real atomic register can produce,
//! and on small histories it agrees with a brute-force search over every order.

use pegasus_linearizability::register::{Action, Operation, Value, Verdict, check_register};
use proptest::prelude::*;

/// Brute force: is there an order of `ops` that respects real time (a before b whenever a
/// returned before b was called) and the register's semantics? Unreturned operations may also
/// be left out.
fn brute_force(ops: &[Operation]) -> bool {
    fn go(ops: &[Operation], done: &mut Vec<bool>, value: Option<Value>) -> bool {
        if done.iter().zip(ops).all(|(&d, op)| d || op.ret.is_none()) {
            return true;
        }
        for i in 0..ops.len() {
            if done[i] {
                continue;
            }
            // i may go next only if no pending operation returned before i was called.
            let blocked = ops
                .iter()
                .enumerate()
                .any(|(j, o)| !done[j] && j != i && o.ret.is_some_and(|ret| ret < ops[i].call));
            if blocked {
                continue;
            }
            let after = match ops[i].action {
                Action::Write(v) => Some(v),
                Action::Read(seen) if seen == value => value,
                Action::Read(_) => continue,
            };
            done[i] = true;
            if go(ops, done, after) {
                return true;
            }
            done[i] = false;
        }
        false
    }
    go(ops, &mut vec![false; ops.len()], None)
}

fn small_history() -> impl Strategy<Value = Vec<Operation>> {
    let op = (
        0u64..20,
        prop::option::weighted(0.9, 0u64..8),
        prop_oneof![
            (0u32..3).prop_map(Action::Write),
            prop::option::of(0u32..3).prop_map(Action::Read),
        ],
    )
        .prop_map(|(call, len, action)| Operation {
            call,
            // Unreturned reads are not part of histories (they tell nothing).
            ret: match (len, action) {
                (None, Action::Write(_)) => None,
                (len, _) => Some(call + len.unwrap_or(3)),
            },
            action,
        });
    prop::collection::vec(op, 0..8)
}

/// A history from a real atomic register: each operation takes effect at a random instant
/// inside its interval, in instant order; reads return what the register holds then.
fn atomic_register_history() -> impl Strategy<Value = Vec<Operation>> {
    prop::collection::vec(
        (
            0u64..1000,
            1u64..100,
            0u64..100,
            any::<bool>(),
            any::<bool>(),
        ),
        1..60,
    )
    .prop_map(|specs| {
        let mut ops: Vec<(u64, Operation)> = specs
            .iter()
            .enumerate()
            .map(|(i, &(call, len, at, is_write, returned))| {
                let point = call + at % len;
                let action = if is_write {
                    Action::Write(i as Value)
                } else {
                    Action::Read(None)
                };
                let ret = (returned || !is_write).then_some(call + len);
                (point, Operation { call, ret, action })
            })
            .collect();
        ops.sort_by_key(|(point, _)| *point);
        let mut value = None;
        for (_, op) in &mut ops {
            match &mut op.action {
                Action::Write(v) => value = Some(*v),
                Action::Read(seen) => *seen = value,
            }
        }
        ops.into_iter().map(|(_, op)| op).collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn agrees_with_brute_force_on_small_histories(ops in small_history()) {
        let verdict = check_register(&ops, None, 10_000_000).unwrap();
        prop_assert_ne!(&verdict, &Verdict::Unknown { steps: 10_000_000 });
        prop_assert_eq!(verdict == Verdict::Linearizable, brute_force(&ops), "{:?}", ops);
    }

    #[test]
    fn accepts_every_history_of_an_atomic_register(ops in atomic_register_history()) {
        prop_assert_eq!(check_register(&ops, None, 10_000_000).unwrap(), Verdict::Linearizable);
    }
}
