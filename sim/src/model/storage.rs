//! Storage: StorageClasses, PersistentVolumeClaims and the volumes provisioned for them.
//!
//! A claim names a class, or gets the default one when it is made. Under an `Immediate` class a
//! volume is provisioned at once; under `WaitForFirstConsumer` (kind's `standard`, local-path)
//! when the scheduler places the first pod that mounts it, and the volume lives on that node
//! (its node affinity then pins every later pod of the claim there). Pods start only once their
//! claims are bound. A claim in use is kept while it is deleted (`kubernetes.io/pvc-protection`)
//! until no running pod mounts it; its volume then goes too (`Delete`) or is `Released`
//! (`Retain`).

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::storage::v1 as storage;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use super::*;
use crate::model::namespaces::key_of;

/// The annotation that makes a StorageClass the default.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The scheduler's note on a `WaitForFirstConsumer` claim: where its first pod goes.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const PROTECTION: &str = "kubernetes.io/pvc-protection";
const NODE_LABEL: &str = "kubernetes.io/hostname";

/// The node a volume's node affinity pins it to (a local volume), if any.
pub fn volume_node(v: &core::PersistentVolume) -> Option<String> {
    v.spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .find(|e| e.key == NODE_LABEL && e.operator == "In")
        .and_then(|e| e.values.as_ref()?.first().cloned())
}

fn about_claim(c: &core::PersistentVolumeClaim) -> About {
    About {
        kind: "PersistentVolumeClaim",
        api_version: "v1",
        namespace: c.metadata.namespace.clone().unwrap_or_default(),
        name: c.metadata.name.clone().unwrap_or_default(),
        uid: c.metadata.uid.clone().unwrap_or_default(),
        field_path: None,
    }
}

fn phase(c: &core::PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

impl World {
    /// Adds a StorageClass (`default`: marked as the cluster's default).
    pub fn add_storage_class(
        &mut self,
        name: &str,
        provisioner: &str,
        wait_for_first_consumer: bool,
        default: bool,
    ) {
        let mut sc = storage::StorageClass {
            metadata: meta::ObjectMeta {
                name: Some(name.to_string()),
                annotations: default
                    .then(|| BTreeMap::from([(DEFAULT_CLASS.to_string(), "true".to_string())])),
                ..Default::default()
            },
            provisioner: provisioner.to_string(),
            reclaim_policy: Some("Delete".into()),
            volume_binding_mode: Some(
                if wait_for_first_consumer {
                    "WaitForFirstConsumer"
                } else {
                    "Immediate"
                }
                .into(),
            ),
            ..Default::default()
        };
        self.add_storage_class_object(&mut sc);
    }

    /// Stores a StorageClass (named, validated by the API layer).
    pub(crate) fn add_storage_class_object(&mut self, sc: &mut storage::StorageClass) {
        self.stamp(&mut sc.metadata);
        sc.metadata.generation = None;
        let name = sc.metadata.name.clone().unwrap_or_default();
        self.storage_classes.insert(name.clone(), sc.clone());
        self.noted(Res::StorageClass, "", &name, true);
    }

    /// The default StorageClass's name.
    pub fn default_storage_class(&self) -> Option<String> {
        self.storage_classes
            .iter()
            .find(|(_, sc)| {
                sc.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS))
                    .is_some_and(|v| v == "true")
            })
            .map(|(n, _)| n.clone())
    }

    fn class_of(&self, c: &core::PersistentVolumeClaim) -> Option<&storage::StorageClass> {
        c.spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_ref())
            .and_then(|n| self.storage_classes.get(n))
    }

    /// Whether an unbound claim waits for its first pod to be scheduled before it is bound.
    pub(crate) fn claim_waits_for_consumer(&self, c: &core::PersistentVolumeClaim) -> bool {
        self.class_of(c)
            .and_then(|sc| sc.volume_binding_mode.as_deref())
            == Some("WaitForFirstConsumer")
    }

    /// Stores a new claim (the API layer named, defaulted and validated it).
    pub(crate) fn add_claim(
        &mut self,
        mut c: core::PersistentVolumeClaim,
    ) -> core::PersistentVolumeClaim {
        self.stamp(&mut c.metadata);
        c.metadata.generation = None;
        c.metadata
            .finalizers
            .get_or_insert_with(Vec::new)
            .push(PROTECTION.into());
        c.status = Some(core::PersistentVolumeClaimStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        });
        let key = key_of(&c.metadata);
        self.claims.insert(key.clone(), c.clone());
        self.noted(Res::Claim, &key.0, &key.1, true);
        if self.claim_waits_for_consumer(&c) {
            self.event(
                about_claim(&c),
                record::controller("persistentvolume-controller"),
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding".into(),
            );
        }
        self.tick();
        self.claims.get(&key).cloned().unwrap_or(c)
    }

    /// The scheduler placed pod `key` on `node`: its unbound `WaitForFirstConsumer` claims are
    /// to be provisioned there.
    pub(crate) fn claim_nodes_selected(&mut self, key: &(String, String), node: &str) {
        let Some(p) = self.pods.get(key) else {
            return;
        };
        let claims: Vec<(String, String)> = p
            .spec
            .claims
            .iter()
            .map(|c| (p.namespace.clone(), c.clone()))
            .collect();
        for k in claims {
            let waits = self
                .claims
                .get(&k)
                .is_some_and(|c| phase(c) == "Pending" && self.claim_waits_for_consumer(c));
            if !waits {
                continue;
            }
            let rv = self.bump();
            if let Some(c) = self.claims.get_mut(&k) {
                c.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(SELECTED_NODE.into(), node.into());
                c.metadata.resource_version = Some(rv.to_string());
            }
            self.noted(Res::Claim, &k.0, &k.1, false);
        }
    }

    /// The volume controller and the provisioner: pending claims bound when they may be, and
    /// claims being deleted removed once no running pod mounts them.
    pub(super) fn reconcile_claims(&mut self) {
        if self.claims.is_empty() {
            return;
        }
        let pending: Vec<((String, String), Option<String>)> = self
            .claims
            .iter()
            .filter(|(_, c)| phase(c) == "Pending" && c.metadata.deletion_timestamp.is_none())
            .filter_map(|(k, c)| {
                let class = self.class_of(c)?;
                if class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer") {
                    let node = c.metadata.annotations.as_ref()?.get(SELECTED_NODE)?;
                    Some((k.clone(), Some(node.clone())))
                } else {
                    Some((k.clone(), None))
                }
            })
            .collect();
        for (key, node) in pending {
            self.provision(&key, node.as_deref());
        }
        let ending: Vec<(String, String)> = self
            .claims
            .iter()
            .filter(|(_, c)| c.metadata.deletion_timestamp.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        for key in ending {
            if !self.claim_in_use(&key) {
                self.remove_claim(&key);
            }
        }
    }

    fn claim_in_use(&self, key: &(String, String)) -> bool {
        self.pods
            .values()
            .any(|p| p.namespace == key.0 && !p.is_finished() && p.spec.claims.contains(&key.1))
    }

    /// A volume for claim `key` (on `node`, for a local volume), and the claim bound to it.
    fn provision(&mut self, key: &(String, String), node: Option<&str>) {
        let Some(c) = self.claims.get(key).cloned() else {
            return;
        };
        let Some(class) = self.class_of(&c).cloned() else {
            return;
        };
        let uid = c.metadata.uid.clone().unwrap_or_default();
        let name = format!("pvc-{uid}");
        let spec = c.spec.clone().unwrap_or_default();
        let size = spec
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .cloned()
            .unwrap_or_else(|| Quantity("1Gi".into()));
        let modes = spec.access_modes.clone().unwrap_or_default();
        let about = about_claim(&c);
        let provisioner = class.provisioner.clone();
        self.event(
            about.clone(),
            record::controller("persistentvolume-controller"),
            "ExternalProvisioning",
            format!("Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."),
        );
        let source = record::controller("local-path-provisioner");
        self.event(
            about.clone(),
            source,
            "Provisioning",
            format!(
                "External provisioner is provisioning volume for claim \"{}/{}\"",
                key.0, key.1
            ),
        );
        let node_affinity = node.map(|n| core::VolumeNodeAffinity {
            required: Some(core::NodeSelector {
                node_selector_terms: vec![core::NodeSelectorTerm {
                    match_expressions: Some(vec![core::NodeSelectorRequirement {
                        key: NODE_LABEL.into(),
                        operator: "In".into(),
                        values: Some(vec![n.to_string()]),
                    }]),
                    match_fields: None,
                }],
            }),
        });
        let mut volume = core::PersistentVolume {
            metadata: meta::ObjectMeta {
                name: Some(name.clone()),
                annotations: Some(BTreeMap::from([(
                    "pv.kubernetes.io/provisioned-by".to_string(),
                    provisioner.clone(),
                )])),
                finalizers: Some(vec!["kubernetes.io/pv-protection".into()]),
                ..Default::default()
            },
            spec: Some(core::PersistentVolumeSpec {
                access_modes: Some(modes.clone()),
                capacity: Some(BTreeMap::from([("storage".to_string(), size.clone())])),
                claim_ref: Some(core::ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("PersistentVolumeClaim".into()),
                    name: Some(key.1.clone()),
                    namespace: Some(key.0.clone()),
                    uid: Some(uid.clone()),
                    resource_version: c.metadata.resource_version.clone(),
                    field_path: None,
                }),
                host_path: Some(core::HostPathVolumeSource {
                    path: format!("/var/local-path-provisioner/{name}_{}_{}", key.0, key.1),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                node_affinity,
                persistent_volume_reclaim_policy: class.reclaim_policy.clone(),
                storage_class_name: class.metadata.name.clone(),
                volume_mode: Some("Filesystem".into()),
                ..Default::default()
            }),
            status: Some(core::PersistentVolumeStatus {
                phase: Some("Bound".into()),
                last_phase_transition_time: Some(crate::kube::time(self.now)),
                ..Default::default()
            }),
        };
        self.stamp(&mut volume.metadata);
        volume.metadata.generation = None;
        self.volumes.insert(name.clone(), volume);
        self.noted(Res::Volume, "", &name, true);
        let rv = self.bump();
        if let Some(c) = self.claims.get_mut(key) {
            let a = c.metadata.annotations.get_or_insert_with(Default::default);
            a.insert("pv.kubernetes.io/bind-completed".into(), "yes".into());
            a.insert("pv.kubernetes.io/bound-by-controller".into(), "yes".into());
            a.insert(
                "volume.beta.kubernetes.io/storage-provisioner".into(),
                provisioner.clone(),
            );
            a.insert(
                "volume.kubernetes.io/storage-provisioner".into(),
                provisioner,
            );
            c.metadata.resource_version = Some(rv.to_string());
            if let Some(s) = c.spec.as_mut() {
                s.volume_name = Some(name.clone());
            }
            c.status = Some(core::PersistentVolumeClaimStatus {
                phase: Some("Bound".into()),
                access_modes: Some(modes),
                capacity: Some(BTreeMap::from([("storage".to_string(), size)])),
                ..Default::default()
            });
        }
        self.noted(Res::Claim, &key.0, &key.1, false);
        self.event(
            about,
            source,
            "ProvisioningSucceeded",
            format!("Successfully provisioned volume {name}"),
        );
    }

    /// `DELETE persistentvolumeclaims/NAME`: marked, and removed once no running pod mounts it.
    pub(crate) fn delete_claim(
        &mut self,
        key: &(String, String),
    ) -> Option<core::PersistentVolumeClaim> {
        let now = crate::kube::time(self.now);
        let rv = self.bump();
        let c = self.claims.get_mut(key)?;
        if c.metadata.deletion_timestamp.is_none() {
            c.metadata.deletion_timestamp = Some(now);
            c.metadata.deletion_grace_period_seconds = Some(0);
            c.metadata.resource_version = Some(rv.to_string());
        }
        let c = c.clone();
        self.noted(Res::Claim, &key.0, &key.1, false);
        self.reconcile_claims();
        Some(self.claims.get(key).cloned().unwrap_or(c))
    }

    fn remove_claim(&mut self, key: &(String, String)) {
        let Some(mut c) = self.claims.remove(key) else {
            return;
        };
        c.metadata.resource_version = Some(self.bump().to_string());
        if let Some(f) = c.metadata.finalizers.as_mut() {
            f.retain(|f| f != PROTECTION);
        }
        let volume = c.spec.as_ref().and_then(|s| s.volume_name.clone());
        if let Ok(v) = serde_json::to_value(&c) {
            self.noted_gone(Res::Claim, &key.0, &key.1, v);
        }
        let Some(volume) = volume else {
            return;
        };
        let delete = self.volumes.get(&volume).is_some_and(|v| {
            v.spec
                .as_ref()
                .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
                != Some("Retain")
        });
        if delete {
            self.remove_volume(&volume);
        } else {
            let rv = self.bump();
            if let Some(v) = self.volumes.get_mut(&volume) {
                v.metadata.resource_version = Some(rv.to_string());
                if let Some(s) = v.status.as_mut() {
                    s.phase = Some("Released".into());
                }
            }
            self.noted(Res::Volume, "", &volume, false);
        }
    }

    pub(crate) fn remove_volume(&mut self, name: &str) -> Option<core::PersistentVolume> {
        let mut v = self.volumes.remove(name)?;
        v.metadata.resource_version = Some(self.bump().to_string());
        if let Ok(json) = serde_json::to_value(&v) {
            self.noted_gone(Res::Volume, "", name, json);
        }
        Some(v)
    }
}
