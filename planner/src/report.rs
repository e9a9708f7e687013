//! What the planner answers: the report (phases, batches, units, findings, estimates) as
//! `upgradectl plan -o json` prints it (schema in `schemas/plan.schema.json`), its errors,
//! and its input.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use upgraded_events::inventory::Inventory;
use upgraded_events::plan::{Batch, NodePlan, Plan, Role};
use upgraded_events::{Entry, Host, Step, Timestamp, Version};

use crate::policy::{self, PlanPolicy};

pub const REPORT_API_VERSION: &str = "upgraded.dev/v1alpha1";

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The plan must not run until this is fixed.
    Blocker,
    /// Runs, but a person should know.
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    pub severity: Severity,
    /// Stable identifier, like `pdb-zero-disruptions`.
    pub code: String,
    /// The nodes or objects concerned (`node/worker-07`, `pdb/prod/redis`).
    pub subjects: Vec<String>,
    pub message: String,
    pub fix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PhaseKind {
    /// Bring workers that would leave the skew window up before a control-plane hop.
    WorkerCatchUp,
    /// etcd snapshot and every control-plane node, for one hop.
    ControlPlane,
    /// One canary per generation, oldest generation first, each soaked.
    Canaries,
    /// The rest of one generation, in batches.
    Generation,
}

/// One plan entry: a node, the hops it takes in this pass, and its steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Unit {
    /// Unique in the plan (`cp-1@v1.34` when a node has several passes).
    pub name: String,
    pub node: String,
    pub role: Role,
    pub generation: Option<String>,
    pub from: Version,
    pub to: Version,
    pub canary: bool,
    /// Cordoned before the run: it stays cordoned afterwards.
    pub stays_cordoned: bool,
    pub evicted_pods: usize,
    /// Refused (capacity or PDB): the run would stop here.
    pub blocked: Option<String>,
    pub estimate_secs: u64,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchReport {
    /// Position in the whole plan, from 1.
    pub number: usize,
    pub label: String,
    pub units: Vec<Unit>,
    pub estimate_secs: u64,
    /// Planned start and end (RFC 3339, UTC), placed in the maintenance windows.
    pub start: String,
    pub end: String,
    pub fits_window: bool,
    /// Why the batch is smaller than the generation's maxUnavailable, when it is.
    pub limited_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseReport {
    pub name: String,
    pub kind: PhaseKind,
    pub version: Version,
    pub batches: Vec<BatchReport>,
    /// Work time including the waits between batches.
    pub estimate_secs: u64,
    pub start: String,
    pub end: String,
    pub fits_windows: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerationSummary {
    pub name: String,
    pub workers: usize,
    /// Earliest creationTimestamp of its nodes.
    pub oldest_node: Option<String>,
    pub max_unavailable: usize,
    pub canaries: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hop {
    pub version: Version,
    /// The package version string for apt/dnf.
    pub package: String,
}

/// The plan as operators read it (`upgradectl plan -o json`; schema in `schemas/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanReport {
    pub api_version: String,
    pub kind: String,
    pub target: Version,
    /// The control plane's version now (the newest apiserver).
    pub control_plane_from: Version,
    pub oldest_kubelet: Version,
    /// Control-plane hops, one minor at a time.
    pub path: Vec<Hop>,
    pub package_manager: policy::PackageManager,
    /// Package version string, `{version}` standing for `1.35.3`.
    pub package_format: String,
    pub generation_label: String,
    pub generations: Vec<GenerationSummary>,
    pub control_plane_nodes: Vec<String>,
    pub external_etcd: bool,
    pub workers: usize,
    pub pods: usize,
    pub blocked: bool,
    pub findings: Vec<Finding>,
    /// Each generation's drift as the inventory and the machines' agents show it
    /// (generations without outliers are not listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<upgraded_events::drift::DriftReport>,
    pub phases: Vec<PhaseReport>,
    pub estimate_secs: u64,
    pub start: String,
    pub end: String,
    pub fits_windows: bool,
    pub drain_timeout_secs: u64,
    pub canary_soak_secs: u64,
    pub wait_between_batches_secs: u64,
}

impl PlanReport {
    /// What the engine runs: the batches in order, each entry with its steps.
    pub fn execution_plan(&self) -> Plan {
        Plan {
            undoes: None,
            target: Some(self.target),
            batches: self
                .phases
                .iter()
                .flat_map(|p| p.batches.iter().map(move |b| (p, b)))
                .map(|(p, b)| Batch {
                    label: b.label.clone(),
                    phase: p.name.clone(),
                    nodes: b
                        .units
                        .iter()
                        .map(|u| NodePlan {
                            name: Entry::new(u.name.as_str()),
                            host: (u.name != u.node).then(|| Host::new(u.node.as_str())),
                            role: u.role,
                            from: u.from,
                            steps: u.steps.clone(),
                            estimate_secs: u.estimate_secs,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    pub fn units(&self) -> impl Iterator<Item = &Unit> {
        self.phases
            .iter()
            .flat_map(|p| &p.batches)
            .flat_map(|b| &b.units)
    }

    pub fn blockers(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Blocker)
            .count()
    }

    /// Every node is already at the target: the plan has no step to run.
    pub fn nothing_to_do(&self) -> bool {
        self.phases
            .iter()
            .all(|p| p.batches.iter().all(|b| b.units.is_empty()))
    }
}

/// Plans that cannot be made at all (as opposed to plans with blockers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no target version: pass --to (like v1.35.3) or set target in the policy")]
    NoTarget,
    #[error("the snapshot has no control-plane node (label node-role.kubernetes.io/control-plane)")]
    NoControlPlane,
    #[error(
        "target {target} is older than {what} {current} on {node}: this is a downgrade; use rollback"
    )]
    Downgrade {
        target: Version,
        node: String,
        what: &'static str,
        current: Version,
    },
    #[error(
        "unknown target {target}: the catalog's latest 1.{minor} release is {latest}; add newer patches under catalog.patches in the policy"
    )]
    UnknownPatch {
        target: Version,
        minor: u16,
        latest: Version,
    },
    #[error(
        "unknown target {0}: the catalog has no {major}.{minor} release; add it under catalog.patches in the policy",
        major = .0.major,
        minor = .0.minor
    )]
    UnknownMinor(Version),
    #[error(
        "target {0}: Kubernetes {major}.x is not a version upgraded can go to; it upgrades within 1.x, one minor at a time",
        major = .0.major
    )]
    UnsupportedMajor(Version),
    #[error(
        "the path to {target} passes 1.{minor}, which the catalog does not list; add it under catalog.patches"
    )]
    CatalogGap { target: Version, minor: u16 },
}

/// What the planner is given.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub inventory: &'a Inventory,
    pub policy: &'a PlanPolicy,
    /// `--to`; falls back to the policy's target.
    pub target: Option<Version>,
    /// When the operator intends to start (windows, Friday afternoons).
    pub start: Timestamp,
}
