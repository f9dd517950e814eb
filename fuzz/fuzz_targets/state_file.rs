//! The switch's state file (epoch and hot keys, JSON) never makes the parser or the key
//! decoding panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pegasus_control::controller::state::SavedState;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = serde_json::from_slice::<SavedState>(data) {
        let (keys, bad) = state.keys();
        assert!(keys.len() + bad.len() <= state.hot_keys.len());
    }
});
