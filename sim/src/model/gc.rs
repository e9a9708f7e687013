//! Deleting an owner, as the garbage collector follows `propagationPolicy`: `Background` (the
//! default) and `Foreground` delete what it owns (pods terminate gracefully), `Orphan` leaves its
//! pods running without an owner. The owner itself is gone at once.

use super::*;

/// `deleteOptions.propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    pub fn parse(s: &str) -> Option<Propagation> {
        match s {
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            "Orphan" => Some(Propagation::Orphan),
            _ => None,
        }
    }
}

impl World {
    /// The pods of owner `uid` lose their owner (an orphaning delete).
    fn orphan(&mut self, uid: &str) {
        let keys: Vec<(String, String)> = self.owned.remove(uid).into_iter().flatten().collect();
        self.active.remove(uid);
        self.work_epoch += 1;
        for k in keys {
            if let Some(p) = self.pods.get_mut(&k) {
                p.owner = None;
            }
            self.touch_pod(&k);
        }
    }

    /// The pods of owner `uid` terminate.
    fn collect(&mut self, uid: &str) {
        let keys: Vec<(String, String)> = self.owned_by(uid).map(SimPod::key).collect();
        for k in keys {
            self.start_termination(&k, None);
        }
    }

    /// Deletes a workload; what it owns follows `propagation`. Returns it as it was.
    pub(crate) fn delete_workload(
        &mut self,
        key: &(Kind, String, String),
        propagation: Propagation,
    ) -> Option<Workload> {
        let w = self.workloads.remove(key)?;
        let mut owners: Vec<String> = vec![w.owner_uid().to_string()];
        owners.extend(w.old_sets.iter().map(|(_, uid)| uid.clone()));
        for uid in &owners {
            match propagation {
                Propagation::Orphan => self.orphan(uid),
                _ => self.collect(uid),
            }
        }
        // Its journal entries: the object gone, and a Deployment's ReplicaSets with it.
        let mut gone = w.clone();
        gone.resource_version = self.bump();
        if self.journal_on() {
            if let Ok(v) = crate::kube::workload_json(&gone, self) {
                let res = match key.0 {
                    Kind::Deployment => Res::Deployment,
                    Kind::StatefulSet => Res::StatefulSet,
                    Kind::DaemonSet => Res::DaemonSet,
                    Kind::ReplicaSet => Res::ReplicaSet,
                };
                self.noted_gone(res, &key.1, &key.2, v);
            }
            if let Some(rs) = crate::kube::replica_set(&gone, self)
                && let Ok(v) = serde_json::to_value(&rs)
            {
                let name = rs.metadata.name.clone().unwrap_or_default();
                self.noted_gone(Res::ReplicaSet, &key.1, &name, v);
            }
        }
        self.budgets_touched.extend(self.pdbs.keys().cloned());
        self.budgets_dirty.extend(self.pdbs.keys().cloned());
        self.tick();
        Some(w)
    }

    /// Deletes a Job; its pods follow `propagation`.
    pub(crate) fn delete_job(
        &mut self,
        key: &(String, String),
        propagation: Propagation,
    ) -> Option<SimJob> {
        let j = self.jobs.remove(key)?;
        match propagation {
            Propagation::Orphan => self.orphan(&j.uid),
            _ => self.collect(&j.uid),
        }
        let mut gone = j.clone();
        gone.resource_version = self.bump();
        if self.journal_on()
            && let Ok(v) = serde_json::to_value(crate::kube::job(&gone))
        {
            self.noted_gone(Res::Job, &key.0, &key.1, v);
        }
        self.tick();
        Some(j)
    }

    /// Deletes a PodDisruptionBudget: its pods are under no budget any more.
    pub(crate) fn delete_budget(&mut self, key: &(String, String)) -> Option<Pdb> {
        let b = self.pdbs.remove(key)?;
        self.forget_budget(key);
        let mut gone = b.clone();
        gone.resource_version = self.bump();
        if self.journal_on()
            && let Ok(v) = serde_json::to_value(crate::kube::pdb(&gone, self))
        {
            self.noted_gone(Res::Budget, &key.0, &key.1, v);
        }
        Some(b)
    }
}
