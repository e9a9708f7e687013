//! Fuzz target: A node agent's answer (`key=value` lines over SSH), and the verdicts the core gives on
//! what it says (the machine checks, the version-change rules): never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upgraded_events::Version;
use upgraded_events::facts::parse_facts;
use upgraded_events::preflight::{Limits, refusals};
use upgraded_events::rules::node_findings;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let facts = parse_facts(&text);
    for k in facts.keys() {
        assert!(
            k.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        );
    }
    for target in [
        Version::new(1, 34, 6),
        Version::new(1, 35, 3),
        Version::new(1, 36, 0),
    ] {
        let _ = refusals(
            target,
            &facts,
            Limits {
                max_disk_used_percent: 85,
            },
        );
        let _ = node_findings(target, &facts);
    }
});
