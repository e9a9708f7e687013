//! `Facts`: what an outcome observed, as name=value pairs. Its own module because both the
//! records (`event`) and the check catalog (`check`) speak of it, and `event` names the
//! catalog's boundaries: neither may import the other both ways.

use std::collections::BTreeMap;

/// Observed facts attached to an outcome (`kubelet_version=v1.35.3`, `evicted=12`, …).
pub type Facts = BTreeMap<String, String>;
