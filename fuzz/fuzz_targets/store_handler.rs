//! The store's handler never panics on any datagram from any sender, and every reply, copy and
//! chain message it makes is a valid message; its state stays consistent across a sequence of
//! datagrams. Two stores: one of a single rack, and one in the middle of a chain (whose
//! neighbours' servers are among the senders).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pegasus_common::wire::{self, Message};
use pegasus_store::{
    chain::ChainLinks,
    handler::{Store, StoreOptions},
};
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::OnceLock,
};

const MEMBER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 1, 2));
const CONTROLLER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1));
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 2, 0, 2));
const PREVIOUS_RACK: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 17, 1, 2));
const NEXT_RACK: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 33, 0, 2));

fn options() -> StoreOptions {
    StoreOptions {
        members: vec![MEMBER],
        controllers: vec![CONTROLLER],
        memory_limit: 1 << 20,
        ..StoreOptions::default()
    }
}

fn single() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| Store::with_options(0, options()))
}

fn in_chain() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let neighbours = |ip: IpAddr| (0..2).map(|id| (id, SocketAddr::new(ip, 7400))).collect();
        Store::with_options(
            0,
            StoreOptions {
                chain: ChainLinks {
                    previous: neighbours(PREVIOUS_RACK),
                    next: neighbours(NEXT_RACK),
                    ..ChainLinks::default()
                },
                ..options()
            },
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&who, datagram)) = data.split_first() else {
        return;
    };
    let senders = [CLIENT, MEMBER, CONTROLLER, PREVIOUS_RACK, NEXT_RACK];
    let from = SocketAddr::new(senders[who as usize % senders.len()], 5000);
    let store = if who & 0x80 != 0 { in_chain() } else { single() };
    let mut out = vec![0u8; wire::MAX_PAYLOAD_LEN];
    let mut copy = vec![0u8; wire::MAX_PAYLOAD_LEN];
    let handled = store.handle(datagram, from, 0, &mut out, &mut copy);
    if let Some(n) = handled.reply {
        Message::decode(&out[..n]).expect("every reply decodes");
    }
    if let Some(order) = handled.copy {
        Message::decode(&copy[..order.len]).expect("every copy decodes");
    }
    for (bytes, _) in handled.chain {
        Message::decode(&bytes).expect("every chain message decodes");
    }
});
