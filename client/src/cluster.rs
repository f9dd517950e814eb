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
//! A chain of racks (docs/chain.md) lists its racks instead, head first; every rack has the
//! same server ids (a key has the same home in each), each its own addresses and controllers:
//!
//! ```toml
//! [[racks]]
//! controllers = ["10.1.0.1"]
//! servers = [{ id = 0, addr = "10.1.0.2:7400" }]
//!
//! [[racks]]
//! controllers = ["10.17.0.1"]
//! servers = [{ id = 0, addr = "10.17.0.2:7400" }]
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
/// Most racks in a chain.
pub const RACKS_MAX: usize = 8;

/// One store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerEntry {
    /// The server id carried in the header (0..64, unique).
    pub id: u8,
    /// Its UDP address.
    pub addr: SocketAddr,
}

/// The rack's stores, and its controller's addresses; or a chain of such racks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Where the controller's requests come from (the stores trust PUSH from these only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<IpAddr>,
    /// The rack's stores (empty in a chain's file, whose racks list theirs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<ServerEntry>,
    /// A chain of racks, head first (empty for a single rack).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub racks: Vec<Rack>,
    /// Where a chain keeps its membership (clients follow its head and tail there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<EtcdRef>,
}

/// A chain's membership in etcd: the endpoint and the chain's name (docs/chain.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdRef {
    /// etcd's client URL, e.g. `http://127.0.0.1:2379`.
    pub url: String,
    /// The chain's name: its keys live under `/pegasus/chains/NAME/`.
    pub chain: String,
}

/// One rack of a chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rack {
    /// The rack's id, stable across reconfigurations (default: its place in the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controllers: Vec<IpAddr>,
    pub servers: Vec<ServerEntry>,
}

/// A rack's place in its chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainRole {
    /// A rack on its own: the head and the tail at once.
    Only,
    /// Takes client writes and stamps them; forwards to the next rack.
    Head,
    /// Forwards to the next rack, acknowledges to the previous one.
    Middle,
    /// Answers clients' writes and reads.
    Tail,
}

impl ChainRole {
    /// The role of rack `index` in a chain of `racks`.
    pub fn of(index: usize, racks: usize) -> ChainRole {
        assert!(index < racks, "rack {index} of a chain of {racks}");
        match (index == 0, index + 1 == racks) {
            (true, true) => ChainRole::Only,
            (true, false) => ChainRole::Head,
            (false, false) => ChainRole::Middle,
            (false, true) => ChainRole::Tail,
        }
    }

    /// Whether clients' writes enter the chain here.
    pub fn takes_writes(self) -> bool {
        matches!(self, ChainRole::Only | ChainRole::Head)
    }

    /// Whether clients' reads are answered here (tail-only reads).
    pub fn takes_reads(self) -> bool {
        matches!(self, ChainRole::Only | ChainRole::Tail)
    }
}

impl Cluster {
    /// Parses and validates a cluster description.
    pub fn parse(text: &str) -> Result<Cluster> {
        let cluster: Cluster = toml::from_str(text).context("invalid cluster file")?;
        cluster.validate()?;
        Ok(cluster)
    }

    /// Checks that ids are unique and in range and that there is at least one server; in a
    /// chain, that there are 1 to [`RACKS_MAX`] racks, with the same server ids in each.
    pub fn validate(&self) -> Result<()> {
        if self.racks.is_empty() {
            return validate_servers(&self.servers);
        }
        ensure!(
            self.servers.is_empty() && self.controllers.is_empty(),
            "a chain's file lists servers and controllers under its [[racks]] only"
        );
        ensure!(
            self.racks.len() <= RACKS_MAX,
            "a chain has at most {RACKS_MAX} racks"
        );
        let ids = |rack: &Rack| rack.servers.iter().map(|s| s.id).collect::<BTreeSet<_>>();
        let rack_ids: BTreeSet<u8> = (0..self.racks.len()).map(|i| self.rack_id(i)).collect();
        ensure!(
            rack_ids.len() == self.racks.len(),
            "two racks of the chain have the same id"
        );
        for (i, rack) in self.racks.iter().enumerate() {
            validate_servers(&rack.servers).with_context(|| format!("in rack {i}"))?;
            ensure!(
                ids(rack) == ids(&self.racks[0]),
                "rack {i} has other server ids than rack 0 (every rack of a chain has the same)"
            );
        }
        Ok(())
    }

    /// How many racks: 1 for a single rack.
    pub fn rack_count(&self) -> usize {
        self.racks.len().max(1)
    }

    /// Rack `index` (head first) as a single rack: its servers and controllers.
    pub fn rack(&self, index: usize) -> Result<Cluster> {
        if self.racks.is_empty() {
            ensure!(index == 0, "rack {index}: the cluster is a single rack");
            return Ok(Cluster {
                racks: Vec::new(),
                etcd: None,
                ..self.clone()
            });
        }
        let Some(rack) = self.racks.get(index) else {
            bail!("rack {index}: the chain has {} racks", self.racks.len());
        };
        Ok(Cluster {
            controllers: rack.controllers.clone(),
            servers: rack.servers.clone(),
            racks: Vec::new(),
            etcd: self.etcd.clone(),
        })
    }

    /// The id of rack `index` (its own, or else its index).
    pub fn rack_id(&self, index: usize) -> u8 {
        self.racks
            .get(index)
            .and_then(|r| r.id)
            .unwrap_or(index as u8)
    }

    /// The index of the rack whose id is `id`, if the chain has it.
    pub fn rack_index(&self, id: u8) -> Option<usize> {
        (0..self.racks.len()).find(|&i| self.rack_id(i) == id)
    }

    /// The role of rack `index` in the chain.
    pub fn role(&self, index: usize) -> ChainRole {
        ChainRole::of(index, self.rack_count())
    }

    /// The head rack, where writes enter.
    pub fn head(&self) -> Cluster {
        self.rack(0).expect("a valid cluster has a rack 0")
    }

    /// The tail rack, which answers reads.
    pub fn tail(&self) -> Cluster {
        self.rack(self.rack_count() - 1)
            .expect("a valid cluster has its last rack")
    }

    /// The server ids (the same in every rack).
    pub fn server_ids(&self) -> Vec<u8> {
        self.head().servers.iter().map(|s| s.id).collect()
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

fn validate_servers(servers: &[ServerEntry]) -> Result<()> {
    ensure!(!servers.is_empty(), "the cluster has no servers");
    ensure!(
        servers.len() <= SERVERS_MAX,
        "a rack has at most {SERVERS_MAX} servers"
    );
    let mut ids = BTreeSet::new();
    for s in servers {
        ensure!(
            (s.id as usize) < SERVERS_MAX,
            "server id {} out of range (0..{SERVERS_MAX})",
            s.id
        );
        ensure!(ids.insert(s.id), "server id {} appears twice", s.id);
    }
    Ok(())
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
    fn a_chain_lists_racks_with_the_same_ids() {
        let text = "[[racks]]\ncontrollers = [\"10.1.0.1\"]\nservers = [{ id = 0, addr = \"10.1.0.2:7400\" }, { id = 1, addr = \"10.1.1.2:7400\" }]\n\
                    [[racks]]\nservers = [{ id = 1, addr = \"10.17.1.2:7400\" }, { id = 0, addr = \"10.17.0.2:7400\" }]\n";
        let c = Cluster::parse(text).unwrap();
        assert_eq!(c.rack_count(), 2);
        assert_eq!(
            c.head().controllers,
            vec!["10.1.0.1".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            c.tail().server(0).unwrap().addr,
            "10.17.0.2:7400".parse().unwrap()
        );
        assert_eq!(c.role(0), ChainRole::Head);
        assert_eq!(c.role(1), ChainRole::Tail);
        assert!(c.rack(2).is_err());
        // Other ids in a later rack, or servers beside racks, are refused.
        assert!(
            Cluster::parse(&text.replace("id = 1, addr = \"10.17", "id = 2, addr = \"10.17"))
                .is_err()
        );
        assert!(
            Cluster::parse(&format!(
                "servers = [{{ id = 0, addr = \"1.2.3.4:1\" }}]\n{text}"
            ))
            .is_err()
        );
        // A single rack is rack 0, the head and the tail.
        let single = Cluster::parse("[[servers]]\nid = 0\naddr = \"10.1.0.2:7400\"\n").unwrap();
        assert_eq!((single.rack_count(), single.role(0)), (1, ChainRole::Only));
        assert_eq!(single.rack(0).unwrap(), single);
        assert!(single.rack(1).is_err());
    }

    #[test]
    fn roles_along_a_chain() {
        let roles: Vec<ChainRole> = (0..3).map(|i| ChainRole::of(i, 3)).collect();
        assert_eq!(roles, [ChainRole::Head, ChainRole::Middle, ChainRole::Tail]);
        assert!(ChainRole::Head.takes_writes() && !ChainRole::Head.takes_reads());
        assert!(!ChainRole::Middle.takes_writes() && !ChainRole::Middle.takes_reads());
        assert!(ChainRole::Tail.takes_reads() && !ChainRole::Tail.takes_writes());
        assert!(ChainRole::Only.takes_reads() && ChainRole::Only.takes_writes());
    }

    #[test]
    fn save_then_load() {
        let dir = std::env::temp_dir().join(format!("pegasus-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        let c = Cluster {
            controllers: Vec::new(),
            racks: Vec::new(),
            etcd: None,
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
