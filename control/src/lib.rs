//! The Pegasus rack: the XDP switch's control library, its controller, the daemon that runs
//! them, and the lab that emulates racks on one host. One room per concern:
//!
//! - [`switch`]: loads the XDP program and owns its maps (as Katran's `KatranLb`); nothing
//!   else touches them. Also runs the real program on a synthetic packet
//!   (`BPF_PROG_TEST_RUN`).
//! - [`controller`]: changes the directory safely (adds hot keys and replicates them from
//!   home; evicts them after writing home back), detects hot keys from the switch's samples
//!   ([`controller::hotkeys`]), recovers after a restart, and persists the epoch and hot keys
//!   ([`controller::state`]).
//! - [`service`]: the switch daemon: its configuration ([`service::config::SwitchConfig`],
//!   from flags or a file), its start-up order and run loop ([`service::daemon`]), its admin
//!   socket ([`service::admin`]) and its Prometheus metrics ([`service::metrics`]).
//! - [`lab`]: emulated racks on one Linux host (network namespaces, veth pairs, processes),
//!   with the namespace helpers ([`lab::netns`]) and fault injection ([`lab::fault`]).
//! - [`p4`]: the switch's P4 face: its generated constants and a P4 rack's control plane as
//!   table entries (`pegasus p4`).
//! - `testkit` (feature `testkit`): a packet builder, a namespace testbed for running the
//!   program on synthetic packets, the fixtures' shared helpers, and the per-packet cost
//!   measurement (`pegasus switch cost`).
//!
//! Who calls whom: `service` drives `controller`, which drives `switch`; `lab` starts
//! `service` processes and talks to them through the admin socket only; `testkit` drives
//! `switch` directly.

pub mod controller;
pub mod lab;
pub mod p4;
pub mod service;
pub mod switch;
#[cfg(feature = "testkit")]
pub mod testkit;
