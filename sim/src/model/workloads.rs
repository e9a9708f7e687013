//! The workload controllers: a Deployment's ReplicaSet, StatefulSets (ordered identities) and
//! DaemonSets (a pod per eligible node), and the changes the API makes to them (scale, image).

use super::*;

impl World {
    pub(super) fn reconcile_workloads(&mut self) {
        // Which controllers have something to do, from the active pods counted per owner as
        // pods come and go (`active`): a controller whose active pods number what it wants
        // has nothing to do (the common case, by far), so most ticks of a large cluster read
        // no pod here. (A StatefulSet's ordinals cannot be wrong at equal count: only a
        // scale-down leaves one out of range, and that makes the count exceed its replicas.)
        let mut need: HashMap<&str, usize> = HashMap::default();
        let mut work: Vec<(Workload, OwnerRef, Vec<OwnedPod>)> = Vec::new();
        for w in self.workloads.values() {
            let uid = w.owner_uid();
            let active = self.active.get(uid).copied().unwrap_or(0);
            let want = match w.kind {
                Kind::DaemonSet => self
                    .nodes
                    .values()
                    .filter(|n| daemon_set_runs_on(w, n))
                    .count(),
                _ => w.replicas as usize,
            };
            if active == want {
                continue;
            }
            need.insert(uid, work.len());
            work.push((w.clone(), w.pod_owner(), Vec::new()));
        }
        if work.is_empty() {
            return;
        }
        for p in self.pods.values() {
            let Some(i) = p.owner.as_ref().and_then(|o| need.get(o.uid.as_str())) else {
                continue;
            };
            work[*i].2.push(OwnedPod {
                key: p.key(),
                node: p.node.clone(),
                deleting: p.deleting_at.is_some(),
                finished: p.is_finished(),
                ready: p.is_ready(self.now, &self.nodes),
                created: p.created,
            });
        }
        for (w, owner, owned) in work {
            match w.kind {
                Kind::Deployment => self.reconcile_replica_set(&w, &owner, &owned),
                Kind::StatefulSet => self.reconcile_stateful_set(&w, &owner, &owned),
                Kind::DaemonSet => self.reconcile_daemon_set(&w, &owner, &owned),
            }
        }
    }

    fn reconcile_replica_set(&mut self, w: &Workload, owner: &OwnerRef, owned: &[OwnedPod]) {
        let active: Vec<&OwnedPod> = owned
            .iter()
            .filter(|p| !p.deleting && !p.finished)
            .collect();
        let want = w.replicas as usize;
        for _ in active.len()..want {
            let name = format!("{}-{}", owner.name, self.suffix(5));
            self.create_pod(
                &w.namespace,
                &name,
                Some(owner.clone()),
                w.template.clone(),
                Labels::new(),
                None,
            );
        }
        if active.len() > want {
            // Scale down: unscheduled first, then not ready, then the newest.
            let mut victims = active.clone();
            victims.sort_by_key(|p| (p.node.is_some(), p.ready, std::cmp::Reverse(p.created)));
            let gone: Vec<_> = victims[..active.len() - want]
                .iter()
                .map(|p| p.key.clone())
                .collect();
            for k in gone {
                self.start_termination(&k, None);
            }
        }
    }

    /// Ordered identities: pod N is recreated (same name, new uid) only once the old one is
    /// completely gone.
    fn reconcile_stateful_set(&mut self, w: &Workload, owner: &OwnerRef, owned: &[OwnedPod]) {
        for i in 0..w.replicas {
            let name = format!("{}-{i}", w.name);
            if !self.pods.contains_key(&(w.namespace.clone(), name.clone())) {
                let mut t = w.template.clone();
                t.labels
                    .insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
                self.create_pod(
                    &w.namespace,
                    &name,
                    Some(owner.clone()),
                    t,
                    Labels::new(),
                    None,
                );
            }
        }
        for p in owned {
            let ordinal = p
                .key
                .1
                .rsplit('-')
                .next()
                .and_then(|s| s.parse::<u32>().ok());
            if ordinal.is_none_or(|o| o >= w.replicas) && !p.deleting {
                self.start_termination(&p.key, None);
            }
        }
    }

    /// One pod per eligible node, bound directly (DaemonSet pods tolerate cordons).
    fn reconcile_daemon_set(&mut self, w: &Workload, owner: &OwnerRef, owned: &[OwnedPod]) {
        let covered: BTreeSet<&str> = owned
            .iter()
            .filter(|p| !p.deleting)
            .filter_map(|p| p.node.as_deref())
            .collect();
        let missing: Vec<String> = self
            .nodes
            .values()
            .filter(|n| !covered.contains(n.name.as_str()))
            .filter(|n| daemon_set_runs_on(w, n))
            .map(|n| n.name.clone())
            .collect();
        for node in missing {
            let name = format!("{}-{}", w.name, self.suffix(5));
            self.create_pod(
                &w.namespace,
                &name,
                Some(owner.clone()),
                w.template.clone(),
                Labels::new(),
                Some(&node),
            );
        }
    }

    /// `spec.replicas` of a Deployment or StatefulSet (the `scale` subresource).
    pub fn scale(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        replicas: u32,
    ) -> Result<(), ModelError> {
        if kind == Kind::DaemonSet {
            return Err(ModelError::Invalid("a DaemonSet has no scale".into()));
        }
        let rv = self.bump();
        let w = self
            .workloads
            .get_mut(&(kind, namespace.to_string(), name.to_string()))
            .ok_or_else(|| not_found(kind_plural(kind), name))?;
        if w.replicas != replicas {
            w.replicas = replicas;
            w.generation += 1;
            w.resource_version = rv;
        }
        self.tick();
        Ok(())
    }

    /// The image of a workload's pods (`kubectl set image`): the template changes and, as a
    /// finished rolling update leaves it, every pod it owns runs the new image.
    pub fn set_image(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        image: &str,
    ) -> Result<(), ModelError> {
        let rv = self.bump();
        let w = self
            .workloads
            .get_mut(&(kind, namespace.to_string(), name.to_string()))
            .ok_or_else(|| not_found(kind_plural(kind), name))?;
        if w.template.image == image {
            return Ok(());
        }
        w.template.image = image.to_string();
        w.generation += 1;
        w.resource_version = rv;
        let owner = match kind {
            Kind::Deployment => w.replica_set.as_ref().map(|(rs, _)| rs.clone()),
            _ => Some(name.to_string()),
        };
        for p in self.pods.values_mut() {
            let owned = p.namespace == namespace
                && p.owner.as_ref().map(|o| Some(&o.name)) == Some(owner.as_ref());
            if owned {
                p.spec.image = image.to_string();
            }
        }
        self.tick();
        Ok(())
    }
}
