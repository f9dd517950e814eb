//! The Pegasus storage server: an in-memory, versioned key-value store over UDP.
//!
//! - [`table`]: the sharded map key -> (version, value) and the write rule;
//! - [`dedup`]: the bounded per-client table that answers a retried write instead of applying
//!   it twice;
//! - [`capacity`]: an emulated service rate (`--capacity-ops`), so that a lab rack's hot server
//!   saturates as a real one would;
//! - [`chain`]: chain replication across racks: forwarded writes waiting for their
//!   acknowledgement, retransmitted until it comes;
//! - [`handler`]: one datagram in, at most one reply out: every rule of the protocol that a
//!   store applies, testable without sockets;
//! - [`server`]: the UDP sockets, worker tasks, load reporting and graceful shutdown.

pub mod capacity;
pub mod chain;
pub mod dedup;
pub mod handler;
pub mod server;
pub mod table;

pub use server::{Server, StoreConfig, serve};
