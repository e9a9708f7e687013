//! The cluster model: nodes, workloads, pods, PodDisruptionBudgets, a scheduler, controllers
//! and kubelets, driven by a clock and a seeded random source so that every run is repeatable.
//!
//! Everything here is synchronous and in memory; `server` serves it as the Kubernetes API.
//! Time only moves through [`World::advance_to`] (virtual) or [`World::sync`] (real clock), and
//! every time-dependent change (a pod becoming Ready, a terminating pod going away, a kubelet
//! coming back) is processed at the simulated instant it happens.

use std::collections::{BTreeMap, BTreeSet};

// A fast hash for the per-change indexes over every pod (looked up, never iterated, so
// results do not depend on its seed).
use foldhash::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use upgraded_events::inventory::{IntOrPercent, LabelSelector, Labels, Taint, Toleration};
use upgraded_events::version::Version;

use crate::clock::{Clock, Millis};

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
const CRASHLOOP_PERIOD_MS: Millis = 30_000;

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
}

impl SimNode {
    pub fn is_control_plane(&self) -> bool {
        self.control_plane.is_some() || self.labels.contains_key(CONTROL_PLANE_LABEL)
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
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
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

    fn is_finished(&self) -> bool {
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
}

impl Workload {
    /// The selector is the template's labels (as `kubectl create deployment` makes them).
    pub fn selector(&self) -> LabelSelector {
        LabelSelector {
            match_labels: self.template.labels.clone(),
            match_expressions: vec![],
        }
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
}

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
    /// What the caller may not do, as `verb resource[/subresource]` (e.g. `patch nodes`,
    /// `create pods/eviction`): SelfSubjectAccessReviews answer "no", as a narrow RBAC role
    /// would.
    pub denied: BTreeSet<String>,
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
}

/// A refused change to the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("{kind} \"{name}\" not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{0}")]
    Invalid(String),
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
    pub faults: Faults,
    /// When set (`watch_budgets`), each budget's lowest slack (healthy − desired) seen after
    /// any change, by `namespace/name`: a test asserts none went below zero.
    pub budget_low_water: Option<BTreeMap<String, i64>>,
    /// The resource version the low water was last noted at.
    budgets_noted_at: u64,
    /// Active pods (not terminating, not finished) per owner uid, kept as pods are created
    /// and terminated: what the controllers compare with what they want.
    active: HashMap<String, usize>,
    /// Requests held on each node (CPU, memory, pods) by the pods bound to it and not yet
    /// gone, kept as pods are bound and removed: what the scheduler places against.
    usage: HashMap<String, (u64, u64, u32)>,
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
    /// Budgets whose pods went away since the low water was last noted.
    budgets_touched: BTreeSet<(String, String)>,
    /// The nodes that were down when the low water was last noted.
    budgets_noted_down: Vec<String>,
    /// Pod IPs handed out so far.
    next_ip: u32,
}

impl World {
    /// An empty cluster at the clock's current time.
    pub fn new(clock: Clock, seed: u64) -> World {
        let now = clock.now();
        World {
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
            budgets_noted_at: 0,
            active: HashMap::default(),
            usage: HashMap::default(),
            pod_json: HashMap::default(),
            selected: BTreeMap::new(),
            budgets_by_label: BTreeMap::new(),
            budgets_touched: BTreeSet::new(),
            budgets_noted_down: Vec::new(),
            next_ip: 0,
        }
    }

    /// From now on, every change records each budget's lowest slack (off by default: it
    /// costs a status per budget per change).
    pub fn watch_budgets(&mut self) {
        self.budget_low_water = Some(BTreeMap::new());
        self.budgets_noted_at = 0;
        self.note_budgets();
    }

    fn note_budgets(&mut self) {
        // Between two changes, time alone only makes pods Ready: a budget's slack can only
        // have dropped at a change, which bumps the resource version.
        if self.budget_low_water.is_none() || self.budgets_noted_at == self.resource_version {
            return;
        }
        let since = std::mem::replace(&mut self.budgets_noted_at, self.resource_version);
        // Which budgets' slack may have moved: all of them after a node went down or up or a
        // workload changed (a new scale); else those whose pods changed (a pod's every change
        // bumps its resource version) or went away.
        let mut touched = std::mem::take(&mut self.budgets_touched);
        // Of a node, only going down or up moves its pods' readiness (a cordon, a package or
        // a kubelet restart does not).
        let down: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.down)
            .map(|n| n.name.clone())
            .collect();
        let all = since == 0
            || down != std::mem::replace(&mut self.budgets_noted_down, down.clone())
            || self.workloads.values().any(|w| w.resource_version > since);
        if all {
            touched.extend(self.pdbs.keys().cloned());
        } else {
            for p in self.pods.values().filter(|p| p.resource_version > since) {
                let key = p.key();
                for (b, pods) in &self.selected {
                    if pods.contains(&key) {
                        touched.insert(b.clone());
                    }
                }
            }
        }
        let slack: Vec<(String, i64)> = touched
            .iter()
            .filter_map(|k| self.pdbs.get(k).map(|b| (k, b)))
            .map(|(k, b)| {
                let s = self.status_of(b, &self.selected_by(k));
                (
                    format!("{}/{}", b.namespace, b.name),
                    i64::from(s.current_healthy) - i64::from(s.desired_healthy),
                )
            })
            .collect();
        if let Some(low) = &mut self.budget_low_water {
            for (k, v) in slack {
                let e = low.entry(k).or_insert(v);
                *e = (*e).min(v);
            }
        }
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

    fn bump(&mut self) -> u64 {
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
        };
        self.nodes.insert(name.to_string(), node);
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
        for (component, tag, cpu) in components {
            let name = format!("{component}-{node}");
            let key = ("kube-system".to_string(), name.clone());
            let image = format!("registry.k8s.io/{component}:{tag}");
            if let Some(p) = self.pods.get_mut(&key) {
                if p.spec.image != image {
                    p.spec.image = image;
                    p.ready_at = Some(self.now + 5_000);
                    self.resource_version += 1;
                    p.resource_version = self.resource_version;
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

    fn create_pod(
        &mut self,
        namespace: &str,
        name: &str,
        owner: Option<OwnerRef>,
        spec: PodTemplate,
        annotations: Labels,
        node: Option<&str>,
    ) {
        let uid = self.uid();
        let rv = self.bump();
        let mut pod = SimPod {
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
        };
        if let Some(n) = node {
            self.bind(&mut pod, n);
        }
        if let Some(o) = &pod.owner {
            *self.active.entry(o.uid.clone()).or_default() += 1;
        }
        let key = pod.key();
        if self.pods.contains_key(&key) {
            self.unselect(&key);
        }
        self.select(&pod);
        if let Some(old) = self.pods.insert(key, pod) {
            self.forget(&old);
            self.release(&old);
        }
    }

    fn bind(&mut self, pod: &mut SimPod, node: &str) {
        self.next_ip += 1;
        let i = self.next_ip;
        pod.node = Some(node.to_string());
        let u = self.usage.entry(node.to_string()).or_default();
        *u = (
            u.0 + pod.spec.cpu_millis,
            u.1 + pod.spec.memory_bytes,
            u.2 + 1,
        );
        pod.phase = PodPhase::Running;
        pod.ready_at = Some(self.now + pod.spec.startup_ms);
        pod.ip = format!("10.244.{}.{}", (i / 250) % 250, i % 250 + 2);
        pod.resource_version = self.bump();
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
        let w = Workload {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid,
            created: self.now,
            replicas,
            template,
            replica_set,
            resource_version: rv,
            generation: 1,
        };
        self.workloads.insert(key, w);
        Ok(())
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
        Ok(())
    }

    /// A pod with no controller (`kubectl run`), placed by the scheduler.
    pub fn add_bare_pod(&mut self, namespace: &str, name: &str, spec: PodTemplate) {
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
        let uid = self.uid();
        let rv = self.bump();
        self.pdbs.insert(
            (namespace.to_string(), name.to_string()),
            Pdb {
                namespace: namespace.to_string(),
                name: name.to_string(),
                uid,
                created: self.now,
                selector,
                min_available,
                max_unavailable,
                resource_version: rv,
            },
        );
        let key = (namespace.to_string(), name.to_string());
        let members: BTreeSet<(String, String)> = match self.pdbs.get(&key) {
            Some(b) => self
                .pods
                .values()
                .filter(|p| {
                    p.namespace == b.namespace
                        && selector_nonempty_matches(&b.selector, &p.spec.labels)
                })
                .map(SimPod::key)
                .collect(),
            None => BTreeSet::new(),
        };
        self.selected.insert(key.clone(), members);
        if let Some(b) = self.pdbs.get(&key) {
            // Filed under its first `matchLabels` pair, or (expressions only) under ("", "").
            let first = b
                .selector
                .match_labels
                .iter()
                .next()
                .map(|(k, v)| (k.clone(), v.clone()))
                .unwrap_or_default();
            self.budgets_by_label
                .entry(namespace.to_string())
                .or_default()
                .entry(first)
                .or_default()
                .push(key.clone());
        }
        self.budgets_touched.insert(key);
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
    }

    // ----- time -----------------------------------------------------------------------------

    /// Brings a real-clock world up to the wall clock (a no-op for a virtual clock).
    pub fn sync(&mut self) {
        let t = self.clock.now();
        if t > self.now {
            self.advance_to(t);
        } else {
            self.tick();
        }
    }

    /// Moves simulated time forward by `ms` (virtual clocks; a real clock only moves itself).
    pub fn advance(&mut self, ms: Millis) {
        let to = self.now.saturating_add(ms);
        self.clock.set(to);
        self.advance_to(to);
    }

    /// Processes every change due up to `to`, each at its own instant.
    pub fn advance_to(&mut self, to: Millis) {
        // Bounded: each pass either moves time forward or reaches `to`.
        for _ in 0..100_000 {
            match self.next_due().filter(|&t| t <= to) {
                Some(t) => {
                    self.now = self.now.max(t);
                    self.tick();
                }
                None => break,
            }
        }
        self.now = self.now.max(to);
        self.tick();
    }

    /// The next instant after `now` at which something changes by itself.
    pub fn next_due(&self) -> Option<Millis> {
        let pods = self.pods.values().flat_map(|p| {
            [
                p.deleting_at,
                p.ready_at,
                p.crash_looping_since
                    .map(|s| s + CRASHLOOP_PERIOD_MS * (u64::from(p.restarts) + 1)),
            ]
        });
        let nodes = self.nodes.values().map(|n| n.ready_at);
        pods.chain(nodes).flatten().filter(|&t| t > self.now).min()
    }

    /// One step of every controller at `now`: kubelets, terminations, workload controllers, the
    /// scheduler, crash loops. Idempotent at a fixed instant.
    pub fn tick(&mut self) {
        let now = self.now;
        // Kubelets coming back after a restart.
        let mut changed = vec![];
        for n in self.nodes.values_mut() {
            if n.ready_at.is_some_and(|t| t <= now) && !n.down {
                n.ready_at = None;
                n.ready = true;
                changed.push(n.name.clone());
            }
        }
        for name in changed {
            let rv = self.bump();
            if let Some(n) = self.nodes.get_mut(&name) {
                n.resource_version = rv;
            }
        }
        // Terminating pods that are gone.
        let gone: Vec<(String, String)> = self
            .pods
            .iter()
            .filter(|(_, p)| p.deleting_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some(p) = self.pods.remove(&k) {
                self.release(&p);
                self.unselect(&k);
            }
        }
        self.reconcile_workloads();
        self.schedule();
        self.crash_loop();
        self.note_budgets();
    }

    fn reconcile_workloads(&mut self) {
        // Which controllers have something to do, from the active pods counted per owner as
        // pods come and go (`active`): a controller whose active pods number what it wants
        // has nothing to do (the common case, by far), so most ticks of a large cluster read
        // no pod here. (A StatefulSet's ordinals cannot be wrong at equal count: only a
        // scale-down leaves one out of range, and that makes the count exceed its replicas.)
        let mut need: HashMap<&str, usize> = HashMap::default();
        let mut work: Vec<(Workload, OwnerRef, Vec<OwnedPod>)> = Vec::new();
        for w in self.workloads.values() {
            let uid = w.owner_uid();
            let active = self.active.get(uid).copied().unwrap_or(0);
            let want = match w.kind {
                Kind::DaemonSet => self
                    .nodes
                    .values()
                    .filter(|n| daemon_set_runs_on(w, n))
                    .count(),
                _ => w.replicas as usize,
            };
            if active == want {
                continue;
            }
            need.insert(uid, work.len());
            work.push((w.clone(), w.pod_owner(), Vec::new()));
        }
        if work.is_empty() {
            return;
        }
        for p in self.pods.values() {
            let Some(i) = p.owner.as_ref().and_then(|o| need.get(o.uid.as_str())) else {
                continue;
            };
            work[*i].2.push(OwnedPod {
                key: p.key(),
                node: p.node.clone(),
                deleting: p.deleting_at.is_some(),
                finished: p.is_finished(),
                ready: p.is_ready(self.now, &self.nodes),
                created: p.created,
            });
        }
        for (w, owner, owned) in work {
            match w.kind {
                Kind::Deployment => self.reconcile_replica_set(&w, &owner, &owned),
                Kind::StatefulSet => self.reconcile_stateful_set(&w, &owner, &owned),
                Kind::DaemonSet => self.reconcile_daemon_set(&w, &owner, &owned),
            }
        }
    }

    fn reconcile_replica_set(&mut self, w: &Workload, owner: &OwnerRef, owned: &[OwnedPod]) {
        let active: Vec<&OwnedPod> = owned
            .iter()
            .filter(|p| !p.deleting && !p.finished)
            .collect();
        let want = w.replicas as usize;
        for _ in active.len()..want {
            let name = format!("{}-{}", owner.name, self.suffix(5));
            self.create_pod(
                &w.namespace,
                &name,
                Some(owner.clone()),
                w.template.clone(),
                Labels::new(),
                None,
            );
        }
        if active.len() > want {
            // Scale down: unscheduled first, then not ready, then the newest.
            let mut victims = active.clone();
            victims.sort_by_key(|p| (p.node.is_some(), p.ready, std::cmp::Reverse(p.created)));
            let gone: Vec<_> = victims[..active.len() - want]
                .iter()
                .map(|p| p.key.clone())
                .collect();
            for k in gone {
                self.start_termination(&k, None);
            }
        }
    }

    /// Ordered identities: pod N is recreated (same name, new uid) only once the old one is
    /// completely gone.
    fn reconcile_stateful_set(&mut self, w: &Workload, owner: &OwnerRef, owned: &[OwnedPod]) {
        for i in 0..w.replicas {
            let name = format!("{}-{i}", w.name);
            if !self.pods.contains_key(&(w.namespace.clone(), name.clone())) {
                let mut t = w.template.clone();
                t.labels
                    .insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
                self.create_pod(
                    &w.namespace,
                    &name,
                    Some(owner.clone()),
                    t,
                    Labels::new(),
                    None,
                );
            }
        }
        for p in owned {
            let ordinal = p
                .key
                .1
                .rsplit('-')
                .next()
                .and_then(|s| s.parse::<u32>().ok());
            if ordinal.is_none_or(|o| o >= w.replicas) && !p.deleting {
                self.start_termination(&p.key, None);
            }
        }
    }

    /// One pod per eligible node, bound directly (DaemonSet pods tolerate cordons).
    fn reconcile_daemon_set(&mut self, w: &Workload, owner: &OwnerRef, owned: &[OwnedPod]) {
        let covered: BTreeSet<&str> = owned
            .iter()
            .filter(|p| !p.deleting)
            .filter_map(|p| p.node.as_deref())
            .collect();
        let missing: Vec<String> = self
            .nodes
            .values()
            .filter(|n| !covered.contains(n.name.as_str()))
            .filter(|n| daemon_set_runs_on(w, n))
            .map(|n| n.name.clone())
            .collect();
        for node in missing {
            let name = format!("{}-{}", w.name, self.suffix(5));
            self.create_pod(
                &w.namespace,
                &name,
                Some(owner.clone()),
                w.template.clone(),
                Labels::new(),
                Some(&node),
            );
        }
    }

    /// Requests in use on each node (pods that hold resources: bound and not finished;
    /// terminating pods still hold theirs, as on a real node).
    pub fn used(&self) -> HashMap<&str, (u64, u64, u32)> {
        self.nodes
            .keys()
            .map(|n| (n.as_str(), self.usage.get(n).copied().unwrap_or_default()))
            .collect()
    }

    /// Places pending pods, oldest first, on the schedulable node with the most free CPU that
    /// fits them (the default scheduler's LeastAllocated scoring, ties by name).
    fn schedule(&mut self) {
        let mut pending: Vec<(Millis, (String, String))> = self
            .pods
            .values()
            .filter(|p| p.node.is_none() && p.deleting_at.is_none() && p.phase == PodPhase::Pending)
            .map(|p| (p.created, p.key()))
            .collect();
        if pending.is_empty() {
            return;
        }
        pending.sort();
        // (node, free cpu, free memory, free pod slots), from the kept usage.
        let mut room: Vec<(&SimNode, u64, u64, u32)> = self
            .nodes
            .values()
            .filter(|n| n.ready && !n.down)
            .map(|n| {
                let (c, m, k) = self.usage.get(&n.name).copied().unwrap_or_default();
                (
                    n,
                    n.cpu_millis.saturating_sub(c),
                    n.memory_bytes.saturating_sub(m),
                    n.max_pods.saturating_sub(k),
                )
            })
            .collect();
        let mut placements = vec![];
        for (_, key) in pending {
            let Some(pod) = self.pods.get(&key) else {
                continue;
            };
            let spec = &pod.spec;
            let mut best: Option<(u64, usize)> = None;
            for (i, (n, cpu, mem, slots)) in room.iter().enumerate() {
                if spec.cpu_millis > *cpu || spec.memory_bytes > *mem || *slots == 0 {
                    continue;
                }
                if !spec
                    .node_selector
                    .iter()
                    .all(|(k, v)| n.labels.get(k) == Some(v))
                    || !n.tolerated_by(&spec.tolerations, false)
                {
                    continue;
                }
                let score = (cpu - spec.cpu_millis) * 1000 / n.cpu_millis.max(1);
                if best.is_none_or(|(s, _)| score > s) {
                    best = Some((score, i));
                }
            }
            if let Some((_, i)) = best {
                let r = &mut room[i];
                r.1 -= spec.cpu_millis;
                r.2 -= spec.memory_bytes;
                r.3 -= 1;
                placements.push((key, r.0.name.clone()));
            }
        }
        for (key, node) in placements {
            if let Some(mut pod) = self.pods.remove(&key) {
                self.bind(&mut pod, &node);
                self.pods.insert(key, pod);
            }
        }
    }

    fn crash_loop(&mut self) {
        if self.faults.crash_loops.is_empty() {
            return;
        }
        let now = self.now;
        let mut bumped = vec![];
        for p in self.pods.values_mut() {
            let Some(node) = p.node.as_ref().and_then(|n| self.nodes.get(n)) else {
                continue;
            };
            let hit = self.faults.crash_loops.iter().any(|f| {
                f.selector.matches(&p.spec.labels)
                    && node.kubelet >= f.from
                    && node.restarted_at.is_some()
            });
            if !hit || p.phase != PodPhase::Running || p.deleting_at.is_some() {
                continue;
            }
            match p.crash_looping_since {
                None => {
                    p.crash_looping_since = Some(now);
                    p.restarts += 1;
                    bumped.push(p.key());
                }
                Some(since) => {
                    let due = since + CRASHLOOP_PERIOD_MS * u64::from(p.restarts);
                    if now >= due {
                        p.restarts += 1;
                        bumped.push(p.key());
                    }
                }
            }
        }
        for k in bumped {
            let rv = self.bump();
            if let Some(p) = self.pods.get_mut(&k) {
                p.resource_version = rv;
            }
        }
    }

    // ----- the API's verbs ------------------------------------------------------------------

    /// `p` is gone from its node: its requests are free again.
    fn release(&mut self, p: &SimPod) {
        if let Some(u) = p.node.as_ref().and_then(|n| self.usage.get_mut(n)) {
            *u = (
                u.0.saturating_sub(p.spec.cpu_millis),
                u.1.saturating_sub(p.spec.memory_bytes),
                u.2.saturating_sub(1),
            );
        }
    }

    /// `p` stops counting as its owner's active pod (it terminates, or is replaced).
    fn forget(&mut self, p: &SimPod) {
        if p.deleting_at.is_some() || p.is_finished() {
            return;
        }
        if let Some(n) = p.owner.as_ref().and_then(|o| self.active.get_mut(&o.uid)) {
            *n = n.saturating_sub(1);
        }
    }

    fn start_termination(&mut self, key: &(String, String), grace_ms: Option<Millis>) {
        let now = self.now;
        let slow = |w: &World, p: &SimPod| {
            p.node
                .as_ref()
                .and_then(|n| w.faults.slow_termination_ms.get(n))
                .copied()
        };
        let Some(p) = self.pods.get(key) else {
            return;
        };
        if p.deleting_at.is_some() {
            return;
        }
        let ms = slow(self, p).or(grace_ms).unwrap_or(p.spec.termination_ms);
        let at_once = ms == 0 || p.node.is_none() || p.is_finished();
        let owner = (!p.is_finished())
            .then(|| p.owner.as_ref().map(|o| o.uid.clone()))
            .flatten();
        if let Some(n) = owner.and_then(|uid| self.active.get_mut(&uid)) {
            *n = n.saturating_sub(1);
        }
        // Pods that never ran (or are finished) go at once, as the apiserver does.
        if at_once {
            if let Some(gone) = self.pods.remove(key) {
                self.release(&gone);
                self.unselect(key);
            }
            self.bump();
        } else {
            let rv = self.bump();
            if let Some(p) = self.pods.get_mut(key) {
                p.deleting_at = Some(now + ms);
                p.resource_version = rv;
            }
        }
    }

    /// `DELETE pods/NAME`: starts graceful termination; a mirror pod is recreated by its kubelet
    /// at once, which we model as nothing happening.
    pub fn delete_pod(
        &mut self,
        namespace: &str,
        name: &str,
        grace_ms: Option<Millis>,
    ) -> Result<SimPod, ModelError> {
        let key = (namespace.to_string(), name.to_string());
        let pod = self
            .pods
            .get(&key)
            .cloned()
            .ok_or_else(|| not_found("pods", name))?;
        if !pod.is_mirror() {
            self.start_termination(&key, grace_ms);
            self.tick();
        }
        Ok(self.pods.get(&key).cloned().unwrap_or(pod))
    }

    /// The PDBs whose selector matches a pod (in its namespace).
    pub fn pdbs_for(&self, pod: &SimPod) -> Vec<&Pdb> {
        self.pdbs
            .values()
            .filter(|b| {
                b.namespace == pod.namespace
                    && selector_nonempty_matches(&b.selector, &pod.spec.labels)
            })
            .collect()
    }

    /// A PDB's status, computed from the pods as they are now.
    pub fn pdb_status(&self, pdb: &Pdb) -> PdbStatus {
        let pods = self.selected_by(&(pdb.namespace.clone(), pdb.name.clone()));
        self.status_of(pdb, &pods)
    }

    /// The live (not finished) pods budget `key` selects.
    fn selected_by(&self, key: &(String, String)) -> Vec<&SimPod> {
        self.selected
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|k| self.pods.get(k))
            .filter(|p| !p.is_finished())
            .collect()
    }

    /// `pod` joins the sets of the budgets that select it.
    fn select(&mut self, pod: &SimPod) {
        // The candidates: budgets of the namespace whose first `matchLabels` pair the pod
        // carries, and those selecting by expressions only; each is then matched in full.
        let Some(ns) = self.budgets_by_label.get(&pod.namespace) else {
            return;
        };
        let mut hits = Vec::new();
        let by_label = pod
            .spec
            .labels
            .iter()
            .filter_map(|(k, v)| ns.get(&(k.clone(), v.clone())))
            .flatten();
        for k in by_label.chain(
            ns.get(&(String::new(), String::new()))
                .into_iter()
                .flatten(),
        ) {
            if self
                .pdbs
                .get(k)
                .is_some_and(|b| selector_nonempty_matches(&b.selector, &pod.spec.labels))
            {
                hits.push(k.clone());
            }
        }
        for k in hits {
            self.selected.entry(k).or_default().insert(pod.key());
        }
    }

    /// `key` is gone: it leaves every budget's set, and those budgets are noted again.
    fn unselect(&mut self, key: &(String, String)) {
        for (b, pods) in self.selected.iter_mut() {
            if pods.remove(key) {
                self.budgets_touched.insert(b.clone());
            }
        }
    }

    /// Pods no node runs (Pending: unschedulable for now), as `namespace/name`.
    pub fn pending_pods(&self) -> Vec<String> {
        self.pods
            .values()
            .filter(|p| p.node.is_none())
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect()
    }

    /// Whether any node is down (pods on it are not Ready).
    pub fn some_node_down(&self) -> bool {
        self.nodes.values().any(|n| n.down)
    }

    fn status_of(&self, pdb: &Pdb, pods: &[&SimPod]) -> PdbStatus {
        let some_down = self.some_node_down();
        let healthy = pods
            .iter()
            .filter(|p| p.is_ready_where(self.now, &self.nodes, some_down))
            .count() as u32;
        // The disruption controller: an integer minAvailable counts the pods themselves; a
        // percentage or maxUnavailable counts the controllers' desired scale.
        let scale = || -> u32 {
            let mut owners: BTreeSet<&str> = BTreeSet::new();
            let mut total = 0;
            for p in pods {
                if let Some(o) = &p.owner
                    && owners.insert(o.uid.as_str())
                {
                    total += self
                        .workloads
                        .values()
                        .find(|w| w.owner_uid() == o.uid)
                        .map(|w| w.replicas)
                        .unwrap_or(0);
                }
            }
            total
        };
        let (expected, desired) = match (&pdb.max_unavailable, &pdb.min_available) {
            (Some(mu), _) => {
                let e = scale();
                (e, e.saturating_sub(mu.of(e)))
            }
            (None, Some(IntOrPercent::Int(n))) => (pods.len() as u32, *n),
            (None, Some(pct)) => {
                let e = scale();
                (e, pct.of(e))
            }
            (None, None) => (pods.len() as u32, 0),
        };
        let mut allowed = healthy.saturating_sub(desired);
        if self
            .faults
            .blocking_pdbs
            .contains(&format!("{}/{}", pdb.namespace, pdb.name))
        {
            allowed = 0;
        }
        PdbStatus {
            expected_pods: expected,
            current_healthy: healthy,
            desired_healthy: desired,
            disruptions_allowed: allowed,
        }
    }

    /// `POST pods/NAME/eviction` (policy/v1), with the apiserver's rules: pods that are not
    /// running are evicted freely; a pod under several PDBs is an error; a Ready pod needs
    /// `disruptionsAllowed > 0`; an unready one needs the budget to be healthy
    /// (`unhealthyPodEvictionPolicy: IfHealthyBudget`, the default).
    pub fn evict(&mut self, namespace: &str, name: &str) -> Result<(), EvictError> {
        let key = (namespace.to_string(), name.to_string());
        // Judged on the pod as it is (borrowed: a drain evicts a lot).
        {
            let pod = self
                .pods
                .get(&key)
                .ok_or_else(|| EvictError::NotFound(name.to_string()))?;
            if pod.deleting_at.is_some() {
                return Ok(());
            }
            if pod.phase == PodPhase::Running {
                let pdbs = self.pdbs_for(pod);
                if pdbs.len() > 1 {
                    return Err(EvictError::MultiplePdbs(
                        pdbs.iter().map(|b| b.name.clone()).collect(),
                    ));
                }
                if let Some(pdb) = pdbs.first() {
                    let status = self.pdb_status(pdb);
                    let ready = pod.is_ready(self.now, &self.nodes);
                    let ok = if ready {
                        status.disruptions_allowed > 0
                    } else {
                        status.current_healthy >= status.desired_healthy
                            && !self
                                .faults
                                .blocking_pdbs
                                .contains(&format!("{}/{}", pdb.namespace, pdb.name))
                    };
                    if !ok {
                        return Err(EvictError::Blocked {
                            pdb: pdb.name.clone(),
                            status,
                        });
                    }
                }
            }
        }
        self.start_termination(&key, None);
        self.tick();
        Ok(())
    }

    /// Changes one node: a new resourceVersion, then the controllers run.
    fn edit_node(
        &mut self,
        node: &str,
        f: impl FnOnce(&mut SimNode, Millis) -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        let now = self.now;
        let rv = self.bump();
        let n = self
            .nodes
            .get_mut(node)
            .ok_or_else(|| not_found("nodes", node))?;
        f(n, now)?;
        n.resource_version = rv;
        self.tick();
        Ok(())
    }

    /// The package manager installs `package` at `version` on `node` (no restart).
    pub fn install_package(
        &mut self,
        node: &str,
        package: &str,
        version: Version,
    ) -> Result<(), ModelError> {
        if !PACKAGES.contains(&package) {
            return Err(ModelError::Invalid(format!(
                "unknown package {package:?}; the sim's machines have {PACKAGES:?}"
            )));
        }
        self.edit_node(node, |n, _| {
            n.packages.insert(package.to_string(), version);
            Ok(())
        })
    }

    /// The apiserver version `/version` reports: the newest control plane's (what a load
    /// balancer in front of a half-upgraded control plane answers with, eventually).
    pub fn apiserver_version(&self) -> Option<Version> {
        self.nodes
            .values()
            .filter_map(|n| n.control_plane.as_ref().map(|c| c.apiserver))
            .max()
    }

    /// `spec.unschedulable` (cordon / uncordon).
    pub fn set_unschedulable(&mut self, node: &str, value: bool) -> Result<(), ModelError> {
        self.edit_node(node, |n, _| {
            n.unschedulable = value;
            Ok(())
        })
    }

    /// Replaces a node's labels, annotations and taints (after a patch).
    pub fn set_node_meta(
        &mut self,
        node: &str,
        labels: Labels,
        annotations: Labels,
        taints: Vec<Taint>,
    ) -> Result<(), ModelError> {
        self.edit_node(node, |n, _| {
            n.labels = labels;
            n.annotations = annotations;
            n.taints = taints;
            Ok(())
        })
    }

    /// `spec.replicas` of a Deployment or StatefulSet (the `scale` subresource).
    pub fn scale(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        replicas: u32,
    ) -> Result<(), ModelError> {
        if kind == Kind::DaemonSet {
            return Err(ModelError::Invalid("a DaemonSet has no scale".into()));
        }
        let rv = self.bump();
        let w = self
            .workloads
            .get_mut(&(kind, namespace.to_string(), name.to_string()))
            .ok_or_else(|| not_found(kind_plural(kind), name))?;
        if w.replicas != replicas {
            w.replicas = replicas;
            w.generation += 1;
            w.resource_version = rv;
        }
        self.tick();
        Ok(())
    }

    /// The image of a workload's pods (`kubectl set image`): the template changes and, as a
    /// finished rolling update leaves it, every pod it owns runs the new image.
    pub fn set_image(
        &mut self,
        kind: Kind,
        namespace: &str,
        name: &str,
        image: &str,
    ) -> Result<(), ModelError> {
        let rv = self.bump();
        let w = self
            .workloads
            .get_mut(&(kind, namespace.to_string(), name.to_string()))
            .ok_or_else(|| not_found(kind_plural(kind), name))?;
        if w.template.image == image {
            return Ok(());
        }
        w.template.image = image.to_string();
        w.generation += 1;
        w.resource_version = rv;
        let owner = match kind {
            Kind::Deployment => w.replica_set.as_ref().map(|(rs, _)| rs.clone()),
            _ => Some(name.to_string()),
        };
        for p in self.pods.values_mut() {
            let owned = p.namespace == namespace
                && p.owner.as_ref().map(|o| Some(&o.name)) == Some(owner.as_ref());
            if owned {
                p.spec.image = image.to_string();
            }
        }
        self.tick();
        Ok(())
    }

    // ----- what the node agents (the lab's stub tools) do ----------------------------------

    /// `systemctl restart kubelet` with `version` installed: NotReady for a while, then Ready
    /// reporting the new version (unless the node is set never to come back).
    pub fn restart_kubelet(&mut self, node: &str, version: Version) -> Result<(), ModelError> {
        let never = self.faults.never_ready.contains(node)
            || self
                .faults
                .kubelet_fails_from
                .get(node)
                .is_some_and(|from| version >= *from);
        self.edit_node(node, |n, now| {
            n.kubelet = version;
            n.ready = false;
            n.ready_at = (!never).then_some(now + KUBELET_RESTART_MS);
            n.restarted_at = Some(now);
            Ok(())
        })
    }

    /// `kubeadm upgrade apply|node` on a control-plane node: its static pods move to `version`
    /// (etcd's image tag to `etcd` when given).
    pub fn upgrade_control_plane(
        &mut self,
        node: &str,
        version: Version,
        etcd: Option<String>,
    ) -> Result<(), ModelError> {
        let mut upgraded = None;
        self.edit_node(node, |n, _| {
            let cp = n.control_plane.as_mut().ok_or_else(|| {
                ModelError::Invalid(format!("node {node:?} runs no control plane"))
            })?;
            cp.apiserver = version;
            cp.controller_manager = version;
            cp.scheduler = version;
            if let Some(e) = etcd {
                cp.etcd = e;
            }
            upgraded = Some(cp.clone());
            Ok(())
        })?;
        if let Some(cp) = upgraded {
            self.write_static_pods(node, &cp);
        }
        Ok(())
    }

    /// The machine dies (`down`) or comes back (its kubelet starts, Ready after a restart).
    pub fn set_node_down(&mut self, node: &str, down: bool) -> Result<(), ModelError> {
        let never = self.faults.never_ready.contains(node);
        self.edit_node(node, |n, now| {
            n.down = down;
            n.ready = false;
            n.ready_at = (!down && !never).then_some(now + KUBELET_RESTART_MS);
            Ok(())
        })
    }

    // ----- reading ----------------------------------------------------------------------------

    pub fn pods_on<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a SimPod> + 'a {
        self.pods
            .values()
            .filter(move |p| p.node.as_deref() == Some(node))
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
