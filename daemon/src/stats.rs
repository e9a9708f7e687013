//! What the process measures about itself, for `/metrics`: the log's append latency and
//! each consumer's lag, failures and deliveries. Process-wide (like a metrics registry): the
//! writers are the log and the consumers, the reader is a scrape; nothing here decides.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use upgraded_events::metrics::{APPEND_BUCKETS, ConsumerStats, Histogram, ProcessStats};

#[derive(Debug, Default)]
struct Stats {
    append: Mutex<Option<Histogram>>,
    consumers: Mutex<BTreeMap<String, ConsumerStats>>,
}

fn stats() -> &'static Stats {
    static STATS: OnceLock<Stats> = OnceLock::new();
    STATS.get_or_init(Stats::default)
}

/// One append, from the request to its durable acknowledgement.
pub fn observe_append(took: Duration) {
    let mut h = stats().append.lock().unwrap_or_else(|p| p.into_inner());
    h.get_or_insert_with(|| Histogram::with_bounds(APPEND_BUCKETS))
        .observe(took.as_secs_f64());
}

/// A consumer of the log (`nats`, `traces`, `notify-<sink>`), as it reports itself.
#[derive(Debug, Clone)]
pub struct Consumer(String);

impl Consumer {
    /// Registers the consumer (shown with zeros until it reports).
    pub fn new(name: impl Into<String>) -> Consumer {
        let name = name.into();
        update(&name, |_| {});
        Consumer(name)
    }

    pub fn lag(&self, records: u64) {
        update(&self.0, |c| c.lag_records = records);
    }

    pub fn failed(&self) {
        update(&self.0, |c| c.failures += 1);
    }

    pub fn delivered(&self, n: u64) {
        update(&self.0, |c| c.delivered += n);
    }
}

fn update(name: &str, f: impl FnOnce(&mut ConsumerStats)) {
    let mut all = stats().consumers.lock().unwrap_or_else(|p| p.into_inner());
    f(all.entry(name.to_string()).or_default());
}

/// Everything measured so far, with the log's size.
pub fn snapshot(log_bytes: Option<u64>, leader: Option<(String, bool)>) -> ProcessStats {
    let s = stats();
    ProcessStats {
        append_seconds: s
            .append
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| Histogram::with_bounds(APPEND_BUCKETS)),
        log_bytes,
        consumers: s
            .consumers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        leader,
    }
}

/// Bytes under `dir`, recursively (the log's directory: sled's files and the witness).
pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
