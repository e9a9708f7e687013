//! Drift within a hardware generation: each node's fingerprint, the majority value of each
//! field across its generation and the nodes that differ. A canary proves its generation
//! only for the nodes that are like it; an outlier in a field that must match is not proven
//! by it, one in a field that should match (a kernel patch, an OS point release) is a
//! warning.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::facts::Facts;
use crate::inventory::NodeInv;

/// How much a field's difference matters.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Match {
    /// The canary proves nothing about a node that differs (cgroup, container runtime).
    Must,
    /// A difference worth knowing (kernel, OS image).
    Should,
}

/// The fields a fingerprint holds, with how much each matters: what the inventory shows of
/// a node, and what its agent read on the machine ([`HOST_FACTS`]). The kubelet config keys
/// read from `/configz` are fields too (`kubelet:KEY`), all must-match.
pub const FIELDS: &[(&str, Match)] = &[
    ("cgroup", Match::Must),
    ("container-runtime", Match::Must),
    ("containerd-config", Match::Must),
    ("kubelet-flags", Match::Must),
    ("swap", Match::Must),
    ("kernel", Match::Should),
    ("os-image", Match::Should),
    ("package-holds", Match::Should),
];

/// The kubelet config keys that must agree within a generation (`/configz`), besides the
/// ones a policy names (`driftKeys`).
pub const KUBELET_KEYS: &[&str] = &[
    "cgroupDriver",
    "cpuManagerPolicy",
    "topologyManagerPolicy",
    "reservedSystemCPUs",
    "evictionHard",
    "maxPods",
    "featureGates",
];

/// A fingerprint field of a kubelet config key.
pub const KUBELET_FIELD: &str = "kubelet:";

/// The host fact prefix of a kubelet config key's value (`kubelet.maxPods` = `110`, its
/// compact JSON; `unset` when `/configz` does not have it).
pub const KUBELET_FACT: &str = "kubelet.";

/// The host facts a fingerprint reads (the agent's `Fingerprint` command): (fact, field).
/// Hashes are cut to 12 characters: enough to tell files apart, short enough to read.
pub const HOST_FACTS: &[(&str, &str)] = &[
    ("containerd_config_sha256", "containerd-config"),
    ("kubelet_flags_sha256", "kubelet-flags"),
    ("held", "package-holds"),
    ("kernel", "kernel"),
    ("os_image", "os-image"),
];

/// A node's values of [`FIELDS`], by field.
pub type Fingerprint = BTreeMap<String, String>;

/// The nodes of each generation with their fingerprints.
pub type Generations = BTreeMap<String, Vec<(String, Fingerprint)>>;

/// How much a field matters: [`FIELDS`]' row, or must for a kubelet config key.
pub fn level(field: &str) -> Match {
    FIELDS
        .iter()
        .find(|(f, _)| *f == field)
        .map_or(Match::Must, |(_, m)| *m)
}

/// A node's values of [`FIELDS`] (a field it does not report is left out): the
/// inventory's, then what its agent read (`host`, when it was read).
pub fn fingerprint(n: Option<&NodeInv>, host: Option<&Facts>) -> Fingerprint {
    let mut f = BTreeMap::new();
    if let Some(n) = n {
        if let Some(c) = n.cgroup {
            f.insert("cgroup".into(), format!("v{c}"));
        }
        for (k, v) in [
            ("container-runtime", &n.runtime),
            ("kernel", &n.kernel),
            ("os-image", &n.os_image),
        ] {
            if !v.is_empty() {
                f.insert(k.to_string(), v.clone());
            }
        }
    }
    let Some(host) = host else { return f };
    let get = |k: &str| host.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    // As the node reports it to the API (`containerd://1.7.24`).
    if let Some(v) = get("containerd_version") {
        f.insert("container-runtime".into(), format!("containerd://{v}"));
    }
    for (fact, field) in HOST_FACTS {
        if let Some(v) = get(fact) {
            let v = if fact.ends_with("_sha256") {
                &v[..v.len().min(12)]
            } else {
                v
            };
            f.insert(field.to_string(), v.to_string());
        }
    }
    match get("cgroup") {
        Some("cgroup2fs") => {
            f.insert("cgroup".into(), "v2".into());
        }
        Some(_) => {
            f.insert("cgroup".into(), "v1".into());
        }
        None => {}
    }
    if let Some(n) = get("swap_devices") {
        f.insert("swap".into(), if n == "0" { "off" } else { "on" }.into());
    }
    for (k, v) in host {
        if let Some(key) = k.strip_prefix(KUBELET_FACT) {
            f.insert(format!("{KUBELET_FIELD}{key}"), v.clone());
        }
    }
    f
}

/// Drift after a batch: each generation's machines (`members`: node, generation) compared
/// with those at the same kubelet version (the agent's `kubelet_version`), from what their
/// agents read now (`hosts`); a machine that could not be read is left out. The groups are
/// named `GENERATION at VERSION`.
pub fn after_batch(
    members: &[(String, String)],
    hosts: &BTreeMap<String, Facts>,
) -> Vec<DriftReport> {
    let mut groups = Generations::new();
    for (node, generation) in members {
        let Some(host) = hosts.get(node).filter(|h| !h.contains_key("unread")) else {
            continue;
        };
        let group = match host
            .get("kubelet_version")
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
        {
            Some(v) => format!("{generation} at {v}"),
            None => generation.clone(),
        };
        groups
            .entry(group)
            .or_default()
            .push((node.clone(), fingerprint(None, Some(host))));
    }
    drift(&groups)
}

/// Why the machine waits for a reboot, from its agent's facts: `/var/run/reboot-required`,
/// or a newer kernel installed than the one running. A canary rebooted into the new kernel
/// proves nothing about the one still running the old.
pub fn pending_reboot(host: &Facts) -> Option<String> {
    let get = |k: &str| host.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    if get("reboot_required") == Some("true") {
        return Some("/var/run/reboot-required exists".into());
    }
    match (get("kernel"), get("kernel_installed")) {
        (Some(running), Some(installed)) if running != installed => Some(format!(
            "kernel {installed} is installed but {running} is running"
        )),
        _ => None,
    }
}

/// One field of a generation: its majority value and the nodes that differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FieldDrift {
    pub field: String,
    #[serde(rename = "match")]
    pub level: Match,
    pub majority: String,
    /// (node, its value), by node name.
    pub outliers: Vec<(String, String)>,
}

/// A generation's drift: its fields with outliers (a generation without is not listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftReport {
    pub generation: String,
    pub nodes: usize,
    pub fields: Vec<FieldDrift>,
}

impl DriftReport {
    /// The nodes that differ from the majority in a field of `level` (any field: `None`).
    pub fn outliers(&self, level: Option<Match>) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .fields
            .iter()
            .filter(|f| level.is_none_or(|l| f.level == l))
            .flat_map(|f| f.outliers.iter().map(|(n, _)| n.as_str()))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The drift of each generation, from its nodes' fingerprints (`generation → [(node,
/// fingerprint)]`). The majority is the most common value (ties: the smallest, so the
/// report is the same every time); a generation of one or two nodes has no majority to
/// differ from and is not judged.
pub fn drift(generations: &Generations) -> Vec<DriftReport> {
    let mut out = Vec::new();
    for (g, nodes) in generations {
        if nodes.len() < 3 {
            continue;
        }
        let mut fields = Vec::new();
        // The table's fields in its order, then the kubelet config keys any node reported.
        let mut names: Vec<&str> = FIELDS.iter().map(|(f, _)| *f).collect();
        let keys: std::collections::BTreeSet<&str> = nodes
            .iter()
            .flat_map(|(_, f)| f.keys())
            .map(String::as_str)
            .filter(|k| k.starts_with(KUBELET_FIELD))
            .collect();
        names.extend(keys);
        for field in names {
            let level = level(field);
            let mut count: BTreeMap<&str, usize> = BTreeMap::new();
            for (_, f) in nodes {
                if let Some(v) = f.get(field) {
                    *count.entry(v.as_str()).or_default() += 1;
                }
            }
            let Some((majority, _)) = count
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(v, n)| (v.to_string(), *n))
            else {
                continue;
            };
            let mut outliers: Vec<(String, String)> = nodes
                .iter()
                .filter_map(|(n, f)| {
                    f.get(field)
                        .filter(|v| **v != majority)
                        .map(|v| (n.clone(), v.clone()))
                })
                .collect();
            outliers.sort();
            if !outliers.is_empty() {
                fields.push(FieldDrift {
                    field: field.to_string(),
                    level,
                    majority,
                    outliers,
                });
            }
        }
        if !fields.is_empty() {
            out.push(DriftReport {
                generation: g.clone(),
                nodes: nodes.len(),
                fields,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(kernel: &str, cgroup: &str) -> Fingerprint {
        [
            ("kernel", kernel),
            ("cgroup", cgroup),
            ("container-runtime", "containerd://1.7.24"),
            ("os-image", "Debian GNU/Linux 12 (bookworm)"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Six nodes of one generation: one with another kernel (should match: a warning), one
    /// on cgroup v1 (must match); the majority is what the other four run.
    #[test]
    fn a_kernel_outlier_and_a_cgroup_outlier_in_six_nodes() {
        let mut nodes = Vec::new();
        for i in 1..=6 {
            let kernel = if i == 3 {
                "6.1.0-27-amd64"
            } else {
                "6.1.0-25-amd64"
            };
            let cgroup = if i == 5 { "v1" } else { "v2" };
            nodes.push((format!("r640-0{i}"), fp(kernel, cgroup)));
        }
        let report = drift(&[("dell-r640".to_string(), nodes)].into());
        assert_eq!(report.len(), 1);
        let r = &report[0];
        assert_eq!(r.nodes, 6);
        assert_eq!(r.outliers(Some(Match::Must)), ["r640-05"]);
        assert_eq!(r.outliers(Some(Match::Should)), ["r640-03"]);
        assert_eq!(r.outliers(None), ["r640-03", "r640-05"]);
        let kernel = r
            .fields
            .iter()
            .find(|f| f.field == "kernel")
            .expect("kernel");
        assert_eq!(kernel.majority, "6.1.0-25-amd64");
        assert_eq!(
            kernel.outliers,
            [("r640-03".to_string(), "6.1.0-27-amd64".to_string())]
        );
    }

    fn node(name: &str) -> NodeInv {
        let v: crate::Version = "v1.33.5".parse().expect("v");
        NodeInv {
            name: name.into(),
            role: crate::inventory::Role::Worker,
            labels: Default::default(),
            created: None,
            kubelet: v,
            kube_proxy: None,
            kernel: "6.1.0-28-amd64".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            runtime: "containerd://1.7.24".into(),
            arch: "amd64".into(),
            cgroup: Some(2),
            allocatable: Default::default(),
            extended: Default::default(),
            taints: vec![],
            unschedulable: false,
            ready: true,
            control_plane: None,
        }
    }

    /// Each host fact lands in its field (hashes cut short, cgroup and swap as words, the
    /// kubelet's keys as `kubelet:KEY`), over what the inventory said.
    #[test]
    fn host_facts_fill_the_fingerprint_row_by_row() {
        let host: Facts = [
            ("containerd_config_sha256", "0123456789abcdef0123"),
            ("kubelet_flags_sha256", "fedcba9876543210fedc"),
            ("held", "kubeadm,kubectl,kubelet"),
            ("kernel", "6.1.0-31-amd64"),
            ("os_image", "Debian GNU/Linux 12 (bookworm)"),
            ("cgroup", "tmpfs"),
            ("swap_devices", "1"),
            ("kubelet.reservedSystemCPUs", "\"0-1\""),
            ("kubelet.maxPods", "unset"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let f = fingerprint(Some(&node("n")), Some(&host));
        for (field, want) in [
            ("containerd-config", "0123456789ab"),
            ("kubelet-flags", "fedcba987654"),
            ("package-holds", "kubeadm,kubectl,kubelet"),
            ("kernel", "6.1.0-31-amd64"),
            ("cgroup", "v1"),
            ("swap", "on"),
            ("kubelet:reservedSystemCPUs", "\"0-1\""),
            ("kubelet:maxPods", "unset"),
            ("container-runtime", "containerd://1.7.24"),
        ] {
            assert_eq!(f.get(field).map(String::as_str), Some(want), "{field}");
        }
        for (fact, field) in HOST_FACTS {
            assert!(f.contains_key(*field), "{fact} → {field}");
        }
        assert_eq!(level("kubelet:reservedSystemCPUs"), Match::Must);
        assert_eq!(level("package-holds"), Match::Should);
        // Without the agent's facts, the inventory's alone.
        assert_eq!(fingerprint(Some(&node("n")), None).len(), 4);
    }

    #[test]
    fn a_pending_reboot_is_the_marker_or_a_newer_kernel_installed() {
        let facts = |pairs: &[(&str, &str)]| -> Facts {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(pending_reboot(&facts(&[("reboot_required", "true")])).is_some());
        let newer = facts(&[
            ("kernel", "6.1.0-28-amd64"),
            ("kernel_installed", "6.1.0-31-amd64"),
        ]);
        assert_eq!(
            pending_reboot(&newer).as_deref(),
            Some("kernel 6.1.0-31-amd64 is installed but 6.1.0-28-amd64 is running")
        );
        let same = facts(&[
            ("reboot_required", "false"),
            ("kernel", "6.1.0-28-amd64"),
            ("kernel_installed", "6.1.0-28-amd64"),
        ]);
        assert!(pending_reboot(&same).is_none());
        assert!(pending_reboot(&Facts::new()).is_none());
    }

    /// After a batch, upgraded machines are compared with upgraded ones only: the version
    /// that differs is no drift, a key that differs between machines at one version is.
    #[test]
    fn after_a_batch_machines_are_compared_at_their_version() {
        let host = |v: &str, cpus: &str| -> Facts {
            [
                ("kubelet_version".to_string(), v.to_string()),
                ("kubelet.reservedSystemCPUs".to_string(), cpus.to_string()),
                ("kernel".to_string(), "6.1.0-28-amd64".to_string()),
            ]
            .into()
        };
        let members: Vec<(String, String)> = (1..=6)
            .map(|i| (format!("n{i}"), "g".to_string()))
            .collect();
        let mut hosts: BTreeMap<String, Facts> = BTreeMap::new();
        for i in 1..=3 {
            hosts.insert(format!("n{i}"), host("v1.34.2", "unset"));
        }
        hosts.insert("n4".into(), host("v1.33.5", "unset"));
        hosts.insert("n5".into(), host("v1.33.5", "unset"));
        hosts.insert(
            "n6".into(),
            [("unread".to_string(), "ssh: timeout".to_string())].into(),
        );
        assert!(
            after_batch(&members, &hosts).is_empty(),
            "no drift across versions"
        );
        hosts.insert("n3".into(), host("v1.34.2", "\"0-1\""));
        let r = after_batch(&members, &hosts);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].generation, "g at v1.34.2");
        assert_eq!(r[0].outliers(None), ["n3"]);
    }

    /// A kubelet key that one node of six sets differently is a must-match outlier.
    #[test]
    fn a_kubelet_key_outlier_is_must_match() {
        let nodes: Vec<_> = (1..=6)
            .map(|i| {
                let host: Facts = [(
                    "kubelet.reservedSystemCPUs".to_string(),
                    if i == 2 { "\"0-1\"" } else { "unset" }.to_string(),
                )]
                .into();
                (format!("n{i}"), fingerprint(Some(&node("n")), Some(&host)))
            })
            .collect();
        let r = drift(&[("g".to_string(), nodes)].into());
        assert_eq!(r[0].outliers(Some(Match::Must)), ["n2"]);
        assert_eq!(r[0].fields[0].field, "kubelet:reservedSystemCPUs");
    }

    #[test]
    fn alike_or_small_generations_have_no_report() {
        let same: Vec<_> = (1..=4)
            .map(|i| (format!("n{i}"), fp("6.1", "v2")))
            .collect();
        assert!(drift(&[("g".to_string(), same)].into()).is_empty());
        let two = vec![
            ("a".to_string(), fp("6.1", "v2")),
            ("b".to_string(), fp("6.2", "v1")),
        ];
        assert!(drift(&[("g".to_string(), two)].into()).is_empty());
        // A tie takes the smallest value as the majority, every time.
        let tie: Vec<_> = [("a", "6.2"), ("b", "6.1"), ("c", "6.2"), ("d", "6.1")]
            .iter()
            .map(|(n, k)| (n.to_string(), fp(k, "v2")))
            .collect();
        let r = drift(&[("g".to_string(), tie)].into());
        assert_eq!(r[0].fields[0].majority, "6.1");
    }
}
