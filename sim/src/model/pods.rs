//! A pod's life after it is bound: Ready at its instant, containers that exit by themselves (a
//! Job's pods), crash loops, graceful termination and deletion, and the per-node and per-owner
//! counts kept as pods come and go.

use super::*;

/// How long a container that failed waits before its kubelet starts it again (the first step
/// of the kubelet's back-off).
const RESTART_BACKOFF_MS: Millis = 10_000;

/// The names of a pod's containers, as its kubelet's events name them.
pub(crate) fn container_names(p: &SimPod) -> Vec<String> {
    match &p.spec.given {
        Some(spec) => spec.containers.iter().map(|c| c.name.clone()).collect(),
        None => vec![crate::kube::container_name(p)],
    }
}

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
            self.touch_pod(&k);
            if let Some(p) = self.pods.get(&k) {
                let c = container_names(p).into_iter().next().unwrap_or_default();
                let about = record::about_pod(p, Some(&c));
                let node = p.node.clone().unwrap_or_default();
                let message = format!(
                    "Back-off restarting failed container {c} in pod {}_{}({})",
                    p.name, p.namespace, p.uid
                );
                self.warning(about, record::kubelet(&node), "BackOff", message);
            }
        }
    }

    /// `p` is gone from its node, or finished: its requests are free again.
    pub(super) fn release(&mut self, p: &SimPod) {
        if p.is_finished() {
            // Released when it finished.
            return;
        }
        let Some(node) = p.node.as_ref() else {
            return;
        };
        if let Some(u) = self.usage.get_mut(node) {
            *u = (
                u.0.saturating_sub(p.spec.cpu_millis),
                u.1.saturating_sub(p.spec.memory_bytes),
                u.2.saturating_sub(1),
            );
        }
        if let Some(z) = self.nonzero.get_mut(node) {
            *z = z.saturating_sub(u32::from(p.spec.cpu_millis == 0));
        }
    }

    /// `p` stops counting as its owner's active pod (it terminates, finishes, or is replaced).
    pub(super) fn forget(&mut self, p: &SimPod) {
        if p.deleting_at.is_some() || p.is_finished() {
            return;
        }
        if let Some(n) = p.owner.as_ref().and_then(|o| self.active.get_mut(&o.uid)) {
            *n = n.saturating_sub(1);
            self.work_epoch += 1;
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
        let running = p.phase == PodPhase::Running;
        let p = p.clone();
        self.forget(&p);
        if running && let Some(node) = p.node.as_deref() {
            for c in container_names(&p) {
                let about = record::about_pod(&p, Some(&c));
                self.event(
                    about,
                    record::kubelet(node),
                    "Killing",
                    format!("Stopping container {c}"),
                );
            }
        }
        // Pods that never ran (or are finished) go at once, as the apiserver does.
        if at_once {
            self.remove_pod(key);
        } else {
            if let Some(p) = self.pods.get_mut(key) {
                p.deleting_at = Some(now + ms);
            }
            self.due_gone.insert((now + ms, key.clone()));
            self.touch_pod(key);
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

    /// Pods whose start-up ended write that they are Ready (a watch sees the change).
    pub(super) fn announce_ready(&mut self) {
        let now = self.now;
        while let Some((at, key)) = self.due_ready.first().cloned() {
            if at > now {
                break;
            }
            self.due_ready.pop_first();
            if self.pods.get(&key).is_some_and(|p| p.ready_at == Some(at)) {
                self.touch_pod(&key);
            }
        }
    }

    /// The kubelet starts the pods bound to its node that waited for it (or for their volumes).
    pub(super) fn start_waiting(&mut self) {
        if self.waiting.is_empty() {
            return;
        }
        let waiting: Vec<(String, String)> = self.waiting.iter().cloned().collect();
        for k in waiting {
            self.start_pod(&k);
        }
    }

    /// Terminating pods whose grace period ended are gone.
    pub(super) fn remove_terminated(&mut self) {
        let now = self.now;
        while let Some((at, key)) = self.due_gone.first().cloned() {
            if at > now {
                break;
            }
            self.due_gone.pop_first();
            if self
                .pods
                .get(&key)
                .is_some_and(|p| p.deleting_at == Some(at))
            {
                self.remove_pod(&key);
            }
        }
    }

    /// Containers that ran their course exit: a pod that does not restart them finishes
    /// (`Succeeded` on 0, `Failed` otherwise) and frees its node's resources; one that does
    /// (`OnFailure` after a failure, `Always`) runs them again after the kubelet's back-off.
    pub(super) fn finish_pods(&mut self) {
        let now = self.now;
        while let Some((at, key)) = self.due_finish.first().cloned() {
            if at > now {
                break;
            }
            self.due_finish.pop_first();
            let Some(p) = self.pods.get(&key).cloned() else {
                continue;
            };
            if p.phase != PodPhase::Running || p.deleting_at.is_some() || p.finish_at != Some(at) {
                continue;
            }
            // A check's probe answers from the model as it stands now; its verdict is
            // final (a probe pod never restarts its container).
            let (code, message) = match &p.spec.probe {
                Some(probe) => {
                    let (code, message) = self.probe_result(&p, probe);
                    (code, Some(message))
                }
                None => (p.spec.exit_code, None),
            };
            let again = match p.spec.restart {
                Restart::Always => true,
                Restart::OnFailure => code != 0,
                Restart::Never => false,
            };
            if again {
                if let Some(p) = self.pods.get_mut(&key) {
                    p.restarts += 1;
                    p.exited = Some((code, now));
                    let start = now + RESTART_BACKOFF_MS;
                    p.ready_at = Some(start + p.spec.startup_ms);
                    p.finish_at = p.spec.run_ms.map(|r| start + p.spec.startup_ms + r);
                }
                if let Some(p) = self.pods.get(&key) {
                    let (ready, finish) = (p.ready_at, p.finish_at);
                    if let Some(at) = ready {
                        self.due_ready.insert((at, key.clone()));
                    }
                    if let Some(at) = finish {
                        self.due_finish.insert((at, key.clone()));
                    }
                }
                self.touch_pod(&key);
                continue;
            }
            self.forget(&p);
            self.release(&p);
            if let Some(p) = self.pods.get_mut(&key) {
                p.phase = if code == 0 {
                    PodPhase::Succeeded
                } else {
                    PodPhase::Failed
                };
                p.exited = Some((code, now));
                p.termination_message = message;
                p.finish_at = None;
            }
            self.touch_pod(&key);
        }
    }

    /// When the next pod is due to become Ready, exit by itself, or be gone.
    pub(super) fn next_pod_change(&self) -> Option<Millis> {
        let now = self.now;
        let after = |set: &BTreeSet<(Millis, (String, String))>| {
            set.iter().map(|(t, _)| *t).find(|&t| t > now)
        };
        let looping = (!self.faults.crash_loops.is_empty())
            .then(|| {
                self.pods
                    .values()
                    .filter_map(|p| {
                        p.crash_looping_since
                            .map(|s| s + CRASHLOOP_PERIOD_MS * (u64::from(p.restarts) + 1))
                    })
                    .filter(|&t| t > now)
                    .min()
            })
            .flatten();
        [
            after(&self.due_ready),
            after(&self.due_finish),
            after(&self.due_gone),
            looping,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
