//! The subcommands that are more than a library call: each parses its arguments, calls one
//! library function and prints the result. `bench`, `history` and `experiment` are the
//! `pegasus-bench` library's own commands.

pub mod chain;
pub mod kv;
pub mod lab;
pub mod p4;
pub mod store;
pub mod switch;

/// Logs go to stderr as structured `tracing` lines; `RUST_LOG` overrides `default_level`.
pub fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
