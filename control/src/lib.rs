//! The Pegasus rack controller.
//!
//! - [`switch`]: the control library of the XDP switch. It alone loads the program, owns its
//!   maps (configuration, version counter, ports, counters) and attaches it to ports; it can
//!   also run the real program on a synthetic packet (`BPF_PROG_TEST_RUN`), which is how the
//!   program is unit-tested and benchmarked.
//! - [`controller`]: owns the loaded switch and changes its directory safely: adds hot keys
//!   (replicating them from home) and evicts them (writing back to home first).
//! - [`switch::admin`]: the running switch's local admin socket (status, counters, hot keys),
//!   used by `pegasus switch status|hot` and `pegasus lab status`.
//! - [`lab`]: builds an emulated rack on one Linux host from network namespaces and veth
//!   pairs, starts stores and the switch in it, and removes all of it again.
//! - [`netns`]: the small helpers over `ip` and `setns(2)` that the lab and tests use.

pub mod controller;
pub mod fault;
pub mod hotkeys;
pub mod lab;
pub mod netns;
pub mod state;
pub mod switch;
