//! Legacy discovery (`/api`, `/apis` and each group's resource list) and `/version`: what
//! kubectl and kube-rs read before they ask for anything else.

#![allow(clippy::result_large_err)]

use super::*;

pub(super) struct Res {
    name: &'static str,
    kind: &'static str,
    namespaced: bool,
    verbs: &'static [&'static str],
    short: &'static [&'static str],
    /// For subresources served from another group (pods/eviction is policy/v1).
    group_version: Option<(&'static str, &'static str)>,
}

pub(super) const READ: &[&str] = &["get", "list"];
pub(super) const CORE: &[Res] = &[
    Res {
        name: "nodes",
        kind: "Node",
        namespaced: false,
        verbs: &["get", "list", "patch"],
        short: &["no"],
        group_version: None,
    },
    Res {
        name: "nodes/status",
        kind: "Node",
        namespaced: false,
        verbs: &["get"],
        short: &[],
        group_version: None,
    },
    Res {
        name: "pods",
        kind: "Pod",
        namespaced: true,
        verbs: &["delete", "get", "list"],
        short: &["po"],
        group_version: None,
    },
    Res {
        name: "pods/eviction",
        kind: "Eviction",
        namespaced: true,
        verbs: &["create"],
        short: &[],
        group_version: Some(("policy", "v1")),
    },
    Res {
        name: "pods/status",
        kind: "Pod",
        namespaced: true,
        verbs: &["get"],
        short: &[],
        group_version: None,
    },
];
pub(super) const APPS: &[Res] = &[
    Res {
        name: "daemonsets",
        kind: "DaemonSet",
        namespaced: true,
        verbs: &["get", "list", "patch"],
        short: &["ds"],
        group_version: None,
    },
    Res {
        name: "deployments",
        kind: "Deployment",
        namespaced: true,
        verbs: READ,
        short: &["deploy"],
        group_version: None,
    },
    Res {
        name: "deployments/scale",
        kind: "Scale",
        namespaced: true,
        verbs: &["get", "patch", "update"],
        short: &[],
        group_version: Some(("autoscaling", "v1")),
    },
    Res {
        name: "replicasets",
        kind: "ReplicaSet",
        namespaced: true,
        verbs: READ,
        short: &["rs"],
        group_version: None,
    },
    Res {
        name: "statefulsets",
        kind: "StatefulSet",
        namespaced: true,
        verbs: READ,
        short: &["sts"],
        group_version: None,
    },
    Res {
        name: "statefulsets/scale",
        kind: "Scale",
        namespaced: true,
        verbs: &["get", "patch", "update"],
        short: &[],
        group_version: Some(("autoscaling", "v1")),
    },
];
pub(super) const POLICY: &[Res] = &[
    Res {
        name: "poddisruptionbudgets",
        kind: "PodDisruptionBudget",
        namespaced: true,
        verbs: READ,
        short: &["pdb"],
        group_version: None,
    },
    Res {
        name: "poddisruptionbudgets/status",
        kind: "PodDisruptionBudget",
        namespaced: true,
        verbs: &["get"],
        short: &[],
        group_version: None,
    },
];

pub(super) fn resource_list(group_version: &str, resources: &[Res]) -> meta::APIResourceList {
    meta::APIResourceList {
        group_version: group_version.into(),
        resources: resources
            .iter()
            .map(|r| meta::APIResource {
                name: r.name.into(),
                kind: r.kind.into(),
                namespaced: r.namespaced,
                singular_name: if r.name.contains('/') {
                    String::new()
                } else {
                    r.kind.to_ascii_lowercase()
                },
                verbs: r.verbs.iter().map(|v| v.to_string()).collect(),
                short_names: (!r.short.is_empty())
                    .then(|| r.short.iter().map(|s| s.to_string()).collect()),
                group: r.group_version.map(|(g, _)| g.to_string()),
                version: r.group_version.map(|(_, v)| v.to_string()),
                ..Default::default()
            })
            .collect(),
    }
}

pub(super) fn group(name: &str) -> meta::APIGroup {
    let v = meta::GroupVersionForDiscovery {
        group_version: format!("{name}/v1"),
        version: "v1".into(),
    };
    meta::APIGroup {
        name: name.into(),
        preferred_version: Some(v.clone()),
        server_address_by_client_cidrs: None,
        versions: vec![v],
    }
}

pub(super) fn discovery(
    path: &[&str],
    apiserver: impl FnOnce() -> Option<Version>,
) -> Option<Response> {
    Some(match path {
        ["version"] => {
            let git = apiserver().map_or_else(|| GIT_VERSION.to_string(), |v| v.to_string());
            ok(&json!({
                "major": "1", "minor": git.split('.').nth(1).unwrap_or("33"),
                "gitVersion": git, "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64",
                "emulationMajor": "1", "minCompatibilityMajor": "1",
            }))
        }
        ["api"] => ok(&meta::APIVersions {
            versions: vec!["v1".into()],
            server_address_by_client_cidrs: vec![meta::ServerAddressByClientCIDR {
                client_cidr: "0.0.0.0/0".into(),
                server_address: String::new(),
            }],
        }),
        ["apis"] => ok(&meta::APIGroupList {
            groups: vec![group("apps"), group("policy")],
        }),
        ["api", "v1"] => ok(&resource_list("v1", CORE)),
        ["apis", "apps", "v1"] => ok(&resource_list("apps/v1", APPS)),
        ["apis", "policy", "v1"] => ok(&resource_list("policy/v1", POLICY)),
        ["healthz" | "readyz" | "livez"] => "ok".into_response(),
        _ => return None,
    })
}
