//! upgraded, the daemon: the durable event log, the engine loop, the ports and their adapters,
//! and the API that `upgradectl` talks to.
#![forbid(unsafe_code)]

pub mod api;
mod apiusage;
pub mod backoff;
pub mod cursor;
pub mod drain;
pub mod engine;
#[cfg(feature = "fake-world")]
pub mod fake;
pub mod fence;
pub mod ha;
pub mod host;
mod hostfacts;
pub mod kube;
pub mod lease;
pub mod log;
pub mod metrics;
pub mod notify;
pub mod outbox;
mod podwatch;
pub mod ports;
pub mod remote;
pub mod simagent;
pub mod ssh;
pub mod stats;
pub mod steps;
pub mod traces;
