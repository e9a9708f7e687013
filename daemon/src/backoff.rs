//! The daemon's one retry pacing: waits `events::fault::backoff_ms` (doubling to a cap)
//! between tries, and starts over after a success. Every loop that retries an outside
//! service (NATS, the trace collector) waits through it.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(start: Duration, max: Duration) -> Backoff {
        Backoff {
            start,
            max,
            failures: 0,
        }
    }

    /// The delay the next [`Backoff::wait`] sleeps.
    pub fn next_delay(&self) -> Duration {
        Duration::from_millis(upgraded_events::fault::backoff_ms(
            self.start.as_millis() as u64,
            self.max.as_millis() as u64,
            self.failures,
        ))
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Sleeps before the next try, and makes the one after wait longer.
    pub async fn wait(&mut self) {
        let d = self.next_delay();
        self.failures = self.failures.saturating_add(1);
        tokio::time::sleep(d).await;
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}
