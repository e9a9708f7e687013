//! Legacy discovery (`/api`, `/apis` and each group's resource list) and `/version`: what
//! kubectl and kube-rs read before they ask for anything else. Every list is made from
//! `resource::RESOURCES` and `resource::GROUPS`, so what is served is what is discovered.

#![allow(clippy::result_large_err)]

use super::*;
use crate::resource::{GROUPS, RESOURCES};

fn api_resource(
    name: String,
    kind: &str,
    namespaced: bool,
    verbs: &[&str],
    short: &[&str],
    group_version: Option<(&str, &str)>,
) -> meta::APIResource {
    meta::APIResource {
        singular_name: if name.contains('/') {
            String::new()
        } else {
            kind.to_ascii_lowercase()
        },
        name,
        kind: kind.into(),
        namespaced,
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        short_names: (!short.is_empty()).then(|| short.iter().map(|s| s.to_string()).collect()),
        group: group_version.map(|(g, _)| g.to_string()),
        version: group_version.map(|(_, v)| v.to_string()),
        ..Default::default()
    }
}

/// The resources of `group`/`version`, with their subresources.
pub(super) fn resource_list(group: &str, version: &str) -> Option<meta::APIResourceList> {
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    if group == "metrics.k8s.io" && version == "v1beta1" {
        return Some(meta::APIResourceList {
            group_version,
            resources: vec![
                api_resource(
                    "nodes".into(),
                    "NodeMetrics",
                    false,
                    &["get", "list"],
                    &[],
                    None,
                ),
                api_resource(
                    "pods".into(),
                    "PodMetrics",
                    true,
                    &["get", "list"],
                    &[],
                    None,
                ),
            ],
        });
    }
    if group == "authorization.k8s.io" && version == "v1" {
        return Some(meta::APIResourceList {
            group_version,
            resources: vec![api_resource(
                "selfsubjectaccessreviews".into(),
                "SelfSubjectAccessReview",
                false,
                &["create"],
                &[],
                None,
            )],
        });
    }
    let defs: Vec<_> = RESOURCES
        .iter()
        .filter(|d| d.group == group && d.version == version)
        .collect();
    if defs.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for d in defs {
        let mut r = api_resource(
            d.plural.into(),
            d.kind,
            d.namespaced,
            d.res.verbs(),
            d.short,
            None,
        );
        if d.all {
            r.categories = Some(vec!["all".into()]);
        }
        resources.push(r);
        for s in d.subresources {
            let kind = if s.kind.is_empty() { d.kind } else { s.kind };
            resources.push(api_resource(
                format!("{}/{}", d.plural, s.name),
                kind,
                d.namespaced,
                s.verbs,
                &[],
                s.group_version,
            ));
        }
    }
    Some(meta::APIResourceList {
        group_version,
        resources,
    })
}

fn group(name: &str, version: &str) -> meta::APIGroup {
    let v = meta::GroupVersionForDiscovery {
        group_version: format!("{name}/{version}"),
        version: version.into(),
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
            groups: GROUPS.iter().map(|(g, v)| group(g, v)).collect(),
        }),
        ["api", version] => ok(&resource_list("", version)?),
        ["apis", g, version] => ok(&resource_list(g, version)?),
        ["apis", g] => {
            let (_, v) = GROUPS.iter().find(|(name, _)| name == g)?;
            ok(&group(g, v))
        }
        ["healthz" | "readyz" | "livez"] => "ok".into_response(),
        _ => return None,
    })
}
