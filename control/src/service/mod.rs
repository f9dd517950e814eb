//! The switch daemon (`pegasus switch`): its configuration, its start-up order and run loop,
//! and the two ways to reach it while it runs (the admin socket and the metrics endpoint).

pub mod admin;
pub mod config;
pub mod daemon;
pub mod metrics;
