//! The `no_std` core of Pegasus, shared by the XDP program, the store, the client, the
//! controller and the tests. It is the only contract between them:
//!
//! - [`wire`]: the UDP message format (fixed 40-byte header at a fixed offset, then the body),
//!   encoded and decoded without ever panicking;
//! - [`hash`]: the one key-hash function used everywhere;
//! - [`version`]: how a version packs the switch epoch and a counter;
//! - [`cache`]: the rules of the in-switch cache baseline (NetCache-style);
//! - [`checksum`]: incremental Internet-checksum updates for the fields the switch rewrites;
//! - [`switch`]: the plain-old-data types of the switch's BPF maps and its counter indices;
//! - [`directory`]: the coherence directory's rules;
//! - [`roles`]: the trust boundary: what each switch port's role admits;
//! - [`once`]: at-most-once writes: one version for every copy of a write;
//! - [`fault`]: the lab's fault injector (drop, duplicate, delay, reorder), not the switch;
//! - [`placement`] (user space): a key's home server, the same in every rack of a chain.
//!
//! Everything here is a plain function over plain values so that the eBPF program (built for
//! `bpfel-unknown-none`) and user space run literally the same code.
#![cfg_attr(not(test), no_std)]

#[cfg(any(feature = "user", test))]
extern crate alloc;

pub mod cache;
pub mod checksum;
pub mod directory;
pub mod fault;
pub mod hash;
pub mod once;
#[cfg(any(feature = "user", test))]
pub mod placement;
pub mod roles;
pub mod switch;
pub mod version;
pub mod wire;
