//! Fuzz target: An export file (`upgradectl export`, replayed anywhere): refused with where it is
//! damaged, or read into records that write the same export again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upgraded_events::export;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = export::read(data) {
        let again = export::write(&records).expect("read records write");
        assert_eq!(export::read(&again).ok(), Some(records), "round trip");
    }
});
