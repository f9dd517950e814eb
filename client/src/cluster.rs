//! The cluster file: which stores form the rack, by server id and UDP address.
//!
//! ```toml
//! # The controller's addresses, as the stores see them: PUSH is accepted only from them
//! # (optional; the lab writes the ToR's address on each server link).
//! controllers = ["10.1.0.1", "10.1.1.1"]
//!
//! [[servers]]
//! id = 0
//! addr = "10.1.0.2:7400"
//! ```
//!
//! Found through `--cluster FILE` or the `PEGASUS_CLUSTER` environment variable.

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::Path,
};

/// Environment variable naming the cluster file.
pub const ENV_VAR: &str = "PEGASUS_CLUSTER";
/// Most servers in a rack (the switch's replica bitmap's width).
const SERVERS_MAX: usize = pegasus_common::directory::SERVERS_MAX as usize;

/// One store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerEntry {
    /// The server id carried in the header (0..64, unique).
    pub id: u8,
    /// Its UDP address.
    pub addr: SocketAddr,
}

/// The rack's stores, and its controller's addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Where the controller's requests come from (the stores trust PUSH from these only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<IpAddr>,
    pub servers: Vec<ServerEntry>,
}

impl Cluster {
    /// Parses and validates a cluster description.
    pub fn parse(text: &str) -> Result<Cluster> {
        let cluster: Cluster = toml::from_str(text).context("invalid cluster file")?;
        cluster.validate()?;
        Ok(cluster)
    }

    /// Checks that ids are unique and in range and that there is at least one server.
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.servers.is_empty(), "the cluster has no servers");
        ensure!(
            self.servers.len() <= SERVERS_MAX,
            "a rack has at most {SERVERS_MAX} servers"
        );
        let mut ids = BTreeSet::new();
        for s in &self.servers {
            ensure!(
                (s.id as usize) < SERVERS_MAX,
                "server id {} out of range (0..{SERVERS_MAX})",
                s.id
            );
            ensure!(ids.insert(s.id), "server id {} appears twice", s.id);
        }
        Ok(())
    }

    /// Reads a cluster file.
    pub fn load(path: &Path) -> Result<Cluster> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read cluster file {}", path.display()))?;
        Cluster::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Reads the cluster file given, or else the one `PEGASUS_CLUSTER` names.
    pub fn locate(path: Option<&Path>) -> Result<Cluster> {
        if let Some(p) = path {
            return Cluster::load(p);
        }
        match std::env::var_os(ENV_VAR) {
            Some(p) => Cluster::load(Path::new(&p)),
            None => bail!("no cluster given: pass --cluster FILE or set {ENV_VAR}"),
        }
    }

    /// Writes the cluster file.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.validate()?;
        let text = format!(
            "# The rack's stores: written by pegasus, read by clients (--cluster or {ENV_VAR}).\n{}",
            toml::to_string_pretty(self)?
        );
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// The server with id `id`.
    pub fn server(&self, id: u8) -> Option<&ServerEntry> {
        self.servers.iter().find(|s| s.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_validate() {
        let c = Cluster::parse(
            "[[servers]]\nid = 0\naddr = \"10.1.0.2:7400\"\n[[servers]]\nid = 1\naddr = \"10.1.1.2:7400\"\n",
        )
        .unwrap();
        assert_eq!(c.servers.len(), 2);
        assert_eq!(c.server(1).unwrap().addr, "10.1.1.2:7400".parse().unwrap());
        assert!(Cluster::parse("servers = []").is_err());
        assert!(
            Cluster::parse("[[servers]]\nid = 0\naddr = \"1.2.3.4:1\"\n[[servers]]\nid = 0\naddr = \"1.2.3.5:1\"\n")
                .is_err()
        );
        assert!(Cluster::parse("[[servers]]\nid = 63\naddr = \"1.2.3.4:1\"\n").is_ok());
        assert!(Cluster::parse("[[servers]]\nid = 64\naddr = \"1.2.3.4:1\"\n").is_err());
        assert!(Cluster::parse("[[servers]]\nid = 0\naddr = \"nonsense\"\n").is_err());
    }

    #[test]
    fn save_then_load() {
        let dir = std::env::temp_dir().join(format!("pegasus-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        let c = Cluster {
            controllers: Vec::new(),
            servers: vec![ServerEntry {
                id: 3,
                addr: "127.0.0.1:7400".parse().unwrap(),
            }],
        };
        c.save(&path).unwrap();
        assert_eq!(Cluster::load(&path).unwrap(), c);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
