//! The wire decoder never panics, and what it accepts encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pegasus_common::wire::{Header, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = Header::decode(data) {
        let mut out = [0u8; pegasus_common::wire::HEADER_LEN];
        header.encode(&mut out).expect("a decoded header encodes");
        assert_eq!(&out[..], &data[..out.len()], "header round trip");
    }
    if let Ok(message) = Message::decode(data) {
        let bytes = message.to_vec().expect("a decoded message encodes");
        assert_eq!(bytes, data, "message round trip");
        let _ = message.keyhash_matches();
    }
});
