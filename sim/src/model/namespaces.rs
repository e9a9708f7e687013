//! Namespaces: those every cluster has, those the scenarios' objects live in, and the life the
//! namespace controller gives them: `Active`, then `Terminating` while everything in it is
//! deleted (pods gracefully), then gone. Every namespace holds the `kube-root-ca.crt`
//! ConfigMap, as the root CA publisher puts it there.

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use super::*;

/// The namespaces a kubeadm cluster starts with.
pub const SYSTEM: &[&str] = &["default", "kube-node-lease", "kube-public", "kube-system"];
/// The apiserver refuses to delete these.
pub const UNDELETABLE: &[&str] = &["default", "kube-public", "kube-system"];
/// The ConfigMap the root CA publisher keeps in every namespace.
pub const ROOT_CA: &str = "kube-root-ca.crt";

/// Why an object cannot be made in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NamespaceError {
    #[error("namespaces \"{0}\" not found")]
    Missing(String),
    #[error("unable to create new content in namespace {0} because it is being terminated")]
    Terminating(String),
}

impl World {
    /// Makes namespace `name` if it does not exist (scenarios, and the system namespaces).
    pub fn ensure_namespace(&mut self, name: &str) {
        if self.namespaces.contains_key(name) {
            return;
        }
        let ns = core::Namespace {
            metadata: meta::ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        self.add_namespace(ns);
    }

    /// Stores a new namespace (named, defaulted by the API layer) as the apiserver does: a uid,
    /// its `kubernetes.io/metadata.name` label, the `kubernetes` finalizer, phase `Active`.
    pub(crate) fn add_namespace(&mut self, mut ns: core::Namespace) -> core::Namespace {
        let name = ns.metadata.name.clone().unwrap_or_default();
        self.stamp(&mut ns.metadata);
        ns.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("kubernetes.io/metadata.name".into(), name.clone());
        ns.spec = Some(core::NamespaceSpec {
            finalizers: Some(vec!["kubernetes".into()]),
        });
        ns.status = Some(core::NamespaceStatus {
            phase: Some("Active".into()),
            conditions: None,
        });
        self.namespaces.insert(name.clone(), ns.clone());
        self.noted(Res::Namespace, "", &name, true);
        let ca = core::ConfigMap {
            metadata: meta::ObjectMeta {
                name: Some(ROOT_CA.into()),
                namespace: Some(name.clone()),
                annotations: Some(BTreeMap::from([(
                    "kubernetes.io/description".to_string(),
                    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.".to_string(),
                )])),
                ..Default::default()
            },
            data: Some(BTreeMap::from([(
                "ca.crt".to_string(),
                "-----BEGIN CERTIFICATE-----\nsimulated cluster CA (no key exists)\n-----END CERTIFICATE-----\n".to_string(),
            )])),
            ..Default::default()
        };
        self.add_config_map(ca);
        ns
    }

    /// Sets what the apiserver sets on every new object: uid, resourceVersion, creation time,
    /// generation 1.
    pub(crate) fn stamp(
        &mut self,
        m: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    ) {
        m.uid = Some(self.uid());
        m.resource_version = Some(self.bump().to_string());
        m.creation_timestamp = Some(crate::kube::time(self.now));
        m.generation = Some(1);
        m.deletion_timestamp = None;
        m.deletion_grace_period_seconds = None;
        m.self_link = None;
        m.managed_fields = None;
    }

    /// Stores a ConfigMap (named and in an existing namespace).
    pub fn add_config_map(&mut self, mut cm: core::ConfigMap) -> core::ConfigMap {
        self.stamp(&mut cm.metadata);
        cm.metadata.generation = None;
        let key = key_of(&cm.metadata);
        self.config_maps.insert(key.clone(), cm.clone());
        self.noted(Res::ConfigMap, &key.0, &key.1, true);
        cm
    }

    /// Stores a Secret (named and in an existing namespace).
    pub fn add_secret(&mut self, mut s: core::Secret) -> core::Secret {
        self.stamp(&mut s.metadata);
        s.metadata.generation = None;
        let key = key_of(&s.metadata);
        self.secrets.insert(key.clone(), s.clone());
        self.noted(Res::Secret, &key.0, &key.1, true);
        s
    }

    /// Whether objects may be made in `namespace`.
    pub fn namespace_open(&self, namespace: &str) -> Result<(), NamespaceError> {
        match self.namespaces.get(namespace) {
            None => Err(NamespaceError::Missing(namespace.to_string())),
            Some(ns) if ns.metadata.deletion_timestamp.is_some() => {
                Err(NamespaceError::Terminating(namespace.to_string()))
            }
            Some(_) => Ok(()),
        }
    }

    /// `DELETE namespaces/NAME`: it turns `Terminating`; the namespace controller deletes what
    /// is in it, and the namespace goes once its pods are gone.
    pub(crate) fn delete_namespace(&mut self, name: &str) -> Option<core::Namespace> {
        let now = crate::kube::time(self.now);
        let rv = self.bump();
        let ns = self.namespaces.get_mut(name)?;
        if ns.metadata.deletion_timestamp.is_none() {
            ns.metadata.deletion_timestamp = Some(now);
            ns.metadata.resource_version = Some(rv.to_string());
            if let Some(s) = ns.status.as_mut() {
                s.phase = Some("Terminating".into());
            }
        }
        let ns = ns.clone();
        self.noted(Res::Namespace, "", name, false);
        self.tick();
        Some(self.namespaces.get(name).cloned().unwrap_or(ns))
    }

    /// The namespace controller: what is in a terminating namespace is deleted; once its pods
    /// and claims are gone, so is it.
    pub(super) fn reconcile_namespaces(&mut self) {
        let ending: Vec<String> = self
            .namespaces
            .iter()
            .filter(|(_, ns)| ns.metadata.deletion_timestamp.is_some())
            .map(|(n, _)| n.clone())
            .collect();
        for ns in ending {
            let workloads: Vec<(Kind, String, String)> = self
                .workloads
                .keys()
                .filter(|k| k.1 == ns)
                .cloned()
                .collect();
            for k in workloads {
                self.delete_workload(&k, Propagation::Background);
            }
            let jobs: Vec<(String, String)> =
                self.jobs.keys().filter(|k| k.0 == ns).cloned().collect();
            for k in jobs {
                self.delete_job(&k, Propagation::Background);
            }
            let pods: Vec<(String, String)> = self
                .pods
                .iter()
                .filter(|(k, p)| k.0 == ns && p.deleting_at.is_none())
                .map(|(k, _)| k.clone())
                .collect();
            for k in pods {
                self.start_termination(&k, None);
            }
            let budgets: Vec<(String, String)> =
                self.pdbs.keys().filter(|k| k.0 == ns).cloned().collect();
            for k in budgets {
                self.delete_budget(&k);
            }
            self.delete_passive_in(&ns);
            let claims: Vec<(String, String)> =
                self.claims.keys().filter(|k| k.0 == ns).cloned().collect();
            for k in claims {
                self.delete_claim(&k);
            }
            let empty =
                !self.pods.keys().any(|k| k.0 == ns) && !self.claims.keys().any(|k| k.0 == ns);
            if empty && let Some(mut gone) = self.namespaces.remove(&ns) {
                gone.metadata.resource_version = Some(self.bump().to_string());
                if let Ok(v) = serde_json::to_value(&gone) {
                    self.noted_gone(Res::Namespace, "", &ns, v);
                }
            }
        }
    }

    /// Services, ConfigMaps and events of a terminating namespace go at once.
    fn delete_passive_in(&mut self, ns: &str) {
        let services: Vec<(String, String)> = self
            .services
            .keys()
            .filter(|k| k.0 == ns)
            .cloned()
            .collect();
        for k in services {
            self.delete_service(&k);
        }
        let maps: Vec<(String, String)> = self
            .config_maps
            .keys()
            .filter(|k| k.0 == ns)
            .cloned()
            .collect();
        for k in maps {
            self.delete_config_map(&k);
        }
        let secrets: Vec<(String, String)> =
            self.secrets.keys().filter(|k| k.0 == ns).cloned().collect();
        for k in secrets {
            self.delete_secret(&k);
        }
        let events: Vec<(String, String)> = self
            .events
            .items
            .keys()
            .filter(|k| k.0 == ns)
            .cloned()
            .collect();
        for k in events {
            if let Some(mut e) = self.events.items.remove(&k) {
                e.metadata.resource_version = Some(self.bump().to_string());
                if let Ok(v) = serde_json::to_value(&e) {
                    self.noted_gone(Res::Event, &k.0, &k.1, v);
                }
            }
        }
    }

    pub(crate) fn delete_service(&mut self, key: &(String, String)) -> Option<core::Service> {
        let mut gone = self.services.remove(key)?;
        gone.metadata.resource_version = Some(self.bump().to_string());
        if let Ok(v) = serde_json::to_value(&gone) {
            self.noted_gone(Res::Service, &key.0, &key.1, v);
        }
        Some(gone)
    }

    pub(crate) fn delete_secret(&mut self, key: &(String, String)) -> Option<core::Secret> {
        let mut gone = self.secrets.remove(key)?;
        gone.metadata.resource_version = Some(self.bump().to_string());
        if let Ok(v) = serde_json::to_value(&gone) {
            self.noted_gone(Res::Secret, &key.0, &key.1, v);
        }
        Some(gone)
    }

    pub(crate) fn delete_config_map(&mut self, key: &(String, String)) -> Option<core::ConfigMap> {
        let mut gone = self.config_maps.remove(key)?;
        gone.metadata.resource_version = Some(self.bump().to_string());
        if let Ok(v) = serde_json::to_value(&gone) {
            self.noted_gone(Res::ConfigMap, &key.0, &key.1, v);
        }
        Some(gone)
    }
}

/// `(namespace, name)` of an object's metadata.
pub(crate) fn key_of(m: &meta::ObjectMeta) -> (String, String) {
    (
        m.namespace.clone().unwrap_or_default(),
        m.name.clone().unwrap_or_default(),
    )
}
