//! The Pegasus client library.
//!
//! - [`cluster`]: the cluster description (a TOML file listing the rack's stores);
//! - [`placement`] (re-exported from `pegasus_common`): which store is a key's *home*, by
//!   consistent hashing with virtual nodes;
//! - [`client`]: an async client that sends GET and PUT to a key's home (the switch may steer
//!   it elsewhere), matches replies by request id, and retries with the same request id so that
//!   stores can deduplicate;
//! - [`membership`]: a chain's membership in etcd (its racks in order, which are alive);
//! - [`workload`]: which key a workload touches next (uniform or Zipf).

pub mod client;
pub mod cluster;
pub mod membership;
pub mod workload;

pub use client::{Client, ClientError, ClientOptions, ReadFrom, ReadResult};
pub use cluster::{ChainRole, Cluster};
/// Home placement lives in `pegasus_common` (the stores of a chain need it too).
pub use pegasus_common::placement;
