//! `Facts`: what an outcome observed, as name=value pairs. Its own module because both the
//! records (`event`) and the check catalog (`check`) speak of it, and `event` names the
//! catalog's boundaries: neither may import the other both ways.

use std::collections::BTreeMap;

/// Observed facts attached to an outcome (`kubelet_version=v1.35.3`, `evicted=12`, …).
pub type Facts = BTreeMap<String, String>;

/// Facts from `name, value` pairs (tests and samples).
pub fn facts_of(pairs: &[(&str, &str)]) -> Facts {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The facts in a node agent's answer: its `key=value` lines (a key of `a-z`, `0-9` and `_`;
/// the value trimmed); every other line is ignored. Outside input: never panics.
pub fn parse_facts(stdout: &str) -> Facts {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| {
            !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}
