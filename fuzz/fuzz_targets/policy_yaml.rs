//! Fuzz target: A policy file (YAML): refused with the field and the problem, or validated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upgraded_planner::policy::PlanPolicy;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match PlanPolicy::from_yaml(text) {
            Ok(p) => assert!(p.max_attempts >= 1),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
});
