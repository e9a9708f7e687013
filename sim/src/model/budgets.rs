//! PodDisruptionBudgets: status computed as the disruption controller does (pods the Eviction
//! API let go count against the budget until they terminate, at most two minutes), the Eviction
//! API's rules in the apiserver's order, the pods each budget selects, and the low water of
//! every budget's slack.

use super::*;

impl World {
    /// From now on, every change records each budget's lowest slack (off by default: it
    /// costs a status per budget per change).
    pub fn watch_budgets(&mut self) {
        self.budget_low_water = Some(BTreeMap::new());
        self.budgets_noted_at = 0;
        self.note_budgets();
    }

    pub(super) fn note_budgets(&mut self) {
        // Between two changes, time alone only makes pods Ready: a budget's slack can only
        // have dropped at a change, which bumps the resource version.
        if self.budget_low_water.is_none() || self.budgets_noted_at == self.resource_version {
            return;
        }
        let since = std::mem::replace(&mut self.budgets_noted_at, self.resource_version);
        // Which budgets' slack may have moved: all of them after a node went down or up or a
        // workload came, went or changed its spec (a new scale); else those whose pods
        // changed (a pod's every change bumps its resource version) or went away.
        let mut touched = std::mem::take(&mut self.budgets_touched);
        // Of a node, only going down or up moves its pods' readiness (a cordon, a package or
        // a kubelet restart does not).
        // (Looked at again only after some node changed.)
        let mut nodes_moved = false;
        if self.budgets_noted_epoch != Some(self.node_epoch) {
            self.budgets_noted_epoch = Some(self.node_epoch);
            if self.down_nodes != self.budgets_noted_down {
                self.budgets_noted_down = self.down_nodes.clone();
                nodes_moved = true;
            }
        }
        let all = since == 0 || nodes_moved || self.workload_specs_changed(since);
        // (Every change to a pod notes its budgets as it is made: `budget_pod_changed`.)
        if all {
            touched.extend(self.pdbs.keys().cloned());
        }
        let slack: Vec<(String, i64)> = touched
            .iter()
            .filter_map(|k| self.pdbs.get(k).map(|b| (k, b)))
            .map(|(k, b)| {
                let s = self.status_of(b, &self.selected_by(k));
                (
                    format!("{}/{}", b.namespace, b.name),
                    i64::from(s.current_healthy) - i64::from(s.desired_healthy),
                )
            })
            .collect();
        if let Some(low) = &mut self.budget_low_water {
            for (k, v) in slack {
                let e = low.entry(k).or_insert(v);
                *e = (*e).min(v);
            }
        }
    }
    /// Whether a workload came, went or changed its spec (its `generation`) since resource
    /// version `since`. Its status writes (every time its pods change) do not count: they
    /// move no budget's numbers that the pods' own changes do not.
    fn workload_specs_changed(&mut self, since: u64) -> bool {
        // No workload object changed since the last look: no spec did.
        if self.budgets_seen_workloads == Some(self.workloads_epoch)
            && self.budgets_noted_generations.len() == self.workloads.len()
        {
            return false;
        }
        self.budgets_seen_workloads = Some(self.workloads_epoch);
        let seen = &mut self.budgets_noted_generations;
        let mut changed = seen.len() != self.workloads.len();
        for w in self
            .workloads
            .values()
            .filter(|w| w.resource_version > since)
        {
            changed |= seen.insert(w.uid.clone(), w.generation) != Some(w.generation);
        }
        if changed {
            *seen = self
                .workloads
                .values()
                .map(|w| (w.uid.clone(), w.generation))
                .collect();
        }
        changed
    }

    /// The PDBs whose selector matches a pod (in its namespace).
    pub fn pdbs_for(&self, pod: &SimPod) -> Vec<&Pdb> {
        self.pod_budgets
            .get(&pod.key())
            .into_iter()
            .flatten()
            .filter_map(|k| self.pdbs.get(k))
            .collect()
    }

    /// Pod `key` changed: the budgets selecting it are noted for their low water and status.
    pub(super) fn budget_pod_changed(&mut self, key: &(String, String)) {
        if let Some(budgets) = self.pod_budgets.get(key) {
            for b in budgets {
                self.budgets_touched.insert(b.clone());
                self.budgets_dirty.insert(b.clone());
            }
        }
    }

    /// A PDB's status, computed from the pods as they are now.
    pub fn pdb_status(&self, pdb: &Pdb) -> PdbStatus {
        let pods = self.selected_by(&(pdb.namespace.clone(), pdb.name.clone()));
        self.status_of(pdb, &pods)
    }

    /// `pdb`'s status now: as last written when nothing it counts changed since (what the
    /// apiserver's eviction reads too: the status the disruption controller wrote), else
    /// counted again. (Debug builds check that the two agree.)
    fn current_pdb_status(&self, pdb: &Pdb) -> PdbStatus {
        let key = (pdb.namespace.clone(), pdb.name.clone());
        match &pdb.written {
            // (A blocking-budget fault, set on the model from outside, is read live.)
            Some((status, disrupted))
                if !self.budgets_dirty.contains(&key)
                    && *disrupted == pdb.disrupted
                    && self.faults.blocking_pdbs.is_empty() =>
            {
                debug_assert_eq!(*status, self.pdb_status(pdb), "budget {key:?}");
                *status
            }
            _ => self.pdb_status(pdb),
        }
    }

    /// The live (not finished) pods budget `key` selects.
    pub(super) fn selected_by(&self, key: &(String, String)) -> Vec<&SimPod> {
        self.selected
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
            .filter(|p| !p.is_finished())
            .collect()
    }

    /// `pod` joins the sets of the budgets that select it.
    pub(super) fn select(&mut self, pod: &SimPod) {
        // The candidates: budgets of the namespace whose first `matchLabels` pair the pod
        // carries, and those selecting by expressions only; each is then matched in full.
        let Some(ns) = self.budgets_by_label.get(&pod.namespace) else {
            return;
        };
        let mut hits = Vec::new();
        let by_label = pod
            .spec
            .labels
            .iter()
            .filter_map(|(k, v)| ns.get(&(k.clone(), v.clone())))
            .flatten();
        for k in by_label.chain(
            ns.get(&(String::new(), String::new()))
                .into_iter()
                .flatten(),
        ) {
            if self
                .pdbs
                .get(k)
                .is_some_and(|b| selector_nonempty_matches(&b.selector, &pod.spec.labels))
            {
                hits.push(k.clone());
            }
        }
        for k in &hits {
            self.selected
                .entry(k.clone())
                .or_default()
                .insert(pod.key());
            self.budgets_touched.insert(k.clone());
            self.budgets_dirty.insert(k.clone());
        }
        if !hits.is_empty() {
            self.pod_budgets.insert(pod.key(), hits);
        }
    }

    /// `key` is gone (or its labels change): it leaves every budget's set, and those budgets
    /// are noted again.
    pub(super) fn unselect(&mut self, key: &(String, String)) {
        for b in self.pod_budgets.remove(key).into_iter().flatten() {
            if let Some(pods) = self.selected.get_mut(&b) {
                pods.remove(key);
            }
            self.budgets_touched.insert(b.clone());
            self.budgets_dirty.insert(b);
        }
    }

    /// Which pods budget `key` selects, found again (it is new, or its selector changed).
    pub(crate) fn reselect_budget(&mut self, key: &(String, String)) {
        if let Some(old) = self.selected.remove(key) {
            for p in old {
                if let Some(list) = self.pod_budgets.get_mut(&p) {
                    list.retain(|b| b != key);
                    if list.is_empty() {
                        self.pod_budgets.remove(&p);
                    }
                }
            }
        }
        for by_label in self.budgets_by_label.values_mut() {
            for list in by_label.values_mut() {
                list.retain(|b| b != key);
            }
        }
        let Some(b) = self.pdbs.get(key) else {
            return;
        };
        let members: BTreeSet<(String, String)> = self
            .pods
            .values()
            .filter(|p| {
                p.namespace == b.namespace && selector_nonempty_matches(&b.selector, &p.spec.labels)
            })
            .map(SimPod::key)
            .collect();
        // Filed under its first `matchLabels` pair, or (expressions only) under ("", "").
        let first = b
            .selector
            .match_labels
            .iter()
            .next()
            .map(|(k, v)| (k.clone(), v.clone()))
            .unwrap_or_default();
        self.budgets_by_label
            .entry(key.0.clone())
            .or_default()
            .entry(first)
            .or_default()
            .push(key.clone());
        for p in &members {
            self.pod_budgets
                .entry(p.clone())
                .or_default()
                .push(key.clone());
        }
        self.selected.insert(key.clone(), members);
        self.budgets_touched.insert(key.clone());
        self.budgets_dirty.insert(key.clone());
    }

    /// Budget `key` was deleted (removed from `pdbs`): no pod is under it any more.
    pub(crate) fn forget_budget(&mut self, key: &(String, String)) {
        self.reselect_budget(key);
        self.budgets_touched.remove(key);
        self.budgets_dirty.remove(key);
    }

    /// Whether pod `p` counts against its budget `b` because the Eviction API let it go and it
    /// has not started terminating yet (for at most [`DISRUPTION_TIMEOUT_MS`]).
    fn disrupted(&self, b: &Pdb, p: &SimPod) -> bool {
        p.deleting_at.is_none()
            && b.disrupted
                .get(&p.name)
                .is_some_and(|t| t + DISRUPTION_TIMEOUT_MS > self.now)
    }

    /// The disruption controller's bookkeeping: entries of pods that terminate or are gone
    /// leave `disruptedPods`, and one that outlived its timeout goes with a `NotDeleted`
    /// warning on the pod.
    pub(super) fn expire_disrupted(&mut self) {
        let now = self.now;
        let mut warn = Vec::new();
        let mut changed = Vec::new();
        for (key, b) in self.pdbs.iter_mut() {
            if b.disrupted.is_empty() {
                continue;
            }
            let before = b.disrupted.len();
            b.disrupted.retain(|name, at| {
                let pod = self.pods.get(&(key.0.clone(), name.clone()));
                match pod {
                    Some(p) if p.deleting_at.is_none() => {
                        if *at + DISRUPTION_TIMEOUT_MS <= now {
                            warn.push((p.key(), key.clone()));
                            false
                        } else {
                            true
                        }
                    }
                    _ => false,
                }
            });
            if b.disrupted.len() != before {
                changed.push(key.clone());
            }
        }
        for k in changed {
            self.budgets_touched.insert(k.clone());
            self.budgets_dirty.insert(k);
        }
        for (pod, (ns, _)) in warn {
            if let Some(p) = self.pods.get(&pod) {
                let about = record::about_pod(p, None);
                // The controller's message names the namespace twice, as upstream's does.
                let message =
                    format!("Pod was expected by PDB {ns}/{ns} to be deleted but it wasn't");
                self.warning(
                    about,
                    record::controller("controllermanager"),
                    "NotDeleted",
                    message,
                );
            }
        }
    }

    /// When the next `disruptedPods` entry times out.
    pub(super) fn next_budget_change(&self) -> Option<Millis> {
        self.pdbs
            .values()
            .flat_map(|b| b.disrupted.values())
            .map(|t| t + DISRUPTION_TIMEOUT_MS)
            .filter(|&t| t > self.now)
            .min()
    }

    /// The workload whose pods name `uid` as their owner: from the owner index when it
    /// knows the uid, else by a pass over the workloads.
    fn owning_workload(&self, uid: &str) -> Option<&Workload> {
        self.owner_index
            .get(uid)
            .and_then(|k| self.workloads.get(k))
            .filter(|w| w.owner_uid() == uid)
            .or_else(|| self.workloads.values().find(|w| w.owner_uid() == uid))
    }

    pub(super) fn status_of(&self, pdb: &Pdb, pods: &[&SimPod]) -> PdbStatus {
        let some_down = self.some_node_down();
        let healthy = pods
            .iter()
            .filter(|p| p.is_ready_where(self.now, &self.nodes, some_down))
            .filter(|p| pdb.disrupted.is_empty() || !self.disrupted(pdb, p))
            .count() as u32;
        // The disruption controller: an integer minAvailable counts the pods themselves; a
        // percentage or maxUnavailable counts the controllers' desired scale.
        let scale = || -> u32 {
            let mut owners: BTreeSet<&str> = BTreeSet::new();
            let mut total = 0;
            for p in pods {
                if let Some(o) = &p.owner
                    && owners.insert(o.uid.as_str())
                {
                    total += self.owning_workload(&o.uid).map_or(0, |w| w.replicas);
                }
            }
            total
        };
        let (expected, desired) = match (&pdb.max_unavailable, &pdb.min_available) {
            (Some(mu), _) => {
                let e = scale();
                (e, e.saturating_sub(mu.of(e)))
            }
            (None, Some(IntOrPercent::Int(n))) => (pods.len() as u32, *n),
            (None, Some(pct)) => {
                let e = scale();
                (e, pct.of(e))
            }
            (None, None) => (pods.len() as u32, 0),
        };
        let mut allowed = healthy.saturating_sub(desired);
        if self
            .faults
            .blocking_pdbs
            .contains(&format!("{}/{}", pdb.namespace, pdb.name))
        {
            allowed = 0;
        }
        PdbStatus {
            expected_pods: expected,
            current_healthy: healthy,
            desired_healthy: desired,
            disruptions_allowed: allowed,
        }
    }

    /// `POST pods/NAME/eviction` (policy/v1), in the apiserver's order: a pod that is not
    /// running (or already terminating) is deleted without a budget; a pod under several budgets
    /// is an error; an unready pod goes without using up the budget when the budget is healthy
    /// (`IfHealthyBudget`, the default) or says `AlwaysAllow`; otherwise the budget must allow
    /// a disruption, and the pod is recorded in its `disruptedPods` before the delete. The
    /// delete then checks `preconditions.uid`: a stale uid is a conflict, and the budget stays
    /// used until the entry times out, as on a real apiserver.
    /// The controllers then take their turn at once (what a caller of the model expects to
    /// see); the API server's handler uses [`World::evict_deferred`].
    pub fn evict(
        &mut self,
        namespace: &str,
        name: &str,
        uid_precondition: Option<&str>,
    ) -> Result<(), EvictError> {
        let r = self.evict_deferred(namespace, name, uid_precondition);
        self.tick();
        r
    }

    /// An eviction as the API server makes it: the pod's termination starts and its budget
    /// is charged in the same step, and the controllers react later (at the next reader's
    /// pass), so a drain's burst of evictions costs the controllers one pass, not one each.
    /// The budget's numbers stay exact in between: a charged budget is counted afresh.
    pub(crate) fn evict_deferred(
        &mut self,
        namespace: &str,
        name: &str,
        uid_precondition: Option<&str>,
    ) -> Result<(), EvictError> {
        let key = (namespace.to_string(), name.to_string());
        let conflict = |p: &SimPod| {
            uid_precondition
                .filter(|u| *u != p.uid)
                .map(|u| EvictError::Conflict {
                    message: format!(
                        "Operation cannot be fulfilled on pods \"{name}\": Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                        p.uid
                    ),
                })
        };
        let pod = self
            .pods
            .get(&key)
            .ok_or_else(|| EvictError::NotFound(name.to_string()))?;
        let ignore_budget = pod.phase != PodPhase::Running || pod.deleting_at.is_some();
        if ignore_budget {
            if let Some(e) = conflict(pod) {
                return Err(e);
            }
            if pod.deleting_at.is_none() {
                self.start_termination(&key, None);
            }
            return Ok(());
        }
        let pdbs = self.pdbs_for(pod);
        if pdbs.len() > 1 {
            return Err(EvictError::MultiplePdbs(
                pdbs.iter().map(|b| b.name.clone()).collect(),
            ));
        }
        let mut decrement = None;
        if let Some(pdb) = pdbs.first() {
            let status = self.current_pdb_status(pdb);
            let ready = pod.is_ready(self.now, &self.nodes);
            let blocked = self
                .faults
                .blocking_pdbs
                .contains(&format!("{}/{}", pdb.namespace, pdb.name));
            let unready_goes = !ready
                && !blocked
                && (pdb.unhealthy_pod_eviction_policy.as_deref() == Some("AlwaysAllow")
                    || (status.current_healthy >= status.desired_healthy
                        && status.desired_healthy > 0));
            if !unready_goes {
                if status.disruptions_allowed == 0 {
                    return Err(EvictError::Blocked {
                        pdb: pdb.name.clone(),
                        status,
                    });
                }
                decrement = Some((pdb.namespace.clone(), pdb.name.clone()));
            }
        }
        let stale = conflict(pod);
        if let Some(b) = decrement.and_then(|k| self.pdbs.get_mut(&k).map(|b| (k, b))) {
            b.1.disrupted.insert(name.to_string(), self.now);
            let k = b.0;
            self.budgets_touched.insert(k.clone());
            self.budgets_dirty.insert(k);
        }
        if let Some(e) = stale {
            return Err(e);
        }
        if let Some(p) = self.pods.get_mut(&key) {
            p.evicted_at = Some(self.now);
        }
        self.start_termination(&key, None);
        Ok(())
    }

    /// Each budget whose numbers moved writes its `status` again (a watch sees it).
    pub(super) fn write_budget_status(&mut self) {
        if self.budgets_dirty.is_empty() {
            return;
        }
        for key in std::mem::take(&mut self.budgets_dirty) {
            let Some(b) = self.pdbs.get(&key) else {
                continue;
            };
            let now = self.pdb_status(b);
            let disrupted = b.disrupted.clone();
            if b.written == Some((now, disrupted.clone())) {
                continue;
            }
            let rv = self.bump();
            if let Some(b) = self.pdbs.get_mut(&key) {
                b.written = Some((now, disrupted));
                b.resource_version = rv;
            }
            self.noted(Res::Budget, &key.0, &key.1, false);
        }
    }
}
