//! `status` as the controllers write it: for every owner whose pods changed since, its
//! workload's numbers (replicas, ready, available, up to date; a DaemonSet's desired count) are
//! counted again from its own pods, and written (a new resourceVersion, a watch event) only when
//! they moved. Then each budget whose pods changed (`budgets::write_budget_status`).

use super::*;

impl World {
    pub(super) fn write_status(&mut self) {
        if !self.dirty.is_empty() {
            let dirty = std::mem::take(&mut self.dirty);
            // The workloads those owners are (a Deployment owns through its ReplicaSets).
            let keys: BTreeSet<(Kind, String, String)> = dirty
                .iter()
                .filter_map(|uid| self.workload_of_owner(uid))
                .collect();
            for key in keys {
                self.write_workload_status(&key);
            }
        }
        self.write_budget_status();
    }

    /// The workload owner `uid` belongs to, from the index (built again when it misses a
    /// uid it has not missed before).
    fn workload_of_owner(&mut self, uid: &str) -> Option<(Kind, String, String)> {
        let claims = |w: &Workload| {
            w.uid == uid || w.owner_uid() == uid || w.old_sets.iter().any(|(_, u)| u == uid)
        };
        if let Some(k) = self.owner_index.get(uid)
            && self.workloads.get(k).is_some_and(claims)
        {
            return Some(k.clone());
        }
        if self.owner_misses.contains(uid) {
            return None;
        }
        self.owner_index.clear();
        for (k, w) in &self.workloads {
            let uids = [w.uid.as_str(), w.owner_uid()]
                .into_iter()
                .chain(w.old_sets.iter().map(|(_, u)| u.as_str()));
            for u in uids {
                self.owner_index.insert(u.to_string(), k.clone());
            }
        }
        match self.owner_index.get(uid) {
            Some(k) if self.workloads.get(k).is_some_and(claims) => Some(k.clone()),
            _ => {
                self.owner_misses.insert(uid.to_string());
                None
            }
        }
    }

    fn write_workload_status(&mut self, key: &(Kind, String, String)) {
        let Some(w) = self.workloads.get(key) else {
            return;
        };
        let now = self.now;
        let mut owners = vec![w.owner_uid().to_string()];
        owners.extend(w.old_sets.iter().map(|(_, uid)| uid.clone()));
        let mut s = WorkloadStatus {
            observed_generation: w.generation,
            changed_at: w.status.changed_at,
            ..WorkloadStatus::default()
        };
        let some_down = self.some_node_down();
        for (i, uid) in owners.iter().enumerate() {
            for p in self.owned_by(uid) {
                if p.deleting_at.is_some() || p.is_finished() {
                    continue;
                }
                s.replicas += 1;
                // Up to date: the current ReplicaSet's pods, or pods of the current revision.
                let current = match w.kind {
                    Kind::Deployment => i == 0,
                    _ => p.revision >= w.revision,
                };
                if current {
                    s.updated += 1;
                }
                if p.is_ready_where(now, &self.nodes, some_down) {
                    s.ready += 1;
                    s.available += 1;
                }
            }
        }
        if w.kind == Kind::DaemonSet {
            // As the controllers' pass counted it for this shape of the nodes, if it did.
            s.desired = match self.ds_want.get(&w.uid) {
                Some(&(e, g, n)) if e == self.shape_epoch && g == w.generation => n as u32,
                _ => self
                    .nodes
                    .values()
                    .filter(|n| daemon_set_runs_on(w, n))
                    .count() as u32,
            };
        }
        let counts = |x: &WorkloadStatus| (x.replicas, x.ready, x.available, x.updated, x.desired);
        if counts(&s) != counts(&w.status) {
            s.changed_at = now;
        }
        if s == w.status {
            return;
        }
        if let Some(w) = self.workloads.get_mut(key) {
            w.status = s;
        }
        self.touch_workload(key);
    }
}
