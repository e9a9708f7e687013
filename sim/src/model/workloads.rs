//! The workload controllers: a Deployment's ReplicaSets (a rolling update within `maxSurge` and
//! `maxUnavailable` when its template changes), bare ReplicaSets, StatefulSets (ordered
//! identities, out-of-date pods replaced from the highest ordinal) and DaemonSets (a pod per
//! eligible node, out-of-date pods replaced one at a time), and the changes the API makes to
//! them (scale, image, template).
//!
//! A controller reads only its own pods (the per-owner index), and only when the count of its
//! active pods is not what it wants or a rollout is under way: most ticks of a large cluster read
//! no pod here.

use super::*;

/// A Deployment's rolling update allowances, resolved against its replicas (25% and 25% by
/// default: surge rounds up, unavailability down, and never both zero).
fn allowances(w: &Workload) -> (u32, u32) {
    let strategy = w
        .given
        .as_ref()
        .map(|g| g["strategy"].clone())
        .unwrap_or_default();
    let read = |v: &serde_json::Value, up: bool| -> Option<u32> {
        match v {
            serde_json::Value::Number(n) => n.as_u64().map(|n| n as u32),
            serde_json::Value::String(s) => s
                .strip_suffix('%')
                .and_then(|p| p.parse::<u64>().ok())
                .map(|p| {
                    let x = p * u64::from(w.replicas);
                    (if up { x.div_ceil(100) } else { x / 100 }) as u32
                }),
            _ => None,
        }
    };
    if strategy["type"] == "Recreate" {
        return (0, w.replicas);
    }
    let surge = read(&strategy["rollingUpdate"]["maxSurge"], true)
        .unwrap_or((25 * u64::from(w.replicas)).div_ceil(100) as u32);
    let unavailable = read(&strategy["rollingUpdate"]["maxUnavailable"], false)
        .unwrap_or((25 * u64::from(w.replicas) / 100) as u32);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

impl World {
    /// A workload changed: a new resourceVersion, and the journal is told (a Deployment's
    /// ReplicaSet with it).
    pub(crate) fn touch_workload(&mut self, key: &(Kind, String, String)) {
        let rv = self.bump();
        let Some(w) = self.workloads.get_mut(key) else {
            return;
        };
        w.resource_version = rv;
        let rs = w.replica_set.as_ref().map(|(name, _)| name.clone());
        let res = match key.0 {
            Kind::Deployment => Res::Deployment,
            Kind::StatefulSet => Res::StatefulSet,
            Kind::DaemonSet => Res::DaemonSet,
            Kind::ReplicaSet => Res::ReplicaSet,
        };
        self.noted(res, &key.1, &key.2, false);
        if let Some(rs) = rs {
            self.noted(Res::ReplicaSet, &key.1, &rs, false);
        }
    }

    /// What a controller's pods are, as it reconciles them.
    fn owned_pods(&self, owner_uid: &str) -> Vec<OwnedPod> {
        self.owned_by(owner_uid)
            .map(|p| OwnedPod {
                key: p.key(),
                node: p.node.clone(),
                deleting: p.deleting_at.is_some(),
                finished: p.is_finished(),
                ready: p.is_ready(self.now, &self.nodes),
                created: p.created,
                revision: p.revision,
            })
            .collect()
    }

    pub(super) fn reconcile_workloads(&mut self) {
        // Which controllers have something to do, from the active pods counted per owner as
        // pods come and go (`active`): a controller whose active pods number what it wants,
        // all of its current template, has nothing to do (the common case, by far). (A
        // StatefulSet's ordinals cannot be wrong at equal count: only a scale-down leaves one
        // out of range, and that makes the count exceed its replicas.)
        // Nothing moved since a pass that found nothing to do: this one would find nothing.
        let epochs = (self.work_epoch, self.shape_epoch);
        if self.idle_at == Some(epochs) {
            return;
        }
        let mut work: Vec<(Kind, String, String)> = Vec::new();
        let (nodes, epoch, ds_want) = (&self.nodes, self.shape_epoch, &mut self.ds_want);
        for (key, w) in &self.workloads {
            let active = self.active.get(w.owner_uid()).copied().unwrap_or(0);
            let want = match w.kind {
                // Counted again only after a node's labels or taints, or the DaemonSet's
                // spec, changed.
                Kind::DaemonSet => match ds_want.get(&w.uid) {
                    Some(&(e, g, n)) if e == epoch && g == w.generation => n,
                    _ => {
                        let n = nodes.values().filter(|n| daemon_set_runs_on(w, n)).count();
                        ds_want.insert(w.uid.clone(), (epoch, w.generation, n));
                        n
                    }
                },
                _ => w.replicas as usize,
            };
            if active != want || !w.old_sets.is_empty() || w.rolling {
                work.push(key.clone());
            }
        }
        self.idle_at = work.is_empty().then_some(epochs);
        for key in work {
            let Some(w) = self.workloads.get(&key).cloned() else {
                continue;
            };
            match w.kind {
                Kind::Deployment => self.reconcile_deployment(&key, &w),
                Kind::ReplicaSet => self.reconcile_replica_set(&w, &w.pod_owner(), w.replicas),
                Kind::StatefulSet => self.reconcile_stateful_set(&key, &w),
                Kind::DaemonSet => self.reconcile_daemon_set(&key, &w),
            }
        }
    }

    /// A Deployment: its current ReplicaSet towards `replicas`, its old ones towards none, never
    /// more than `replicas + maxSurge` pods nor fewer than `replicas - maxUnavailable` Ready.
    fn reconcile_deployment(&mut self, key: &(Kind, String, String), w: &Workload) {
        let owner = w.pod_owner();
        if w.old_sets.is_empty() {
            self.reconcile_replica_set(w, &owner, w.replicas);
            return;
        }
        let new = self.owned_pods(&owner.uid);
        let (surge, unavailable) = allowances(w);
        let live =
            |pods: &[OwnedPod]| pods.iter().filter(|p| !p.deleting && !p.finished).count() as u32;
        let ready = |pods: &[OwnedPod]| {
            pods.iter()
                .filter(|p| !p.deleting && !p.finished && p.ready)
                .count() as u32
        };
        let old: Vec<((String, String), Vec<OwnedPod>)> = w
            .old_sets
            .iter()
            .map(|(name, uid)| ((name.clone(), uid.clone()), self.owned_pods(uid)))
            .collect();
        let old_live: u32 = old.iter().map(|(_, p)| live(p)).sum();
        let old_ready: u32 = old.iter().map(|(_, p)| ready(p)).sum();
        // Scale the new ReplicaSet up within the surge.
        let new_want = w
            .replicas
            .min((w.replicas + surge).saturating_sub(old_live));
        let new_want = new_want.max(live(&new));
        self.reconcile_replica_set(w, &owner, new_want);
        // Scale old ones down while enough pods are Ready.
        let min_ready = w.replicas.saturating_sub(unavailable);
        let mut can_remove = (old_ready + ready(&new)).saturating_sub(min_ready);
        // Old pods that are not Ready can always go (they count for nothing).
        let mut victims: Vec<&OwnedPod> = old
            .iter()
            .flat_map(|(_, p)| p.iter())
            .filter(|p| !p.deleting && !p.finished)
            .collect();
        victims.sort_by_key(|p| (p.ready, std::cmp::Reverse(p.created)));
        let mut gone = Vec::new();
        for p in victims {
            if !p.ready {
                gone.push(p.key.clone());
            } else if can_remove > 0 && ready(&new) + old_ready > min_ready {
                can_remove -= 1;
                gone.push(p.key.clone());
            }
        }
        for k in gone {
            self.start_termination(&k, None);
        }
        // An old ReplicaSet with no pod left is done with.
        let emptied: Vec<String> = old
            .iter()
            .filter(|((_, uid), _)| self.owned_by(uid).next().is_none())
            .map(|((name, _), _)| name.clone())
            .collect();
        if !emptied.is_empty()
            && let Some(d) = self.workloads.get(key).cloned()
        {
            let ns = key.1.clone();
            for name in &emptied {
                if let Ok(v) = serde_json::to_value(crate::kube::old_replica_set(&d, name)) {
                    self.noted_gone(Res::ReplicaSet, &ns, name, v);
                }
            }
            if let Some(d) = self.workloads.get_mut(key) {
                d.old_sets.retain(|(name, _)| !emptied.contains(name));
            }
            self.touch_workload(key);
        }
    }

    /// A ReplicaSet's pods towards `want`, each made from the workload's template.
    fn reconcile_replica_set(&mut self, w: &Workload, owner: &OwnerRef, want: u32) {
        // Its active pods are counted as they come and go; they are listed only to choose
        // whom a scale-down deletes.
        let active = self.active.get(&owner.uid).copied().unwrap_or(0);
        let want = want as usize;
        let about = About {
            kind: "ReplicaSet",
            api_version: "apps/v1",
            namespace: w.namespace.clone(),
            name: owner.name.clone(),
            uid: owner.uid.clone(),
            field_path: None,
        };
        for _ in active..want {
            let name = format!("{}-{}", owner.name, self.suffix(5));
            let key = self.create_pod(
                &w.namespace,
                &name,
                Some(owner.clone()),
                w.template.clone(),
                Labels::new(),
                None,
            );
            self.set_revision(&key, w.revision);
            self.event(
                about.clone(),
                record::controller("replicaset-controller"),
                "SuccessfulCreate",
                format!("Created pod: {name}"),
            );
        }
        if active > want {
            // Scale down: unscheduled first, then not ready, then the newest.
            let owned = self.owned_pods(&owner.uid);
            let mut victims: Vec<&OwnedPod> = owned
                .iter()
                .filter(|p| !p.deleting && !p.finished)
                .collect();
            victims.sort_by_key(|p| (p.node.is_some(), p.ready, std::cmp::Reverse(p.created)));
            let excess = victims.len().saturating_sub(want);
            let gone: Vec<_> = victims[..excess].iter().map(|p| p.key.clone()).collect();
            for k in gone {
                self.start_termination(&k, None);
                self.event(
                    about.clone(),
                    record::controller("replicaset-controller"),
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", k.1),
                );
            }
        }
    }

    fn set_revision(&mut self, key: &(String, String), revision: u64) {
        if let Some(p) = self.pods.get_mut(key) {
            p.revision = revision;
        }
    }

    /// Ordered identities: pod N is recreated (same name, new uid) only once the old one is
    /// completely gone. After a template change, once every pod is Ready, the highest
    /// out-of-date one is replaced.
    fn reconcile_stateful_set(&mut self, key: &(Kind, String, String), w: &Workload) {
        let owner = w.pod_owner();
        let owned = self.owned_pods(&w.uid);
        let about = About {
            kind: "StatefulSet",
            api_version: "apps/v1",
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            uid: w.uid.clone(),
            field_path: None,
        };
        for i in 0..w.replicas {
            let name = format!("{}-{i}", w.name);
            if !self.pods.contains_key(&(w.namespace.clone(), name.clone())) {
                let mut t = w.template.clone();
                t.labels
                    .insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
                t.labels
                    .insert("apps.kubernetes.io/pod-index".into(), i.to_string());
                let k = self.create_pod(
                    &w.namespace,
                    &name,
                    Some(owner.clone()),
                    t,
                    Labels::new(),
                    None,
                );
                self.set_revision(&k, w.revision);
                self.event(
                    about.clone(),
                    record::controller("statefulset-controller"),
                    "SuccessfulCreate",
                    format!("create Pod {name} in StatefulSet {} successful", w.name),
                );
            }
        }
        let ordinal =
            |k: &(String, String)| k.1.rsplit('-').next().and_then(|s| s.parse::<u32>().ok());
        for p in &owned {
            if ordinal(&p.key).is_none_or(|o| o >= w.replicas) && !p.deleting {
                self.start_termination(&p.key, None);
                self.event(
                    about.clone(),
                    record::controller("statefulset-controller"),
                    "SuccessfulDelete",
                    format!(
                        "delete Pod {} in StatefulSet {} successful",
                        p.key.1, w.name
                    ),
                );
            }
        }
        self.roll_one(key, w, &owned, |a, b| ordinal(b).cmp(&ordinal(a)));
    }

    /// A rollout's next step for a StatefulSet or DaemonSet: when every pod is Ready and none
    /// is terminating, the first out-of-date pod in `order` is replaced; with none left, the
    /// rollout is over.
    fn roll_one(
        &mut self,
        key: &(Kind, String, String),
        w: &Workload,
        owned: &[OwnedPod],
        order: impl Fn(&(String, String), &(String, String)) -> std::cmp::Ordering,
    ) {
        if !w.rolling {
            return;
        }
        let mut outdated: Vec<&OwnedPod> = owned
            .iter()
            .filter(|p| !p.finished && p.revision < w.revision)
            .collect();
        if outdated.is_empty() {
            if let Some(w) = self.workloads.get_mut(key) {
                w.rolling = false;
            }
            return;
        }
        let settled = owned
            .iter()
            .filter(|p| !p.finished)
            .all(|p| p.ready && !p.deleting);
        if settled {
            outdated.sort_by(|a, b| order(&a.key, &b.key));
            let k = outdated[0].key.clone();
            self.start_termination(&k, None);
        }
    }

    /// One pod per eligible node, bound directly (DaemonSet pods tolerate cordons).
    fn reconcile_daemon_set(&mut self, key: &(Kind, String, String), w: &Workload) {
        let owner = w.pod_owner();
        let owned = self.owned_pods(&w.uid);
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
        let about = About {
            kind: "DaemonSet",
            api_version: "apps/v1",
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            uid: w.uid.clone(),
            field_path: None,
        };
        for node in missing {
            let name = format!("{}-{}", w.name, self.suffix(5));
            let k = self.create_pod(
                &w.namespace,
                &name,
                Some(owner.clone()),
                w.template.clone(),
                Labels::new(),
                Some(&node),
            );
            self.set_revision(&k, w.revision);
            self.event(
                about.clone(),
                record::controller("daemonset-controller"),
                "SuccessfulCreate",
                format!("Created pod: {name}"),
            );
        }
        self.roll_one(key, w, &owned, |a, b| a.cmp(b));
    }

    /// `spec.replicas` of a Deployment, ReplicaSet or StatefulSet (the `scale` subresource).
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
        let key = (kind, namespace.to_string(), name.to_string());
        let w = self
            .workloads
            .get_mut(&key)
            .ok_or_else(|| not_found(kind_plural(kind), name))?;
        let from = w.replicas;
        if from != replicas {
            w.replicas = replicas;
            w.generation += 1;
            let (about, rs) = (
                About {
                    kind: kind.as_str(),
                    api_version: "apps/v1",
                    namespace: w.namespace.clone(),
                    name: w.name.clone(),
                    uid: w.uid.clone(),
                    field_path: None,
                },
                w.replica_set.as_ref().map(|(n, _)| n.clone()),
            );
            self.touch_workload(&key);
            if let (Kind::Deployment, Some(rs)) = (kind, rs) {
                let word = if replicas > from { "up" } else { "down" };
                self.event(
                    about,
                    record::controller("deployment-controller"),
                    "ScalingReplicaSet",
                    format!("Scaled {word} replica set {rs} from {from} to {replicas}"),
                );
            }
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
        let key = (kind, namespace.to_string(), name.to_string());
        let w = self
            .workloads
            .get_mut(&key)
            .ok_or_else(|| not_found(kind_plural(kind), name))?;
        if w.template.image == image {
            return Ok(());
        }
        w.template.image = image.to_string();
        w.generation += 1;
        let owner = w.owner_uid().to_string();
        self.touch_workload(&key);
        let pods: Vec<(String, String)> = self.owned_by(&owner).map(SimPod::key).collect();
        for k in pods {
            if let Some(p) = self.pods.get_mut(&k) {
                p.spec.image = image.to_string();
            }
            self.touch_pod(&k);
        }
        self.tick();
        Ok(())
    }
}
