//! Target: a store holding 1,000,000 keys with 128-byte values stays under 2x the raw key and
//! value bytes in resident memory. Alone in its test binary, so that nothing else allocates
//! while the resident set is measured. `--nocapture` prints the figures.

use pegasus_common::hash::key_hash;
use pegasus_store::table::Table;

const KEYS: usize = 1_000_000;
const VALUE_LEN: usize = 128;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("reading /proc/self/statm");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

#[test]
fn a_million_128_byte_values_take_less_than_twice_their_raw_size() {
    let before = resident_bytes();
    let table = Table::new();
    let value = [0xabu8; VALUE_LEN];
    let mut raw = 0usize;
    for i in 0..KEYS {
        let key = format!("user{i:012}");
        raw += key.len() + VALUE_LEN;
        table.write(
            key_hash(key.as_bytes()),
            key.as_bytes(),
            &value,
            i as u64 + 1,
        );
    }
    let used = resident_bytes() - before;
    let ratio = used as f64 / raw as f64;
    println!(
        "{{\"keys\":{KEYS},\"value_bytes\":{VALUE_LEN},\"raw_bytes\":{raw},\"resident_bytes\":{used},\"ratio\":{ratio:.3}}}"
    );
    assert_eq!(table.len(), KEYS);
    assert!(
        ratio < 2.0,
        "resident {used} bytes for {raw} raw bytes: {ratio:.2}x"
    );
}
