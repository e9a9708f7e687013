//! The changes the API makes to objects once admission accepted them: a workload, budget or pod
//! made or changed through the API (its controllers, indexes, status and the journal follow),
//! and the objects kept as given replaced whole.

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use super::*;

/// What an update through the API changes on a workload.
#[derive(Debug, Clone)]
pub struct WorkloadChange {
    pub labels: Labels,
    pub annotations: Labels,
    pub replicas: u32,
    /// A new template (and the spec as given with it), when it changed.
    pub template: Option<(PodTemplate, Given<serde_json::Value>)>,
    pub given: Given<serde_json::Value>,
}

impl World {
    /// A workload made through the API (`w` has its name, labels, selector, template, spec as
    /// given); a Deployment gets its ReplicaSet.
    pub(crate) fn add_api_workload(&mut self, mut w: Workload) -> (Kind, String, String) {
        w.uid = self.uid();
        w.created = self.now;
        w.resource_version = self.bump();
        w.generation = 1;
        w.revision = 1;
        if w.kind == Kind::Deployment && w.replica_set.is_none() {
            let hash = self.suffix(10);
            w.template
                .labels
                .insert("pod-template-hash".into(), hash.clone());
            w.replica_set = Some((format!("{}-{hash}", w.name), self.uid()));
        }
        let key = (w.kind, w.namespace.clone(), w.name.clone());
        let (about, rs, replicas) = (
            About {
                kind: w.kind.as_str(),
                api_version: "apps/v1",
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                uid: w.uid.clone(),
                field_path: None,
            },
            w.replica_set.as_ref().map(|(n, _)| n.clone()),
            w.replicas,
        );
        self.workloads.insert(key.clone(), w);
        self.noted_workload(&key, true);
        if let Some(rs) = rs {
            self.event(
                about,
                record::controller("deployment-controller"),
                "ScalingReplicaSet",
                format!("Scaled up replica set {rs} from 0 to {replicas}"),
            );
        }
        self.tick();
        key
    }

    /// An update of a workload through the API. A new template starts a rollout: a Deployment
    /// gets a new ReplicaSet (the old one scales down as the new one becomes Ready), a
    /// StatefulSet or DaemonSet replaces its pods one at a time; a bare ReplicaSet's running pods
    /// keep the old template, as upstream's do.
    pub(crate) fn update_api_workload(&mut self, key: &(Kind, String, String), c: WorkloadChange) {
        let Some(w) = self.workloads.get(key) else {
            return;
        };
        let replicas_changed = w.replicas != c.replicas;
        let from = w.replicas;
        if replicas_changed {
            let _ = self.scale(key.0, &key.1, &key.2, c.replicas);
        }
        let new_rs = match (key.0, c.template.is_some()) {
            (Kind::Deployment, true) => Some((self.suffix(10), self.uid())),
            _ => None,
        };
        let rolled = new_rs.is_some();
        let Some(w) = self.workloads.get_mut(key) else {
            return;
        };
        w.labels = c.labels;
        w.annotations = c.annotations;
        w.given = Some(c.given);
        if let Some((mut template, _)) = c.template {
            w.revision += 1;
            w.generation += 1;
            match (key.0, new_rs) {
                (Kind::Deployment, Some((hash, uid))) => {
                    template
                        .labels
                        .insert("pod-template-hash".into(), hash.clone());
                    if let Some(old) = w.replica_set.replace((format!("{}-{hash}", w.name), uid)) {
                        w.old_sets.insert(0, old);
                    }
                }
                (Kind::StatefulSet | Kind::DaemonSet, _) => w.rolling = true,
                _ => {}
            }
            w.template = template;
        }
        let rs = w.replica_set.as_ref().map(|(n, _)| n.clone());
        let about = About {
            kind: key.0.as_str(),
            api_version: "apps/v1",
            namespace: key.1.clone(),
            name: key.2.clone(),
            uid: w.uid.clone(),
            field_path: None,
        };
        self.touch_workload(key);
        self.noted_workload(key, rolled);
        if rolled && let Some(rs) = rs {
            self.event(
                about,
                record::controller("deployment-controller"),
                "ScalingReplicaSet",
                format!("Scaled up replica set {rs} from 0 to {}", from.min(1)),
            );
        }
        self.tick();
    }

    /// A PodDisruptionBudget made or changed through the API (its pods are found again).
    pub(crate) fn put_api_budget(&mut self, mut b: Pdb, new: bool) -> (String, String) {
        let key = (b.namespace.clone(), b.name.clone());
        if new {
            b.uid = self.uid();
            b.created = self.now;
            b.generation = 1;
        } else if let Some(old) = self.pdbs.get(&key) {
            b.uid = old.uid.clone();
            b.created = old.created;
            b.disrupted = old.disrupted.clone();
            b.generation = old.generation
                + u64::from(
                    old.selector != b.selector
                        || old.min_available != b.min_available
                        || old.max_unavailable != b.max_unavailable
                        || old.unhealthy_pod_eviction_policy != b.unhealthy_pod_eviction_policy,
                );
        }
        b.resource_version = self.bump();
        b.written = None;
        self.pdbs.insert(key.clone(), b);
        self.reselect_budget(&key);
        self.noted(Res::Budget, &key.0, &key.1, new);
        self.tick();
        key
    }

    /// A pod's labels and annotations changed through the API (its budgets are found again).
    pub(crate) fn update_pod_meta(
        &mut self,
        key: &(String, String),
        labels: Labels,
        annotations: Labels,
    ) {
        let Some(p) = self.pods.get(key) else {
            return;
        };
        if p.spec.labels != labels {
            self.unselect(key);
            if let Some(p) = self.pods.get_mut(key) {
                p.spec.labels = labels;
            }
            if let Some(p) = self.pods.get(key).cloned() {
                self.select(&p);
            }
            self.release_if_unselected(key);
        }
        if let Some(p) = self.pods.get_mut(key) {
            p.annotations = annotations;
        }
        self.touch_pod(key);
        self.tick();
    }

    /// A pod whose labels no longer match its controller's selector is let go, as the
    /// ReplicaSet, StatefulSet and DaemonSet controllers let it go: its ownerReference is
    /// removed, and the controller makes another (a StatefulSet cannot while the released pod
    /// holds its name, as on a real cluster). A Job's selector is its controller-uid label.
    fn release_if_unselected(&mut self, key: &(String, String)) {
        let Some(p) = self.pods.get(key) else {
            return;
        };
        let Some(owner) = p.owner.clone() else {
            return;
        };
        let matches = self
            .workloads
            .values()
            .find(|w| w.pod_owner().uid == owner.uid)
            .map(|w| w.selector.matches(&p.spec.labels));
        if matches != Some(false) {
            return;
        }
        let p = p.clone();
        self.forget(&p);
        if let Some(set) = self.owned.get_mut(&owner.uid) {
            set.remove(key);
        }
        if let Some(p) = self.pods.get_mut(key) {
            p.owner = None;
        }
        self.dirty.insert(owner.uid);
        self.touch_pod(key);
    }

    /// A pod's containers' images changed through the API (what a pod update may change).
    pub(crate) fn update_pod_spec(
        &mut self,
        key: &(String, String),
        spec: k8s_openapi::api::core::v1::PodSpec,
    ) {
        if let Some(p) = self.pods.get_mut(key) {
            p.spec.image = spec
                .containers
                .first()
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            p.spec.given = Some(Given::new(spec));
        }
        self.touch_pod(key);
        self.tick();
    }

    /// A Job's mutable fields changed through the API.
    pub(crate) fn update_api_job(&mut self, key: &(String, String), j: SimJob) {
        let rv = self.bump();
        if let Some(old) = self.jobs.get_mut(key) {
            old.labels = j.labels;
            old.annotations = j.annotations;
            old.parallelism = j.parallelism;
            old.suspend = j.suspend;
            old.active_deadline_ms = j.active_deadline_ms;
            old.ttl_after_finished_ms = j.ttl_after_finished_ms;
            old.spec = j.spec;
            old.resource_version = rv;
        }
        self.noted(Res::Job, &key.0, &key.1, false);
        self.tick();
    }

    /// Replaces an object kept as given, in `map` under `key` (its server fields and status are
    /// the stored one's, a new resourceVersion).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn replace_kept<K: Ord + Clone, T: Clone>(
        &mut self,
        res: Res,
        key: &K,
        (namespace, name): (&str, &str),
        mut object: T,
        meta_of: impl Fn(&mut T) -> &mut meta::ObjectMeta,
        store: impl Fn(&mut World) -> &mut BTreeMap<K, T>,
    ) -> Option<T> {
        let old = store(self).get(key)?.clone();
        let mut old_copy = old.clone();
        let kept = meta_of(&mut old_copy).clone();
        let rv = self.bump();
        let m = meta_of(&mut object);
        m.uid = kept.uid;
        m.creation_timestamp = kept.creation_timestamp;
        m.deletion_timestamp = kept.deletion_timestamp;
        m.finalizers = m.finalizers.take().or(kept.finalizers);
        m.namespace = kept.namespace;
        m.generation = kept.generation;
        m.resource_version = Some(rv.to_string());
        store(self).insert(key.clone(), object.clone());
        self.noted(res, namespace, name, false);
        self.tick();
        Some(object)
    }

    /// Stores a PersistentVolume made through the API: `Available` until a claim binds it.
    pub(crate) fn add_api_volume(&mut self, mut v: k8s_openapi::api::core::v1::PersistentVolume) {
        self.stamp(&mut v.metadata);
        v.metadata.generation = None;
        v.status = Some(k8s_openapi::api::core::v1::PersistentVolumeStatus {
            phase: Some("Available".into()),
            last_phase_transition_time: Some(crate::kube::time(self.now)),
            ..Default::default()
        });
        let name = v.metadata.name.clone().unwrap_or_default();
        self.volumes.insert(name.clone(), v);
        self.noted(Res::Volume, "", &name, true);
    }
}
