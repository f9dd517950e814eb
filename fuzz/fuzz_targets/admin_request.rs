//! The switch's admin requests (JSON lines on its socket) never make the parser panic, and an
//! accepted request serializes back to an equal one.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pegasus_control::service::admin::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<Request>(data) {
        let text = serde_json::to_string(&request).expect("a request serializes");
        let again: Request = serde_json::from_str(&text).expect("and parses back");
        assert_eq!(again, request);
    }
});
