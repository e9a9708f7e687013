//! The shape of an upgrade plan: ordered batches of nodes, each node with its own step list.
//!
//! Batches run one after the other; the nodes of one batch run in parallel. A node's steps run
//! in order. The planner decides the batches (capacity, PDBs, canaries); this module only holds
//! the result and the basic rolling layout used until then.

use serde::{Deserialize, Serialize};

use crate::check::Boundary;
use crate::names::{Entry, Host, RunId};
use crate::version::Version;

// Stored records carry no names (see `event.rs`); `in_doubt` and `name` live with the events.
/// One step of a node's workflow. Append-only enum (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Step {
    /// Read-only checks on the node (cgroup, disk, runtime); records the pre-upgrade facts,
    /// including whether someone else had already cordoned it.
    Preflight,
    /// Mark the node unschedulable.
    Cordon,
    /// Evict the node's pods through the Eviction API, honouring PodDisruptionBudgets.
    Drain,
    /// Install this hop's kubelet and kubectl packages (unhold → install → hold).
    UpgradePackages { version: Version },
    /// daemon-reload and restart kubelet.
    RestartKubelet,
    /// Node Ready and reporting the target versions.
    Verify,
    /// Make the node schedulable again (unless someone else had cordoned it).
    Uncordon,
    /// Watch the node for the policy's soak time before the next batch may start.
    Soak,
    /// Save an etcd snapshot and verify it by a trial restore (before a control-plane hop).
    EtcdSnapshot,
    /// unhold → install → hold kubeadm at `version`, then `kubeadm upgrade apply` (`apply`,
    /// the first control-plane node of a hop) or `kubeadm upgrade node` (every other node).
    KubeadmUpgrade { version: Version, apply: bool },
    /// A rollback's package step (kubeadm too with `kubeadm`, when the run had changed it):
    /// unhold → install kubelet/kubectl at the older `version`
    /// (apt allowing the downgrade of held packages; dnf `downgrade`) → hold; then the kubelet
    /// config the forward run backed up while the node ran `version` is put back
    /// (`kubelet_config`, a path on the node; none when the run recorded none to restore).
    DowngradePackages {
        version: Version,
        kubelet_config: Option<String>,
        kubeadm: bool,
    },
    /// A rollback's first control-plane step: the kube-proxy DaemonSet's image to the older
    /// `version`, through the API (`kubectl set image`), so kube-proxy is never newer than an
    /// apiserver while the control plane goes back.
    KubeProxy { version: Version },
    /// A rollback's control-plane step: unhold → install kubeadm at the older `version`
    /// (allowing the downgrade) → hold; then `kubeadm upgrade apply VERSION` (`apply`, the
    /// first node) or `kubeadm upgrade node`. kubeadm allows one minor down and leaves etcd
    /// at its newer version ("won't downgrade etcd").
    KubeadmDowngrade { version: Version, apply: bool },
    /// etcd's disaster recovery from a verified snapshot (`rollback --etcd restore-snapshot
    /// --confirm-data-loss`; never chosen by the daemon). Each stage is one batch over every
    /// control-plane node, so a stage is done on all of them before the next starts.
    EtcdRestore(EtcdRestoreStage),
    /// The catalog's node checks (`events::check`) at `boundary`, on the node while it is
    /// still cordoned: probe pods pinned to it prove its pod network and DNS before any
    /// workload comes back. Each check is recorded (`CheckStarted`, then its verdict).
    Checks { boundary: Boundary },
    /// A rollback's step after its package step, before the kubelet restarts: the kubelet
    /// files the preflight kept while the node ran `version` put back from `dir` on the node
    /// (`kubeadm-flags.env`, `instance-config.yaml` or its absence, `kubelet.conf.d/`),
    /// kubelet.conf's `server` set to what it was, and the node's CRI-socket annotation
    /// restored when it had one. kubeadm 1.34 moves the socket from the annotation and the
    /// flags file into `instance-config.yaml`, and going back below 1.34 does not undo it.
    RestoreKubeletFiles {
        version: Version,
        dir: String,
        server: Option<String>,
        cri_socket: Option<String>,
    },
}

/// The stages of an etcd restore, in order (etcd's disaster-recovery procedure).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum EtcdRestoreStage {
    /// The node's kube-apiserver stopped (its static-pod manifest parked) and gone: nothing
    /// writes to etcd from here on.
    StopApiserver,
    /// The node's etcd member stopped the same way; the daemon's verified copy of the
    /// snapshot put on the node (its sha256 checked there); restored as this member of a new
    /// cluster; the fresh data dir swapped in, the old one kept beside it.
    Restore(EtcdRestore),
    /// The member started again (its manifest back).
    StartEtcd,
    /// Every member healthy and in one cluster; then the apiserver started, the
    /// controller-manager and the scheduler restarted, and the kubelet restarted.
    StartControlPlane,
}

/// What restoring one member needs: the same snapshot and cluster for every member, its own
/// name and peer URL.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct EtcdRestore {
    /// The sha256 of the snapshot, checked on the daemon's copy and on the node's.
    pub snapshot_sha256: String,
    /// The daemon's own copy (kept off the node when the snapshot was taken).
    pub snapshot_copy: String,
    /// This member's name and peer URL, as `etcdctl member list` showed them before.
    pub member: String,
    pub peer_url: String,
    /// Every member, `name=peerURL,…`.
    pub initial_cluster: String,
    /// The new cluster's token (a restore makes a new cluster).
    pub token: String,
}

/// The packages a package step installs: kubelet and kubectl, and kubeadm too with
/// `kubeadm` (a rollback's, when the run had changed it).
pub fn node_packages(kubeadm: bool) -> &'static [&'static str] {
    if kubeadm {
        &["kubeadm", "kubelet", "kubectl"]
    } else {
        &["kubelet", "kubectl"]
    }
}

/// Whether an in-doubt package install of a worker's packages at `version` is done, from what
/// the node's agent read (`InstalledKubelet`: `installed`, the kubelet's own version; `pkg_*`,
/// each package's installed version as the package manager says it; `held`, the packages
/// held). Done means all of it: the kubelet at the version, every package of the step at the
/// same package version as the kubelet's, and each of them held again. A machine that went
/// down in the middle leaves some of it undone, and the install runs again (it is harmless
/// to repeat). A fact the agent does not report is not required.
pub fn packages_installed(version: Version, facts: &crate::facts::Facts) -> bool {
    let kubelet = facts
        .get("installed")
        .and_then(|v| v.parse::<Version>().ok());
    if kubelet.is_none_or(|k| k < version) {
        return false;
    }
    let pkgs = node_packages(false);
    let same = match facts.get("pkg_kubelet") {
        Some(k) => {
            !k.is_empty()
                && pkgs
                    .iter()
                    .all(|p| facts.get(&format!("pkg_{p}")).is_none_or(|v| v == k))
        }
        None => true,
    };
    let held = facts
        .get("held")
        .is_none_or(|h| pkgs.iter().all(|p| h.split(',').any(|x| x == *p)));
    same && held
}

pub use crate::inventory::Role;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePlan {
    /// Unique within the plan; events name it. A node upgraded in several separate
    /// passes (a control-plane node, once per minor hop) has one entry per pass, named
    /// `NODE@vMAJOR.MINOR`, with `host` naming the node itself.
    pub name: Entry,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Host>,
    pub role: Role,
    pub from: Version,
    pub steps: Vec<Step>,
    /// How long the node's steps are expected to take (the planner's estimate), for
    /// maintenance windows; 0 when unknown.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub estimate_secs: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Batch {
    /// What this batch is, for people: `control plane`, `canary dell-r640`, `dell-r640 2/4`.
    pub label: String,
    /// The phase it belongs to (`control plane → v1.34.6`, `workers → v1.35.3`), for
    /// timelines; empty in plans recorded before it existed (the label stands in).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    pub nodes: Vec<NodePlan>,
}

impl Batch {
    /// The phase, or the label for a plan recorded without phases.
    pub fn phase_name(&self) -> &str {
        if self.phase.is_empty() {
            &self.label
        } else {
            &self.phase
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub target: Option<Version>,
    pub batches: Vec<Batch>,
    /// A rollback's plan: the run it undoes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<RunId>,
}

/// A node as the basic planner needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    pub role: Role,
    pub version: Version,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("target {target} is older than node {node}'s {current}: downgrades are not upgrades")]
    Downgrade {
        node: String,
        current: Version,
        target: Version,
    },
    #[error("node name {0:?} appears twice in the inventory")]
    DuplicateNode(String),
    #[error("max unavailable must be at least 1")]
    ZeroBatch,
}

impl NodePlan {
    /// The Kubernetes node (and machine) this entry works on.
    pub fn host(&self) -> Host {
        self.host
            .clone()
            .unwrap_or_else(|| Host::new(self.name.as_str()))
    }
}

impl Plan {
    /// Every node with its batch index, in execution order.
    pub fn nodes(&self) -> impl Iterator<Item = (usize, &NodePlan)> {
        self.batches
            .iter()
            .enumerate()
            .flat_map(|(i, b)| b.nodes.iter().map(move |n| (i, n)))
    }

    /// Control-plane nodes one at a time, then workers `max_unavailable` at a time, each node
    /// taking every pending minor hop (`v1.32 → v1.33 → …`, the hop's patch from `patch_of`)
    /// inside one drain; a node on the target minor but an older patch takes one patch hop.
    /// Nodes already at the target are left out.
    pub fn basic_rolling(
        nodes: &[NodeInfo],
        target: Version,
        max_unavailable: usize,
        soak: bool,
        patch_of: impl Fn(u16, u16) -> u16,
    ) -> Result<Plan, PlanError> {
        if max_unavailable == 0 {
            return Err(PlanError::ZeroBatch);
        }
        let mut seen = std::collections::BTreeSet::new();
        for n in nodes {
            if !seen.insert(n.name.as_str()) {
                return Err(PlanError::DuplicateNode(n.name.clone()));
            }
            if n.version > target {
                return Err(PlanError::Downgrade {
                    node: n.name.clone(),
                    current: n.version,
                    target,
                });
            }
        }
        let node_plan = |n: &NodeInfo| {
            let mut steps = vec![Step::Preflight, Step::Cordon, Step::Drain];
            if n.version.minor == target.minor {
                steps.push(Step::UpgradePackages { version: target });
            }
            for minor in n.version.minor + 1..=target.minor {
                let version = if minor == target.minor {
                    target
                } else {
                    Version::new(target.major, minor, patch_of(target.major, minor))
                };
                if version > n.version {
                    steps.push(Step::UpgradePackages { version });
                }
            }
            steps.extend([Step::RestartKubelet, Step::Verify, Step::Uncordon]);
            if soak {
                steps.push(Step::Soak);
            }
            NodePlan {
                name: Entry::new(n.name.as_str()),
                host: None,
                role: n.role,
                from: n.version,
                steps,
                estimate_secs: 0,
            }
        };
        let pending = |role| {
            nodes
                .iter()
                .filter(move |n| n.role == role && n.version < target)
        };
        let mut batches: Vec<Batch> = pending(Role::ControlPlane)
            .map(|n| Batch {
                label: format!("control plane {}", n.name),
                phase: "control plane".into(),
                nodes: vec![node_plan(n)],
            })
            .collect();
        let workers: Vec<_> = pending(Role::Worker).collect();
        let total = workers.len().div_ceil(max_unavailable);
        for (i, chunk) in workers.chunks(max_unavailable).enumerate() {
            batches.push(Batch {
                label: format!("workers {}/{}", i + 1, total),
                phase: "workers".into(),
                nodes: chunk.iter().map(|n| node_plan(n)).collect(),
            });
        }
        Ok(Plan {
            undoes: None,
            target: Some(target),
            batches,
        })
    }
}

/// The kubelet version the entry's steps leave running: its last package hop.
pub fn final_version(steps: &[Step]) -> Option<Version> {
    steps.iter().rev().find_map(|s| match s {
        Step::UpgradePackages { version } | Step::DowngradePackages { version, .. } => {
            Some(*version)
        }
        _ => None,
    })
}

/// The control-plane version the entry's steps leave running: its last kubeadm hop.
pub fn control_plane_version(steps: &[Step]) -> Option<Version> {
    steps.iter().rev().find_map(|s| match s {
        Step::KubeadmUpgrade { version, .. } | Step::KubeadmDowngrade { version, .. } => {
            Some(*version)
        }
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row per way a machine going down can leave a package install.
    #[test]
    fn an_install_is_done_only_when_every_package_is_in_and_held() {
        let v = Version::new(1, 35, 3);
        let rows: &[(&[(&str, &str)], bool)] = &[
            (
                &[
                    ("installed", "v1.35.3"),
                    ("pkg_kubelet", "1.35.3-1.1"),
                    ("pkg_kubectl", "1.35.3-1.1"),
                    ("held", "kubeadm,kubectl,kubelet"),
                ],
                true,
            ),
            // The kubelet in, kubectl not yet.
            (
                &[
                    ("installed", "v1.35.3"),
                    ("pkg_kubelet", "1.35.3-1.1"),
                    ("pkg_kubectl", "1.34.6-1.1"),
                    ("held", "kubeadm,kubectl,kubelet"),
                ],
                false,
            ),
            // Both in, the holds not put back.
            (
                &[
                    ("installed", "v1.35.3"),
                    ("pkg_kubelet", "1.35.3-1.1"),
                    ("pkg_kubectl", "1.35.3-1.1"),
                    ("held", "kubeadm"),
                ],
                false,
            ),
            (&[("installed", "v1.34.6")], false),
            (&[("installed", "")], false),
            (&[], false),
            // An agent that reports only the kubelet (older agents): the kubelet decides.
            (&[("installed", "v1.35.3")], true),
            (&[("installed", "v1.35.3"), ("pkg_kubelet", "")], false),
        ];
        for (facts, want) in rows {
            assert_eq!(
                packages_installed(v, &crate::facts::facts_of(facts)),
                *want,
                "{facts:?}"
            );
        }
    }

    fn node(name: &str, role: Role, v: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            role,
            version: v.parse().expect("version"),
        }
    }

    #[test]
    fn control_plane_first_then_workers_in_batches_with_every_hop() {
        let nodes = [
            node("w1", Role::Worker, "v1.32.4"),
            node("cp1", Role::ControlPlane, "v1.32.4"),
            node("w2", Role::Worker, "v1.34.1"),
            node("w3", Role::Worker, "v1.35.3"),
        ];
        let plan = Plan::basic_rolling(&nodes, "v1.35.3".parse().expect("v"), 2, true, |_, m| {
            u16::from(m == 33) * 7 + u16::from(m == 34) * 6
        })
        .expect("plan");
        let labels: Vec<_> = plan.batches.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(labels, ["control plane cp1", "workers 1/1"]);
        let w1 = &plan.batches[1].nodes[0];
        let hops: Vec<String> = w1
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::UpgradePackages { version } => Some(version.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(hops, ["v1.33.7", "v1.34.6", "v1.35.3"]);
        assert_eq!(plan.batches[1].nodes[1].name, "w2");
        assert_eq!(plan.nodes().count(), 3, "w3 is already at the target");
    }

    #[test]
    fn refuses_downgrades_and_duplicates() {
        let t: Version = "v1.33.0".parse().expect("v");
        let down = [node("a", Role::Worker, "v1.34.0")];
        assert!(matches!(
            Plan::basic_rolling(&down, t, 1, false, |_, _| 0),
            Err(PlanError::Downgrade { .. })
        ));
        let dup = [
            node("a", Role::Worker, "v1.32.0"),
            node("a", Role::Worker, "v1.32.0"),
        ];
        assert!(matches!(
            Plan::basic_rolling(&dup, t, 1, false, |_, _| 0),
            Err(PlanError::DuplicateNode(_))
        ));
    }
}
