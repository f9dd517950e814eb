//! The switch daemon (`pegasus switch`): its configuration, its start-up order and run loop,
//! the two ways to reach it while it runs (the admin socket and the metrics endpoint), and its
//! part in a chain's membership in etcd.

pub mod admin;
pub mod config;
pub mod daemon;
pub mod membership;
pub mod metrics;
