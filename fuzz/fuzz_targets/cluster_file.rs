//! The cluster file parser never panics; a file it accepts is written out (as `save` writes
//! it) and parses back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pegasus_client::cluster::Cluster;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cluster) = Cluster::parse(text) {
        let written = toml::to_string_pretty(&cluster).expect("an accepted cluster serializes");
        let again = Cluster::parse(&written).expect("and parses back");
        assert_eq!(again, cluster);
    }
});
