//! Fuzz target: The API's request bodies (strict JSON, unknown fields refused): the first byte picks
//! the body; a body that parses serialises and parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use upgraded_api::{NotifyTestRequest, ReasonRequest, RollbackRequest, StartRequest};

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(body: &[u8]) {
    if let Ok(v) = serde_json::from_slice::<T>(body) {
        let again = serde_json::to_vec(&v).expect("serialises");
        assert_eq!(
            serde_json::from_slice::<T>(&again).ok(),
            Some(v),
            "round trip"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => round_trip::<StartRequest>(body),
        1 => round_trip::<RollbackRequest>(body),
        2 => round_trip::<ReasonRequest>(body),
        _ => round_trip::<NotifyTestRequest>(body),
    }
});
