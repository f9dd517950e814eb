//! The Pegasus protocol as a [stateright] model, checked exhaustively for small racks: a
//! switch with its directory entry for one hot key, its version counter and its clients'
//! write windows; stores; clients that write once and then read; over a network that
//! duplicates (a message may be delivered again at any later time), reorders and loses (a
//! message may never be delivered: for safety properties that is all a loss can do, so the
//! network is not made lossy, which would only multiply states); with the switch crashing and
//! restarting.
//!
//! Every decision is a call into `pegasus_common`, the code the XDP program runs: stamping
//! (`once::decide`, `once::record`, `once::counter_from`, `once::admits_epoch`,
//! `version::stamp`), routing (`directory::route_hot_write`, `directory::route_hot_read`), the
//! reply rule (`directory::apply_reply`) and the stores' write rule
//! (`version::write_applies`). Only the plumbing between them is the model's.
//!
//! Properties (checked on every reachable state):
//! - **linearizable**: the clients' history of writes and reads is linearizable (stateright's
//!   `LinearizabilityTester` with a register);
//! - **one version per write**: the switch never sends one write to a store under two
//!   versions.
//!
//! What a restart keeps: the epoch (the switch's state file) and the hot key's directory entry
//! (the controller's recovery rebuilds it from the stores, which `tests/restart_e2e.rs`
//! checks end to end); it loses the version counter and the write windows. With
//! [`RackModel::stamp_once`] off, the switch stamps every copy of a write afresh, as it did
//! before at-most-once writes, and the checker finds the late-duplicate bug.
//!
//! [stateright]: https://docs.rs/stateright

use pegasus_common::{
    directory::{self, EntryView, Policy, SERVERS_MAX, ServerSet, bit},
    once::{self, StampDecision, WRITE_ID_BIT},
    version,
};
use stateright::{
    Expectation, Model,
    actor::{Actor, ActorModel, ActorModelState, Envelope, Id, LossyNetwork, Network, Out},
    semantics::{
        ConsistencyTester, LinearizabilityTester,
        register::{Register, RegisterOp, RegisterRet},
    },
};
use std::{borrow::Cow, collections::BTreeMap};

/// A value: each client writes its own letter; the key starts as `'?'`.
pub type Value = char;
/// The key's value before any write.
pub const INITIAL: Value = '?';
/// The switch's actor id; stores follow it, then clients.
const SWITCH: usize = 0;
/// The hot key's home.
const HOME: u8 = 0;
/// A client's one write, and its read after it.
const WRITE_REQUEST: u32 = WRITE_ID_BIT | 1;
const READ_REQUEST: u32 = 2;
/// Restarts explored: epochs 1 and 2.
const EPOCH_MAX: u16 = 2;
/// Versions stamped per epoch, at most (bounds the old rule, which stamps every copy).
const COUNTER_MAX: u64 = 4;
/// Round-robin sequences are kept modulo a multiple of every replica set's size (so that a
/// duplicate delivered again does not make a new state forever): lcm(1..=servers).
fn sequence_period(servers: u8) -> u32 {
    let gcd = |mut a: u32, mut b: u32| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    (1..=servers as u32).fold(1, |l, n| l * n / gcd(l, n))
}

/// The messages of the protocol (the model's own encoding of the wire format's fields that
/// matter here).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Msg {
    /// Client to switch: a write, with the switch epoch the client knows (0: none).
    Put {
        request: u32,
        value: Value,
        epoch: u16,
    },
    /// Client to switch: a read.
    Get {
        request: u32,
    },
    /// Switch to store: a stamped write, or one marked stale (never to be applied).
    StorePut {
        client: Id,
        request: u32,
        value: Value,
        version: u64,
        stale: bool,
    },
    /// Switch to store: a read.
    StoreGet {
        client: Id,
        request: u32,
    },
    /// Store to switch: the version the store holds after a write.
    PutReply {
        client: Id,
        request: u32,
        version: u64,
        sender: u8,
    },
    /// Store to switch: a read's answer.
    GetReply {
        client: Id,
        request: u32,
        value: Value,
        version: u64,
        sender: u8,
    },
    /// Store to switch: a write marked stale, refused (its version: the switch's epoch).
    Refused {
        client: Id,
        request: u32,
        version: u64,
    },
    /// Switch to client.
    PutOk {
        request: u32,
        version: u64,
    },
    GetOk {
        request: u32,
        value: Value,
    },
    StaleEpoch {
        request: u32,
        epoch: u16,
    },
}

/// The switch's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SwitchState {
    epoch: u16,
    counter: u64,
    /// The used slots of the clients' windows: (client, slot) -> word.
    windows: BTreeMap<(u16, usize), u64>,
    directory: DirectoryEntry,
    /// Round-robin sequences of the key's reads and writes.
    reads: u32,
    writes: u32,
}

/// The hot key's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DirectoryEntry {
    ver_completed: u64,
    rset: ServerSet,
}

/// What the switch keeps across a restart.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SwitchStorage {
    epoch: u16,
    directory: DirectoryEntry,
}

/// A store's state: its copy of the key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreState {
    value: Value,
    version: u64,
}

/// Where a client is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientPhase {
    /// Waiting for its write's answer; sent with this epoch.
    Writing {
        sent_epoch: u16,
    },
    Reading,
    Done,
    /// Its write was refused after a restart: its outcome is unknown; it stops.
    Indeterminate,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientState {
    phase: ClientPhase,
    epoch: u16,
}

/// An actor of the rack.
#[derive(Clone, Debug)]
pub enum Node {
    Switch {
        servers: u8,
        stamp_once: bool,
    },
    Store {
        id: u8,
    },
    /// Writes `value`, then reads if `reads`.
    Client {
        value: Value,
        epoch: u16,
        reads: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NodeState {
    Switch(SwitchState),
    Store(StoreState),
    Client(ClientState),
}

/// Every server of a rack of `servers`.
fn all_servers(servers: u8) -> ServerSet {
    (0..servers).fold(0, |set, id| set | bit(id))
}

/// The stores' loads, as the switch sees them (all equal: round robin decides).
const NO_LOADS: [u16; SERVERS_MAX as usize] = [0; SERVERS_MAX as usize];

fn store_id(server: u8) -> Id {
    Id::from(1 + server as usize)
}

impl Actor for Node {
    type Msg = Msg;
    type Timer = ();
    type State = NodeState;
    type Storage = SwitchStorage;
    type Random = ();

    fn on_start(&self, _id: Id, storage: &Option<SwitchStorage>, o: &mut Out<Self>) -> NodeState {
        match *self {
            Node::Switch { servers, .. } => {
                // A restart takes a larger epoch and the entry the recovery rebuilds.
                let (epoch, directory) = match storage {
                    Some(s) => (s.epoch + 1, s.directory),
                    None => (
                        1,
                        DirectoryEntry {
                            ver_completed: version::NONE,
                            rset: all_servers(servers),
                        },
                    ),
                };
                o.save(SwitchStorage { epoch, directory });
                NodeState::Switch(SwitchState {
                    epoch,
                    counter: 0,
                    windows: BTreeMap::new(),
                    directory,
                    reads: 0,
                    writes: 0,
                })
            }
            Node::Store { .. } => NodeState::Store(StoreState {
                value: INITIAL,
                version: version::NONE,
            }),
            Node::Client { value, epoch, .. } => {
                o.send(
                    Id::from(SWITCH),
                    Msg::Put {
                        request: WRITE_REQUEST,
                        value,
                        epoch,
                    },
                );
                NodeState::Client(ClientState {
                    phase: ClientPhase::Writing { sent_epoch: epoch },
                    epoch,
                })
            }
        }
    }

    fn on_msg(&self, id: Id, state: &mut Cow<NodeState>, src: Id, msg: Msg, o: &mut Out<Self>) {
        match (self, state.to_mut()) {
            (
                &Node::Switch {
                    servers,
                    stamp_once,
                },
                NodeState::Switch(s),
            ) => switch_on_msg(servers, stamp_once, s, src, msg, o),
            (&Node::Store { id: server }, NodeState::Store(s)) => {
                store_on_msg(server, s, src, msg, o)
            }
            (&Node::Client { value, reads, .. }, NodeState::Client(c)) => {
                client_on_msg(value, reads, c, msg, o)
            }
            _ => unreachable!("actor {id:?} has another kind's state"),
        }
    }
}

fn switch_on_msg(
    servers: u8,
    stamp_once: bool,
    s: &mut SwitchState,
    src: Id,
    msg: Msg,
    o: &mut Out<Node>,
) {
    let all = all_servers(servers);
    match msg {
        Msg::Put {
            request,
            value,
            epoch,
        } => {
            let client = usize::from(src) as u16;
            let (version, stale) = if !stamp_once {
                // Before at-most-once writes: every copy stamped afresh, no epoch check.
                s.counter += 1;
                (
                    version::stamp(s.epoch, s.counter - 1).expect("small counters"),
                    false,
                )
            } else if !once::admits_epoch(epoch, s.epoch) {
                (version::make(s.epoch, 0).expect("epoch only"), true)
            } else {
                let slot = (client, once::slot_of(request));
                let held = s.windows.get(&slot).copied().unwrap_or(0);
                match once::decide(held, request) {
                    StampDecision::Reuse { counter_low } => {
                        let counter = once::counter_from(s.counter, counter_low);
                        (
                            version::make(s.epoch, counter).expect("small counters"),
                            false,
                        )
                    }
                    StampDecision::Stale => return,
                    StampDecision::Fresh => {
                        s.counter += 1;
                        s.windows.insert(slot, once::record(request, s.counter));
                        (
                            version::stamp(s.epoch, s.counter - 1).expect("small counters"),
                            false,
                        )
                    }
                }
            };
            let route = directory::route_hot_write(
                all,
                Policy::RoundRobin,
                &NO_LOADS,
                0,
                s.writes,
                1,
                false,
            )
            .expect("a rack has servers");
            s.writes = (s.writes + 1) % sequence_period(servers);
            let target = if stale { HOME } else { route.primary };
            o.send(
                store_id(target),
                Msg::StorePut {
                    client: src,
                    request,
                    value,
                    version,
                    stale,
                },
            );
        }
        Msg::Get { request } => {
            let entry = EntryView {
                rset: s.directory.rset,
                home: HOME,
                evicting: false,
                installing: false,
            };
            let target =
                directory::route_hot_read(entry, Policy::RoundRobin, &NO_LOADS, 0, s.reads);
            s.reads = (s.reads + 1) % sequence_period(servers);
            o.send(
                store_id(target),
                Msg::StoreGet {
                    client: src,
                    request,
                },
            );
        }
        Msg::PutReply {
            client,
            request,
            version,
            sender,
        } => {
            learn(s, version, sender, o);
            o.send(client, Msg::PutOk { request, version });
        }
        Msg::GetReply {
            client,
            request,
            value,
            version,
            sender,
        } => {
            learn(s, version, sender, o);
            o.send(client, Msg::GetOk { request, value });
        }
        Msg::Refused {
            client,
            request,
            version,
        } => o.send(
            client,
            Msg::StaleEpoch {
                request,
                epoch: version::epoch(version),
            },
        ),
        _ => {}
    }
}

/// The reply rule, and the entry saved for a restart's recovery.
fn learn(s: &mut SwitchState, version: u64, sender: u8, o: &mut Out<Node>) {
    let d = &mut s.directory;
    directory::apply_reply(&mut d.ver_completed, &mut d.rset, version, sender);
    o.save(SwitchStorage {
        epoch: s.epoch,
        directory: s.directory,
    });
}

fn store_on_msg(server: u8, s: &mut StoreState, src: Id, msg: Msg, o: &mut Out<Node>) {
    match msg {
        Msg::StorePut {
            client,
            request,
            value,
            version,
            stale,
        } => {
            if stale {
                o.send(
                    src,
                    Msg::Refused {
                        client,
                        request,
                        version,
                    },
                );
                return;
            }
            if version::write_applies(s.version, version) {
                s.value = value;
                s.version = version;
            }
            o.send(
                src,
                Msg::PutReply {
                    client,
                    request,
                    version: s.version,
                    sender: server,
                },
            );
        }
        Msg::StoreGet { client, request } => o.send(
            src,
            Msg::GetReply {
                client,
                request,
                value: s.value,
                version: s.version,
                sender: server,
            },
        ),
        _ => {}
    }
}

fn client_on_msg(value: Value, reads: bool, c: &mut ClientState, msg: Msg, o: &mut Out<Node>) {
    match (c.phase, msg) {
        (ClientPhase::Writing { .. }, Msg::PutOk { request, version })
            if request == WRITE_REQUEST =>
        {
            c.epoch = c.epoch.max(version::epoch(version));
            if reads {
                c.phase = ClientPhase::Reading;
                o.send(
                    Id::from(SWITCH),
                    Msg::Get {
                        request: READ_REQUEST,
                    },
                );
            } else {
                c.phase = ClientPhase::Done;
            }
        }
        (ClientPhase::Writing { sent_epoch }, Msg::StaleEpoch { request, epoch })
            if request == WRITE_REQUEST =>
        {
            c.epoch = c.epoch.max(epoch);
            if sent_epoch == 0 {
                // Never applied anywhere: sent again with the epoch learned.
                c.phase = ClientPhase::Writing {
                    sent_epoch: c.epoch,
                };
                o.send(
                    Id::from(SWITCH),
                    Msg::Put {
                        request,
                        value,
                        epoch: c.epoch,
                    },
                );
            } else {
                c.phase = ClientPhase::Indeterminate;
            }
        }
        (ClientPhase::Reading, Msg::GetOk { request, .. }) if request == READ_REQUEST => {
            c.phase = ClientPhase::Done;
        }
        _ => {}
    }
}

/// The clients' history: the linearizability tester, and which request each client waits for
/// (so that a resent or duplicated request is one operation, and a duplicated answer one
/// return).
#[derive(Clone, Debug, Hash, PartialEq)]
pub struct History {
    tester: LinearizabilityTester<Id, Register<Value>>,
    awaiting: BTreeMap<Id, u32>,
}

impl Default for History {
    fn default() -> Self {
        History {
            tester: LinearizabilityTester::new(Register(INITIAL)),
            awaiting: BTreeMap::new(),
        }
    }
}

/// A rack to check.
#[derive(Clone, Debug)]
pub struct RackModel {
    pub servers: u8,
    /// Each client writes one of these; every client but the first then reads (one writer
    /// that never reads is enough to expose a write applied twice, and halves the states).
    pub clients: Vec<Value>,
    /// Whether the switch may crash and restart (once).
    pub restarts: bool,
    /// Whether clients start knowing the switch's first epoch; otherwise they learn it from
    /// their first write's refusal.
    pub clients_know_epoch: bool,
    /// At-most-once stamping; off: the old rule (a fresh version for every copy).
    pub stamp_once: bool,
}

impl RackModel {
    pub fn into_model(self) -> ActorModel<Node, RackModel, History> {
        let switch = Node::Switch {
            servers: self.servers,
            stamp_once: self.stamp_once,
        };
        let stores = (0..self.servers).map(|id| Node::Store { id });
        let epoch = if self.clients_know_epoch { 1 } else { 0 };
        let clients: Vec<Node> = self
            .clients
            .iter()
            .enumerate()
            .map(|(i, &value)| Node::Client {
                value,
                epoch,
                reads: i > 0,
            })
            .collect();
        let crashes = usize::from(self.restarts);
        ActorModel::new(self, History::default())
            .actor(switch)
            .actors(stores)
            .actors(clients)
            .init_network(Network::new_unordered_duplicating([]))
            // A lost message is one never delivered, which the unordered network already
            // explores; losses add no behaviour a safety property could see, only states.
            .lossy_network(LossyNetwork::No)
            .max_crashes(crashes)
            .property(Expectation::Always, "linearizable", |_, state| {
                state.history.tester.serialized_history().is_some()
            })
            .property(Expectation::Always, "one version per write", |_, state| {
                one_version_per_write(state)
            })
            .property(Expectation::Sometimes, "every client done", |_, state| {
                state.actor_states.iter().all(|s| match &**s {
                    NodeState::Client(c) => c.phase == ClientPhase::Done,
                    _ => true,
                })
            })
            .record_msg_out(record_invocation)
            .record_msg_in(record_return)
            .within_boundary(|cfg, state| {
                // Only the switch crashes, and it restarts at most once; each epoch stamps a
                // bounded number of versions.
                let switch_ok = match &*state.actor_states[SWITCH] {
                    NodeState::Switch(s) => s.counter <= COUNTER_MAX,
                    _ => true,
                };
                cfg.servers <= 4
                    && switch_ok
                    && state.crashed.iter().skip(1).all(|c| !c)
                    && state.actor_storages[SWITCH]
                        .as_ref()
                        .is_none_or(|s| s.epoch <= EPOCH_MAX)
            })
    }
}

type State = ActorModelState<Node, History>;

/// No write goes to a store under two versions. The network keeps every message ever sent
/// (it duplicates), so the writes the switch sent are all in it: checking them, not the
/// stores, keeps a history out of the stores' states.
fn one_version_per_write(state: &State) -> bool {
    let mut versions: BTreeMap<Value, u64> = BTreeMap::new();
    for envelope in state.network.iter_all() {
        if let Msg::StorePut {
            value,
            version,
            stale: false,
            ..
        } = *envelope.msg
            && *versions.entry(value).or_insert(version) != version
        {
            return false;
        }
    }
    true
}

fn record_invocation(_: &RackModel, h: &History, env: Envelope<&Msg>) -> Option<History> {
    let (request, op) = match *env.msg {
        Msg::Put { request, value, .. } => (request, RegisterOp::Write(value)),
        Msg::Get { request } => (request, RegisterOp::Read),
        _ => return None,
    };
    if h.awaiting.get(&env.src) == Some(&request) {
        return None; // the same operation, sent again
    }
    let mut h = h.clone();
    h.tester.on_invoke(env.src, op).ok()?;
    h.awaiting.insert(env.src, request);
    Some(h)
}

fn record_return(_: &RackModel, h: &History, env: Envelope<&Msg>) -> Option<History> {
    let (request, ret) = match *env.msg {
        Msg::PutOk { request, .. } => (request, RegisterRet::WriteOk),
        Msg::GetOk { request, value } => (request, RegisterRet::ReadOk(value)),
        _ => return None,
    };
    if h.awaiting.get(&env.dst) != Some(&request) {
        return None; // a duplicate of an answer already seen
    }
    let mut h = h.clone();
    h.tester.on_return(env.dst, ret).ok()?;
    h.awaiting.remove(&env.dst);
    Some(h)
}

/// What a check found.
#[derive(Debug)]
pub struct CheckReport {
    pub unique_states: usize,
    pub states: usize,
    pub max_depth: usize,
    pub seconds: f64,
    /// Properties violated (or, for "sometimes" ones, never met), with a path to each.
    pub violations: Vec<(&'static str, String)>,
}

impl RackModel {
    /// Explores every reachable state (depth first, which holds only the current path besides
    /// the visited states' fingerprints; on `threads` threads); with
    /// `stop_at_first_failure`, only until a property fails.
    pub fn check(self, threads: usize, stop_at_first_failure: bool) -> CheckReport {
        use stateright::{Checker, HasDiscoveries};
        let started = std::time::Instant::now();
        let model = self.into_model();
        let properties: Vec<_> = model
            .properties()
            .iter()
            .map(|p| (p.name, p.expectation.clone()))
            .collect();
        let finish = if stop_at_first_failure {
            HasDiscoveries::AnyFailures
        } else {
            HasDiscoveries::All
        };
        let checker = model
            .checker()
            .threads(threads)
            .finish_when(finish)
            .spawn_dfs()
            .join();
        let mut violations = Vec::new();
        for (name, expectation) in properties {
            let found = checker.discovery(name);
            let violated = match expectation {
                Expectation::Always | Expectation::Eventually => found.is_some(),
                // A search stopped at its first failure says nothing of what it did not reach.
                Expectation::Sometimes => found.is_none() && !stop_at_first_failure,
            };
            if violated {
                violations.push((
                    name,
                    found
                        .map(|p| format!("{:?}", p.into_actions()))
                        .unwrap_or_default(),
                ));
            }
        }
        CheckReport {
            unique_states: checker.unique_state_count(),
            states: checker.state_count(),
            max_depth: checker.max_depth(),
            seconds: started.elapsed().as_secs_f64(),
            violations,
        }
    }
}
