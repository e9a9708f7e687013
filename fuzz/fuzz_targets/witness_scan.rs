//! Fuzz target: The witness file's bytes, as the daemon scans them at open: intact frames, torn or
//! damaged ones found; never a panic, never more than the input's worth of records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upgraded_events::witness;

fuzz_target!(|data: &[u8]| {
    let scan = witness::scan_bytes(data);
    assert!(
        scan.end <= data.len() as u64 + 8,
        "the next frame goes inside the file"
    );
    let held: usize = scan.records.values().map(Vec::len).sum();
    assert!(held <= data.len(), "records come from the file's bytes");
    for (key, bytes) in &scan.records {
        assert!(witness::split_key(key).is_some());
        let _ = upgraded_events::codec::decode(bytes);
    }
});
