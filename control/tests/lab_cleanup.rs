//! A lab whose `up` fails half way removes everything it had made. Needs root.

use pegasus_control::{
    lab::netns,
    lab::{self, Dataplane, LabSpec},
    switch::AttachMode,
};
use std::path::Path;

#[test]
fn a_failed_up_leaves_nothing_behind() {
    assert!(netns::is_root(), "needs root (network namespaces)");
    let name = format!("fail-{}", std::process::id());
    let spec = LabSpec {
        name: name.clone(),
        servers: 2,
        clients: 1,
        racks: 1,
        capacity_ops: None,
        dataplane: Dataplane::Kernel,
        mode: AttachMode::Native,
        port: 7400,
        store_threads: 1,
        replication: 3,
        policy: pegasus_control::service::config::PolicyName::LeastLoaded,
        directory_capacity: Some(64),
        hot_keys: Some(0),
        stats_interval_ms: 10,
        sample_period: 16,
        sample_target: 0,
        lease_ttl_secs: 1,
    };
    // `false` exits at once instead of serving: up fails after the namespaces exist.
    let err = lab::up(&spec, Path::new("/bin/false")).unwrap_err();
    assert!(format!("{err:#}").contains("exited"), "{err:#}");
    let prefix = format!("pg-{name}-");
    let left: Vec<String> = netns::list()
        .unwrap()
        .into_iter()
        .filter(|ns| ns.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left behind: {left:?}");
    assert!(!lab::lab_dir(&name).exists());
    // And down on a lab that is not there is not an error.
    lab::down(&name).unwrap();
}
