//! The P4 face of the switch (`p4/`, docs/p4.md): the constants its programs share with every
//! other face, generated from `pegasus_common` so that they cannot drift
//! (`p4/include/constants.p4`; `control/tests/p4_constants.rs` regenerates it and fails on
//! any difference).

use pegasus_common::{
    directory::{self, Policy},
    hash, once,
    roles::PortRole,
    switch::{self, Counter},
    version,
    wire::{self, Op, flags, offset},
};
use std::fmt::Write as _;

/// Where the generated file lives, from the repository's root.
pub const CONSTANTS_PATH: &str = "p4/include/constants.p4";

/// The text of `p4/include/constants.p4`.
pub fn constants() -> String {
    let mut out = String::new();
    let mut define = |name: &str, value: String, why: &str| {
        let _ = writeln!(out, "// {why}\n#define {name} {value}");
    };
    define(
        "PEGASUS_MAGIC",
        format!("16w{:#06x}", wire::MAGIC),
        "wire::MAGIC: the first two bytes of every Pegasus header.",
    );
    define(
        "PEGASUS_PROTOCOL_VERSION",
        format!("8w{}", wire::PROTOCOL_VERSION),
        "wire::PROTOCOL_VERSION.",
    );
    define(
        "PEGASUS_HEADER_BYTES",
        wire::HEADER_LEN.to_string(),
        "wire::HEADER_LEN: bytes of the fixed header.",
    );
    define(
        "PEGASUS_STORE_PORT",
        format!("16w{}", wire::DEFAULT_PORT),
        "wire::DEFAULT_PORT: the stores' UDP port.",
    );
    define(
        "PEGASUS_CONTROLLER_CLIENT_ID",
        format!("16w{:#06x}", wire::CONTROLLER_CLIENT_ID),
        "wire::CONTROLLER_CLIENT_ID: a client may not use it.",
    );
    for op in Op::ALL {
        define(
            &format!("OP_{}", screaming(&format!("{op:?}"))),
            format!("8w{}", op as u8),
            &format!(
                "wire::Op::{op:?}{}{}{}.",
                if op.is_request() {
                    ", a request"
                } else {
                    ", a reply"
                },
                if op.is_write() { ", a write" } else { "" },
                if op.reports_version() {
                    ", reports a version"
                } else {
                    ""
                }
            ),
        );
    }
    let codes: Vec<u8> = Op::ALL.iter().map(|&op| op as u8).collect();
    let (first, last) = (codes[0], codes[codes.len() - 1]);
    assert!(
        (first..=last).all(|code| Op::from_u8(code).is_some()),
        "op codes are contiguous (the P4 programs check a range)"
    );
    define("OP_FIRST", format!("8w{first}"), "The lowest op code.");
    define(
        "OP_LAST",
        format!("8w{last}"),
        "The highest op code; every code between is an op.",
    );
    let ops_where = |rule: fn(Op) -> bool| {
        let names: Vec<String> = Op::ALL
            .into_iter()
            .filter(|&op| rule(op))
            .map(|op| format!("(op) == OP_{}", screaming(&format!("{op:?}"))))
            .collect();
        format!("({})", names.join(" || "))
    };
    define(
        "IS_REQUEST_OP(op)",
        ops_where(Op::is_request),
        "wire::Op::is_request.",
    );
    define(
        "REPORTS_VERSION_OP(op)",
        ops_where(Op::reports_version),
        "wire::Op::reports_version: replies the directory learns from.",
    );
    for (name, bit) in [
        ("STAMPED", flags::STAMPED),
        ("HOT", flags::HOT),
        ("RETRY", flags::RETRY),
        ("CACHED", flags::CACHED),
        ("STALE_EPOCH", flags::STALE_EPOCH),
    ] {
        define(
            &format!("FLAG_{name}"),
            format!("8w{bit:#04x}"),
            &format!("wire::flags::{name}."),
        );
    }
    define(
        "CLIENT_FLAGS",
        format!("8w{:#04x}", pegasus_common::roles::CLIENT_FLAGS),
        "roles::CLIENT_FLAGS: the only flags a client port keeps.",
    );
    for (name, at) in [
        ("MAGIC", offset::MAGIC),
        ("PROTO_VERSION", offset::PROTO_VERSION),
        ("OP", offset::OP),
        ("KEYHASH", offset::KEYHASH),
        ("VERSION", offset::VERSION),
        ("REQUEST_ID", offset::REQUEST_ID),
        ("CLIENT_ID", offset::CLIENT_ID),
        ("SERVER_ID", offset::SERVER_ID),
        ("FLAGS", offset::FLAGS),
        ("REPLICA_BITMAP", offset::REPLICA_BITMAP),
        ("LOAD", offset::LOAD),
        ("STATUS", offset::STATUS),
    ] {
        define(
            &format!("OFFSET_{name}"),
            at.to_string(),
            &format!("wire::offset::{name}: the header's fields in order (headers.p4 checks)."),
        );
    }
    define(
        "VERSION_COUNTER_BITS",
        version::COUNTER_BITS.to_string(),
        "version::COUNTER_BITS: a version is epoch << this | counter.",
    );
    define(
        "SERVERS_MAX",
        directory::SERVERS_MAX.to_string(),
        "directory::SERVERS_MAX: servers a rack (and a replica bitmap) holds.",
    );
    define(
        "WRITE_WINDOW",
        once::WRITE_WINDOW.to_string(),
        "once::WRITE_WINDOW: writes remembered per client.",
    );
    define(
        "WRITE_CLIENTS",
        once::CLIENTS.to_string(),
        "once::CLIENTS: client ids with a window.",
    );
    define(
        "WRITE_ID_BIT",
        format!("32w{:#010x}", once::WRITE_ID_BIT),
        "once::WRITE_ID_BIT: set in every recorded write id.",
    );
    define(
        "RETRY_ROUTES",
        switch::RETRY_ROUTES_CAPACITY.to_string(),
        "switch::RETRY_ROUTES_CAPACITY: slots of retried writes' routes.",
    );
    define(
        "RETRY_WINDOW_US",
        format!("48w{}", switch::RETRY_WINDOW_NS / 1_000),
        "switch::RETRY_WINDOW_NS in microseconds (the timestamps of P4 targets).",
    );
    define(
        "DIRECTORY_CAPACITY_MAX",
        switch::DIRECTORY_CAPACITY_MAX.to_string(),
        "switch::DIRECTORY_CAPACITY_MAX: hot keys a directory holds at most.",
    );
    define(
        "MIX_WINDOW",
        format!("16w{}", directory::MIX_WINDOW),
        "directory::MIX_WINDOW: requests in a hot key's recent read/write mix.",
    );
    define(
        "MIX_PRIOR_READS",
        format!("16w{}", directory::MIX_PRIOR_READS),
        "directory::MIX_PRIOR_READS: the mix a new hot key starts from.",
    );
    define(
        "COPY_READS_PER_WRITE",
        format!("32w{}", directory::COPY_READS_PER_WRITE),
        "directory::COPY_READS_PER_WRITE: copies pay when reads are this many per write.",
    );
    define(
        "FMIX64_C1",
        format!("64w{:#018x}", hash::FMIX64_C1),
        "hash::fmix64's first multiplier (retry routes are hashed with it).",
    );
    define(
        "FMIX64_C2",
        format!("64w{:#018x}", hash::FMIX64_C2),
        "hash::fmix64's second multiplier.",
    );
    for role in PortRole::ALL {
        define(
            &format!("ROLE_{}", screaming(&format!("{role:?}"))),
            format!("8w{}", role as u8),
            &format!("roles::PortRole::{role:?}: what a port of this role admits."),
        );
    }
    for policy in [Policy::LeastLoaded, Policy::RoundRobin, Policy::TwoChoices] {
        define(
            &format!("POLICY_{}", screaming(&format!("{policy:?}"))),
            format!("8w{}", policy as u8),
            &format!("directory::Policy::{policy:?}."),
        );
    }
    for &counter in Counter::ALL {
        define(
            &format!("COUNTER_{}", counter.name().to_ascii_uppercase()),
            (counter as u32).to_string(),
            &format!("switch::Counter::{counter:?}: {}", counter.help()),
        );
    }
    define(
        "COUNTERS",
        Counter::COUNT.to_string(),
        "switch::Counter::COUNT.",
    );
    format!(
        "// GENERATED from pegasus_common by control::p4::constants. Do not edit: regenerate with\n\
         // PEGASUS_BLESS=1 cargo test -p pegasus-control --test p4_constants (which fails on drift).\n\
         #ifndef PEGASUS_CONSTANTS_P4\n#define PEGASUS_CONSTANTS_P4\n\n{out}\n#endif\n"
    )
}

/// `ReplicateAck` as `REPLICATE_ACK`.
fn screaming(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_names_become_p4_names() {
        assert_eq!(screaming("ReplicateAck"), "REPLICATE_ACK");
        assert_eq!(screaming("Get"), "GET");
    }

    #[test]
    fn every_op_and_flag_is_defined_once() {
        let text = constants();
        for op in Op::ALL {
            let name = format!("#define OP_{} ", screaming(&format!("{op:?}")));
            assert_eq!(text.matches(&name).count(), 1, "{name}");
        }
        assert!(text.contains("#define FLAG_STALE_EPOCH 8w0x10\n"));
        assert!(text.contains("#define PEGASUS_MAGIC 16w0x5047\n"));
    }
}
