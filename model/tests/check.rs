//! The model checked exhaustively: the protocol keeps its properties on every reachable state
//! of a small rack, and the checker finds the late-duplicate bug when stamping-once is off.

use pegasus_model::RackModel;

/// `servers` servers, two clients that know the epoch, no restart.
fn rack(servers: u8, stamp_once: bool) -> RackModel {
    RackModel {
        servers,
        clients: vec!['A', 'B'],
        restarts: false,
        clients_know_epoch: true,
        stamp_once,
    }
}

/// Two servers, two clients that know the first epoch, and a switch that may restart once.
fn a_restart() -> RackModel {
    RackModel {
        servers: 2,
        clients: vec!['A', 'B'],
        restarts: true,
        clients_know_epoch: true,
        stamp_once: true,
    }
}

/// Two servers, two clients that learn the epoch from their first write's refusal.
fn learning_the_epoch() -> RackModel {
    RackModel {
        servers: 2,
        clients: vec!['A', 'B'],
        restarts: false,
        clients_know_epoch: false,
        stamp_once: true,
    }
}

fn assert_safe(model: RackModel) {
    let report = model.check(2, false);
    eprintln!(
        "{} unique states ({} visits, depth {}) in {:.1} s",
        report.unique_states, report.states, report.max_depth, report.seconds
    );
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert!(
        report.unique_states > 1000,
        "the space was explored: {report:?}"
    );
}

/// About a million states: a minute at most.
#[test]
fn two_servers_keep_every_property_in_every_state() {
    assert_safe(rack(2, true));
}

// The larger configurations take from minutes to hours on a 2-core machine: run them with
// `cargo test --release -p pegasus-model -- --ignored`; docs/measurements.md has their figures.

#[test]
#[ignore = "long: minutes to hours"]
fn three_servers_keep_every_property_in_every_state() {
    assert_safe(rack(3, true));
}

#[test]
#[ignore = "long: minutes to hours"]
fn a_restarting_switch_keeps_every_property_in_every_state() {
    assert_safe(a_restart());
}

#[test]
#[ignore = "long: minutes"]
fn clients_learning_the_epoch_keep_every_property_in_every_state() {
    assert_safe(learning_the_epoch());
}

#[test]
fn without_stamping_once_the_checker_finds_the_late_duplicate_bug() {
    let report = rack(3, false).check(2, true);
    eprintln!("{report:?}");
    let names: Vec<&str> = report.violations.iter().map(|(n, _)| *n).collect();
    assert!(
        names.contains(&"one version per write") || names.contains(&"linearizable"),
        "{names:?}"
    );
}
