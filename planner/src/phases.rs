//! Units and phases: the control-plane hop (snapshot, `kubeadm upgrade apply`/`node`, the
//! kubelets after), workers by generation with their canaries, and each unit's steps and
//! estimate.

use std::collections::{BTreeMap, BTreeSet};

use upgraded_events::check::Boundary;
use upgraded_events::inventory;
use upgraded_events::{Role, Step, Version};

use crate::capacity::Refusal;
use crate::{
    BatchReport, Ctx, PhaseKind, PhaseReport, PlanError, Unit, hops_between, placeholder_unit, solo,
};

impl Ctx<'_> {
    pub(crate) fn estimate(&self, steps: &[Step], evicted: usize) -> u64 {
        let d = &self.policy.durations;
        steps
            .iter()
            .map(|s| match s {
                Step::Preflight => d.preflight,
                Step::EtcdSnapshot => d.etcd_snapshot,
                Step::KubeadmUpgrade { apply: true, .. } => d.kubeadm_apply,
                Step::KubeadmUpgrade { apply: false, .. } => d.kubeadm_node,
                Step::KubeadmDowngrade { apply: true, .. } => d.kubeadm_apply,
                Step::KubeadmDowngrade { apply: false, .. } => d.kubeadm_node,
                Step::KubeProxy { .. } => d.verify,
                Step::Cordon => d.cordon,
                Step::Drain => {
                    (d.drain + d.drain_per_pod * evicted as u64).min(self.policy.drain_timeout_secs)
                }
                Step::UpgradePackages { .. } | Step::DowngradePackages { .. } => d.upgrade_packages,
                Step::RestoreKubeletFiles { .. } => d.uncordon,
                Step::RestartKubelet => d.restart_kubelet,
                Step::Verify => d.verify,
                Step::Checks { .. } => d.checks,
                Step::Uncordon => d.uncordon,
                Step::Soak => self.policy.canary_soak_secs,
                Step::EtcdRestore(_) => d.etcd_snapshot,
            })
            .sum()
    }

    pub(crate) fn node(&self, name: &str) -> Option<&inventory::NodeInv> {
        self.cap
            .node_index(name)
            .and_then(|i| self.inv.nodes.get(i))
    }

    pub(crate) fn evicted(&self, name: &str) -> usize {
        self.cap.node_index(name).map_or(0, |i| self.cap.evicted(i))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn unit(
        &self,
        node: &str,
        from: Version,
        to: Version,
        steps: Vec<Step>,
        canary: bool,
        blocked: Option<String>,
        evicted: usize,
    ) -> Unit {
        let n = self.node(node);
        Unit {
            name: node.to_string(),
            node: node.to_string(),
            role: n.map_or(Role::Worker, |n| n.role),
            generation: self.gen_of.get(node).cloned(),
            from,
            to,
            canary,
            stays_cordoned: n.is_some_and(|n| n.unschedulable),
            evicted_pods: evicted,
            blocked,
            estimate_secs: self.estimate(&steps, evicted),
            steps,
        }
    }

    pub(crate) fn control_plane_phase(
        &mut self,
        version: Version,
        apply_on: Option<&str>,
        nodes: &[String],
        from_now: &mut BTreeMap<String, Version>,
    ) -> PhaseReport {
        // kubeadm on every control-plane node first, kubelets after: a kubelet must not be
        // newer than any apiserver, and until the last node's kubeadm ran, some are older.
        // The last node does both in one pass.
        let mut batches = Vec::new();
        let last = nodes.len().saturating_sub(1);
        let mut second = Vec::new();
        for (i, name) in nodes.iter().enumerate() {
            let apply = apply_on == Some(name.as_str());
            let mut steps = vec![Step::Preflight];
            if i == 0 {
                steps.push(Step::EtcdSnapshot);
            }
            steps.push(Step::KubeadmUpgrade { version, apply });
            let from = from_now.get(name).copied().unwrap_or(version);
            let what = if apply {
                " (kubeadm upgrade apply)"
            } else {
                " (kubeadm upgrade node)"
            };
            if i == last {
                steps.extend(Self::kubelet_steps(version));
                let evicted = self.evicted(name);
                let blocked = self.drain_in_model(name);
                let u = self.unit(name, from, version, steps, false, blocked, evicted);
                batches.push(solo(
                    format!("control plane {version}: {name}{what} + kubelet"),
                    u,
                ));
            } else {
                let u = self.unit(name, from, version, steps, false, None, 0);
                batches.push(solo(format!("control plane {version}: {name}{what}"), u));
                second.push((name.clone(), from));
            }
        }
        for (name, from) in second {
            let mut steps = vec![Step::Preflight];
            steps.extend(Self::kubelet_steps(version));
            let evicted = self.evicted(&name);
            let blocked = self.drain_in_model(&name);
            let u = self.unit(&name, from, version, steps, false, blocked, evicted);
            batches.push(solo(format!("control plane {version}: {name} kubelet"), u));
        }
        for name in nodes {
            from_now.insert(name.clone(), version);
        }
        PhaseReport {
            name: format!("control plane {version}"),
            kind: PhaseKind::ControlPlane,
            version,
            batches,
            estimate_secs: 0,
            start: String::new(),
            end: String::new(),
            fits_windows: true,
        }
    }

    pub(crate) fn kubelet_steps(version: Version) -> [Step; 6] {
        [
            Step::Cordon,
            Step::Drain,
            Step::UpgradePackages { version },
            Step::RestartKubelet,
            Step::Verify,
            Step::Uncordon,
        ]
    }

    /// Rounds of serialised evictions a batch's drains may take turns through. A drain
    /// times out when nothing moves for `drainTimeout` (the daemon's drain), and each
    /// round moves once a replacement is Ready: any number of rounds when that
    /// (`durations.podReady`, plus kubectl's 5 s retry) fits in the timeout; else none
    /// beyond the first, as a wait between rounds would look like a stuck drain.
    pub(crate) fn max_rounds(&self) -> u32 {
        let d = &self.policy.durations;
        if d.pod_ready + 5 < self.policy.drain_timeout_secs {
            u32::MAX
        } else {
            1
        }
    }

    /// Drains a node alone in the capacity model; the refusal, if any, as text.
    pub(crate) fn drain_in_model(&mut self, name: &str) -> Option<String> {
        let i = self.cap.node_index(name)?;
        if let Err(r) = self.cap.check_pdbs(&[i], u32::MAX) {
            return Some(r.describe());
        }
        if !self.cap.unmanaged_pods(i).is_empty() {
            return Some(format!(
                "{} pod(s) without a controller (drain refuses them without --force)",
                self.cap.unmanaged_pods(i).len()
            ));
        }
        self.cap.drain_alone(i).err().map(|r| r.describe())
    }

    pub(crate) fn worker_steps(
        &self,
        from: Version,
        to: Version,
        canary: bool,
    ) -> Result<Vec<Step>, PlanError> {
        let mut steps = vec![Step::Preflight];
        // The baseline: the same checks before anything is touched, so a later failure is a
        // change the upgrade made.
        if self.policy.runs_checks(Boundary::Preflight) {
            steps.push(Step::Checks {
                boundary: Boundary::Preflight,
            });
        }
        steps.extend([Step::Cordon, Step::Drain]);
        for hop in hops_between(from, to, self.policy)? {
            steps.push(Step::KubeadmUpgrade {
                version: hop,
                apply: false,
            });
            steps.push(Step::UpgradePackages { version: hop });
        }
        // A storage check's writer, on the drained node before its kubelet restarts.
        if self.policy.runs_node_checks(Boundary::BeforeKubeletRestart) {
            steps.push(Step::Checks {
                boundary: Boundary::BeforeKubeletRestart,
            });
        }
        steps.extend([Step::RestartKubelet, Step::Verify]);
        // The node's checks, while it is still cordoned: nothing returns to a node whose
        // pod network or DNS does not work.
        let boundary = if canary {
            Boundary::AfterCanary
        } else {
            Boundary::AfterBatch
        };
        if self.policy.runs_checks(boundary) {
            steps.push(Step::Checks { boundary });
        }
        steps.push(Step::Uncordon);
        if canary {
            steps.push(Step::Soak);
        }
        Ok(steps)
    }

    /// The checks steps that stand for the run, not one node: the baseline on the plan's
    /// first entry (the control plane's first node has no node checks of its own), after
    /// each hop's control plane on its last node (kubeadm and kubelet done, before that
    /// node's uncordon), and the final smoke tests on the last entry, after its uncordon
    /// (the engine holds them until every other node is done). Estimates follow.
    pub(crate) fn add_run_checks(&self, phases: &mut [PhaseReport]) {
        let mut units = phases
            .iter_mut()
            .flat_map(|p| p.batches.iter_mut())
            .flat_map(|b| b.units.iter_mut());
        let policy = self.policy;
        if let Some(first) = units.next()
            && policy.runs_run_checks(Boundary::Preflight)
        {
            let baseline = Step::Checks {
                boundary: Boundary::Preflight,
            };
            if !first.steps.contains(&baseline) {
                let at = usize::from(first.steps.first() == Some(&Step::Preflight));
                first.steps.insert(at, baseline);
                first.estimate_secs = self.estimate(&first.steps, first.evicted_pods);
            }
        }
        for phase in phases.iter_mut() {
            if phase.kind == PhaseKind::ControlPlane
                && policy.runs_run_checks(Boundary::AfterControlPlane)
            {
                let last = phase
                    .batches
                    .iter_mut()
                    .flat_map(|b| b.units.iter_mut())
                    .find(|u| {
                        u.steps
                            .iter()
                            .any(|s| matches!(s, Step::KubeadmUpgrade { .. }))
                            && u.steps.contains(&Step::Verify)
                    });
                if let Some(u) = last
                    && let Some(at) = u.steps.iter().position(|s| *s == Step::Uncordon)
                {
                    u.steps.insert(
                        at,
                        Step::Checks {
                            boundary: Boundary::AfterControlPlane,
                        },
                    );
                    u.estimate_secs = self.estimate(&u.steps, u.evicted_pods);
                }
            }
            // Every other control-plane node's step: the control plane's checks (each
            // apiserver, the mirror pods, etcd) before the next node is touched.
            if phase.kind == PhaseKind::ControlPlane
                && policy.runs_run_checks(Boundary::AfterControlPlaneNode)
            {
                let after_hop = Step::Checks {
                    boundary: Boundary::AfterControlPlane,
                };
                let after_node = Step::Checks {
                    boundary: Boundary::AfterControlPlaneNode,
                };
                for u in phase
                    .batches
                    .iter_mut()
                    .flat_map(|b| b.units.iter_mut())
                    .filter(|u| !u.steps.contains(&after_hop) && !u.steps.contains(&after_node))
                {
                    match u.steps.iter().position(|s| *s == Step::Uncordon) {
                        Some(at) => u.steps.insert(at, after_node.clone()),
                        None => u.steps.push(after_node.clone()),
                    }
                    u.estimate_secs = self.estimate(&u.steps, u.evicted_pods);
                }
            }
        }
        if policy.runs_run_checks(Boundary::Final)
            && let Some(last) = phases
                .iter_mut()
                .flat_map(|p| p.batches.iter_mut())
                .flat_map(|b| b.units.iter_mut())
                .last()
        {
            last.steps.push(Step::Checks {
                boundary: Boundary::Final,
            });
            last.estimate_secs = self.estimate(&last.steps, last.evicted_pods);
        }
    }

    /// Canaries (one phase for all generations, oldest first), then one phase per generation.
    pub(crate) fn worker_phases(
        &mut self,
        to: Version,
        nodes: &[String],
        catch_up_for: Option<Version>,
        from_now: &mut BTreeMap<String, Version>,
        only_hop: Option<Version>,
    ) -> Result<Vec<PhaseReport>, PlanError> {
        let suffix = match (catch_up_for, only_hop) {
            (Some(h), _) => format!(" (before control plane {h})"),
            (None, Some(h)) => format!(" (hop {h})"),
            (None, None) => String::new(),
        };
        let kind_rest = if catch_up_for.is_some() {
            PhaseKind::WorkerCatchUp
        } else {
            PhaseKind::Generation
        };
        let mut by_gen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for n in nodes {
            by_gen
                .entry(
                    self.gen_of
                        .get(n)
                        .cloned()
                        .unwrap_or_else(|| "unlabelled".into()),
                )
                .or_default()
                .push(n.clone());
        }
        // Oldest machines first inside a generation, then by name.
        for list in by_gen.values_mut() {
            list.sort_by_key(|n| {
                (
                    self.node(n)
                        .and_then(|x| x.created)
                        .map_or(i64::MAX, |t| t.0),
                    n.clone(),
                )
            });
        }
        let order: Vec<String> = self
            .gen_order
            .iter()
            .filter(|g| by_gen.contains_key(*g))
            .cloned()
            .collect();
        let mut canary_batches = Vec::new();
        let mut rest_phases = Vec::new();
        let mut canaries: BTreeSet<String> = BTreeSet::new();
        // The canaries come from each generation's majority: an outlier is proven by
        // nobody's canary but its own (the nodes that differ in any field go last).
        // A machine waiting for its reboot is no canary either (`pendingReboot: warn`).
        let outliers: BTreeSet<&str> = self
            .drift
            .iter()
            .flat_map(|r| r.outliers(None))
            .chain(
                self.inv
                    .hosts
                    .iter()
                    .filter(|(_, h)| upgraded_events::drift::pending_reboot(h).is_some())
                    .map(|(n, _)| n.as_str()),
            )
            .collect();
        // With `drift: subgroup`, the nodes alike in the fields that must match form a
        // subgroup of their generation, each with its own canary; the majority's is first.
        let subgroup_of = |n: &str| -> Vec<(String, String)> {
            self.drift
                .iter()
                .flat_map(|r| r.fields.iter())
                .filter(|f| f.level == upgraded_events::drift::Match::Must)
                .filter_map(|f| {
                    f.outliers
                        .iter()
                        .find(|(o, _)| o == n)
                        .map(|(_, v)| (f.field.clone(), v.clone()))
                })
                .collect()
        };
        for g in &order {
            let want = self.policy.generation_rule(g).canaries as usize;
            let mut list = by_gen.get(g).cloned().unwrap_or_default();
            list.sort_by_key(|n| outliers.contains(n.as_str()));
            let mut picked = 0;
            let mut subgroups: BTreeSet<Vec<(String, String)>> = BTreeSet::new();
            for n in &list {
                let sub = subgroup_of(n);
                let own_canary = self.policy.drift_subgroups && !sub.is_empty();
                if own_canary && subgroups.contains(&sub) {
                    continue;
                }
                if !own_canary && picked >= want {
                    continue;
                }
                let Some(i) = self.cap.node_index(n) else {
                    continue;
                };
                let cordoned = self.node(n).is_some_and(|x| x.unschedulable);
                if cordoned
                    || !self.cap.unmanaged_pods(i).is_empty()
                    || self.cap.check_alone(i).is_err()
                {
                    continue;
                }
                let evicted = self.cap.evicted(i);
                let _ = self.cap.drain_alone(i);
                let from = from_now.get(n).copied().unwrap_or(to);
                let steps = self.worker_steps(from, to, true)?;
                let u = self.unit(n, from, to, steps, true, None, evicted);
                canaries.insert(n.clone());
                if own_canary {
                    let what: Vec<String> = sub.iter().map(|(f, v)| format!("{f} {v}")).collect();
                    subgroups.insert(sub);
                    canary_batches.push(solo(format!("canary {g} ({}): {n}", what.join(", ")), u));
                } else {
                    picked += 1;
                    canary_batches.push(solo(format!("canary {g}: {n}"), u));
                }
            }
        }
        for g in &order {
            let mut remaining: Vec<String> = by_gen
                .get(g)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|n| !canaries.contains(n))
                .collect();
            let size = by_gen.get(g).map_or(0, Vec::len);
            let max = self.policy.generation_rule(g).max_unavailable.of(size);
            let mut batches = Vec::new();
            while !remaining.is_empty() {
                let idx: Vec<usize> = remaining
                    .iter()
                    .filter_map(|n| self.cap.node_index(n))
                    .collect();
                // Before the drains move them.
                let evicted: BTreeMap<String, usize> = remaining
                    .iter()
                    .take(max + 17)
                    .map(|n| (n.clone(), self.evicted(n)))
                    .collect();
                // Nodes with unmanaged pods go alone and blocked; so do nodes that fit nowhere.
                let first = remaining[0].clone();
                let first_i = self.cap.node_index(&first);
                let unmanaged = first_i.is_some_and(|i| !self.cap.unmanaged_pods(i).is_empty());
                let mut limited_by = None;
                let (members, refusal): (Vec<String>, Option<String>) = if unmanaged {
                    (
                        vec![first.clone()],
                        Some(format!(
                            "{} pod(s) without a controller (drain refuses them without --force)",
                            first_i.map_or(0, |i| self.cap.unmanaged_pods(i).len())
                        )),
                    )
                } else {
                    let eligible: Vec<usize> = idx
                        .iter()
                        .copied()
                        .filter(|&i| self.cap.unmanaged_pods(i).is_empty())
                        .collect();
                    let (batch, refusal, limit) =
                        self.cap.next_batch(&eligible, max, self.max_rounds());
                    if batch.len() < max && eligible.len() > batch.len() {
                        limited_by = limit.map(|r| r.describe());
                    }
                    if batch.is_empty() {
                        (
                            vec![first.clone()],
                            refusal
                                .map(|r: Refusal| r.describe())
                                .or(Some("does not fit".into())),
                        )
                    } else {
                        let names = batch
                            .iter()
                            .filter_map(|&i| {
                                remaining
                                    .iter()
                                    .find(|n| self.cap.node_index(n) == Some(i))
                                    .cloned()
                            })
                            .collect();
                        (names, None)
                    }
                };
                // The batch's drains share the budgets: each round beyond the first waits
                // for replacements to become Ready.
                let member_idx: Vec<usize> = members
                    .iter()
                    .filter_map(|n| self.cap.node_index(n))
                    .collect();
                let serial =
                    u64::from(self.cap.extra_rounds(&member_idx)) * self.policy.durations.pod_ready;
                let mut units = Vec::new();
                for n in &members {
                    let from = from_now.get(n).copied().unwrap_or(to);
                    let steps = self.worker_steps(from, to, false)?;
                    let ev = evicted.get(n).copied().unwrap_or(0);
                    let mut u = self.unit(n, from, to, steps, false, refusal.clone(), ev);
                    u.estimate_secs += serial;
                    units.push(u);
                }
                remaining.retain(|n| !members.contains(n));
                batches.push(BatchReport {
                    limited_by,
                    units,
                    ..solo(String::new(), placeholder_unit())
                });
            }
            let total = batches.len();
            for (i, b) in batches.iter_mut().enumerate() {
                b.label = format!("{g} {}/{total}", i + 1);
            }
            rest_phases.push(PhaseReport {
                name: format!("{g} {to}{suffix}"),
                kind: kind_rest,
                version: to,
                batches,
                estimate_secs: 0,
                start: String::new(),
                end: String::new(),
                fits_windows: true,
            });
        }
        for n in nodes {
            from_now.insert(n.clone(), to);
        }
        let mut out = Vec::new();
        if !canary_batches.is_empty() {
            out.push(PhaseReport {
                name: format!("canaries {to}{suffix}"),
                kind: PhaseKind::Canaries,
                version: to,
                batches: canary_batches,
                estimate_secs: 0,
                start: String::new(),
                end: String::new(),
                fits_windows: true,
            });
        }
        out.extend(rest_phases.into_iter().filter(|p| !p.batches.is_empty()));
        Ok(out)
    }
}
