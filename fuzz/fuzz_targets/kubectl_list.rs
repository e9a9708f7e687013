//! Fuzz target: A `kubectl get … -o json` List, the cluster's snapshot the planner reads: refused with
//! a typed error or read into an inventory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upgraded_events::inventory::Inventory;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(inv) = Inventory::from_kubectl_json(text) {
            // What was read serialises (the record of it does).
            serde_json::to_string(&inv).expect("an inventory serialises");
        }
    }
});
