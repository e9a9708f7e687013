//! The cluster model: nodes, workloads, pods, PodDisruptionBudgets, a scheduler, controllers
//! and kubelets, driven by a clock and a seeded random source so that every run is repeatable.
//!
//! Everything here is synchronous and in memory; `server` serves it as the Kubernetes API.
//! Time only moves through [`World::advance_to`] (virtual) or [`World::sync`] (real clock), and
//! every time-dependent change (a pod becoming Ready, a terminating pod going away, a kubelet
//! coming back) is processed at the simulated instant it happens.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

// A fast hash for the per-change indexes over every pod (looked up, never iterated, so
// results do not depend on its seed).
use foldhash::{HashMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use upgraded_events::inventory::{IntOrPercent, LabelSelector, Labels, Taint, Toleration};
use upgraded_events::version::Version;

use crate::clock::{Clock, Millis};

mod api;
mod budgets;
pub mod gc;
pub mod host;
mod jobs;
pub mod journal;
pub mod namespaces;
mod nodes;
mod pods;
pub mod probes;
pub mod record;
mod scheduler;
pub mod services;
mod status;
mod storage;
pub mod template;
mod time;
mod workloads;

pub use api::WorkloadChange;
pub use gc::Propagation;
pub use jobs::{JobEnd, JobStatus, SimJob};
pub use journal::{Change, Expired, Happened};
pub use namespaces::NamespaceError;
pub(crate) use pods::container_names;
pub use record::{About, Events, Source};

use crate::resource::Res;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::storage::v1 as k8s_storage;

/// Label kubeadm puts on control-plane nodes.
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";
/// Label carrying the hardware generation in our scenarios.
pub const GENERATION_LABEL: &str = "node.kubernetes.io/instance-type";
/// Annotation of a static pod's mirror.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The taint kubectl cordon's `spec.unschedulable` implies (DaemonSet pods tolerate it).
pub const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// How long a kubelet restart keeps a node NotReady.
pub const KUBELET_RESTART_MS: Millis = 15_000;
/// The Kubernetes packages a sim machine has installed.
pub const PACKAGES: [&str; 3] = ["kubeadm", "kubelet", "kubectl"];
/// How long a crash-looping container waits between restarts (the back-off cap is 5 min; we
/// use a short fixed period so restart counts rise visibly).
pub(crate) const CRASHLOOP_PERIOD_MS: Millis = 30_000;

/// Versions of the control-plane components on one control-plane node (its static pods).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlPlane {
    pub apiserver: Version,
    pub controller_manager: Version,
    pub scheduler: Version,
    /// Image tag of the stacked etcd member.
    pub etcd: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimNode {
    pub name: String,
    pub uid: String,
    pub created: Millis,
    pub labels: Labels,
    pub annotations: Labels,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub max_pods: u32,
    /// What the kubelet reports (`status.nodeInfo.kubeletVersion`).
    pub kubelet: Version,
    pub ready: bool,
    /// A restarting kubelet reports Ready again at this instant.
    pub ready_at: Option<Millis>,
    /// The machine is off (crashed): NotReady, its pods stop being Ready.
    pub down: bool,
    pub address: String,
    pub os_image: String,
    pub kernel: String,
    pub runtime: String,
    pub control_plane: Option<ControlPlane>,
    pub resource_version: u64,
    /// When the kubelet was last restarted (for the "after upgrade" faults).
    pub restarted_at: Option<Millis>,
    /// What the machine's package manager has installed (`kubeadm`, `kubelet`, `kubectl`),
    /// which node agents change and the running kubelet only follows after a restart.
    pub packages: BTreeMap<String, Version>,
    /// Devices its device plugins register (`nvidia.com/gpu` → 2): the node's capacity of
    /// those extended resources.
    #[serde(default)]
    pub extended: BTreeMap<String, u64>,
    /// Its device plugins failed to register with the running kubelet: every extended
    /// resource is allocatable 0 (capacity stays), as the kubelet reports unhealthy devices.
    #[serde(default)]
    pub devices_lost: bool,
    /// What is on its disk for kubeadm and the kubelet, and its host facts.
    #[serde(default)]
    pub host: host::NodeHost,
}

impl SimNode {
    pub fn is_control_plane(&self) -> bool {
        self.control_plane.is_some() || self.labels.contains_key(CONTROL_PLANE_LABEL)
    }

    /// The first `NoSchedule`/`NoExecute` taint `tolerations` do not tolerate, by key.
    fn untolerated(&self, tolerations: &[Toleration]) -> Option<String> {
        self.taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .find(|t| !tolerations.iter().any(|tol| tol.tolerates(t)))
            .map(|t| t.key.clone())
    }

    fn tolerated_by(&self, tolerations: &[Toleration], daemon: bool) -> bool {
        self.taints
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .all(|t| tolerations.iter().any(|tol| tol.tolerates(t)))
            && (daemon
                || !self.unschedulable
                || tolerations.iter().any(|tol| {
                    tol.tolerates(&Taint {
                        key: UNSCHEDULABLE_TAINT.into(),
                        value: String::new(),
                        effect: "NoSchedule".into(),
                    })
                }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl PodPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            PodPhase::Pending => "Pending",
            PodPhase::Running => "Running",
            PodPhase::Succeeded => "Succeeded",
            PodPhase::Failed => "Failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
    /// A ReplicaSet of its own (a Deployment's is part of the Deployment).
    ReplicaSet,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicaSet => "ReplicaSet",
        }
    }
}

/// A part of an object as the API was given it (a pod spec, a workload's spec), kept whole so
/// the object reads back as it was written (a second `kubectl apply` finds nothing to change);
/// one allocation shared by every pod of a template. The scenarios' objects have none: they
/// are rendered from the model's fields.
#[derive(Debug, Clone)]
pub struct Given<T>(pub Arc<T>);

impl<T> Given<T> {
    pub fn new(value: T) -> Given<T> {
        Given(Arc::new(value))
    }
}

impl<T> std::ops::Deref for Given<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: PartialEq> PartialEq for Given<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl<T: PartialEq> Eq for Given<T> {}

impl<T: Serialize> Serialize for Given<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Given<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Given::new)
    }
}

/// `spec.restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Restart {
    /// Serve until deleted (a Deployment's pods): a container that exits is started again.
    #[default]
    Always,
    /// Run to completion; started again only when it fails.
    OnFailure,
    /// Run once.
    Never,
}

impl Restart {
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Always => "Always",
            Restart::OnFailure => "OnFailure",
            Restart::Never => "Never",
        }
    }
}

/// An owner reference as the pod carries it: ReplicaSet (of a Deployment), StatefulSet,
/// DaemonSet or Node (mirror pods).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerRef {
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// What a pod needs and where it may run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodTemplate {
    pub labels: Labels,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub node_selector: Labels,
    pub tolerations: Vec<Toleration>,
    pub empty_dir: bool,
    pub image: String,
    /// From Running to Ready.
    pub startup_ms: Millis,
    /// `terminationGracePeriodSeconds` actually used: how long deletion takes.
    pub termination_ms: Millis,
    pub restart: Restart,
    /// How long the container runs before it exits by itself, and with which code (pods that
    /// run to completion: a Job's); `None` serves until deleted.
    pub run_ms: Option<Millis>,
    pub exit_code: i32,
    /// The PersistentVolumeClaims its volumes name.
    pub claims: Vec<String>,
    /// A check's probe: what its container tries, which the model answers (`probes.rs`).
    #[serde(default)]
    pub probe: Option<probes::ProbeRun>,
    /// `spec.nodeName` as created: bound there by the kubelet, without the scheduler.
    pub node_name: Option<String>,
    /// The template's annotations (its pods carry them).
    pub annotations: Labels,
    /// The pod spec as the API was given it, with the apiserver's defaults.
    pub given: Option<Given<k8s_openapi::api::core::v1::PodSpec>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimPod {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub created: Millis,
    pub annotations: Labels,
    pub owner: Option<OwnerRef>,
    pub spec: PodTemplate,
    pub node: Option<String>,
    pub phase: PodPhase,
    pub ready_at: Option<Millis>,
    pub crash_looping_since: Option<Millis>,
    pub restarts: u32,
    /// `metadata.deletionTimestamp`: the pod is terminating and goes away at this instant.
    pub deleting_at: Option<Millis>,
    pub ip: String,
    pub resource_version: u64,
    /// When the scheduler (or the kubelet, for a `nodeName` pod) bound it.
    pub scheduled_at: Option<Millis>,
    /// When its container exits by itself (it started `run_ms` before).
    pub finish_at: Option<Millis>,
    /// The container's exit code and when it exited.
    pub exited: Option<(i32, Millis)>,
    /// What the container wrote to its termination message (a check's probe: one JSON line).
    #[serde(default)]
    pub termination_message: Option<String>,
    /// Why the pod failed or cannot start, and the message (`OutOfcpu`, `Evicted`).
    pub reason: Option<(String, String)>,
    /// When the Eviction API evicted it (its `DisruptionTarget` condition).
    pub evicted_at: Option<Millis>,
    /// The revision of its owner's template it was made from.
    pub revision: u64,
    /// Its image could not be pulled: the container waits with this reason.
    #[serde(default)]
    pub pull_failed: Option<String>,
}

impl SimPod {
    pub fn key(&self) -> (String, String) {
        (self.namespace.clone(), self.name.clone())
    }

    pub fn is_mirror(&self) -> bool {
        self.annotations.contains_key(MIRROR_ANNOTATION)
    }

    pub fn is_daemonset(&self) -> bool {
        self.owner.as_ref().is_some_and(|o| o.kind == "DaemonSet")
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.phase, PodPhase::Succeeded | PodPhase::Failed)
    }

    /// Running, past its start-up, not crash-looping, not terminating, on a live node.
    pub fn is_ready(&self, now: Millis, nodes: &BTreeMap<String, SimNode>) -> bool {
        self.is_ready_where(now, nodes, true)
    }

    /// [`SimPod::is_ready`]; with `some_down` false (no node is down, the usual case) the
    /// node is not looked up: reading every pod's readiness is then a pass without lookups.
    pub fn is_ready_where(
        &self,
        now: Millis,
        nodes: &BTreeMap<String, SimNode>,
        some_down: bool,
    ) -> bool {
        self.phase == PodPhase::Running
            && self.deleting_at.is_none()
            && self.crash_looping_since.is_none()
            && self.ready_at.is_some_and(|t| t <= now)
            && self
                .node
                .as_ref()
                .is_some_and(|n| !some_down || nodes.get(n).is_some_and(|n| !n.down))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub created: Millis,
    /// Ignored for DaemonSets (one pod per eligible node).
    pub replicas: u32,
    pub template: PodTemplate,
    /// A Deployment's current ReplicaSet: `<name>-<hash>` and its uid.
    pub replica_set: Option<(String, String)>,
    pub resource_version: u64,
    /// Bumped on every spec change (`metadata.generation`).
    pub generation: u64,
    /// The object's own labels and annotations (the scenarios': the template's labels).
    pub labels: Labels,
    pub annotations: Labels,
    /// `spec.selector` (the scenarios': the template's labels, as `kubectl create deployment`
    /// makes it).
    pub selector: LabelSelector,
    /// The spec as the API was given it, with defaults (`spec.replicas` is the model's).
    pub given: Option<Given<serde_json::Value>>,
    /// What its controller last wrote in `status`.
    pub status: WorkloadStatus,
    /// The template's revision, raised on every template change; each pod keeps the one it was
    /// made from.
    pub revision: u64,
    /// A StatefulSet's or DaemonSet's out-of-date pods are being replaced.
    pub rolling: bool,
    /// A Deployment's ReplicaSets of earlier templates that still have pods (name, uid).
    pub old_sets: Vec<(String, String)>,
}

/// A workload's `status`, as its controller writes it when its pods change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WorkloadStatus {
    /// Pods that are not terminating (`status.replicas`, a DaemonSet's
    /// `currentNumberScheduled`).
    pub replicas: u32,
    pub ready: u32,
    pub available: u32,
    pub updated: u32,
    /// A DaemonSet's `desiredNumberScheduled`.
    pub desired: u32,
    pub observed_generation: u64,
    /// When the numbers last changed (conditions' transition time).
    pub changed_at: Millis,
}

impl Workload {
    /// `spec.selector`.
    pub fn selector(&self) -> LabelSelector {
        self.selector.clone()
    }

    /// The uid its pods' owner reference carries.
    pub fn owner_uid(&self) -> &str {
        match (&self.kind, &self.replica_set) {
            (Kind::Deployment, Some((_, uid))) => uid,
            _ => &self.uid,
        }
    }

    /// The owner reference its pods carry.
    pub fn pod_owner(&self) -> OwnerRef {
        match (&self.kind, &self.replica_set) {
            (Kind::Deployment, Some((name, uid))) => OwnerRef {
                kind: "ReplicaSet".into(),
                name: name.clone(),
                uid: uid.clone(),
            },
            _ => OwnerRef {
                kind: self.kind.as_str().into(),
                name: self.name.clone(),
                uid: self.uid.clone(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pdb {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub created: Millis,
    pub selector: LabelSelector,
    pub min_available: Option<IntOrPercent>,
    pub max_unavailable: Option<IntOrPercent>,
    pub resource_version: u64,
    pub labels: Labels,
    pub annotations: Labels,
    pub generation: u64,
    /// `spec.unhealthyPodEvictionPolicy` (`IfHealthyBudget` when unset, `AlwaysAllow`).
    pub unhealthy_pod_eviction_policy: Option<String>,
    /// `status.disruptedPods`: pods the Eviction API let go, by name, and when. Until such a
    /// pod is terminating, gone, or two minutes have passed, it does not count as healthy:
    /// an eviction whose delete was then refused (a stale uid precondition) still holds the
    /// budget, as the apiserver does.
    pub disrupted: BTreeMap<String, Millis>,
    /// The status (and `disruptedPods`) last written, so a watch sees only real changes.
    pub written: Option<(PdbStatus, BTreeMap<String, Millis>)>,
}

/// How long an evicted pod counts against its budget while it has not started terminating
/// (the disruption controller's `DeletionTimeout`).
pub const DISRUPTION_TIMEOUT_MS: Millis = 120_000;

/// `status` of a PodDisruptionBudget, computed as the disruption controller does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PdbStatus {
    pub expected_pods: u32,
    pub current_healthy: u32,
    pub desired_healthy: u32,
    pub disruptions_allowed: u32,
}

/// A pod that crash-loops once its node's kubelet is at or above `from` (a workload that
/// breaks on the new version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrashLoopFault {
    pub selector: LabelSelector,
    pub from: Version,
}

/// What the test or the operator has broken on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Faults {
    /// Nodes whose kubelet never reports Ready again after a restart.
    pub never_ready: BTreeSet<String>,
    /// Nodes whose machine cannot run a kubelet from this version on (an old kernel, say):
    /// restarted into such a version it never becomes Ready; an older one runs fine.
    pub kubelet_fails_from: BTreeMap<String, Version>,
    pub crash_loops: Vec<CrashLoopFault>,
    /// PDBs (`namespace/name`) that refuse every eviction, whatever their numbers say.
    pub blocking_pdbs: BTreeSet<String>,
    /// Nodes whose pods take this long to terminate once evicted (a slow drain).
    pub slow_termination_ms: BTreeMap<String, Millis>,
    /// Machines whose pod network stops working once their kubelet is at or above this
    /// version (a CNI that breaks on an old kernel with the new kubelet): their pods can
    /// neither dial nor be dialled.
    #[serde(default)]
    pub net_broken_from: BTreeMap<String, Version>,
    /// Machines whose volume mounts fail once their kubelet is at or above this version.
    #[serde(default)]
    pub storage_broken_from: BTreeMap<String, Version>,
    /// Machines whose device plugins fail to register from this kubelet version on.
    #[serde(default)]
    pub devices_lost_from: BTreeMap<String, Version>,
    /// CoreDNS stops answering once the control plane (whose upgrade sets CoreDNS's image)
    /// is at or above this version.
    #[serde(default)]
    pub dns_broken_from: Option<Version>,
    /// Control-plane nodes whose kube-apiserver does not start from this version on (a
    /// flag the new release removed, say): its static pod crash-loops, nothing answers on
    /// the node's port, while the other instances keep the API (and the load balancer) up.
    #[serde(default)]
    pub apiserver_fails_from: BTreeMap<String, Version>,
    /// Images the registry does not have (an air-gapped cluster whose mirror lacks them):
    /// a pod bound with one stays Pending, its container waiting in `ErrImagePull`.
    #[serde(default)]
    pub unpullable_images: BTreeSet<String>,
    /// kubeadm skipped its addon phase: kube-proxy and CoreDNS stay at their old images
    /// after the control plane's upgrade.
    #[serde(default)]
    pub addons_skipped: bool,
    /// Machines whose metrics targets Prometheus finds down from this kubelet version on.
    #[serde(default)]
    pub scrape_broken_from: BTreeMap<String, Version>,
    /// Alerts Prometheus reports firing (`alertname` or `alertname node=NAME`).
    #[serde(default)]
    pub alerts_firing: BTreeSet<String>,
    /// Requests clients made through one control-plane node's kube-apiserver to an API
    /// version that is deprecated: what its `/metrics` counts (the removed-API gate).
    #[serde(default)]
    pub deprecated_apis: Vec<DeprecatedCalls>,
    /// What the caller may not do, as `verb resource[/subresource]` (e.g. `patch nodes`,
    /// `create pods/eviction`): SelfSubjectAccessReviews answer "no", as a narrow RBAC role
    /// would.
    pub denied: BTreeSet<String>,
}

/// Requests to a deprecated API seen by one control-plane node's apiserver.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeprecatedCalls {
    pub node: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    /// The release that removes it (`1.32`), as the apiserver labels the series.
    pub removed_release: String,
    pub requests: u64,
}

/// A pod as its controller sees it while reconciling.
#[derive(Debug)]
struct OwnedPod {
    key: (String, String),
    node: Option<String>,
    deleting: bool,
    finished: bool,
    ready: bool,
    created: Millis,
    revision: u64,
}

/// A budget's `(namespace, name)`.
type BudgetKey = (String, String);

/// A pod's served JSON and what it depends on.
#[derive(Debug, Clone)]
pub(crate) struct CachedPod {
    pub(crate) uid: String,
    pub(crate) resource_version: u64,
    pub(crate) ready: bool,
    pub(crate) json: Vec<u8>,
}

/// Whether DaemonSet `w` runs a pod on `n` (its selector, and taints it tolerates).
fn daemon_set_runs_on(w: &Workload, n: &SimNode) -> bool {
    w.template
        .node_selector
        .iter()
        .all(|(k, v)| n.labels.get(k) == Some(v))
        && n.tolerated_by(&w.template.tolerations, true)
}

/// Why an eviction was refused; the API layer turns each into the real status code and body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvictError {
    #[error("pods \"{0}\" not found")]
    NotFound(String),
    #[error(
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
    )]
    MultiplePdbs(Vec<String>),
    #[error("Cannot evict pod as it would violate the pod's disruption budget.")]
    Blocked { pdb: String, status: PdbStatus },
    /// A delete precondition (the pod's uid) does not hold.
    #[error("{message}")]
    Conflict { message: String },
}

/// A refused change to the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{0}")]
    Invalid(String),
    /// What answers for the object does not (a kubelet that is down): the apiserver's 503.
    #[error("{0}")]
    Unavailable(String),
}

fn not_found(kind: &'static str, name: impl Into<String>) -> ModelError {
    ModelError::NotFound {
        kind,
        name: name.into(),
    }
}

/// Everything the sim knows: the state of the cluster at `now`.
#[derive(Debug, Clone)]
pub struct World {
    clock: Clock,
    now: Millis,
    rng: StdRng,
    resource_version: u64,
    pub nodes: BTreeMap<String, SimNode>,
    pub pods: BTreeMap<(String, String), SimPod>,
    pub workloads: BTreeMap<(Kind, String, String), Workload>,
    pub pdbs: BTreeMap<(String, String), Pdb>,
    pub jobs: BTreeMap<(String, String), SimJob>,
    /// Objects the sim keeps as the API was given them, with the apiserver's defaults and the
    /// status its controllers write.
    pub namespaces: BTreeMap<String, core::Namespace>,
    pub services: BTreeMap<(String, String), core::Service>,
    pub config_maps: BTreeMap<(String, String), core::ConfigMap>,
    /// Secrets as given (Helm keeps its releases in them).
    pub secrets: BTreeMap<(String, String), core::Secret>,
    pub claims: BTreeMap<(String, String), core::PersistentVolumeClaim>,
    pub volumes: BTreeMap<String, core::PersistentVolume>,
    pub storage_classes: BTreeMap<String, k8s_storage::StorageClass>,
    /// What the components recorded (`kubectl get events`).
    pub events: Events,
    /// Every change as the API shows it, for watches.
    pub(crate) journal: journal::Journal,
    pub faults: Faults,
    /// When set (`watch_budgets`), each budget's lowest slack (healthy − desired) seen after
    /// any change, by `namespace/name`: a test asserts none went below zero.
    pub budget_low_water: Option<BTreeMap<String, i64>>,
    /// Every effect node agents had on the machines, counted (`w-1 install kubelet
    /// v1.35.3`, `w-1 restart-kubelet v1.35.3`, `cp-1 kubeadm-upgrade v1.35.3`): a chaos run
    /// compares them with a calm one, so nothing done twice goes unseen.
    pub effects: BTreeMap<String, u64>,
    /// Kubelet restarts a machine's boot did, under the key `effects` gives a restart
    /// (`w-1 restart-kubelet v1.35.3`): a machine that comes back from a reboot starts the
    /// kubelet installed, newer than it ran when the reboot came mid-upgrade. Not node
    /// agents' effects, so kept apart: a chaos run counts such a restart for the one its
    /// daemon then rightly did not do.
    pub boot_restarts: BTreeMap<String, u64>,
    /// The resource version the low water was last noted at.
    budgets_noted_at: u64,
    /// Active pods (not terminating, not finished) per owner uid, kept as pods are created
    /// and terminated: what the controllers compare with what they want.
    active: HashMap<String, usize>,
    /// Requests held on each node (CPU, memory, pods) by the pods bound to it and not yet
    /// gone, kept as pods are bound and removed: what the scheduler places against.
    usage: HashMap<String, (u64, u64, u32)>,
    /// Pods on each node that request no CPU: the scheduler scores them as requesting its
    /// default.
    nonzero: HashMap<String, u32>,
    /// Each pod's JSON as last served, with what it was made from (resource version and
    /// readiness): a list serialises only the pods that changed (`kube::pods_json`).
    pub(crate) pod_json: HashMap<(String, String), CachedPod>,
    /// The pods each budget selects (same namespace, selector matching their labels), kept
    /// as pods and budgets are made and pods go: labels and selectors never change once
    /// made, so a budget's status reads only its own pods.
    selected: BTreeMap<(String, String), BTreeSet<(String, String)>>,
    /// Budgets by namespace and their selector's first `matchLabels` pair (("", "") for a
    /// selector of expressions only): the candidates a new pod is matched against.
    budgets_by_label: BTreeMap<String, BTreeMap<(String, String), Vec<BudgetKey>>>,
    /// Budgets whose pods changed since the low water was last noted.
    budgets_touched: BTreeSet<(String, String)>,
    /// Budgets whose pods changed since their status was last written.
    budgets_dirty: BTreeSet<(String, String)>,
    /// The budgets each pod is under (the reverse of `selected`).
    pod_budgets: HashMap<(String, String), Vec<BudgetKey>>,
    /// The nodes that were down when the low water was last noted.
    budgets_noted_down: BTreeSet<String>,
    /// The node epoch `budgets_noted_down` was taken at.
    budgets_noted_epoch: Option<u64>,
    /// Each workload's `generation` (by uid) when the budgets were last noted: a new scale
    /// moves the desired count of the budgets over its pods; a status write does not.
    budgets_noted_generations: HashMap<String, u64>,
    /// Pod IPs handed out so far.
    next_ip: u32,
    /// Service cluster IPs handed out so far (10.96.0.0/12).
    next_service_ip: u32,
    /// Every pod by its owner's uid, kept as pods come and go: what a controller counts.
    owned: HashMap<String, BTreeSet<(String, String)>>,
    /// Owners whose pods changed since their controller last wrote `status`.
    dirty: BTreeSet<String>,
    /// When pods become Ready, their containers exit by themselves, and terminating pods are
    /// gone: each change at its instant, without a pass over every pod.
    due_ready: BTreeSet<(Millis, (String, String))>,
    due_finish: BTreeSet<(Millis, (String, String))>,
    due_gone: BTreeSet<(Millis, (String, String))>,
    /// Pods bound to a node whose containers have not started (the node is not Ready, a claim
    /// is not bound).
    waiting: BTreeSet<(String, String)>,
    /// Pods created without a node: what the scheduler looks at (entries bound or gone since
    /// are dropped as it passes), so a pass is not over every pod.
    unbound: BTreeSet<(String, String)>,
    /// The instant and resourceVersion the last tick ended at.
    ticked: Option<(Millis, u64)>,
    /// The pods bound to each node, in key order (a pod is bound once and never moves).
    bound: HashMap<String, BTreeSet<(String, String)>>,
    /// Bumped at every change to a node (and a new one): what caches of per-node facts key on.
    node_epoch: u64,
    /// Each DaemonSet's wanted pod count (by uid), with the node shape epoch and the
    /// generation it was counted at: counted again only when a node's labels or taints, or
    /// the DaemonSet's spec, changed.
    ds_want: HashMap<String, (u64, u64, usize)>,
    /// The earliest `ready_at` of any node, with the node epoch it was found at (a kubelet
    /// coming back is a node change): read without a pass over every node.
    next_ready: std::cell::Cell<Option<(u64, Option<Millis>)>>,
    /// The machines that are down (`set_node_down`, the one place a node goes down).
    down_nodes: BTreeSet<String>,
    /// The workload each owner uid belongs to (its own, its current ReplicaSet's, its old
    /// ones'), as last indexed; a hit is checked against the workload before it is used.
    owner_index: HashMap<String, (Kind, String, String)>,
    /// Owner uids no workload claimed when the index was last built (Jobs, bare owners):
    /// a uid is made before any pod names it, so none is claimed later.
    owner_misses: HashSet<String>,
    /// Bumped when a controller's count of active pods moves or a workload object changes:
    /// with the node epoch, what the workload controllers' pass depends on.
    work_epoch: u64,
    /// The epochs (work, node shape) of the last pass of the workload controllers that
    /// found nothing to do: until either moves, the next would find nothing either.
    idle_at: Option<(u64, u64)>,
    /// Bumped when a node's labels or taints change, or a node comes: what decides where
    /// DaemonSets run (a readiness or cordon change does not bump it).
    shape_epoch: u64,
    /// Each node's labels and taints as last seen by `touch_node` (`nodes::shape_of`).
    node_shapes: HashMap<String, u64>,
    /// Bumped when a workload object changes (what the budgets' low water watches).
    workloads_epoch: u64,
    /// `workloads_epoch` when the budgets last looked at the workloads' specs.
    budgets_seen_workloads: Option<u64>,
    /// What storage probes wrote on each claim's volume (`namespace/claim` → nonce): the
    /// volume keeps it across pods, as a real one does.
    pub volume_data: BTreeMap<String, String>,
}

impl World {
    /// An empty cluster at the clock's current time.
    pub fn new(clock: Clock, seed: u64) -> World {
        let now = clock.now();
        let mut w = World {
            clock,
            now,
            rng: StdRng::seed_from_u64(seed),
            resource_version: 1000,
            nodes: BTreeMap::new(),
            pods: BTreeMap::new(),
            workloads: BTreeMap::new(),
            pdbs: BTreeMap::new(),
            faults: Faults::default(),
            budget_low_water: None,
            effects: BTreeMap::new(),
            boot_restarts: BTreeMap::new(),
            budgets_noted_at: 0,
            active: HashMap::default(),
            usage: HashMap::default(),
            nonzero: HashMap::default(),
            pod_json: HashMap::default(),
            selected: BTreeMap::new(),
            budgets_by_label: BTreeMap::new(),
            budgets_touched: BTreeSet::new(),
            budgets_dirty: BTreeSet::new(),
            pod_budgets: HashMap::default(),
            budgets_noted_down: BTreeSet::new(),
            budgets_noted_epoch: None,
            node_epoch: 0,
            ds_want: HashMap::default(),
            next_ready: std::cell::Cell::new(None),
            down_nodes: BTreeSet::new(),
            owner_index: HashMap::default(),
            owner_misses: HashSet::default(),
            work_epoch: 0,
            shape_epoch: 0,
            node_shapes: HashMap::default(),
            idle_at: None,
            workloads_epoch: 0,
            budgets_seen_workloads: None,
            budgets_noted_generations: HashMap::default(),
            next_ip: 0,
            next_service_ip: 0,
            jobs: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            services: BTreeMap::new(),
            config_maps: BTreeMap::new(),
            secrets: BTreeMap::new(),
            claims: BTreeMap::new(),
            volumes: BTreeMap::new(),
            storage_classes: BTreeMap::new(),
            events: Events::default(),
            journal: journal::Journal::new(1000),
            owned: HashMap::default(),
            dirty: BTreeSet::new(),
            due_ready: BTreeSet::new(),
            due_finish: BTreeSet::new(),
            due_gone: BTreeSet::new(),
            waiting: BTreeSet::new(),
            unbound: BTreeSet::new(),
            bound: HashMap::default(),
            ticked: None,
            volume_data: BTreeMap::new(),
        };
        w.bootstrap();
        w
    }

    /// The pods bound to `node`, in key order.
    pub fn pods_bound_to<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a SimPod> + 'a {
        self.bound
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
    }

    /// The pods `owner_uid` owns (terminating and finished ones too).
    pub fn owned_by(&self, owner_uid: &str) -> impl Iterator<Item = &SimPod> + '_ {
        self.owned
            .get(owner_uid)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
    }

    /// A pod changed: a new resourceVersion, its owner's status and the journal are told.
    pub(crate) fn touch_pod(&mut self, key: &(String, String)) {
        let rv = self.bump();
        if let Some(p) = self.pods.get_mut(key) {
            p.resource_version = rv;
            if let Some(o) = &p.owner {
                self.dirty.insert(o.uid.clone());
            }
        }
        self.budget_pod_changed(key);
        self.noted(Res::Pod, &key.0, &key.1, false);
    }

    /// Pod `key` is no longer in the cluster: every index forgets it and the journal records it
    /// as it was last.
    pub(crate) fn remove_pod(&mut self, key: &(String, String)) -> Option<SimPod> {
        let mut gone = self.pods.remove(key)?;
        if let Some(set) = gone.node.as_ref().and_then(|n| self.bound.get_mut(n)) {
            set.remove(key);
        }
        self.release(&gone);
        self.unselect(key);
        if let Some(o) = &gone.owner {
            if let Some(set) = self.owned.get_mut(&o.uid) {
                set.remove(key);
                if set.is_empty() {
                    self.owned.remove(&o.uid);
                }
            }
            self.dirty.insert(o.uid.clone());
        }
        gone.resource_version = self.bump();
        if self.journal_on() {
            let v = serde_json::to_value(crate::kube::pod(&gone, self)).unwrap_or_default();
            self.noted_gone(Res::Pod, &key.0, &key.1, v);
        }
        self.pod_json.remove(key);
        self.waiting.remove(key);
        Some(gone)
    }

    pub fn now(&self) -> Millis {
        self.now
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The latest `resourceVersion` handed out (lists carry it).
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    pub(crate) fn bump(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    /// A random UID (deterministic for a seed).
    pub fn uid(&mut self) -> String {
        let a: u128 = self.rng.random();
        let h = format!("{a:032x}");
        format!(
            "{}-{}-4{}-a{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..32]
        )
    }

    /// A suffix in the alphabet Kubernetes uses for generated names.
    pub fn suffix(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..len)
            .map(|_| ALPHABET[self.rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    }

    // ----- building -------------------------------------------------------------------------

    /// Adds a node (Ready, schedulable). The name is taken as given: hostile names are a test
    /// case, not an error.
    #[allow(clippy::too_many_arguments)]
    pub fn add_node(
        &mut self,
        name: &str,
        labels: Labels,
        annotations: Labels,
        cpu_millis: u64,
        memory_bytes: u64,
        kubelet: Version,
        control_plane: Option<ControlPlane>,
        created: Millis,
    ) -> Result<(), ModelError> {
        if name.is_empty() {
            return Err(ModelError::Invalid("a node needs a name".into()));
        }
        if self.nodes.contains_key(name) {
            return Err(ModelError::Invalid(format!("node {name:?} already exists")));
        }
        let taints = if control_plane.is_some() {
            vec![Taint {
                key: CONTROL_PLANE_LABEL.into(),
                value: String::new(),
                effect: "NoSchedule".into(),
            }]
        } else {
            vec![]
        };
        // kubeadm's join before node-local CRI sockets annotated the node with its socket.
        let mut annotations = annotations;
        if kubelet.minor < host::NODE_LOCAL_CRI_FROM {
            annotations
                .entry(host::CRI_SOCKET_ANNOTATION.to_string())
                .or_insert_with(|| host::CRI_SOCKET.to_string());
        }
        let uid = self.uid();
        let rv = self.bump();
        let n = self.nodes.len() as u32;
        let node = SimNode {
            name: name.to_string(),
            uid,
            created,
            labels,
            annotations,
            taints,
            unschedulable: false,
            cpu_millis,
            memory_bytes,
            max_pods: 110,
            kubelet,
            ready: true,
            ready_at: None,
            down: false,
            address: format!("10.{}.{}.{}", 20 + n / 62_500, (n / 250) % 250, n % 250 + 1),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
            kernel: "6.1.0-28-amd64".into(),
            runtime: "containerd://1.7.24".into(),
            control_plane: control_plane.clone(),
            resource_version: rv,
            restarted_at: None,
            packages: PACKAGES.iter().map(|p| (p.to_string(), kubelet)).collect(),
            extended: BTreeMap::new(),
            devices_lost: false,
            host: host::NodeHost::kubeadm(kubelet),
        };
        self.node_shapes
            .insert(name.to_string(), nodes::shape_of(&node));
        self.nodes.insert(name.to_string(), node);
        self.node_epoch += 1;
        self.shape_epoch += 1;
        if let Some(cp) = control_plane {
            self.write_static_pods(name, &cp);
        }
        Ok(())
    }

    /// The control-plane static pods of a node, mirrored in the API as kubeadm's are.
    fn write_static_pods(&mut self, node: &str, cp: &ControlPlane) {
        let node_uid = self
            .nodes
            .get(node)
            .map(|n| n.uid.clone())
            .unwrap_or_default();
        let components = [
            ("kube-apiserver", cp.apiserver.to_string(), 250),
            (
                "kube-controller-manager",
                cp.controller_manager.to_string(),
                200,
            ),
            ("kube-scheduler", cp.scheduler.to_string(), 100),
            ("etcd", cp.etcd.clone(), 100),
        ];
        let apiserver_fails = self
            .faults
            .apiserver_fails_from
            .get(node)
            .is_some_and(|from| cp.apiserver >= *from);
        for (component, tag, cpu) in components {
            let name = format!("{component}-{node}");
            let key = ("kube-system".to_string(), name.clone());
            let image = format!("registry.k8s.io/{component}:{tag}");
            let fails = component == "kube-apiserver" && apiserver_fails;
            if let Some(p) = self.pods.get_mut(&key) {
                if p.spec.image != image {
                    p.spec.image = image;
                    let at = self.now + 5_000;
                    p.ready_at = Some(at);
                    p.crash_looping_since = fails.then_some(self.now);
                    if fails {
                        p.restarts += 1;
                    }
                    self.due_ready.insert((at, key.clone()));
                    self.touch_pod(&key);
                }
                continue;
            }
            let mut labels = Labels::new();
            labels.insert("component".into(), component.into());
            labels.insert("tier".into(), "control-plane".into());
            let mut annotations = Labels::new();
            annotations.insert(MIRROR_ANNOTATION.into(), self.suffix(10));
            let spec = PodTemplate {
                labels,
                cpu_millis: cpu,
                memory_bytes: 256 << 20,
                node_selector: Labels::new(),
                tolerations: vec![exists_toleration()],
                empty_dir: false,
                image,
                startup_ms: 0,
                termination_ms: 0,
                ..PodTemplate::default()
            };
            let owner = OwnerRef {
                kind: "Node".into(),
                name: node.to_string(),
                uid: node_uid.clone(),
            };
            self.create_pod(
                "kube-system",
                &name,
                Some(owner),
                spec,
                annotations,
                Some(node),
            );
        }
    }

    /// Makes a pod (Pending, for the scheduler) or, with `node` or a template's `nodeName`, one
    /// bound there by its kubelet. Returns its key.
    pub(crate) fn create_pod(
        &mut self,
        namespace: &str,
        name: &str,
        owner: Option<OwnerRef>,
        spec: PodTemplate,
        mut annotations: Labels,
        node: Option<&str>,
    ) -> (String, String) {
        let key = (namespace.to_string(), name.to_string());
        if let Some(old) = self.pods.get(&key).cloned() {
            self.forget(&old);
            self.remove_pod(&key);
        }
        for (k, v) in &spec.annotations {
            annotations.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let uid = self.uid();
        let rv = self.bump();
        let pinned = node.map(str::to_string).or_else(|| spec.node_name.clone());
        let pod = SimPod {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid,
            created: self.now,
            annotations,
            owner,
            spec,
            node: None,
            phase: PodPhase::Pending,
            ready_at: None,
            crash_looping_since: None,
            restarts: 0,
            deleting_at: None,
            ip: String::new(),
            resource_version: rv,
            scheduled_at: None,
            finish_at: None,
            exited: None,
            termination_message: None,
            reason: None,
            evicted_at: None,
            revision: 0,
            pull_failed: None,
        };
        if let Some(o) = &pod.owner {
            *self.active.entry(o.uid.clone()).or_default() += 1;
            self.work_epoch += 1;
            self.owned
                .entry(o.uid.clone())
                .or_default()
                .insert(key.clone());
            self.dirty.insert(o.uid.clone());
        }
        self.select(&pod);
        if pinned.is_none() {
            self.unbound.insert(key.clone());
        }
        self.pods.insert(key.clone(), pod);
        self.noted(Res::Pod, namespace, name, true);
        if let Some(n) = pinned {
            self.bind_pod(&key, &n);
        }
        key
    }

    /// The scheduler or a kubelet binds pod `key` to `node`: it holds the node's resources from
    /// now on, and its containers start once the node is Ready and its volumes are bound.
    pub(crate) fn bind_pod(&mut self, key: &(String, String), node: &str) {
        let Some(mut pod) = self.pods.remove(key) else {
            return;
        };
        self.next_ip += 1;
        let i = self.next_ip;
        pod.node = Some(node.to_string());
        pod.scheduled_at = Some(self.now);
        self.bound
            .entry(node.to_string())
            .or_default()
            .insert(key.clone());
        let u = self.usage.entry(node.to_string()).or_default();
        *u = (
            u.0 + pod.spec.cpu_millis,
            u.1 + pod.spec.memory_bytes,
            u.2 + 1,
        );
        *self.nonzero.entry(node.to_string()).or_default() += u32::from(pod.spec.cpu_millis == 0);
        let host_network = pod
            .spec
            .given
            .as_ref()
            .is_some_and(|g| g.host_network == Some(true));
        pod.ip = match self.nodes.get(node) {
            // A hostNetwork pod answers on its node's address.
            Some(n) if host_network => n.address.clone(),
            _ => format!("10.244.{}.{}", (i / 250) % 250, i % 250 + 2),
        };
        self.pods.insert(key.clone(), pod);
        self.touch_pod(key);
        self.start_pod(key);
    }

    /// The kubelet starts pod `key`'s containers if it can now: its node is up and Ready and
    /// every claim it mounts is bound. Otherwise it stays Pending on its node (ContainerCreating)
    /// and is tried again at every tick.
    pub(crate) fn start_pod(&mut self, key: &(String, String)) {
        let Some(p) = self.pods.get(key) else {
            return;
        };
        let Some(node) = p.node.clone() else {
            return;
        };
        let node_ok = self.nodes.get(&node).is_some_and(|n| n.ready && !n.down);
        let claims_ok = p.spec.claims.iter().all(|c| {
            self.claims
                .get(&(p.namespace.clone(), c.clone()))
                .and_then(|c| c.status.as_ref())
                .and_then(|s| s.phase.as_deref())
                == Some("Bound")
        });
        // The scenarios' pods (made before any node is Ready-checked) start at once.
        let built = p.spec.given.is_none();
        if p.phase != PodPhase::Pending || p.deleting_at.is_some() {
            self.waiting.remove(key);
            return;
        }
        if !(built || (node_ok && claims_ok)) {
            self.waiting.insert(key.clone());
            return;
        }
        self.waiting.remove(key);
        if self.faults.unpullable_images.contains(&p.spec.image) {
            let (image, about) = (p.spec.image.clone(), record::about_pod(p, None));
            if let Some(p) = self.pods.get_mut(key)
                && p.pull_failed.is_none()
            {
                p.pull_failed = Some("ErrImagePull".into());
                self.touch_pod(key);
                self.warning(
                    about,
                    record::kubelet(&node),
                    "Failed",
                    format!("Failed to pull image \"{image}\": not found"),
                );
            }
            return;
        }
        let now = self.now;
        let (containers, image) = (container_names(p), p.spec.image.clone());
        let ready_at = now + p.spec.startup_ms;
        let about = record::about_pod(p, None);
        if let Some(p) = self.pods.get_mut(key) {
            p.phase = PodPhase::Running;
            p.ready_at = Some(ready_at);
            p.finish_at = p.spec.run_ms.map(|r| ready_at + r);
        }
        if ready_at > now {
            self.due_ready.insert((ready_at, key.clone()));
        }
        if let Some(at) = self.pods.get(key).and_then(|p| p.finish_at) {
            self.due_finish.insert((at, key.clone()));
        }
        self.touch_pod(key);
        for c in containers {
            let about = About {
                field_path: Some(format!("spec.containers{{{c}}}")),
                ..about.clone()
            };
            self.event(
                about.clone(),
                record::kubelet(&node),
                "Pulled",
                format!("Container image \"{image}\" already present on machine"),
            );
            self.event(
                about.clone(),
                record::kubelet(&node),
                "Created",
                format!("Created container: {c}"),
            );
            self.event(
                about,
                record::kubelet(&node),
                "Started",
                format!("Started container {c}"),
            );
        }
    }

    /// Adds a Deployment, StatefulSet or DaemonSet; its pods appear at the next [`World::tick`].
    pub fn add_workload(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        replicas: u32,
        template: PodTemplate,
    ) -> Result<(), ModelError> {
        let key = (kind, namespace.to_string(), name.to_string());
        if self.workloads.contains_key(&key) {
            return Err(ModelError::Invalid(format!(
                "{} {namespace}/{name} already exists",
                kind.as_str()
            )));
        }
        let uid = self.uid();
        let replica_set = (kind == Kind::Deployment).then(|| {
            let hash = self.suffix(10);
            (format!("{name}-{hash}"), self.uid())
        });
        let rv = self.bump();
        self.ensure_namespace(namespace);
        let w = Workload {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid,
            created: self.now,
            replicas,
            labels: template.labels.clone(),
            annotations: Labels::new(),
            selector: LabelSelector {
                match_labels: template.labels.clone(),
                match_expressions: vec![],
            },
            template,
            replica_set,
            resource_version: rv,
            generation: 1,
            given: None,
            status: WorkloadStatus::default(),
            revision: 1,
            rolling: false,
            old_sets: Vec::new(),
        };
        self.workloads.insert(key.clone(), w);
        self.noted_workload(&key, true);
        Ok(())
    }

    /// Tells the journal of a workload (and a Deployment's ReplicaSet).
    pub(crate) fn noted_workload(&mut self, key: &(Kind, String, String), new: bool) {
        let Some(w) = self.workloads.get(key) else {
            return;
        };
        let rs = w.replica_set.as_ref().map(|(n, _)| n.clone());
        let res = match key.0 {
            Kind::Deployment => Res::Deployment,
            Kind::StatefulSet => Res::StatefulSet,
            Kind::DaemonSet => Res::DaemonSet,
            Kind::ReplicaSet => Res::ReplicaSet,
        };
        self.noted(res, &key.1, &key.2, new);
        if let Some(rs) = rs {
            self.noted(Res::ReplicaSet, &key.1, &rs, new);
        }
    }

    /// A pod as a snapshot shows it: owned by `owner` (or by nothing), bound to `node` (or
    /// Pending), Ready since `ready_since` when it is (`None`: Running but not Ready). What
    /// `import` rebuilds a cluster's pods with; the controllers adopt it by its owner's uid.
    pub fn place_pod(
        &mut self,
        namespace: &str,
        name: &str,
        owner: Option<OwnerRef>,
        spec: PodTemplate,
        node: Option<&str>,
        ready_since: Option<Millis>,
    ) -> Result<(), ModelError> {
        if self
            .pods
            .contains_key(&(namespace.to_string(), name.to_string()))
        {
            return Err(ModelError::Invalid(format!(
                "pod {namespace}/{name} already exists"
            )));
        }
        if let Some(n) = node
            && !self.nodes.contains_key(n)
        {
            return Err(not_found("node", n));
        }
        self.ensure_namespace(namespace);
        self.create_pod(namespace, name, owner, spec, Labels::new(), node);
        if let Some(p) = self
            .pods
            .get_mut(&(namespace.to_string(), name.to_string()))
            && p.node.is_some()
        {
            p.ready_at = ready_since;
            if let Some(t) = ready_since {
                p.created = p.created.min(t);
            }
        }
        self.touch_pod(&(namespace.to_string(), name.to_string()));
        Ok(())
    }

    /// A pod with no controller (`kubectl run`), placed by the scheduler.
    pub fn add_bare_pod(&mut self, namespace: &str, name: &str, spec: PodTemplate) {
        self.ensure_namespace(namespace);
        self.create_pod(namespace, name, None, spec, Labels::new(), None);
    }

    pub fn add_pdb(
        &mut self,
        namespace: &str,
        name: &str,
        selector: LabelSelector,
        min_available: Option<IntOrPercent>,
        max_unavailable: Option<IntOrPercent>,
    ) -> Result<(), ModelError> {
        if min_available.is_some() == max_unavailable.is_some() {
            return Err(ModelError::Invalid(format!(
                "PodDisruptionBudget {namespace}/{name}: set exactly one of minAvailable and maxUnavailable"
            )));
        }
        self.ensure_namespace(namespace);
        let uid = self.uid();
        let rv = self.bump();
        let key = (namespace.to_string(), name.to_string());
        self.pdbs.insert(
            key.clone(),
            Pdb {
                namespace: namespace.to_string(),
                name: name.to_string(),
                uid,
                created: self.now,
                selector,
                min_available,
                max_unavailable,
                resource_version: rv,
                labels: Labels::new(),
                annotations: Labels::new(),
                generation: 1,
                unhealthy_pod_eviction_policy: None,
                disrupted: BTreeMap::new(),
                written: None,
            },
        );
        self.reselect_budget(&key);
        self.noted(Res::Budget, namespace, name, true);
        Ok(())
    }

    /// Makes every pod look long-established: created `age_ms` ago and Ready since then (a
    /// scenario starts in steady state, not with every pod starting up).
    pub fn settle(&mut self, age_ms: Millis) {
        let since = self.now.saturating_sub(age_ms);
        for p in self.pods.values_mut() {
            if p.phase == PodPhase::Running {
                p.created = p.created.min(since);
                p.ready_at = Some(since);
            }
        }
        for w in self.workloads.values_mut() {
            w.created = w.created.min(since);
        }
        for b in self.pdbs.values_mut() {
            b.created = b.created.min(since);
        }
        for ns in self.namespaces.values_mut() {
            let t = crate::kube::time(since);
            if ns
                .metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|c| c.0 > t.0)
            {
                ns.metadata.creation_timestamp = Some(t);
            }
        }
        for ((_, _), svc) in self.services.iter_mut() {
            let t = crate::kube::time(since);
            if svc
                .metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|c| c.0 > t.0)
            {
                svc.metadata.creation_timestamp = Some(t);
            }
        }
        for cm in self.config_maps.values_mut() {
            let t = crate::kube::time(since);
            if cm
                .metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|c| c.0 > t.0)
            {
                cm.metadata.creation_timestamp = Some(t);
            }
        }
        for sc in self.storage_classes.values_mut() {
            let t = crate::kube::time(since);
            if sc
                .metadata
                .creation_timestamp
                .as_ref()
                .is_none_or(|c| c.0 > t.0)
            {
                sc.metadata.creation_timestamp = Some(t);
            }
        }
        self.due_ready.clear();
        // Every controller writes its status again from the settled pods.
        let owners: Vec<String> = self.owned.keys().cloned().collect();
        self.dirty.extend(owners);
        self.budgets_dirty.extend(self.pdbs.keys().cloned());
        self.write_status();
        // Nothing happened recently in a settled cluster, and no watch came before it.
        self.clear_events();
        self.set_journal(self.journal_on());
    }

    // ----- reading ----------------------------------------------------------------------------

    /// Pods no node runs (Pending: unschedulable for now), as `namespace/name`.
    pub fn pending_pods(&self) -> Vec<String> {
        self.pods
            .values()
            .filter(|p| p.node.is_none())
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect()
    }

    /// Whether any node is down (pods on it are not Ready).
    /// Whether some node is down (every budget's and workload's status asks).
    pub fn some_node_down(&self) -> bool {
        !self.down_nodes.is_empty()
    }

    pub fn pods_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a SimPod> + 'a {
        self.pods_bound_to(node)
    }

    pub fn workload_by_owner(&self, owner: &OwnerRef) -> Option<&Workload> {
        self.workloads
            .values()
            .find(|w| w.pod_owner().uid == owner.uid)
    }

    /// Ready pods of a workload.
    pub fn ready_replicas(&self, w: &Workload) -> u32 {
        let uid = w.pod_owner().uid;
        self.pods
            .values()
            .filter(|p| p.owner.as_ref().is_some_and(|o| o.uid == uid))
            .filter(|p| p.is_ready(self.now, &self.nodes))
            .count() as u32
    }

    /// Pods of a workload that are not terminating.
    pub fn current_replicas(&self, w: &Workload) -> u32 {
        let uid = w.pod_owner().uid;
        self.pods
            .values()
            .filter(|p| p.owner.as_ref().is_some_and(|o| o.uid == uid) && p.deleting_at.is_none())
            .count() as u32
    }
}

/// A PDB without selector terms protects nothing here. (policy/v1 reads an empty `{}` selector
/// as "every pod of the namespace" and a missing one as "none"; our model does not keep that
/// difference, and our scenarios always select by label.)
fn selector_nonempty_matches(s: &LabelSelector, labels: &Labels) -> bool {
    (!s.match_labels.is_empty() || !s.match_expressions.is_empty()) && s.matches(labels)
}

pub fn kind_plural(kind: Kind) -> &'static str {
    match kind {
        Kind::Deployment => "deployments.apps",
        Kind::StatefulSet => "statefulsets.apps",
        Kind::DaemonSet => "daemonsets.apps",
        Kind::ReplicaSet => "replicasets.apps",
    }
}

/// `operator: Exists` with no key: tolerates everything (DaemonSets and static pods).
pub fn exists_toleration() -> Toleration {
    Toleration {
        key: String::new(),
        operator: "Exists".into(),
        value: String::new(),
        effect: String::new(),
    }
}
