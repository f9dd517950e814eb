//! A linearizability checker for recorded key-value histories.
//!
//! A history is a set of operations, each a read or a write of one key, with the times it was
//! called and returned. It is *linearizable* when every operation can be given a single
//! instant between its call and its return such that, taken in that order, every read returns
//! the value of the latest write before it (Herlihy & Wing, 1990).
//!
//! - [`register`]: the search for one key, Wing & Gong's algorithm with Lowe's memoization of
//!   (operations linearized, register value), as Porcupine implements it;
//! - [`history`]: the recorded form (JSON lines), split per key and checked key by key.
//!   Linearizability is compositional (P-compositionality): a history is linearizable exactly
//!   when each key's sub-history is, which turns one exponential search into many small ones.
//!
//! Operations that never returned (a write whose reply was lost) may have happened or not:
//! they are kept with no return time, so the search may place them anywhere after their call,
//! or at the very end, where they affect nothing. Reads that never returned tell nothing and
//! are left out.

pub mod history;
pub mod register;

pub use history::parse_lines;

pub use history::{KeyReport, Record, RecordKind, Report, check_records};
pub use register::{Action, Operation, Verdict, Violation, check_register};
