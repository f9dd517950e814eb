//! The trust boundary at the switch: every switch port has a role, and what arrives on a port
//! is admitted, cleaned or dropped by these rules before the directory sees it
//! (docs/security.md). The XDP programs (the switch and the cache baseline) call them for
//! every request and reply; the tests below go through every role, op and field.
//!
//! Only the switch may order writes (version, STAMPED) and choose copies (replica bitmap,
//! HOT); only a server may speak for a server (replies, acks, loads); only the controller,
//! which runs on the switch itself and never sends through a switch port, uses the
//! controller's client id. A client-facing port therefore carries GETs and PUTs only, with
//! those fields cleared.

use crate::{
    directory::SERVERS_MAX,
    switch::ServerTable,
    wire::{CONTROLLER_CLIENT_ID, Op, flags},
};

/// What a switch port faces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum PortRole {
    /// Clients (or anything untrusted): GETs and PUTs only, switch-only fields cleared.
    Client = 0,
    /// The rack's storage servers: trusted to speak for the server whose address they use.
    Server = 1,
    /// The other racks of a chain (the fabric between racks): as a client port, plus
    /// CHAIN_PUTs with their versions (from whichever rack precedes this one) and CHAIN_ACKs
    /// (from whichever follows it). One role for both, because the previous and next racks
    /// change when a rack fails or joins (docs/chain.md); a rack's stores check that each
    /// chain message comes from the neighbour the configuration names.
    Chain = 2,
}

impl PortRole {
    /// Every role, for exhaustive tests.
    pub const ALL: [PortRole; 3] = [PortRole::Client, PortRole::Server, PortRole::Chain];

    /// The role of a code; an unknown code is the least trusted role.
    #[inline(always)]
    pub const fn from_u8(code: u8) -> PortRole {
        match code {
            1 => PortRole::Server,
            2 => PortRole::Chain,
            _ => PortRole::Client,
        }
    }

    /// Its name in configuration files and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            PortRole::Client => "client",
            PortRole::Server => "server",
            PortRole::Chain => "chain",
        }
    }

    /// The role named `name`.
    pub fn parse(name: &str) -> Option<PortRole> {
        PortRole::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// The flags a client may set on a request; the others are the switch's (STAMPED, HOT) or a
/// switch's reply's (CACHED).
pub const CLIENT_FLAGS: u8 = flags::RETRY;

/// What the switch does with a request, by the role of the port it arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestAdmission {
    /// Forwarded as it is: a trusted sender.
    Accept,
    /// Forwarded with the switch-only fields cleared ([`clean`]): version 0, replica bitmap
    /// 0, flags limited to [`CLIENT_FLAGS`].
    Clean,
    /// Dropped and counted: an op or a client id that this port may not send.
    Drop,
}

/// The request rule: servers are trusted; another rack may send CHAIN_PUTs (cleaned of
/// the fields that are this rack's switch's to set, [`clean`]); anything else is a client's
/// GET or PUT, cleaned, and every other op, or the controller's client id, is dropped.
#[inline(always)]
pub const fn admit_request(role: PortRole, op: Op, client_id: u16) -> RequestAdmission {
    match (role, op) {
        (PortRole::Server, _) => RequestAdmission::Accept,
        (PortRole::Chain, Op::ChainPut) => RequestAdmission::Clean,
        _ if client_id == CONTROLLER_CLIENT_ID => RequestAdmission::Drop,
        (_, Op::Get | Op::Put) => RequestAdmission::Clean,
        _ => RequestAdmission::Drop,
    }
}

/// Whether the directory routes a request: clients' GETs and PUTs on any port, and a
/// CHAIN_PUT from the previous rack (a write this rack spreads and copies as its own, never
/// stamps). A CHAIN_PUT that one of this rack's servers sends on to the next rack goes where
/// it is addressed; so do every other op.
#[inline(always)]
pub const fn routed_by_directory(role: PortRole, op: Op) -> bool {
    matches!(
        (role, op),
        (_, Op::Get | Op::Put) | (PortRole::Chain, Op::ChainPut)
    )
}

/// Whether a message tells the directory (and the load table) about its sender: only what
/// this rack's servers send, that is their replies that carry a version and the CHAIN_PUTs
/// they send on (each sent after applying its version). A CHAIN_ACK from the next rack
/// speaks for a server of another rack.
#[inline(always)]
pub const fn speaks_for_sender(role: PortRole) -> bool {
    matches!(role, PortRole::Server)
}

/// Whether a message tells the directory a key's committed version: a CHAIN_ACK from the
/// next rack (the tail holds the version it acknowledges).
#[inline(always)]
pub const fn reports_commit(role: PortRole, op: Op) -> bool {
    matches!((role, op), (PortRole::Chain, Op::ChainAck))
}

/// Whether the directory learns a version from `op` sent by one of this rack's servers.
#[inline(always)]
pub const fn reports_version(role: PortRole, op: Op) -> bool {
    speaks_for_sender(role) && (op.reports_version() || matches!(op, Op::ChainPut))
}

/// The fields of a request that cleaning may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchOnlyFields {
    pub version: u64,
    pub replica_bitmap: crate::directory::ServerSet,
    pub flags: u8,
}

/// The flags a previous rack may set on a CHAIN_PUT: its version was stamped by the head.
pub const CHAIN_FLAGS: u8 = flags::STAMPED;

/// The fields of `op` after cleaning; equal to the input for an honest sender's request (then
/// the program rewrites nothing). A client's request loses its version, replica bitmap and
/// every flag but [`CLIENT_FLAGS`]; a CHAIN_PUT keeps its version and STAMPED, and loses the
/// previous rack's HOT and replica bitmap (this rack's directory decides them).
#[inline(always)]
pub const fn clean(op: Op, fields: SwitchOnlyFields) -> SwitchOnlyFields {
    match op {
        Op::ChainPut => SwitchOnlyFields {
            version: fields.version,
            replica_bitmap: 0,
            flags: fields.flags & CHAIN_FLAGS,
        },
        _ => SwitchOnlyFields {
            version: 0,
            replica_bitmap: 0,
            flags: fields.flags & CLIENT_FLAGS,
        },
    }
}

/// The reply rule: a reply (or ack) is believed only when it arrives on a server-facing port
/// from the address of the server id it claims (its UDP port, the store port, is checked by
/// classification); a next rack may send CHAIN_ACKs. Anything else is dropped and counted:
/// it would speak for a server (its version, its load, a cached value).
#[inline(always)]
pub fn admit_reply(
    role: PortRole,
    op: Op,
    sender: u8,
    source_ipv4: [u8; 4],
    servers: &ServerTable,
) -> bool {
    match role {
        PortRole::Server => {
            (sender as u32) < SERVERS_MAX && {
                let slot = &servers.slots[(sender as u32 % SERVERS_MAX) as usize];
                slot.valid != 0 && slot.ipv4 == source_ipv4
            }
        }
        PortRole::Chain => matches!(op, Op::ChainAck),
        PortRole::Client => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::ServerSlot;

    const CLIENT: u16 = 7;

    fn servers() -> ServerTable {
        let mut t = ServerTable::default();
        for i in 0..3u8 {
            t.slots[i as usize] = ServerSlot {
                ipv4: [10, 1, i, 2],
                load: 0,
                valid: 1,
                reserved: 0,
            };
        }
        t
    }

    #[test]
    fn roles_round_trip_and_unknown_codes_are_clients() {
        for role in PortRole::ALL {
            assert_eq!(PortRole::from_u8(role as u8), role);
            assert_eq!(PortRole::parse(role.name()), Some(role));
        }
        for code in 3..=u8::MAX {
            assert_eq!(PortRole::from_u8(code), PortRole::Client);
        }
        assert_eq!(PortRole::parse("Server"), None);
    }

    /// Every role and every request op, with a client's and the controller's client id.
    #[test]
    fn the_request_rule_for_every_role_and_op() {
        for role in PortRole::ALL {
            for op in Op::ALL.into_iter().filter(|op| op.is_request()) {
                for client_id in [CLIENT, CONTROLLER_CLIENT_ID] {
                    let got = admit_request(role, op, client_id);
                    let expected = if role == PortRole::Server {
                        RequestAdmission::Accept
                    } else if role == PortRole::Chain && op == Op::ChainPut {
                        RequestAdmission::Clean
                    } else if client_id == CONTROLLER_CLIENT_ID {
                        RequestAdmission::Drop
                    } else if op == Op::Get || op == Op::Put {
                        RequestAdmission::Clean
                    } else {
                        RequestAdmission::Drop
                    };
                    assert_eq!(got, expected, "{role:?} {op:?} client {client_id}");
                }
            }
        }
        // The ops a client port must never carry.
        for op in [Op::Replicate, Op::Push, Op::ChainPut] {
            assert_eq!(
                admit_request(PortRole::Client, op, CLIENT),
                RequestAdmission::Drop
            );
        }
    }

    #[test]
    fn cleaning_keeps_only_what_a_client_may_set() {
        for flags_in in 0..=u8::MAX {
            let forged = SwitchOnlyFields {
                version: u64::MAX,
                replica_bitmap: u64::MAX,
                flags: flags_in,
            };
            for op in [Op::Get, Op::Put] {
                let c = clean(op, forged);
                assert_eq!((c.version, c.replica_bitmap), (0, 0));
                assert_eq!(c.flags, flags_in & flags::RETRY);
                assert_eq!(c.flags & (flags::STAMPED | flags::HOT | flags::CACHED), 0);
                assert_eq!(clean(op, c), c, "cleaning twice changes nothing");
            }
            // The previous rack's CHAIN_PUT keeps its stamp, loses its rack's copies.
            let c = clean(Op::ChainPut, forged);
            assert_eq!((c.version, c.replica_bitmap), (u64::MAX, 0));
            assert_eq!(c.flags, flags_in & flags::STAMPED);
            assert_eq!(clean(Op::ChainPut, c), c);
        }
        let honest = SwitchOnlyFields {
            version: 0,
            replica_bitmap: 0,
            flags: flags::RETRY,
        };
        assert_eq!(
            clean(Op::Put, honest),
            honest,
            "an honest request is not rewritten"
        );
        let forwarded = SwitchOnlyFields {
            version: 42,
            replica_bitmap: 0,
            flags: flags::STAMPED,
        };
        assert_eq!(clean(Op::ChainPut, forwarded), forwarded);
    }

    /// Only the previous rack's CHAIN_PUTs are routed as writes; a server's own CHAIN_PUT
    /// leaves where it is addressed and tells the directory its version; nothing from another
    /// rack speaks for a server of this one.
    #[test]
    fn chain_puts_are_routed_coming_in_and_learned_from_going_out() {
        for role in PortRole::ALL {
            assert!(routed_by_directory(role, Op::Get) && routed_by_directory(role, Op::Put));
            assert_eq!(
                routed_by_directory(role, Op::ChainPut),
                role == PortRole::Chain
            );
            for op in [Op::Replicate, Op::Push] {
                assert!(!routed_by_directory(role, op));
            }
            assert_eq!(
                reports_version(role, Op::ChainPut),
                role == PortRole::Server
            );
            assert!(!reports_version(role, Op::ChainAck));
            assert_eq!(reports_commit(role, Op::ChainAck), role == PortRole::Chain);
            assert!(!reports_commit(role, Op::PutReply));
            assert_eq!(
                reports_version(role, Op::PutReply),
                role == PortRole::Server
            );
        }
    }

    /// Every role, every reply op, every claimed sender, from its own and from another
    /// address.
    #[test]
    fn the_reply_rule_for_every_role_op_and_sender() {
        let t = servers();
        for role in PortRole::ALL {
            for op in Op::ALL.into_iter().filter(|op| !op.is_request()) {
                for sender in 0..=u8::MAX {
                    let own = [10, 1, sender, 2];
                    let believed = admit_reply(role, op, sender, own, &t);
                    let expected = match role {
                        PortRole::Server => sender < 3,
                        PortRole::Chain => op == Op::ChainAck,
                        _ => false,
                    };
                    assert_eq!(believed, expected, "{role:?} {op:?} from server {sender}");
                    // Another server's (or any other) address never speaks for `sender`.
                    let other = [10, 1, sender.wrapping_add(1), 2];
                    if role == PortRole::Server {
                        assert!(!admit_reply(role, op, sender, other, &t));
                    }
                }
            }
        }
        // A server id beyond the table cannot alias a slot.
        assert!(!admit_reply(
            PortRole::Server,
            Op::GetReply,
            64,
            [10, 1, 0, 2],
            &t
        ));
    }
}
