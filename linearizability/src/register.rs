//! Linearizability of one read/write register: Wing & Gong's search with Lowe's memoization.
//!
//! The history becomes a list of call and return events in time order. The search walks it:
//! at a call, it tries to linearize that operation now (the model must accept it: a write
//! always, a read only if it returns the register's value); at a return, the operation that
//! returns has not been linearized yet, which is too late, so it backtracks and tries the next
//! candidate. A linearized operation's two events leave the list, so the list's head is always
//! the earliest event not yet accounted for. Lowe's memoization skips a configuration (set of
//! linearized operations, register value) that was already explored: a dead end once is a dead
//! end always. This is what makes histories of thousands of operations tractable.

use std::collections::HashSet;

/// A value, as an id (the caller interns values; ids are compared, never interpreted).
pub type Value = u32;

/// What an operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A read that returned this value, or `None`: the key did not exist.
    Read(Option<Value>),
    /// A write of this value.
    Write(Value),
}

/// One operation on the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    /// When it was called (any monotonic clock shared by every client, e.g. nanoseconds).
    pub call: u64,
    /// When it returned; `None` if it never did (it may have taken effect or not).
    pub ret: Option<u64>,
    pub action: Action,
}

/// Why a history is not linearizable, as far as the search got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The operation (index into the input) that could not be placed: it returned before the
    /// search found any order that linearizes it, in every order explored as deep as this.
    pub stuck: usize,
    /// How many operations the deepest order explored linearized before getting stuck.
    pub linearized: usize,
    /// The last operations of that order (indices, oldest first; at most
    /// [`VIOLATION_TAIL_MAX`]), and the register value it left.
    pub tail: Vec<usize>,
    pub value: Option<Value>,
}

/// The verdict on one register's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable(Violation),
    /// The search took more than the step limit without a verdict.
    Unknown {
        steps: u64,
    },
}

/// Most operations of the deepest explored order that a [`Violation`] reports.
pub const VIOLATION_TAIL_MAX: usize = 8;

/// Why a history cannot be checked at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InputError {
    #[error("operation {index} returns ({ret}) before it is called ({call})")]
    ReturnBeforeCall { index: usize, call: u64, ret: u64 },
    #[error("{0} operations on one key; at most {OPERATIONS_MAX} are checked at once")]
    TooManyOperations(usize),
}

/// Most operations of one key's history (bounds the memo's bitsets and the event list).
pub const OPERATIONS_MAX: usize = 1 << 22;

/// Checks that `ops`, run on a register that starts as `initial`, are linearizable. The search
/// stops after `step_limit` steps (one step: one operation tried or undone) with
/// [`Verdict::Unknown`].
pub fn check_register(
    ops: &[Operation],
    initial: Option<Value>,
    step_limit: u64,
) -> Result<Verdict, InputError> {
    if ops.len() > OPERATIONS_MAX {
        return Err(InputError::TooManyOperations(ops.len()));
    }
    for (index, op) in ops.iter().enumerate() {
        if let Some(ret) = op.ret
            && ret < op.call
        {
            return Err(InputError::ReturnBeforeCall {
                index,
                call: op.call,
                ret,
            });
        }
    }
    Ok(Search::new(ops, initial).run(step_limit))
}

/// No entry (end of the list).
const NIL: usize = usize::MAX;
/// The list's head sentinel.
const HEAD: usize = 0;

/// One event in the doubly linked list; entry 0 is the head sentinel.
#[derive(Clone, Copy, Debug)]
struct Event {
    op: usize,
    is_call: bool,
    /// For a call: the entry of its return.
    matching: usize,
    prev: usize,
    next: usize,
}

struct Search<'a> {
    ops: &'a [Operation],
    events: Vec<Event>,
    /// Which operations are linearized, as a bitset.
    linearized: Vec<u64>,
    value: Option<Value>,
    /// Configurations already explored.
    seen: HashSet<(Vec<u64>, Option<Value>)>,
    /// The call entries of the operations linearized so far, in order, and the register value
    /// before each.
    stack: Vec<(usize, Option<Value>)>,
    deepest: Option<Violation>,
}

impl<'a> Search<'a> {
    fn new(ops: &'a [Operation], initial: Option<Value>) -> Search<'a> {
        // (time, returns-after-calls-at-equal-times, op): at equal times calls come first,
        // which treats touching operations as concurrent (the permissive reading).
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            order.push((op.call, false, i));
            order.push((op.ret.unwrap_or(u64::MAX), true, i));
        }
        order.sort_unstable();
        let mut events = Vec::with_capacity(order.len() + 1);
        events.push(Event {
            op: NIL,
            is_call: false,
            matching: NIL,
            prev: NIL,
            next: if order.is_empty() { NIL } else { 1 },
        });
        let mut return_entry = vec![NIL; ops.len()];
        for (pos, &(_, is_return, op)) in order.iter().enumerate() {
            let entry = pos + 1;
            events.push(Event {
                op,
                is_call: !is_return,
                matching: NIL,
                prev: entry - 1,
                next: if entry == order.len() { NIL } else { entry + 1 },
            });
            if is_return {
                return_entry[op] = entry;
            }
        }
        for event in events.iter_mut().skip(1) {
            if event.is_call {
                event.matching = return_entry[event.op];
                debug_assert_ne!(event.matching, NIL);
            }
        }
        Search {
            ops,
            events,
            linearized: vec![0; ops.len().div_ceil(64)],
            value: initial,
            seen: HashSet::new(),
            stack: Vec::new(),
            deepest: None,
        }
    }

    fn run(mut self, step_limit: u64) -> Verdict {
        let mut entry = self.events[HEAD].next;
        let mut steps = 0u64;
        while self.events[HEAD].next != NIL {
            steps += 1;
            if steps > step_limit {
                return Verdict::Unknown { steps: steps - 1 };
            }
            assert_ne!(entry, NIL, "a return event always ends the walk first");
            let event = self.events[entry];
            if event.is_call {
                if let Some(after) = self.apply(event.op) {
                    set_bit(&mut self.linearized, event.op, true);
                    if self.seen.insert((self.linearized.clone(), after)) {
                        self.stack.push((entry, self.value));
                        self.value = after;
                        self.lift(entry);
                        entry = self.events[HEAD].next;
                        continue;
                    }
                    set_bit(&mut self.linearized, event.op, false);
                }
                entry = event.next;
            } else {
                // `event.op` returns without being linearized: undo the last choice.
                self.note_stuck(event.op);
                let Some((call_entry, before)) = self.stack.pop() else {
                    return Verdict::NotLinearizable(
                        self.deepest.take().expect("noted just above"),
                    );
                };
                let op = self.events[call_entry].op;
                set_bit(&mut self.linearized, op, false);
                self.value = before;
                self.unlift(call_entry);
                entry = self.events[call_entry].next;
            }
        }
        debug_assert_eq!(self.stack.len(), self.ops.len());
        Verdict::Linearizable
    }

    /// The register value after `op`, if the model accepts `op` now.
    fn apply(&self, op: usize) -> Option<Option<Value>> {
        match self.ops[op].action {
            Action::Write(v) => Some(Some(v)),
            Action::Read(seen) => (seen == self.value).then_some(self.value),
        }
    }

    /// Records the deepest point the search reached, for the report.
    fn note_stuck(&mut self, op: usize) {
        let depth = self.stack.len();
        if self.deepest.as_ref().is_some_and(|d| d.linearized >= depth) {
            return;
        }
        let tail_start = depth.saturating_sub(VIOLATION_TAIL_MAX);
        self.deepest = Some(Violation {
            stuck: op,
            linearized: depth,
            tail: self.stack[tail_start..]
                .iter()
                .map(|&(e, _)| self.events[e].op)
                .collect(),
            value: self.value,
        });
    }

    /// Takes a call entry and its return out of the list.
    fn lift(&mut self, call: usize) {
        let ret = self.events[call].matching;
        for e in [call, ret] {
            let Event { prev, next, .. } = self.events[e];
            self.events[prev].next = next;
            if next != NIL {
                self.events[next].prev = prev;
            }
        }
    }

    /// Puts back what [`Self::lift`] took out (in reverse order, so the links are restored).
    fn unlift(&mut self, call: usize) {
        let ret = self.events[call].matching;
        for e in [ret, call] {
            let Event { prev, next, .. } = self.events[e];
            self.events[prev].next = e;
            if next != NIL {
                self.events[next].prev = e;
            }
        }
    }
}

fn set_bit(bits: &mut [u64], i: usize, on: bool) {
    let (word, mask) = (i / 64, 1u64 << (i % 64));
    if on {
        bits[word] |= mask;
    } else {
        bits[word] &= !mask;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: u64, ret: u64, action: Action) -> Operation {
        Operation {
            call,
            ret: Some(ret),
            action,
        }
    }
    fn w(call: u64, ret: u64, v: Value) -> Operation {
        op(call, ret, Action::Write(v))
    }
    fn r(call: u64, ret: u64, v: Option<Value>) -> Operation {
        op(call, ret, Action::Read(v))
    }
    fn check(ops: &[Operation]) -> Verdict {
        check_register(ops, None, 1_000_000).unwrap()
    }

    #[test]
    fn empty_and_sequential_histories_are_linearizable() {
        assert_eq!(check(&[]), Verdict::Linearizable);
        let ops = [
            r(0, 1, None),
            w(2, 3, 1),
            r(4, 5, Some(1)),
            w(6, 7, 2),
            r(8, 9, Some(2)),
        ];
        assert_eq!(check(&ops), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_caught() {
        // w(1) completes, then w(2) completes, then a read returns 1.
        let ops = [w(0, 1, 1), w(2, 3, 2), r(4, 5, Some(1))];
        let Verdict::NotLinearizable(v) = check(&ops) else {
            panic!("accepted a stale read")
        };
        assert_eq!(v.stuck, 2);
        assert_eq!(v.linearized, 2);
        assert_eq!(v.tail, vec![0, 1]);
        assert_eq!(v.value, Some(2));
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught() {
        let ops = [w(0, 1, 1), r(2, 3, Some(7))];
        assert!(matches!(check(&ops), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn a_read_from_the_future_is_caught() {
        // The read returns before the write that wrote its value is called.
        let ops = [r(0, 1, Some(1)), w(2, 3, 1)];
        assert!(matches!(check(&ops), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn new_then_old_across_clients_is_caught() {
        // The classic non-linearizable (but sequentially consistent) history: w(1) is slow;
        // one reader sees 1, then a later reader sees the old value.
        let ops = [w(0, 10, 1), r(1, 2, Some(1)), r(3, 4, None)];
        assert!(matches!(check(&ops), Verdict::NotLinearizable(_)));
        // Reversed (old then new) it is fine.
        let ops = [w(0, 10, 1), r(1, 2, None), r(3, 4, Some(1))];
        assert_eq!(check(&ops), Verdict::Linearizable);
    }

    #[test]
    fn overlapping_operations_may_take_effect_in_either_order() {
        // Two concurrent writes; reads after both may see either one, but then only that one.
        let ops = [w(0, 5, 1), w(1, 6, 2), r(7, 8, Some(1)), r(9, 10, Some(1))];
        assert_eq!(check(&ops), Verdict::Linearizable);
        let ops = [w(0, 5, 1), w(1, 6, 2), r(7, 8, Some(2)), r(9, 10, Some(2))];
        assert_eq!(check(&ops), Verdict::Linearizable);
        // But not flip-flop.
        let ops = [w(0, 5, 1), w(1, 6, 2), r(7, 8, Some(1)), r(9, 10, Some(2))];
        assert!(matches!(check(&ops), Verdict::NotLinearizable(_)));
    }

    #[test]
    fn writes_that_never_returned_may_or_may_not_have_happened() {
        let lost = Operation {
            call: 0,
            ret: None,
            action: Action::Write(1),
        };
        // Never seen: fine.
        assert_eq!(check(&[lost, r(5, 6, None)]), Verdict::Linearizable);
        // Seen, later: fine.
        assert_eq!(
            check(&[lost, r(5, 6, None), r(7, 8, Some(1))]),
            Verdict::Linearizable
        );
        // Seen, then unseen: not linearizable, as for a write that returned.
        assert!(matches!(
            check(&[lost, r(5, 6, Some(1)), r(7, 8, None)]),
            Verdict::NotLinearizable(_)
        ));
        // Cannot take effect before it was called.
        assert!(matches!(
            check(&[
                r(0, 1, Some(1)),
                Operation {
                    call: 2,
                    ret: None,
                    action: Action::Write(1)
                }
            ]),
            Verdict::NotLinearizable(_)
        ));
    }

    #[test]
    fn an_initial_value_is_honoured() {
        let ops = [r(0, 1, Some(9))];
        assert_eq!(
            check_register(&ops, Some(9), 100).unwrap(),
            Verdict::Linearizable
        );
        assert!(matches!(
            check_register(&ops, None, 100).unwrap(),
            Verdict::NotLinearizable(_)
        ));
    }

    #[test]
    fn bad_input_is_refused() {
        assert_eq!(
            check_register(&[r(5, 4, None)], None, 100),
            Err(InputError::ReturnBeforeCall {
                index: 0,
                call: 5,
                ret: 4
            })
        );
    }

    #[test]
    fn the_step_limit_gives_unknown() {
        let ops: Vec<_> = (0..10).map(|i| w(0, 100, i)).collect();
        let mut with_read = ops.clone();
        with_read.push(r(200, 201, Some(42)));
        assert!(matches!(
            check_register(&with_read, None, 5).unwrap(),
            Verdict::Unknown { steps: 5 }
        ));
    }

    #[test]
    fn memoization_keeps_wide_concurrency_tractable() {
        // 200 concurrent writers, then a read: the first order tried works.
        let mut ops: Vec<_> = (0..200).map(|i| w(0, 1000, i)).collect();
        ops.push(r(2000, 2001, Some(199)));
        assert_eq!(
            check_register(&ops, None, 10_000).unwrap(),
            Verdict::Linearizable
        );
        // 12 concurrent writers and a read of a value nobody wrote: every order fails. Without
        // the memo that is 12! (479 million) orders; with it, each (set, value) once.
        let mut ops: Vec<_> = (0..12).map(|i| w(0, 1000, i)).collect();
        ops.push(r(2000, 2001, Some(1000)));
        assert!(matches!(
            check_register(&ops, None, 2_000_000).unwrap(),
            Verdict::NotLinearizable(_)
        ));
    }
}
