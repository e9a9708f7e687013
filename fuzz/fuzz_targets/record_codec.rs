//! Fuzz target: A stored record (sled's value, the witness's frame payload): refused with a typed error, or
//! decoded into a record that encodes and decodes back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upgraded_events::codec;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = codec::decode(data) {
        let bytes = codec::encode(&r).expect("a decoded record encodes");
        assert_eq!(codec::decode(&bytes).ok(), Some(r), "round trip");
    }
});
