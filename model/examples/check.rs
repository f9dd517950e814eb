//! Checks one configuration of the model and prints what it found:
//! `cargo run --release -p pegasus-model --example check -- SERVERS [restart] [learn] [old]`
//! (`restart`: the switch may restart once; `learn`: clients learn the epoch from a refusal;
//! `old`: stamping-once off, the late-duplicate bug back).

use pegasus_model::RackModel;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let servers: u8 = args.first().and_then(|s| s.parse().ok()).unwrap_or(3);
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let model = RackModel {
        servers,
        clients: vec!['A', 'B'],
        restarts: has("restart"),
        clients_know_epoch: !has("learn"),
        stamp_once: !has("old"),
    };
    eprintln!("checking {model:?}");
    let report = model.check(2, has("old"));
    println!(
        "{} unique states ({} visits, depth {}) in {:.1} s; violations: {:?}",
        report.unique_states,
        report.states,
        report.max_depth,
        report.seconds,
        report
            .violations
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
    );
}
