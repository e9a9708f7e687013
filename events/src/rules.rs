//! Version-change rules: what a machine must be, or must no longer carry, for a release's
//! kubelet to run on it. A table by target minor; each row reads the facts the node's
//! preflight reported (`cgroup`, `kubelet_flags`, `containerd_version`, `kubeadm_config_api`)
//! and says what it found. A row whose fact was not reported finds nothing: an older agent
//! or a machine without that file is not refused for what nobody read.

use crate::Version;
use crate::facts::Facts;

/// One rule: from which minor it applies, and what it finds on a node.
#[derive(Debug, Clone, Copy)]
pub struct NodeRule {
    /// A stable name (`kubelet-flag-keep-terminated-pod-volumes`).
    pub id: &'static str,
    /// It applies to targets at or above this minor (1.x).
    pub from_minor: u16,
    /// What it found, in an operator's words, or nothing.
    pub finds: fn(&Facts) -> Option<String>,
    /// What to do about it.
    pub fix: &'static str,
}

/// What a rule found on a node for a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleFinding {
    pub rule: &'static str,
    pub what: String,
    pub fix: &'static str,
}

/// The kubelet flags a release removed: (flag, the minor that removed it). A kubelet given
/// one does not start.
pub const REMOVED_KUBELET_FLAGS: &[(&str, u16)] = &[
    ("--network-plugin", 24),
    ("--cni-bin-dir", 24),
    ("--cni-conf-dir", 24),
    ("--container-runtime", 27),
    ("--keep-terminated-pod-volumes", 31),
];

fn fact<'a>(facts: &'a Facts, key: &str) -> Option<&'a str> {
    facts.get(key).map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn cgroup_v1(facts: &Facts) -> Option<String> {
    let fs = fact(facts, "cgroup")?;
    (fs != "cgroup2fs").then(|| {
        format!("/sys/fs/cgroup is {fs:?}, not cgroup v2: kubelet 1.35 and later refuse to start on cgroup v1")
    })
}

/// The removed flags among the node's kubelet flag files (the flag names the preflight
/// read from `kubeadm-flags.env`, `/etc/default/kubelet`, `/etc/sysconfig/kubelet`).
fn removed_flags_from(facts: &Facts, minor: u16) -> Option<String> {
    let flags: Vec<&str> = fact(facts, "kubelet_flags")?.split_whitespace().collect();
    let hit: Vec<&str> = REMOVED_KUBELET_FLAGS
        .iter()
        .filter(|(f, m)| *m == minor && flags.contains(f))
        .map(|(f, _)| *f)
        .collect();
    (!hit.is_empty()).then(|| {
        format!(
            "the kubelet's flag files still pass {} (removed in 1.{minor}): the new kubelet would not start",
            hit.join(", ")
        )
    })
}

fn containerd_1(facts: &Facts) -> Option<String> {
    let v = fact(facts, "containerd_version")?;
    let major: u32 = v
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())?;
    (major < 2).then(|| format!("containerd {v}: 1.36 and later need containerd 2.0 or newer"))
}

fn kubeadm_config_old(facts: &Facts) -> Option<String> {
    let api = fact(facts, "kubeadm_config_api")?;
    (api != "kubeadm.k8s.io/v1beta4").then(|| {
        format!(
            "the node's kubeadm configuration is {api}: kubeadm 1.36 and later read only v1beta4"
        )
    })
}

/// The rules, oldest first. 1.36's rows are the announced ones (containerd 2, kubeadm
/// v1beta4); a later release's go here.
pub const NODE_RULES: &[NodeRule] = &[
    NodeRule {
        id: "kubelet-flag-removed-1.24",
        from_minor: 24,
        finds: |f| removed_flags_from(f, 24),
        fix: "remove the dockershim flags from the kubelet's flag files (kubeadm-flags.env, /etc/default/kubelet)",
    },
    NodeRule {
        id: "kubelet-flag-removed-1.27",
        from_minor: 27,
        finds: |f| removed_flags_from(f, 27),
        fix: "remove --container-runtime from the kubelet's flag files (the remote runtime is the only one)",
    },
    NodeRule {
        id: "kubelet-flag-removed-1.31",
        from_minor: 31,
        finds: |f| removed_flags_from(f, 31),
        fix: "remove --keep-terminated-pod-volumes from the kubelet's flag files",
    },
    NodeRule {
        id: "cgroup-v2",
        from_minor: crate::version::CGROUP_V2_FROM.minor,
        finds: cgroup_v1,
        fix: "boot the machine with cgroup v2 (systemd.unified_cgroup_hierarchy=1) before its upgrade",
    },
    NodeRule {
        id: "containerd-2",
        from_minor: 36,
        finds: containerd_1,
        fix: "upgrade containerd to 2.x (and its config.toml to version 3) before the kubelet",
    },
    NodeRule {
        id: "kubeadm-config-v1beta4",
        from_minor: 36,
        finds: kubeadm_config_old,
        fix: "migrate the kubeadm configuration (`kubeadm config migrate --old-config OLD --new-config NEW`)",
    },
];

/// The minor that deprecates kube-proxy's `ipvs` mode (nftables is the way forward): a
/// cluster running it is warned at hops to it and later.
pub const IPVS_DEPRECATED_FROM: u16 = 35;

/// In-tree volume plugins a release removed: (the volume's key in a pod's
/// `spec.volumes`, the minor that removed it). A pod mounting one does not start on a
/// kubelet of that release.
pub const REMOVED_VOLUME_PLUGINS: &[(&str, u16)] = &[("cephfs", 31), ("rbd", 31)];

/// The removed plugins among a pod's `spec.volumes`, with the minor that removed each.
pub fn removed_volumes(volumes: &serde_json::Value) -> Vec<(&'static str, u16)> {
    let mut out: Vec<(&'static str, u16)> = REMOVED_VOLUME_PLUGINS
        .iter()
        .filter(|(plugin, _)| {
            volumes
                .as_array()
                .is_some_and(|vs| vs.iter().any(|v| v.get(*plugin).is_some()))
        })
        .copied()
        .collect();
    out.dedup();
    out
}

/// Kubelet config keys a kubeadm release itself writes differently on upgrade: (the minor
/// whose `kubeadm upgrade` changes it, the key). A change of one of them by that hop is the
/// new version's default, not an edit that was lost.
pub const KUBEADM_KUBELET_CONFIG_CHANGES: &[(u16, &str)] = &[
    // NodeLocalCRISocket: the endpoint moves to /var/lib/kubelet/instance-config.yaml.
    (34, "containerRuntimeEndpoint"),
];

/// A key of the node's kubelet config that `kubeadm upgrade` changed or dropped and that is
/// no default of the new release: an edit made on the node outside kubeadm's `--patches`,
/// lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostEdit {
    pub key: String,
    pub before: serde_json::Value,
    /// `None`: the key is gone.
    pub after: Option<serde_json::Value>,
}

impl std::fmt::Display for LostEdit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.after {
            Some(a) => write!(f, "{} was {} and is now {a}", self.key, self.before),
            None => write!(f, "{} was {} and is gone", self.key, self.before),
        }
    }
}

/// What to do about a [`LostEdit`].
pub const LOST_EDIT_FIX: &str = "kubeadm regenerates /var/lib/kubelet/config.yaml on every upgrade: put the edit in a kubeadm patch (a kubeletconfiguration+strategic.yaml in the directory the policy names as node.kubeadmPatches, which the daemon passes as --patches) or in the cluster's kubelet-config ConfigMap, then resume: the step runs kubeadm again";

/// The kubelet config keys a `kubeadm upgrade` to `target` changed (`before` is the node's
/// own config from before it, `after` what kubeadm wrote): each key that was set before and
/// differs after, unless the hop to `target` is known to change it. Keys only added are the
/// new release's defaults.
pub fn lost_edits(
    before: &serde_json::Map<String, serde_json::Value>,
    after: &serde_json::Map<String, serde_json::Value>,
    target: Version,
) -> Vec<LostEdit> {
    before
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "apiVersion" | "kind"))
        .filter(|(k, _)| {
            !KUBEADM_KUBELET_CONFIG_CHANGES
                .iter()
                .any(|(m, key)| *m == target.minor && key == k)
        })
        .filter(|(k, v)| after.get(k.as_str()) != Some(v))
        .map(|(k, v)| LostEdit {
            key: k.clone(),
            before: v.clone(),
            after: after.get(k.as_str()).cloned(),
        })
        .collect()
}

/// What the rules find on a node for `target`: each row that applies to it.
pub fn node_findings(target: Version, facts: &Facts) -> Vec<RuleFinding> {
    NODE_RULES
        .iter()
        .filter(|r| target.minor >= r.from_minor)
        .filter_map(|r| {
            (r.finds)(facts).map(|what| RuleFinding {
                rule: r.id,
                what,
                fix: r.fix,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pairs: &[(&str, &str)]) -> Facts {
        crate::facts::facts_of(pairs)
    }

    fn ids(target: &str, f: &Facts) -> Vec<&'static str> {
        let t: Version = target.parse().expect("version");
        node_findings(t, f).iter().map(|r| r.rule).collect()
    }

    /// One row at a time, table-driven by target: below its minor it finds nothing, at and
    /// above it finds the node; a clean node passes every target.
    #[test]
    fn each_rule_applies_from_its_minor() {
        let rows: &[(&str, Facts)] = &[
            (
                "kubelet-flag-removed-1.24",
                facts(&[("kubelet_flags", "--node-ip --network-plugin")]),
            ),
            (
                "kubelet-flag-removed-1.27",
                facts(&[(
                    "kubelet_flags",
                    "--container-runtime --container-runtime-endpoint",
                )]),
            ),
            (
                "kubelet-flag-removed-1.31",
                facts(&[("kubelet_flags", "--keep-terminated-pod-volumes --node-ip")]),
            ),
            ("cgroup-v2", facts(&[("cgroup", "tmpfs")])),
            ("containerd-2", facts(&[("containerd_version", "1.7.24")])),
            (
                "kubeadm-config-v1beta4",
                facts(&[("kubeadm_config_api", "kubeadm.k8s.io/v1beta3")]),
            ),
        ];
        assert_eq!(rows.len(), NODE_RULES.len(), "a test per row");
        for (id, f) in rows {
            let rule = NODE_RULES.iter().find(|r| r.id == *id).expect("the row");
            let below = format!("v1.{}.0", rule.from_minor - 1);
            let at = format!("v1.{}.0", rule.from_minor);
            assert!(!ids(&below, f).contains(id), "{id} below its minor");
            assert!(ids(&at, f).contains(id), "{id} at its minor");
            assert!(ids("v1.40.0", f).contains(id), "{id} above its minor");
        }
        let clean = facts(&[
            ("cgroup", "cgroup2fs"),
            (
                "kubelet_flags",
                "--container-runtime-endpoint --node-ip --config",
            ),
            ("containerd_version", "2.0.5"),
            ("kubeadm_config_api", "kubeadm.k8s.io/v1beta4"),
        ]);
        assert!(ids("v1.40.0", &clean).is_empty());
        // Nothing reported, nothing found.
        assert!(ids("v1.40.0", &Facts::new()).is_empty());
    }

    /// Each removed plugin found in a pod's volumes; a CSI volume of the same storage is not.
    #[test]
    fn in_tree_volume_plugins_by_row() {
        for (plugin, minor) in REMOVED_VOLUME_PLUGINS {
            let vols = serde_json::json!([
                {"name": "data", (*plugin): {"monitors": ["10.0.0.1:6789"]}},
                {"name": "tmp", "emptyDir": {}}
            ]);
            assert_eq!(removed_volumes(&vols), [(*plugin, *minor)]);
        }
        let csi = serde_json::json!([{"name": "data", "csi": {"driver": "rbd.csi.ceph.com"}}]);
        assert!(removed_volumes(&csi).is_empty());
        assert!(removed_volumes(&serde_json::Value::Null).is_empty());
    }

    fn map(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match v {
            serde_json::Value::Object(m) => m,
            _ => panic!("an object"),
        }
    }

    /// A hand edit kubeadm dropped or changed is lost; a key kubeadm only added, or one
    /// the hop is known to change (a row of the table), is not.
    #[test]
    fn lost_edits_are_changed_or_dropped_keys_that_are_no_new_default() {
        let before = map(serde_json::json!({
            "kind": "KubeletConfiguration", "cgroupDriver": "systemd",
            "reservedSystemCPUs": "0-1", "maxPods": 250,
            "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock"
        }));
        let after = map(serde_json::json!({
            "kind": "KubeletConfiguration", "cgroupDriver": "systemd", "maxPods": 110,
            "failCgroupV1": true
        }));
        let lost = lost_edits(&before, &after, "v1.34.6".parse().expect("v"));
        let keys: Vec<&str> = lost.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["maxPods", "reservedSystemCPUs"]);
        assert_eq!(
            lost[1].to_string(),
            "reservedSystemCPUs was \"0-1\" and is gone"
        );
        assert_eq!(lost[0].to_string(), "maxPods was 250 and is now 110");
        // The table's row holds at its own hop only.
        for (minor, key) in KUBEADM_KUBELET_CONFIG_CHANGES {
            let b = map(serde_json::json!({ (*key): "old" }));
            let a = map(serde_json::json!({}));
            let at: Version = format!("v1.{minor}.0").parse().expect("v");
            let other: Version = format!("v1.{}.0", minor + 1).parse().expect("v");
            assert!(lost_edits(&b, &a, at).is_empty(), "{key} at 1.{minor}");
            assert_eq!(lost_edits(&b, &a, other).len(), 1, "{key} elsewhere");
        }
        assert!(lost_edits(&after, &after, "v1.35.0".parse().expect("v")).is_empty());
    }

    #[test]
    fn a_finding_names_the_flag_and_the_release() {
        let f = facts(&[("kubelet_flags", "--keep-terminated-pod-volumes")]);
        let got = node_findings("v1.31.2".parse().expect("v"), &f);
        assert_eq!(got.len(), 1);
        assert!(
            got[0].what.contains("--keep-terminated-pod-volumes") && got[0].what.contains("1.31"),
            "{}",
            got[0].what
        );
    }
}
