//! The store's handler never panics on any datagram from any sender, and every reply it
//! makes is a valid message; its state stays consistent across a sequence of datagrams.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pegasus_common::wire::{self, Message};
use pegasus_store::handler::{Store, StoreOptions};
use std::{
    net::{IpAddr, Ipv4Addr},
    sync::OnceLock,
};

const MEMBER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 1, 2));
const CONTROLLER: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1));
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 2, 0, 2));

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        Store::with_options(
            0,
            StoreOptions {
                members: vec![MEMBER],
                controllers: vec![CONTROLLER],
                memory_limit: 1 << 20,
                ..StoreOptions::default()
            },
        )
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&who, datagram)) = data.split_first() else {
        return;
    };
    let from = [CLIENT, MEMBER, CONTROLLER][who as usize % 3];
    let mut out = vec![0u8; wire::MAX_PAYLOAD_LEN];
    let mut copy = vec![0u8; wire::MAX_PAYLOAD_LEN];
    let (reply, pending) = store().handle(datagram, from, 0, &mut out, &mut copy);
    if let Some(n) = reply {
        Message::decode(&out[..n]).expect("every reply decodes");
    }
    if let Some(order) = pending {
        Message::decode(&copy[..order.len]).expect("every copy decodes");
    }
});
