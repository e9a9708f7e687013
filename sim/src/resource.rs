//! The resources the sim serves, one row each: group, version, plural, kind, scope, short names,
//! verbs and subresources. Discovery, the OpenAPI documents, the router and the watch journal
//! all read this table, so a resource is served, discoverable and watchable together or not at
//! all.

/// A served resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Res {
    Namespace,
    Node,
    Pod,
    Service,
    ConfigMap,
    Secret,
    Claim,
    Volume,
    Event,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    Budget,
    StorageClass,
    /// `events.k8s.io/v1`: the same events as `Event`, in the newer shape.
    EventV1,
}

/// A subresource: its name, the kind it reads and writes, its verbs, and the group/version it is
/// served from when that is not its parent's (`pods/eviction` is `policy/v1`).
#[derive(Debug, Clone, Copy)]
pub struct Sub {
    pub name: &'static str,
    pub kind: &'static str,
    pub verbs: &'static [&'static str],
    pub group_version: Option<(&'static str, &'static str)>,
}

#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub res: Res,
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short: &'static [&'static str],
    pub subresources: &'static [Sub],
    /// `kubectl get all` lists the resources of category `all`.
    pub all: bool,
}

/// The verbs of every resource in the table (what the API serves for each).
pub const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];
/// Nodes are not created or deleted through the sim's API (scenarios build the machines).
pub const NODE_VERBS: &[&str] = &["get", "list", "patch", "update", "watch"];

const STATUS: Sub = Sub {
    name: "status",
    kind: "",
    verbs: &["get"],
    group_version: None,
};

const fn scale(verbs: &'static [&'static str]) -> Sub {
    Sub {
        name: "scale",
        kind: "Scale",
        verbs,
        group_version: Some(("autoscaling", "v1")),
    }
}

pub const RESOURCES: &[Def] = &[
    Def {
        res: Res::Namespace,
        group: "",
        version: "v1",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        short: &["ns"],
        all: false,
        subresources: &[STATUS],
    },
    Def {
        res: Res::Node,
        group: "",
        version: "v1",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        short: &["no"],
        all: false,
        subresources: &[STATUS],
    },
    Def {
        res: Res::Pod,
        group: "",
        version: "v1",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        short: &["po"],
        all: true,
        subresources: &[
            Sub {
                name: "eviction",
                kind: "Eviction",
                verbs: &["create"],
                group_version: Some(("policy", "v1")),
            },
            STATUS,
        ],
    },
    Def {
        res: Res::Service,
        group: "",
        version: "v1",
        plural: "services",
        kind: "Service",
        namespaced: true,
        short: &["svc"],
        all: true,
        subresources: &[STATUS],
    },
    Def {
        res: Res::ConfigMap,
        group: "",
        version: "v1",
        plural: "configmaps",
        kind: "ConfigMap",
        namespaced: true,
        short: &["cm"],
        all: false,
        subresources: &[],
    },
    Def {
        res: Res::Secret,
        group: "",
        version: "v1",
        plural: "secrets",
        kind: "Secret",
        namespaced: true,
        short: &[],
        all: false,
        subresources: &[],
    },
    Def {
        res: Res::Claim,
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        short: &["pvc"],
        all: false,
        subresources: &[STATUS],
    },
    Def {
        res: Res::Volume,
        group: "",
        version: "v1",
        plural: "persistentvolumes",
        kind: "PersistentVolume",
        namespaced: false,
        short: &["pv"],
        all: false,
        subresources: &[STATUS],
    },
    Def {
        res: Res::Event,
        group: "",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short: &["ev"],
        all: false,
        subresources: &[],
    },
    Def {
        res: Res::Deployment,
        group: "apps",
        version: "v1",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
        short: &["deploy"],
        all: true,
        subresources: &[scale(&["get", "patch", "update"]), STATUS],
    },
    Def {
        res: Res::ReplicaSet,
        group: "apps",
        version: "v1",
        plural: "replicasets",
        kind: "ReplicaSet",
        namespaced: true,
        short: &["rs"],
        all: true,
        subresources: &[scale(&["get", "patch", "update"]), STATUS],
    },
    Def {
        res: Res::StatefulSet,
        group: "apps",
        version: "v1",
        plural: "statefulsets",
        kind: "StatefulSet",
        namespaced: true,
        short: &["sts"],
        all: true,
        subresources: &[scale(&["get", "patch", "update"]), STATUS],
    },
    Def {
        res: Res::DaemonSet,
        group: "apps",
        version: "v1",
        plural: "daemonsets",
        kind: "DaemonSet",
        namespaced: true,
        short: &["ds"],
        all: true,
        subresources: &[STATUS],
    },
    Def {
        res: Res::Job,
        group: "batch",
        version: "v1",
        plural: "jobs",
        kind: "Job",
        namespaced: true,
        short: &[],
        all: true,
        subresources: &[STATUS],
    },
    Def {
        res: Res::Budget,
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        kind: "PodDisruptionBudget",
        namespaced: true,
        short: &["pdb"],
        all: false,
        subresources: &[STATUS],
    },
    Def {
        res: Res::StorageClass,
        group: "storage.k8s.io",
        version: "v1",
        plural: "storageclasses",
        kind: "StorageClass",
        namespaced: false,
        short: &["sc"],
        all: false,
        subresources: &[],
    },
    Def {
        res: Res::EventV1,
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short: &["ev"],
        all: false,
        subresources: &[],
    },
];

impl Res {
    pub fn def(self) -> &'static Def {
        // Every variant has its row (checked by a test); the first row is never reached.
        RESOURCES
            .iter()
            .find(|d| d.res == self)
            .unwrap_or(&RESOURCES[0])
    }

    /// The resource at `/api[s]/GROUP/VERSION/.../PLURAL`.
    pub fn at(group: &str, version: &str, plural: &str) -> Option<Res> {
        RESOURCES
            .iter()
            .find(|d| d.group == group && d.version == version && d.plural == plural)
            .map(|d| d.res)
    }

    /// `deployments.apps`, `pods`: how the apiserver names a resource in its messages.
    pub fn qualified(self) -> String {
        let d = self.def();
        if d.group.is_empty() {
            d.plural.to_string()
        } else {
            format!("{}.{}", d.plural, d.group)
        }
    }

    /// `apps/v1`, `v1`.
    pub fn api_version(self) -> String {
        let d = self.def();
        if d.group.is_empty() {
            d.version.to_string()
        } else {
            format!("{}/{}", d.group, d.version)
        }
    }

    /// The verbs it serves.
    pub fn verbs(self) -> &'static [&'static str] {
        if self == Res::Node { NODE_VERBS } else { VERBS }
    }

    /// The resource whose changes a watch of this one reads (`events.k8s.io` events are the
    /// core ones).
    pub fn stored(self) -> Res {
        match self {
            Res::EventV1 => Res::Event,
            r => r,
        }
    }
}

/// The API groups served, each with its version, in discovery's order.
pub const GROUPS: &[(&str, &str)] = &[
    ("apps", "v1"),
    ("events.k8s.io", "v1"),
    ("batch", "v1"),
    ("policy", "v1"),
    ("storage.k8s.io", "v1"),
    ("authorization.k8s.io", "v1"),
    ("metrics.k8s.io", "v1beta1"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_has_one_row_and_its_group_is_served() {
        use std::collections::BTreeSet;
        let all = [
            Res::Namespace,
            Res::Node,
            Res::Pod,
            Res::Service,
            Res::ConfigMap,
            Res::Secret,
            Res::Claim,
            Res::Volume,
            Res::Event,
            Res::Deployment,
            Res::ReplicaSet,
            Res::StatefulSet,
            Res::DaemonSet,
            Res::Job,
            Res::Budget,
            Res::StorageClass,
            Res::EventV1,
        ];
        for r in all {
            assert_eq!(RESOURCES.iter().filter(|d| d.res == r).count(), 1, "{r:?}");
            assert_eq!(r.def().res, r);
            let d = r.def();
            assert_eq!(Res::at(d.group, d.version, d.plural), Some(r));
            assert!(
                d.group.is_empty() || GROUPS.iter().any(|(g, v)| *g == d.group && *v == d.version),
                "{r:?}'s group is not in GROUPS"
            );
        }
        let paths: BTreeSet<(&str, &str)> = RESOURCES.iter().map(|d| (d.group, d.plural)).collect();
        assert_eq!(paths.len(), RESOURCES.len(), "two rows share a path");
        assert_eq!(Res::Deployment.qualified(), "deployments.apps");
        assert_eq!(Res::Pod.qualified(), "pods");
        assert_eq!(Res::Budget.api_version(), "policy/v1");
    }
}
