//! PodDisruptionBudgets: status computed as the disruption controller does, the Eviction API's
//! rules, the pods each budget selects, and the low water of every budget's slack.

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
        // workload changed (a new scale); else those whose pods changed (a pod's every change
        // bumps its resource version) or went away.
        let mut touched = std::mem::take(&mut self.budgets_touched);
        // Of a node, only going down or up moves its pods' readiness (a cordon, a package or
        // a kubelet restart does not).
        let down: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.down)
            .map(|n| n.name.clone())
            .collect();
        let all = since == 0
            || down != std::mem::replace(&mut self.budgets_noted_down, down.clone())
            || self.workloads.values().any(|w| w.resource_version > since);
        if all {
            touched.extend(self.pdbs.keys().cloned());
        } else {
            for p in self.pods.values().filter(|p| p.resource_version > since) {
                let key = p.key();
                for (b, pods) in &self.selected {
                    if pods.contains(&key) {
                        touched.insert(b.clone());
                    }
                }
            }
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
    /// The PDBs whose selector matches a pod (in its namespace).
    pub fn pdbs_for(&self, pod: &SimPod) -> Vec<&Pdb> {
        self.pdbs
            .values()
            .filter(|b| {
                b.namespace == pod.namespace
                    && selector_nonempty_matches(&b.selector, &pod.spec.labels)
            })
            .collect()
    }

    /// A PDB's status, computed from the pods as they are now.
    pub fn pdb_status(&self, pdb: &Pdb) -> PdbStatus {
        let pods = self.selected_by(&(pdb.namespace.clone(), pdb.name.clone()));
        self.status_of(pdb, &pods)
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
        for k in hits {
            self.selected.entry(k).or_default().insert(pod.key());
        }
    }

    /// `key` is gone: it leaves every budget's set, and those budgets are noted again.
    pub(super) fn unselect(&mut self, key: &(String, String)) {
        for (b, pods) in self.selected.iter_mut() {
            if pods.remove(key) {
                self.budgets_touched.insert(b.clone());
            }
        }
    }

    pub(super) fn status_of(&self, pdb: &Pdb, pods: &[&SimPod]) -> PdbStatus {
        let some_down = self.some_node_down();
        let healthy = pods
            .iter()
            .filter(|p| p.is_ready_where(self.now, &self.nodes, some_down))
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
                    total += self
                        .workloads
                        .values()
                        .find(|w| w.owner_uid() == o.uid)
                        .map(|w| w.replicas)
                        .unwrap_or(0);
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

    /// `POST pods/NAME/eviction` (policy/v1), with the apiserver's rules: pods that are not
    /// running are evicted freely; a pod under several PDBs is an error; a Ready pod needs
    /// `disruptionsAllowed > 0`; an unready one needs the budget to be healthy
    /// (`unhealthyPodEvictionPolicy: IfHealthyBudget`, the default).
    pub fn evict(&mut self, namespace: &str, name: &str) -> Result<(), EvictError> {
        let key = (namespace.to_string(), name.to_string());
        // Judged on the pod as it is (borrowed: a drain evicts a lot).
        {
            let pod = self
                .pods
                .get(&key)
                .ok_or_else(|| EvictError::NotFound(name.to_string()))?;
            if pod.deleting_at.is_some() {
                return Ok(());
            }
            if pod.phase == PodPhase::Running {
                let pdbs = self.pdbs_for(pod);
                if pdbs.len() > 1 {
                    return Err(EvictError::MultiplePdbs(
                        pdbs.iter().map(|b| b.name.clone()).collect(),
                    ));
                }
                if let Some(pdb) = pdbs.first() {
                    let status = self.pdb_status(pdb);
                    let ready = pod.is_ready(self.now, &self.nodes);
                    let ok = if ready {
                        status.disruptions_allowed > 0
                    } else {
                        status.current_healthy >= status.desired_healthy
                            && !self
                                .faults
                                .blocking_pdbs
                                .contains(&format!("{}/{}", pdb.namespace, pdb.name))
                    };
                    if !ok {
                        return Err(EvictError::Blocked {
                            pdb: pdb.name.clone(),
                            status,
                        });
                    }
                }
            }
        }
        self.start_termination(&key, None);
        self.tick();
        Ok(())
    }
}
