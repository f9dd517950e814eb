//! The membership layer against a real etcd (Debian's `etcd-server`, which `scripts/setup.sh`
//! installs), started on loopback ports of its own in a scratch directory and stopped by the
//! test: compare-and-swap lets one of two racing writers win, a lease that is not renewed
//! takes its liveness key with it, and a follower sees every new configuration and keeps the
//! last one while etcd is away.

use pegasus_client::{
    cluster::{Rack, ServerEntry},
    membership::{ChainConfig, Etcd, Liveness},
};
use std::{
    collections::BTreeSet,
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};
use tokio::sync::watch;

/// An etcd of its own, killed on drop.
struct TestEtcd {
    child: Child,
    url: String,
    dir: std::path::PathBuf,
}

impl TestEtcd {
    fn start() -> TestEtcd {
        let free = || {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (client, peer) = (free(), free());
        let dir =
            std::env::temp_dir().join(format!("pegasus-etcd-{}-{client}", std::process::id()));
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(&dir)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("test={peer_url}")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is installed (scripts/setup.sh)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        TestEtcd { child, url, dir }
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rack(id: u8) -> Rack {
    Rack {
        id: Some(id),
        controllers: Vec::new(),
        servers: vec![ServerEntry {
            id: 0,
            addr: format!("10.{}.0.2:7400", 1 + 16 * id).parse().unwrap(),
        }],
    }
}

fn three_racks() -> ChainConfig {
    ChainConfig {
        epoch: 1,
        version_epoch: 0,
        racks: (0..3).map(rack).collect(),
        joining: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_racing_reconfigurations_wins() {
    let etcd = TestEtcd::start();
    let a = Etcd::connect(&etcd.url, "race").await.unwrap();
    let b = Etcd::connect(&etcd.url, "race").await.unwrap();
    let first = a.create_config(&three_racks()).await.unwrap();
    // Creating again changes nothing.
    let again = b
        .create_config(&ChainConfig {
            epoch: 9,
            ..three_racks()
        })
        .await
        .unwrap();
    assert_eq!(again, first);
    // Both saw rack 1 fail; both try to write the same change from the same revision.
    let without = first
        .config
        .without_failed(&BTreeSet::from([0, 2]))
        .unwrap();
    let (won_a, won_b) = tokio::join!(
        a.replace_config(first.revision, &without),
        b.replace_config(first.revision, &without)
    );
    assert!(won_a.unwrap() ^ won_b.unwrap(), "exactly one wins");
    let now = a.read_config().await.unwrap().unwrap();
    assert_eq!((now.config.epoch, now.config.rack_ids()), (2, vec![0, 2]));
    // A writer that read before the change cannot overwrite it.
    assert!(
        !b.replace_config(first.revision, &first.config)
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_not_renewed_takes_its_rack_with_it() {
    let etcd = TestEtcd::start();
    let e = Etcd::connect(&etcd.url, "lease").await.unwrap();
    let liveness = Liveness {
        switch_epoch: 3,
        ..Liveness::default()
    };
    let kept = e
        .register(0, Duration::from_secs(1), &liveness)
        .await
        .unwrap();
    let _dropped = e
        .register(1, Duration::from_secs(1), &liveness)
        .await
        .unwrap();
    let alive: Vec<u8> = e
        .alive()
        .await
        .unwrap()
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    assert_eq!(alive, vec![0, 1]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(e.renew(kept).await.unwrap(), "a renewed lease stays");
        let alive: Vec<(u8, Liveness)> = e.alive().await.unwrap();
        if alive.len() == 1 {
            assert_eq!(alive[0].0, 0);
            assert_eq!((alive[0].1.switch_epoch, alive[0].1.lease), (3, kept));
            break;
        }
        assert!(Instant::now() < deadline, "rack 1's lease never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sees_each_change_and_keeps_the_last_while_etcd_is_away() {
    let mut etcd = TestEtcd::start();
    let e = Etcd::connect(&etcd.url, "follow").await.unwrap();
    let first = e.create_config(&three_racks()).await.unwrap();
    let (sender, mut configs) = watch::channel(None);
    let (reachable, mut is_reachable) = watch::channel(false);
    tokio::spawn(e.clone().follow(sender, reachable));
    let wait_for = |epoch: u64, configs: &mut watch::Receiver<_>| {
        let mut configs = configs.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(5),
                configs.wait_for(|c: &Option<pegasus_client::membership::Versioned>| {
                    c.as_ref().is_some_and(|v| v.config.epoch == epoch)
                }),
            )
            .await
            .expect("the follower saw the change")
            .unwrap()
            .clone()
        }
    };
    wait_for(1, &mut configs).await;
    let next = first.config.with_version_epoch(4).unwrap();
    assert!(e.replace_config(first.revision, &next).await.unwrap());
    let seen = wait_for(2, &mut configs).await.unwrap();
    assert_eq!(seen.config.version_epoch, 4);
    // etcd goes away: the follower says so and keeps what it had.
    let _ = etcd.child.kill();
    let _ = etcd.child.wait();
    tokio::time::timeout(Duration::from_secs(10), is_reachable.wait_for(|r| !*r))
        .await
        .expect("the follower noticed etcd was away")
        .unwrap();
    assert_eq!(configs.borrow().as_ref().unwrap().config.epoch, 2);
}
