//! `p4/include/constants.p4` is generated from `pegasus_common` (`control::p4::constants`):
//! this test regenerates it and fails when the committed file differs, so the P4 programs
//! cannot drift from the rules' constants. `PEGASUS_BLESS=1` writes the file instead.

use pegasus_control::p4;
use std::path::Path;

#[test]
fn committed_p4_constants_match_common() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(p4::CONSTANTS_PATH);
    let generated = p4::constants();
    if std::env::var_os("PEGASUS_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        committed == generated,
        "{} differs from what pegasus_common says; regenerate it with \
         PEGASUS_BLESS=1 cargo test -p pegasus-control --test p4_constants",
        path.display()
    );
}
