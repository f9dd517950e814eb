//! A chain's configuration as etcd holds it (JSON, `membership::parse_config`): the parser
//! never panics; a configuration it accepts is written out and parses back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pegasus_client::membership::parse_config;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = parse_config(data) {
        let written = serde_json::to_vec(&config).expect("an accepted configuration serializes");
        let again = parse_config(&written).expect("and parses back");
        assert_eq!(again, config);
    }
});
