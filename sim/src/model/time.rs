//! Time in the model: the clock's instants, and every change due at them processed at its own
//! instant (`advance_to`), so hours of upgrade cost microseconds of virtual time.

use super::*;

impl World {
    /// Brings a real-clock world up to the wall clock (a no-op for a virtual clock).
    pub fn sync(&mut self) {
        let t = self.clock.now();
        if t > self.now {
            self.advance_to(t);
        } else {
            self.tick();
        }
    }

    /// Moves simulated time forward by `ms` (virtual clocks; a real clock only moves itself).
    pub fn advance(&mut self, ms: Millis) {
        let to = self.now.saturating_add(ms);
        self.clock.set(to);
        self.advance_to(to);
    }

    /// Processes every change due up to `to`, each at its own instant.
    pub fn advance_to(&mut self, to: Millis) {
        // Bounded: each pass either moves time forward or reaches `to`.
        for _ in 0..100_000 {
            match self.next_due().filter(|&t| t <= to) {
                Some(t) => {
                    self.now = self.now.max(t);
                    self.tick();
                }
                None => break,
            }
        }
        self.now = self.now.max(to);
        self.tick();
    }

    /// The next instant after `now` at which something changes by itself.
    pub fn next_due(&self) -> Option<Millis> {
        let pods = self.pods.values().flat_map(|p| {
            [
                p.deleting_at,
                p.ready_at,
                p.crash_looping_since
                    .map(|s| s + CRASHLOOP_PERIOD_MS * (u64::from(p.restarts) + 1)),
            ]
        });
        let nodes = self.nodes.values().map(|n| n.ready_at);
        pods.chain(nodes).flatten().filter(|&t| t > self.now).min()
    }

    /// One step of every controller at `now`: kubelets, terminations, workload controllers, the
    /// scheduler, crash loops. Idempotent at a fixed instant.
    pub fn tick(&mut self) {
        let now = self.now;
        // Kubelets coming back after a restart.
        let mut changed = vec![];
        for n in self.nodes.values_mut() {
            if n.ready_at.is_some_and(|t| t <= now) && !n.down {
                n.ready_at = None;
                n.ready = true;
                changed.push(n.name.clone());
            }
        }
        for name in changed {
            let rv = self.bump();
            if let Some(n) = self.nodes.get_mut(&name) {
                n.resource_version = rv;
            }
        }
        // Terminating pods that are gone.
        let gone: Vec<(String, String)> = self
            .pods
            .iter()
            .filter(|(_, p)| p.deleting_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(p) = self.pods.remove(&k) {
                self.release(&p);
                self.unselect(&k);
            }
        }
        self.reconcile_workloads();
        self.schedule();
        self.crash_loop();
        self.note_budgets();
    }
}
