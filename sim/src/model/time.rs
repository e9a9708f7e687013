//! Time in the model: the clock's instants, and every change due at them processed at its own
//! instant (`advance_to`), so hours of upgrade cost microseconds of virtual time.

use super::*;

impl World {
    /// Brings a real-clock world up to the wall clock (a no-op for a virtual clock).
    pub fn sync(&mut self) {
        let t = self.clock.now();
        if t > self.now {
            self.advance_to(t);
        } else if self.ticked != Some((self.now, self.resource_version)) {
            // Another pass at an instant already passed, over a world nothing changed since,
            // would change nothing (a tick is idempotent at a fixed instant): skipped.
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

    /// The earliest `ready_at` of any node (due or not), counted again only after a node
    /// changed.
    fn earliest_ready(&self) -> Option<Millis> {
        match self.next_ready.get() {
            Some((epoch, t)) if epoch == self.node_epoch => t,
            _ => {
                let t = self.nodes.values().filter_map(|n| n.ready_at).min();
                self.next_ready.set(Some((self.node_epoch, t)));
                t
            }
        }
    }

    /// The next instant after `now` at which something changes by itself.
    pub fn next_due(&self) -> Option<Millis> {
        let now = self.now;
        let nodes = match self.earliest_ready() {
            Some(t) if t <= now => self
                .nodes
                .values()
                .filter_map(|n| n.ready_at)
                .filter(|&t| t > now)
                .min(),
            t => t,
        };
        [
            self.next_pod_change(),
            nodes,
            self.next_job_change(),
            self.next_budget_change(),
            self.next_event_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// One step of every controller at `now`: kubelets, terminations, the namespace, workload,
    /// job and volume controllers, the scheduler, crash loops, then each controller's `status`,
    /// and the journal. Idempotent at a fixed instant.
    pub fn tick(&mut self) {
        let now = self.now;
        // Kubelets coming back after a restart (none is due before the earliest).
        let mut changed = vec![];
        if self.earliest_ready().is_some_and(|t| t <= now) {
            for n in self.nodes.values_mut() {
                if n.ready_at.is_some_and(|t| t <= now) && !n.down {
                    n.ready_at = None;
                    n.ready = true;
                    changed.push(n.name.clone());
                }
            }
        }
        for name in changed {
            self.touch_node(&name);
            if let Some(n) = self.nodes.get(&name) {
                let about = record::about_node(n);
                self.event(
                    about,
                    record::kubelet(&name),
                    "NodeReady",
                    format!("Node {name} status is now: NodeReady"),
                );
            }
        }
        self.remove_terminated();
        self.finish_pods();
        self.announce_ready();
        self.reconcile_namespaces();
        self.reconcile_workloads();
        self.reconcile_jobs();
        self.reconcile_claims();
        self.schedule();
        self.reconcile_claims();
        self.start_waiting();
        self.crash_loop();
        self.expire_disrupted();
        self.write_status();
        self.note_budgets();
        self.expire_events();
        self.write_journal();
        self.ticked = Some((self.now, self.resource_version));
    }
}
