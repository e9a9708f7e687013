//! Fuzz target: An apiserver's `/metrics` text and the Helm release Secrets, read for the removed-API
//! gate: refused with a typed error, or read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upgraded_planner::apis::{helm_objects, parse_metrics};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_metrics("apiserver-1", text, 1_800_000_000);
        let _ = helm_objects(text);
    }
});
