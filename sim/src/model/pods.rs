//! Pods going away: graceful termination, deletion, crash loops, and the per-node and per-owner
//! counts kept as pods come and go.

use super::*;

impl World {
    pub(super) fn crash_loop(&mut self) {
        if self.faults.crash_loops.is_empty() {
            return;
        }
        let now = self.now;
        let mut bumped = vec![];
        for p in self.pods.values_mut() {
            let Some(node) = p.node.as_ref().and_then(|n| self.nodes.get(n)) else {
                continue;
            };
            let hit = self.faults.crash_loops.iter().any(|f| {
                f.selector.matches(&p.spec.labels)
                    && node.kubelet >= f.from
                    && node.restarted_at.is_some()
            });
            if !hit || p.phase != PodPhase::Running || p.deleting_at.is_some() {
                continue;
            }
            match p.crash_looping_since {
                None => {
                    p.crash_looping_since = Some(now);
                    p.restarts += 1;
                    bumped.push(p.key());
                }
                Some(since) => {
                    let due = since + CRASHLOOP_PERIOD_MS * u64::from(p.restarts);
                    if now >= due {
                        p.restarts += 1;
                        bumped.push(p.key());
                    }
                }
            }
        }
        for k in bumped {
            let rv = self.bump();
            if let Some(p) = self.pods.get_mut(&k) {
                p.resource_version = rv;
            }
        }
    }

    /// `p` is gone from its node: its requests are free again.
    pub(super) fn release(&mut self, p: &SimPod) {
        if let Some(u) = p.node.as_ref().and_then(|n| self.usage.get_mut(n)) {
            *u = (
                u.0.saturating_sub(p.spec.cpu_millis),
                u.1.saturating_sub(p.spec.memory_bytes),
                u.2.saturating_sub(1),
            );
        }
    }

    /// `p` stops counting as its owner's active pod (it terminates, or is replaced).
    pub(super) fn forget(&mut self, p: &SimPod) {
        if p.deleting_at.is_some() || p.is_finished() {
            return;
        }
        if let Some(n) = p.owner.as_ref().and_then(|o| self.active.get_mut(&o.uid)) {
            *n = n.saturating_sub(1);
        }
    }

    pub(super) fn start_termination(&mut self, key: &(String, String), grace_ms: Option<Millis>) {
        let now = self.now;
        let slow = |w: &World, p: &SimPod| {
            p.node
                .as_ref()
                .and_then(|n| w.faults.slow_termination_ms.get(n))
                .copied()
        };
        let Some(p) = self.pods.get(key) else {
            return;
        };
        if p.deleting_at.is_some() {
            return;
        }
        let ms = slow(self, p).or(grace_ms).unwrap_or(p.spec.termination_ms);
        let at_once = ms == 0 || p.node.is_none() || p.is_finished();
        let owner = (!p.is_finished())
            .then(|| p.owner.as_ref().map(|o| o.uid.clone()))
            .flatten();
        if let Some(n) = owner.and_then(|uid| self.active.get_mut(&uid)) {
            *n = n.saturating_sub(1);
        }
        // Pods that never ran (or are finished) go at once, as the apiserver does.
        if at_once {
            if let Some(gone) = self.pods.remove(key) {
                self.release(&gone);
                self.unselect(key);
            }
            self.bump();
        } else {
            let rv = self.bump();
            if let Some(p) = self.pods.get_mut(key) {
                p.deleting_at = Some(now + ms);
                p.resource_version = rv;
            }
        }
    }

    /// `DELETE pods/NAME`: starts graceful termination; a mirror pod is recreated by its kubelet
    /// at once, which we model as nothing happening.
    pub fn delete_pod(
        &mut self,
        namespace: &str,
        name: &str,
        grace_ms: Option<Millis>,
    ) -> Result<SimPod, ModelError> {
        let key = (namespace.to_string(), name.to_string());
        let pod = self
            .pods
            .get(&key)
            .cloned()
            .ok_or_else(|| not_found("pods", name))?;
        if !pod.is_mirror() {
            self.start_termination(&key, grace_ms);
            self.tick();
        }
        Ok(self.pods.get(&key).cloned().unwrap_or(pod))
    }
}
