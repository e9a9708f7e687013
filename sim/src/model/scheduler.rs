//! The scheduler: Pending pods placed oldest first on the Ready, schedulable node with the most
//! room left that fits them (LeastAllocated), against the requests kept per node.
//!
//! As kube-scheduler does, a pod without a CPU request counts as 100m when nodes are scored (not
//! when they are checked for room), so replicas that request nothing still spread instead of
//! piling onto the first node. A pod's claims restrict it: a
//! bound volume's node affinity (a local volume lives on one node), a claim not found or not yet
//! bound under an `Immediate` class leaves it Pending. A pod that fits nowhere says why in its
//! `PodScheduled` condition and in one `FailedScheduling` event per distinct reason.

use super::*;

/// kube-scheduler's `DefaultMilliCPURequest`, for scoring only.
const NONZERO_CPU: u64 = 100;

/// Why a node does not fit a pod (the scheduler's filter reasons, as its message words them).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Misfit {
    NotReady,
    Unschedulable,
    Taint(String),
    Selector,
    VolumeAffinity,
    Cpu,
    Memory,
    Pods,
}

impl Misfit {
    fn words(&self) -> String {
        match self {
            Misfit::NotReady => {
                "node(s) had untolerated taint {node.kubernetes.io/not-ready: }".into()
            }
            Misfit::Unschedulable => "node(s) were unschedulable".into(),
            Misfit::Taint(t) => format!("node(s) had untolerated taint {{{t}: }}"),
            Misfit::Selector => "node(s) didn't match Pod's node affinity/selector".into(),
            Misfit::VolumeAffinity => "node(s) had volume node affinity conflict".into(),
            Misfit::Cpu => "Insufficient cpu".into(),
            Misfit::Memory => "Insufficient memory".into(),
            Misfit::Pods => "Too many pods".into(),
        }
    }
}

impl World {
    /// Requests in use on each node (pods that hold resources: bound and not finished;
    /// terminating pods still hold theirs, as on a real node).
    pub fn used(&self) -> HashMap<&str, (u64, u64, u32)> {
        self.nodes
            .keys()
            .map(|n| (n.as_str(), self.usage.get(n).copied().unwrap_or_default()))
            .collect()
    }

    /// The node a bound claim's volume is pinned to, `Err` with the reason a pod that mounts
    /// the claim cannot be placed yet, `Ok(None)` when any node will do.
    fn claim_node(&self, namespace: &str, claim: &str) -> Result<Option<String>, String> {
        let Some(c) = self.claims.get(&(namespace.to_string(), claim.to_string())) else {
            return Err(format!("persistentvolumeclaim \"{claim}\" not found"));
        };
        if let Some(v) = c
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_ref())
            .and_then(|v| self.volumes.get(v))
        {
            return Ok(storage::volume_node(v));
        }
        if self.claim_waits_for_consumer(c) {
            // Provisioning for an earlier pod is under way on the node it chose: kube-scheduler
            // binds that pod only once the volume exists, so later pods see it pinned there.
            Ok(c.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(storage::SELECTED_NODE))
                .cloned())
        } else {
            Err("pod has unbound immediate PersistentVolumeClaims".into())
        }
    }

    /// Places pending pods, oldest first, on the schedulable node with the most free CPU that
    /// fits them (the default scheduler's LeastAllocated scoring, ties by name).
    pub(super) fn schedule(&mut self) {
        let pods = &self.pods;
        let mut pending: Vec<(Millis, (String, String))> = Vec::new();
        self.unbound.retain(|key| {
            let Some(p) = pods.get(key) else {
                return false;
            };
            let unbound = p.node.is_none() && p.phase == PodPhase::Pending;
            if unbound && p.deleting_at.is_none() {
                pending.push((p.created, key.clone()));
            }
            unbound
        });
        if pending.is_empty() {
            return;
        }
        pending.sort();
        // (node, free cpu, free memory, free pod slots, scored cpu), from the kept usage.
        let mut room: Vec<(&SimNode, u64, u64, u32, u64)> = self
            .nodes
            .values()
            .map(|n| {
                let (c, m, k) = self.usage.get(&n.name).copied().unwrap_or_default();
                let zero_cpu = self.nonzero.get(&n.name).copied().unwrap_or_default();
                (
                    n,
                    n.cpu_millis.saturating_sub(c),
                    n.memory_bytes.saturating_sub(m),
                    n.max_pods.saturating_sub(k),
                    c + u64::from(zero_cpu) * NONZERO_CPU,
                )
            })
            .collect();
        let mut placements = vec![];
        let mut misfits: Vec<((String, String), String)> = vec![];
        // Unbound claims this pass has already chosen a node for.
        let mut chosen: BTreeMap<(String, String), String> = BTreeMap::new();
        for (_, key) in pending {
            let Some(pod) = self.pods.get(&key) else {
                continue;
            };
            let spec = &pod.spec;
            // Claims first: a pod whose claims cannot be met fits no node.
            let mut pinned: Option<String> = None;
            let mut blocked = None;
            for c in &spec.claims {
                match self.claim_node(&pod.namespace, c) {
                    Ok(Some(n)) => pinned = Some(n),
                    Ok(None) => {
                        if let Some(n) = chosen.get(&(pod.namespace.clone(), c.clone())) {
                            pinned = Some(n.clone());
                        }
                    }
                    Err(why) => blocked = Some(why),
                }
            }
            if let Some(why) = blocked {
                misfits.push((key, format!("0/{} nodes are available: {why}.", room.len())));
                continue;
            }
            let mut best: Option<(u64, usize)> = None;
            let mut why: BTreeMap<Misfit, u32> = BTreeMap::new();
            for (i, (n, cpu, mem, slots, used_cpu)) in room.iter().enumerate() {
                let misfit = if !n.ready || n.down {
                    Some(Misfit::NotReady)
                } else if n.unschedulable && !n.tolerated_by(&spec.tolerations, false) {
                    Some(Misfit::Unschedulable)
                } else if let Some(t) = n.untolerated(&spec.tolerations) {
                    Some(Misfit::Taint(t))
                } else if !spec
                    .node_selector
                    .iter()
                    .all(|(k, v)| n.labels.get(k) == Some(v))
                {
                    Some(Misfit::Selector)
                } else if pinned.as_ref().is_some_and(|p| p != &n.name) {
                    Some(Misfit::VolumeAffinity)
                } else if spec.cpu_millis > *cpu {
                    Some(Misfit::Cpu)
                } else if spec.memory_bytes > *mem {
                    Some(Misfit::Memory)
                } else if *slots == 0 {
                    Some(Misfit::Pods)
                } else {
                    None
                };
                if let Some(m) = misfit {
                    *why.entry(m).or_default() += 1;
                    continue;
                }
                // LeastAllocated on non-zero CPU requests: the free CPU fraction after placing
                // the pod. (kube-scheduler also weighs memory; the scenarios are CPU-bound, and
                // their placements are the baseline of every rehearsal.)
                let want_cpu = spec.cpu_millis.max(NONZERO_CPU);
                let score =
                    n.cpu_millis.saturating_sub(used_cpu + want_cpu) * 1000 / n.cpu_millis.max(1);
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, i));
                }
            }
            match best {
                Some((_, i)) => {
                    let r = &mut room[i];
                    r.1 -= spec.cpu_millis;
                    r.2 -= spec.memory_bytes;
                    r.3 -= 1;
                    r.4 += spec.cpu_millis.max(NONZERO_CPU);
                    for c in &spec.claims {
                        chosen
                            .entry((key.0.clone(), c.clone()))
                            .or_insert_with(|| r.0.name.clone());
                    }
                    placements.push((key, r.0.name.clone()));
                }
                None => {
                    let reasons: Vec<String> = why
                        .iter()
                        .map(|(m, count)| format!("{count} {}", m.words()))
                        .collect();
                    misfits.push((
                        key,
                        format!(
                            "0/{} nodes are available: {}. preemption: 0/{} nodes are available: {} Preemption is not helpful for scheduling.",
                            room.len(),
                            reasons.join(", "),
                            room.len(),
                            room.len()
                        ),
                    ));
                }
            }
        }
        for (key, node) in placements {
            // The scheduler's event comes before the kubelet's, which binding may start.
            if let Some(p) = self.pods.get(&key) {
                let about = record::about_pod(p, None);
                let message = format!("Successfully assigned {}/{} to {node}", key.0, key.1);
                self.event(about, Source::SCHEDULER, "Scheduled", message);
            }
            self.bind_pod(&key, &node);
            self.claim_nodes_selected(&key, &node);
            if let Some(p) = self.pods.get_mut(&key) {
                p.reason = None;
            }
        }
        for (key, message) in misfits {
            let Some(p) = self.pods.get_mut(&key) else {
                continue;
            };
            let new = ("Unschedulable".to_string(), message.clone());
            if p.reason.as_ref() == Some(&new) {
                continue;
            }
            p.reason = Some(new);
            let about = record::about_pod(p, None);
            self.touch_pod(&key);
            self.warning(about, Source::SCHEDULER, "FailedScheduling", message);
        }
    }
}
