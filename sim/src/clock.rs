//! The sim's clock: real (optionally sped up) or virtual (moved only by the caller), in
//! milliseconds since the Unix epoch.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// 2026-01-05T06:00:00Z: where virtual clocks start unless told otherwise.
pub const VIRTUAL_EPOCH: Millis = 1_767_592_800_000;

#[derive(Debug, Clone)]
pub enum Clock {
    /// Wall-clock time since `origin`, multiplied by `speed`, added to `base`.
    Real {
        origin: Instant,
        base: Millis,
        speed: f64,
    },
    /// Time only moves when [`Clock::set`] is called: hours of simulated upgrade cost
    /// microseconds.
    Virtual { now: Millis },
    /// Tokio's clock since `origin`, added to `base`: with the runtime's time paused it is
    /// virtual and moves when every task waits on a timer (a daemon and a sim in one process,
    /// in virtual time: the benchmarks).
    Tokio {
        origin: tokio::time::Instant,
        base: Millis,
    },
}

impl Clock {
    /// The wall clock, `speed` times faster than real time (1.0: real time).
    pub fn real(speed: f64) -> Clock {
        let base = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(VIRTUAL_EPOCH);
        Clock::Real {
            origin: Instant::now(),
            base,
            speed: if speed.is_finite() && speed > 0.0 {
                speed
            } else {
                1.0
            },
        }
    }

    pub fn virtual_at(now: Millis) -> Clock {
        Clock::Virtual { now }
    }

    /// Tokio's clock from now on, reading `base` now (call inside a runtime).
    pub fn tokio_at(base: Millis) -> Clock {
        Clock::Tokio {
            origin: tokio::time::Instant::now(),
            base,
        }
    }

    pub fn now(&self) -> Millis {
        match self {
            Clock::Real {
                origin,
                base,
                speed,
            } => base + (origin.elapsed().as_secs_f64() * 1000.0 * speed) as Millis,
            Clock::Virtual { now } => *now,
            Clock::Tokio { origin, base } => base + origin.elapsed().as_millis() as Millis,
        }
    }

    /// Moves a virtual clock (never backwards); a real clock ignores it.
    pub fn set(&mut self, to: Millis) {
        if let Clock::Virtual { now } = self {
            *now = (*now).max(to);
        }
    }

    /// When tokio's clock reads `at`, for a clock that is tokio's; `None` for the others.
    pub fn tokio_instant(&self, at: Millis) -> Option<tokio::time::Instant> {
        match self {
            Clock::Tokio { origin, base } => {
                Some(*origin + std::time::Duration::from_millis(at.saturating_sub(*base)))
            }
            _ => None,
        }
    }

    pub fn is_virtual(&self) -> bool {
        matches!(self, Clock::Virtual { .. })
    }
}
