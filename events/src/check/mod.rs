//! The check catalog: what proves that the upgraded cluster works, as data. Each check says
//! what it looks at (`CheckKind`), over what (`Scope`), at which phase boundaries it runs,
//! how long it may take, how many failures in a row fire it, what a firing does
//! (`Severity`), and which of the operator guide's test-matrix rows and rollback triggers it
//! stands for. `builtin` is the catalog the daemon ships; `catalog` is what one cluster and
//! one policy turn on. The daemon creates probes and reads their results; what a result
//! means (`classify`), whether a failure is new since the baseline (`ProblemTally`,
//! `devices_lost`) and what a fired check does (`effective_severity`) are decided here.

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod control_plane;
pub mod probe;
pub mod run;
mod verdict;
pub use probe::{Peer, StepVerdict, network_peers, node_probe_checks, step_verdict};

/// The node label that names hardware generations unless the policy names another.
pub const DEFAULT_GENERATION_LABEL: &str = "node.kubernetes.io/instance-type";
pub use verdict::{
    BaselineFinding, Disruption, ProbeEnd, ProbeReport, ProblemTally, Verdict, baseline_finding,
    classify, combine, devices_lost, devices_verdict, disruption_of, probe_name,
};

/// What happens when a worker fails its verify gate, or a canary its soak, `max_attempts`
/// times in a row. A control-plane node always halts the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnGateFailure {
    /// Halt the run (what runs recorded before the field existed did).
    #[default]
    Halt,
    /// Roll the node back to the versions its preflight recorded, park it, and halt the run
    /// with the reason: the rest of its generation never starts.
    RollbackNode,
    /// Abort the run, then roll the whole run back (control plane one minor at a time, every
    /// node it changed to its recorded versions), keeping etcd.
    RollbackRun,
}

/// A check's stable name (`pod-network`, `storage/local-path`, `user/smoke`).
pub type CheckId = String;

/// What a check looks at, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CheckKind {
    /// Every kube-apiserver instance's `/readyz`, each asked on its own node, not only
    /// through the load balancer.
    ApiserverReadyz,
    /// The static pods' mirror pods (apiserver, controller-manager, scheduler, etcd) Ready on
    /// every control-plane node.
    MirrorPodsReady,
    /// More than half of etcd's members healthy.
    EtcdQuorum,
    /// kube-proxy's and CoreDNS's images at the versions kubeadm sets for the control plane's
    /// version (kubeadm skips its addon phase silently when a control plane was not upgraded
    /// one node at a time).
    Addons,
    /// A small Job per hardware generation, placed by the scheduler through a nodeSelector.
    Scheduling,
    /// Probe pods on the node (pod network and hostNetwork) dial one probe per other
    /// generation, a node not yet upgraded and a control-plane node, and are dialled back.
    PodNetwork,
    /// From a probe on the node: `kubernetes.default.svc` and a probe Service resolve, and
    /// the Service's ClusterIP answers.
    Dns,
    /// A claim of `storage_class`; a writer Job on the node before the kubelet restart leaves
    /// a nonce, a reader after it reads the same nonce back.
    Storage { storage_class: String },
    /// The node's allocatable extended resources (GPUs, SR-IOV VFs) equal their baseline.
    Devices,
    /// Prometheus at `url`: no scrape target down and no alert firing that was not at the
    /// baseline.
    Prometheus { url: String },
    /// An HTTP GET through the ingress at `url` answers `expect_status`.
    Ingress { url: String, expect_status: u16 },
    /// The share of pods in CrashLoopBackOff against the baseline (the policy's points).
    CrashLoop,
    /// The operator's own Job (a manifest); its exit code decides.
    UserJob { manifest: String },
    /// The operator's HTTP probe.
    UserHttp { url: String, expect_status: u16 },
    /// A command on the daemon's host; its exit code decides.
    UserCommand { argv: Vec<String> },
}

impl CheckKind {
    /// Control-plane checks: failing at the baseline blocks the run (the guide's first
    /// trigger cannot be judged on a control plane that is already broken).
    pub fn is_control_plane(&self) -> bool {
        matches!(
            self,
            CheckKind::ApiserverReadyz | CheckKind::MirrorPodsReady | CheckKind::EtcdQuorum
        )
    }

    /// Runs as probe pods or Jobs in the cluster (needs the probe namespace and images).
    pub fn uses_probe_objects(&self) -> bool {
        matches!(
            self,
            CheckKind::Scheduling
                | CheckKind::PodNetwork
                | CheckKind::Dns
                | CheckKind::Storage { .. }
                | CheckKind::UserJob { .. }
        )
    }
}

/// What one run of a check covers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// One node, checked before it is uncordoned.
    Node,
    /// One hardware generation.
    Generation,
    /// The whole cluster.
    Cluster,
}

/// The phase boundaries where checks run. Append-only (recorded in `CheckStarted`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Boundary {
    /// Before anything is touched: the baseline.
    Preflight,
    /// After each control-plane node's kubeadm upgrade.
    AfterControlPlaneNode,
    /// After the last control-plane node of a hop.
    AfterControlPlane,
    /// After a canary, before it is uncordoned.
    AfterCanary,
    /// After each node of a batch, before it is uncordoned.
    AfterBatch,
    /// After the final batch (the guide's smoke tests).
    Final,
    /// On a drained node, before its kubelet restarts: a storage check's writer leaves
    /// what its reader must find after the restart.
    BeforeKubeletRestart,
}

impl Boundary {
    pub const ALL: [Boundary; 7] = [
        Boundary::Preflight,
        Boundary::AfterControlPlaneNode,
        Boundary::AfterControlPlane,
        Boundary::AfterCanary,
        Boundary::AfterBatch,
        Boundary::Final,
        Boundary::BeforeKubeletRestart,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Boundary::Preflight => "preflight",
            Boundary::AfterControlPlaneNode => "after-control-plane-node",
            Boundary::AfterControlPlane => "after-control-plane",
            Boundary::AfterCanary => "after-canary",
            Boundary::AfterBatch => "after-batch",
            Boundary::Final => "final",
            Boundary::BeforeKubeletRestart => "before-kubelet-restart",
        }
    }
}

/// What a fired check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Roll the node back to what its preflight recorded, park it, halt (the node stays
    /// cordoned until then).
    RollbackNode,
    /// Halt the run (or the generation, for a canary) with the check and what it saw.
    Halt,
    /// Record it and go on.
    Warn,
}

/// The operator guide's rollback triggers.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// Any control-plane node fails to rejoin.
    ControlPlaneRejoin,
    /// More pods in CrashLoopBackOff than before the upgrade.
    CrashLoopBackOff,
    /// Networking between nodes fails.
    NodeNetworking,
    /// Storage mounts fail on upgraded nodes.
    StorageMounts,
}

impl Trigger {
    pub const ALL: [Trigger; 4] = [
        Trigger::ControlPlaneRejoin,
        Trigger::CrashLoopBackOff,
        Trigger::NodeNetworking,
        Trigger::StorageMounts,
    ];
}

/// The rows of the guide's staging test matrix.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum MatrixRow {
    /// kubeadm upgrade: no errors, all nodes Ready.
    Kubeadm,
    /// Pods schedule on all generations.
    Scheduling,
    /// Pod-to-pod across nodes works.
    CniNetworking,
    /// PVCs bind, data persists.
    CsiStorage,
    /// External traffic routes correctly.
    Ingress,
    /// CoreDNS resolves internal names.
    Dns,
    /// Device plugins register devices.
    Devices,
    /// Prometheus scrapes all targets.
    Monitoring,
}

impl MatrixRow {
    pub const ALL: [MatrixRow; 8] = [
        MatrixRow::Kubeadm,
        MatrixRow::Scheduling,
        MatrixRow::CniNetworking,
        MatrixRow::CsiStorage,
        MatrixRow::Ingress,
        MatrixRow::Dns,
        MatrixRow::Devices,
        MatrixRow::Monitoring,
    ];
}

/// One entry of the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub id: CheckId,
    pub kind: CheckKind,
    pub scope: Scope,
    /// The boundaries where it runs.
    pub at: Vec<Boundary>,
    /// How long one run may take; a probe still running then is inconclusive.
    pub timeout_secs: u64,
    /// Failures in a row that fire it (at least 1).
    pub fire_after: u32,
    pub severity: Severity,
    pub triggers: Vec<Trigger>,
    pub matrix: Vec<MatrixRow>,
}

impl Check {
    pub fn runs_at(&self, boundary: Boundary) -> bool {
        self.at.contains(&boundary)
    }

    /// Whether `failures_in_a_row` fire it.
    pub fn fires(&self, failures_in_a_row: u32) -> bool {
        failures_in_a_row >= self.fire_after.max(1)
    }
}

/// What the cluster has, as the preflight saw it: a check whose subject is missing is off,
/// with the reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterHas {
    /// kubeadm's etcd runs as static pods on the control-plane nodes.
    pub stacked_etcd: bool,
    pub coredns: bool,
    pub kube_proxy: bool,
    /// StorageClasses that exist.
    pub storage_classes: BTreeSet<String>,
    /// Some node advertises an extended resource (`vendor/resource` in allocatable).
    pub extended_resources: bool,
}

/// The policy's `checks` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ChecksPolicy {
    /// Images the probes run, from the operator's registry (pulled at preflight).
    pub images: ProbeImages,
    /// StorageClasses to prove, one storage check each.
    pub storage_classes: Vec<String>,
    /// Prometheus's base URL; no Prometheus check without it.
    pub prometheus_url: Option<String>,
    /// An URL served through the ingress controller, and the status it answers.
    pub ingress_url: Option<String>,
    pub ingress_status: Option<u16>,
    /// Built-in checks turned off, by id.
    pub disable: Vec<CheckId>,
    /// Per-check changes to the built-ins' fields.
    pub overrides: BTreeMap<CheckId, CheckOverride>,
    /// The operator's own checks.
    pub user: Vec<UserCheck>,
}

/// The images probes run; defaults are upstream's (override for an air-gapped registry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ProbeImages {
    /// The probe pods' image (agnhost carries netexec, dig and a pause mode).
    pub probe: String,
    /// The writer and reader Jobs' image.
    pub storage: String,
}

impl Default for ProbeImages {
    fn default() -> Self {
        ProbeImages {
            probe: "registry.k8s.io/e2e-test-images/agnhost:2.53".into(),
            storage: "registry.k8s.io/e2e-test-images/busybox:1.36.1-1".into(),
        }
    }
}

/// Changes to a built-in check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CheckOverride {
    pub at: Option<Vec<Boundary>>,
    pub timeout_secs: Option<u64>,
    pub fire_after: Option<u32>,
    pub severity: Option<Severity>,
}

/// An operator's check: exactly one of `job`, `http`, `command`, and the catalog's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserCheck {
    pub id: String,
    /// A Job manifest (YAML or JSON).
    #[serde(default)]
    pub job: Option<String>,
    #[serde(default)]
    pub http: Option<HttpProbe>,
    /// argv of a command on the daemon's host (never through a shell).
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default = "UserCheck::default_scope")]
    pub scope: Scope,
    #[serde(default = "UserCheck::default_at")]
    pub at: Vec<Boundary>,
    #[serde(default = "UserCheck::default_timeout")]
    pub timeout_secs: u64,
    #[serde(default = "UserCheck::default_fire_after")]
    pub fire_after: u32,
    #[serde(default)]
    pub severity: Option<Severity>,
}

/// An HTTP probe: GET `url`, expect `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpProbe {
    pub url: String,
    #[serde(default = "HttpProbe::default_status")]
    pub status: u16,
}

impl HttpProbe {
    fn default_status() -> u16 {
        200
    }
}

impl UserCheck {
    fn default_scope() -> Scope {
        Scope::Cluster
    }
    fn default_at() -> Vec<Boundary> {
        vec![Boundary::Preflight, Boundary::AfterBatch, Boundary::Final]
    }
    fn default_timeout() -> u64 {
        300
    }
    fn default_fire_after() -> u32 {
        1
    }
}

/// A check the catalog left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disabled {
    pub id: CheckId,
    pub why: String,
}

/// Why a `checks` section cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error(
        "checks.disable and checks.overrides name {0:?}, which is no built-in check (the built-ins: {1})"
    )]
    UnknownCheck(String, String),
    #[error("checks.user {0:?}: give exactly one of job, http, command")]
    UserKind(String),
    #[error("checks.user {0:?}: the id is used twice or by a built-in; user ids are unique")]
    DuplicateId(String),
    #[error("checks.user {0:?}: {1}")]
    Invalid(String, String),
}

const CP_BOUNDARIES: [Boundary; 4] = [
    Boundary::Preflight,
    Boundary::AfterControlPlaneNode,
    Boundary::AfterControlPlane,
    Boundary::Final,
];

// Each node is checked before its uncordon; the final smoke tests are the run's own.
const NODE_BOUNDARIES: [Boundary; 3] = [
    Boundary::Preflight,
    Boundary::AfterCanary,
    Boundary::AfterBatch,
];

const EVERY_PHASE: [Boundary; 5] = [
    Boundary::Preflight,
    Boundary::AfterControlPlane,
    Boundary::AfterCanary,
    Boundary::AfterBatch,
    Boundary::Final,
];

/// Every built-in check with its defaults, whether or not a cluster has its subject.
/// Storage, Prometheus and ingress take their subject from the policy; these rows carry
/// placeholders that `catalog` fills.
pub fn builtin() -> Vec<Check> {
    let row = |id: &str,
               kind: CheckKind,
               scope: Scope,
               at: &[Boundary],
               timeout_secs: u64,
               fire_after: u32,
               severity: Severity,
               triggers: &[Trigger],
               matrix: &[MatrixRow]| Check {
        id: id.into(),
        kind,
        scope,
        at: at.to_vec(),
        timeout_secs,
        fire_after,
        severity,
        triggers: triggers.to_vec(),
        matrix: matrix.to_vec(),
    };
    use Boundary as B;
    use MatrixRow as M;
    use Severity as S;
    use Trigger as T;
    vec![
        row(
            "apiserver-readyz",
            CheckKind::ApiserverReadyz,
            Scope::Cluster,
            &CP_BOUNDARIES,
            300,
            1,
            S::Halt,
            &[T::ControlPlaneRejoin],
            &[M::Kubeadm],
        ),
        row(
            "mirror-pods",
            CheckKind::MirrorPodsReady,
            Scope::Cluster,
            &CP_BOUNDARIES,
            300,
            1,
            S::Halt,
            &[T::ControlPlaneRejoin],
            &[M::Kubeadm],
        ),
        row(
            "etcd-quorum",
            CheckKind::EtcdQuorum,
            Scope::Cluster,
            &CP_BOUNDARIES,
            120,
            1,
            S::Halt,
            &[T::ControlPlaneRejoin],
            &[M::Kubeadm],
        ),
        row(
            "addons",
            CheckKind::Addons,
            Scope::Cluster,
            &[B::AfterControlPlane, B::Final],
            300,
            1,
            S::Halt,
            &[T::NodeNetworking],
            &[M::Kubeadm, M::Dns],
        ),
        row(
            "scheduling",
            CheckKind::Scheduling,
            Scope::Generation,
            // Not after a canary: a generation of one node has nowhere else to go while
            // its canary is cordoned. After the control plane, the new scheduler places.
            &[B::Preflight, B::AfterControlPlane, B::Final],
            300,
            1,
            S::Halt,
            &[],
            &[M::Scheduling],
        ),
        row(
            "pod-network",
            CheckKind::PodNetwork,
            Scope::Node,
            &NODE_BOUNDARIES,
            180,
            1,
            S::RollbackNode,
            &[T::NodeNetworking],
            &[M::CniNetworking],
        ),
        row(
            "dns",
            CheckKind::Dns,
            Scope::Node,
            &NODE_BOUNDARIES,
            120,
            1,
            S::RollbackNode,
            &[T::NodeNetworking],
            &[M::Dns],
        ),
        row(
            "storage",
            CheckKind::Storage {
                storage_class: String::new(),
            },
            Scope::Node,
            &[
                B::Preflight,
                B::BeforeKubeletRestart,
                B::AfterCanary,
                B::AfterBatch,
            ],
            300,
            1,
            S::RollbackNode,
            &[T::StorageMounts],
            &[M::CsiStorage],
        ),
        row(
            "devices",
            CheckKind::Devices,
            Scope::Node,
            &NODE_BOUNDARIES,
            300,
            1,
            S::RollbackNode,
            &[],
            &[M::Devices],
        ),
        row(
            "prometheus",
            CheckKind::Prometheus { url: String::new() },
            Scope::Cluster,
            &EVERY_PHASE,
            120,
            2,
            S::Halt,
            &[],
            &[M::Monitoring],
        ),
        row(
            "ingress",
            CheckKind::Ingress {
                url: String::new(),
                expect_status: 200,
            },
            Scope::Cluster,
            &EVERY_PHASE,
            60,
            2,
            S::Halt,
            &[],
            &[M::Ingress],
        ),
        row(
            "crash-loop",
            CheckKind::CrashLoop,
            Scope::Node,
            &[
                B::Preflight,
                B::AfterControlPlaneNode,
                B::AfterCanary,
                B::AfterBatch,
                B::Final,
            ],
            60,
            1,
            S::RollbackNode,
            &[T::CrashLoopBackOff],
            &[],
        ),
    ]
}

/// The checks one cluster and one policy turn on, in the built-ins' order and then the
/// user's, with those left out and why.
pub fn catalog(
    policy: &ChecksPolicy,
    has: &ClusterHas,
) -> Result<(Vec<Check>, Vec<Disabled>), CatalogError> {
    let builtins = builtin();
    let names: Vec<&str> = builtins.iter().map(|c| c.id.as_str()).collect();
    for id in policy.disable.iter().chain(policy.overrides.keys()) {
        if !names.contains(&id.as_str()) {
            return Err(CatalogError::UnknownCheck(id.clone(), names.join(", ")));
        }
    }
    let mut on = Vec::new();
    let mut off = Vec::new();
    let mut skip = |id: &str, why: &str| {
        off.push(Disabled {
            id: id.into(),
            why: why.into(),
        })
    };
    for mut check in builtins {
        if policy.disable.contains(&check.id) {
            skip(&check.id, "disabled by the policy (checks.disable)");
            continue;
        }
        if let Some(o) = policy.overrides.get(&check.id) {
            if let Some(at) = &o.at {
                check.at = at.clone();
            }
            if let Some(t) = o.timeout_secs {
                check.timeout_secs = t;
            }
            if let Some(f) = o.fire_after {
                check.fire_after = f.max(1);
            }
            if let Some(s) = o.severity {
                check.severity = s;
            }
        }
        match &check.kind {
            CheckKind::EtcdQuorum if !has.stacked_etcd => {
                skip(&check.id, "etcd does not run on the control-plane nodes");
            }
            CheckKind::Addons if !has.coredns && !has.kube_proxy => {
                skip(&check.id, "neither kube-proxy nor CoreDNS is installed");
            }
            CheckKind::Dns if !has.coredns => skip(&check.id, "CoreDNS is not installed"),
            CheckKind::Devices if !has.extended_resources => {
                skip(&check.id, "no node advertises an extended resource");
            }
            CheckKind::Storage { .. } => {
                if policy.storage_classes.is_empty() {
                    skip(
                        &check.id,
                        "the policy names no StorageClass (checks.storageClasses)",
                    );
                }
                for class in &policy.storage_classes {
                    let id = format!("storage/{class}");
                    if has.storage_classes.contains(class) {
                        on.push(Check {
                            id,
                            kind: CheckKind::Storage {
                                storage_class: class.clone(),
                            },
                            ..check.clone()
                        });
                    } else {
                        skip(&id, "the cluster has no StorageClass of that name");
                    }
                }
            }
            CheckKind::Prometheus { .. } => match &policy.prometheus_url {
                Some(url) => on.push(Check {
                    kind: CheckKind::Prometheus { url: url.clone() },
                    ..check
                }),
                None => skip(&check.id, "the policy gives no checks.prometheusUrl"),
            },
            CheckKind::Ingress { .. } => match &policy.ingress_url {
                Some(url) => on.push(Check {
                    kind: CheckKind::Ingress {
                        url: url.clone(),
                        expect_status: policy.ingress_status.unwrap_or(200),
                    },
                    ..check
                }),
                None => skip(&check.id, "the policy gives no checks.ingressUrl"),
            },
            _ => on.push(check),
        }
    }
    for user in &policy.user {
        let id = format!("user/{}", user.id);
        if on.iter().any(|c| c.id == id) {
            return Err(CatalogError::DuplicateId(user.id.clone()));
        }
        if user.id.is_empty()
            || !user
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(CatalogError::Invalid(
                user.id.clone(),
                "an id is lower-case letters, digits and '-'".into(),
            ));
        }
        let kind = match (&user.job, &user.http, &user.command) {
            (Some(manifest), None, None) => CheckKind::UserJob {
                manifest: manifest.clone(),
            },
            (None, Some(http), None) => CheckKind::UserHttp {
                url: http.url.clone(),
                expect_status: http.status,
            },
            (None, None, Some(argv)) if !argv.is_empty() => {
                CheckKind::UserCommand { argv: argv.clone() }
            }
            _ => return Err(CatalogError::UserKind(user.id.clone())),
        };
        on.push(Check {
            id,
            kind,
            scope: user.scope,
            at: user.at.clone(),
            timeout_secs: user.timeout_secs,
            fire_after: user.fire_after.max(1),
            severity: user.severity.unwrap_or(match user.scope {
                Scope::Node => Severity::RollbackNode,
                Scope::Generation | Scope::Cluster => Severity::Halt,
            }),
            triggers: Vec::new(),
            matrix: Vec::new(),
        });
    }
    Ok((on, off))
}

/// What a fired check does to this subject: a node-scope check follows the policy's
/// `gates.onFailure` (`rollback-node` by default); a canary's failure halts its generation;
/// generation and cluster scope halt. `Warn` stays a warning.
pub fn effective_severity(check: &Check, on_gate_failure: OnGateFailure) -> Severity {
    match (check.severity, check.scope) {
        (Severity::Warn, _) => Severity::Warn,
        (Severity::RollbackNode, Scope::Node) => match on_gate_failure {
            OnGateFailure::Halt => Severity::Halt,
            OnGateFailure::RollbackNode | OnGateFailure::RollbackRun => Severity::RollbackNode,
        },
        // Rolling back "the node" of a generation or of the cluster means nothing.
        (_, _) => Severity::Halt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn everything() -> ClusterHas {
        ClusterHas {
            stacked_etcd: true,
            coredns: true,
            kube_proxy: true,
            storage_classes: ["local-path".to_string()].into(),
            extended_resources: true,
        }
    }

    fn full_policy() -> ChecksPolicy {
        ChecksPolicy {
            storage_classes: vec!["local-path".into()],
            prometheus_url: Some("http://prometheus.monitoring:9090".into()),
            ingress_url: Some("https://shop.example/healthz".into()),
            ..ChecksPolicy::default()
        }
    }

    fn find<'a>(checks: &'a [Check], id: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("{id} in the catalog"))
    }

    #[test]
    fn every_row_of_the_guides_matrix_is_covered_by_a_builtin() {
        let (on, _) = catalog(&full_policy(), &everything()).expect("catalog");
        for row in MatrixRow::ALL {
            assert!(
                on.iter().any(|c| c.matrix.contains(&row)),
                "no built-in check covers {row:?}"
            );
        }
    }

    #[test]
    fn each_of_the_guides_rollback_triggers_is_fed_by_a_builtin() {
        let (on, _) = catalog(&full_policy(), &everything()).expect("catalog");
        for t in Trigger::ALL {
            assert!(
                on.iter().any(|c| c.triggers.contains(&t)),
                "no built-in check feeds {t:?}"
            );
        }
        // Networking and storage are judged per node, before its uncordon.
        for id in ["pod-network", "dns", "storage/local-path"] {
            let c = find(&on, id);
            assert_eq!(c.scope, Scope::Node, "{id}");
            assert!(c.runs_at(Boundary::AfterCanary) && c.runs_at(Boundary::AfterBatch));
        }
    }

    #[test]
    fn a_check_without_its_subject_is_off_and_says_why() {
        let (on, off) = catalog(&ChecksPolicy::default(), &ClusterHas::default()).expect("ok");
        let ids: Vec<&str> = on.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "apiserver-readyz",
                "mirror-pods",
                "scheduling",
                "pod-network",
                "crash-loop"
            ]
        );
        let why: BTreeMap<&str, &str> = off
            .iter()
            .map(|d| (d.id.as_str(), d.why.as_str()))
            .collect();
        assert_eq!(
            why["etcd-quorum"],
            "etcd does not run on the control-plane nodes"
        );
        assert_eq!(why["dns"], "CoreDNS is not installed");
        assert_eq!(
            why["storage"],
            "the policy names no StorageClass (checks.storageClasses)"
        );
        assert_eq!(why["devices"], "no node advertises an extended resource");
        assert_eq!(
            why["prometheus"],
            "the policy gives no checks.prometheusUrl"
        );
        // A named class the cluster lacks is reported under its own id.
        let policy = ChecksPolicy {
            storage_classes: vec!["ceph-rbd".into()],
            ..ChecksPolicy::default()
        };
        let (_, off) = catalog(&policy, &everything()).expect("ok");
        assert!(off.contains(&Disabled {
            id: "storage/ceph-rbd".into(),
            why: "the cluster has no StorageClass of that name".into()
        }));
    }

    #[test]
    fn the_policy_disables_overrides_and_adds_checks() {
        let policy = ChecksPolicy {
            disable: vec!["devices".into()],
            overrides: [(
                "dns".to_string(),
                CheckOverride {
                    fire_after: Some(3),
                    severity: Some(Severity::Warn),
                    ..CheckOverride::default()
                },
            )]
            .into(),
            user: vec![
                UserCheck {
                    id: "smoke".into(),
                    job: Some("apiVersion: batch/v1\nkind: Job".into()),
                    http: None,
                    command: None,
                    scope: Scope::Cluster,
                    at: vec![Boundary::Final],
                    timeout_secs: 600,
                    fire_after: 1,
                    severity: None,
                },
                UserCheck {
                    id: "node-exporter".into(),
                    job: None,
                    http: None,
                    command: Some(vec!["/usr/local/bin/check-node".into()]),
                    scope: Scope::Node,
                    at: vec![Boundary::AfterBatch],
                    timeout_secs: 30,
                    fire_after: 0,
                    severity: None,
                },
            ],
            ..full_policy()
        };
        let (on, off) = catalog(&policy, &everything()).expect("catalog");
        assert!(off.iter().any(|d| d.id == "devices"));
        let dns = find(&on, "dns");
        assert_eq!((dns.fire_after, dns.severity), (3, Severity::Warn));
        let smoke = find(&on, "user/smoke");
        assert_eq!(smoke.severity, Severity::Halt);
        assert!(matches!(smoke.kind, CheckKind::UserJob { .. }));
        let node = find(&on, "user/node-exporter");
        assert_eq!(
            (node.severity, node.fire_after),
            (Severity::RollbackNode, 1)
        );
    }

    #[test]
    fn a_mistyped_policy_is_refused_by_name() {
        let policy = ChecksPolicy {
            disable: vec!["pod-netwrok".into()],
            ..ChecksPolicy::default()
        };
        let err = catalog(&policy, &everything()).expect_err("unknown");
        assert!(err.to_string().contains("\"pod-netwrok\""), "{err}");
        assert!(err.to_string().contains("pod-network"), "{err}");
        let two = ChecksPolicy {
            user: vec![UserCheck {
                id: "x".into(),
                job: Some("{}".into()),
                http: Some(HttpProbe {
                    url: "http://a".into(),
                    status: 200,
                }),
                command: None,
                scope: Scope::Cluster,
                at: vec![],
                timeout_secs: 1,
                fire_after: 1,
                severity: None,
            }],
            ..ChecksPolicy::default()
        };
        assert_eq!(
            catalog(&two, &everything()),
            Err(CatalogError::UserKind("x".into()))
        );
        let yaml_typo = serde_json::from_str::<ChecksPolicy>(r#"{"prometheusURL": "x"}"#);
        assert!(yaml_typo.is_err(), "unknown fields are refused");
    }

    #[test]
    fn severity_follows_scope_and_policy() {
        let builtins = builtin();
        let net = find(&builtins, "pod-network");
        assert_eq!(
            effective_severity(net, OnGateFailure::RollbackNode),
            Severity::RollbackNode
        );
        assert_eq!(effective_severity(net, OnGateFailure::Halt), Severity::Halt);
        let sched = find(&builtins, "scheduling");
        assert_eq!(
            effective_severity(sched, OnGateFailure::RollbackNode),
            Severity::Halt
        );
        let cluster_rollback = Check {
            severity: Severity::RollbackNode,
            ..find(&builtins, "prometheus").clone()
        };
        assert_eq!(
            effective_severity(&cluster_rollback, OnGateFailure::RollbackNode),
            Severity::Halt
        );
        let warn = Check {
            severity: Severity::Warn,
            ..net.clone()
        };
        assert_eq!(
            effective_severity(&warn, OnGateFailure::Halt),
            Severity::Warn
        );
    }

    #[test]
    fn the_builtins_are_sound() {
        let all = builtin();
        let mut ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), all.len(), "ids are unique");
        for c in &all {
            assert!(c.fire_after >= 1 && c.timeout_secs > 0, "{}", c.id);
            assert!(!c.at.is_empty(), "{} runs somewhere", c.id);
            // Every check runs at the baseline, so later verdicts are changes from it,
            // except the addons, whose versions only the upgrade sets.
            assert!(
                c.runs_at(Boundary::Preflight) || c.kind == CheckKind::Addons,
                "{} has no baseline",
                c.id
            );
        }
    }
}
