//! The planner: from a cluster inventory and a policy to an ordered, explained upgrade plan.
//!
//! The plan keeps Kubernetes' rules by construction and then checks them again by
//! simulating every intermediate state: one minor hop at a time; an etcd snapshot, then
//! `kubeadm upgrade apply` on the first control-plane node, then `kubeadm upgrade node` on
//! the others, for each hop; workers that would fall out of the kubelet skew window before a
//! hop are brought up first; then workers: one canary per hardware generation (oldest
//! generation first) with a soak, then each generation in batches sized to the capacity the
//! rest of the cluster has and to the PodDisruptionBudgets' headroom.
//!
//! Pure: time comes in as the planned start; nothing here reads files or the network.

#![forbid(unsafe_code)]

pub mod capacity;
pub mod catalog;
pub mod permissions;
pub mod policy;
pub mod render;
pub mod schedule;
pub mod skew;

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use capacity::{Capacity, Refusal};
use policy::PlanPolicy;
use skew::ClusterVersions;
use upgraded_events::Version;
use upgraded_events::drain::{self, DrainRules, Refusal as DrainRefusal};
use upgraded_events::inventory::{self, Inventory};
use upgraded_events::plan::{Batch, NodePlan, Plan, Role};
use upgraded_events::{Step, Timestamp};

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
            target: Some(self.target),
            batches: self
                .phases
                .iter()
                .flat_map(|p| &p.batches)
                .map(|b| Batch {
                    label: b.label.clone(),
                    nodes: b
                        .units
                        .iter()
                        .map(|u| NodePlan {
                            name: u.name.clone(),
                            host: (u.name != u.node).then(|| u.node.clone()),
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

struct Ctx<'a> {
    inv: &'a Inventory,
    policy: &'a PlanPolicy,
    findings: BTreeSet<Finding>,
    cap: Capacity,
    gen_of: BTreeMap<String, String>,
    gen_order: Vec<String>,
}

fn finding(
    sev: Severity,
    code: &str,
    subjects: Vec<String>,
    message: String,
    fix: String,
) -> Finding {
    Finding {
        severity: sev,
        code: code.into(),
        subjects,
        message,
        fix,
    }
}

/// A stage of the plan before batching.
enum Stage {
    ControlPlane {
        version: Version,
        apply_on: Option<String>,
        nodes: Vec<String>,
    },
    Workers {
        to: Version,
        nodes: Vec<String>,
        catch_up_for: Option<Version>,
    },
}

/// The hops a node from `from` to `to` takes: each minor's release (the catalog's latest for
/// the minors in between, `to` for the last), or one patch hop.
fn hops_between(
    from: Version,
    to: Version,
    policy: &PlanPolicy,
) -> Result<Vec<Version>, PlanError> {
    if from >= to {
        return Ok(Vec::new());
    }
    if from.minor == to.minor {
        return Ok(vec![to]);
    }
    (from.minor + 1..=to.minor)
        .map(|m| {
            if m == to.minor {
                Ok(to)
            } else {
                policy
                    .catalog
                    .latest(to.major, m)
                    .ok_or(PlanError::CatalogGap {
                        target: to,
                        minor: m,
                    })
            }
        })
        .collect()
}

pub fn plan(input: PlanInput<'_>) -> Result<PlanReport, PlanError> {
    let inv = input.inventory;
    let policy = input.policy;
    let target = input.target.or(policy.target).ok_or(PlanError::NoTarget)?;
    if target.major != 1 {
        return Err(PlanError::UnsupportedMajor(target));
    }
    match policy.catalog.latest(target.major, target.minor) {
        None => return Err(PlanError::UnknownMinor(target)),
        Some(latest) if target.patch > latest.patch => {
            return Err(PlanError::UnknownPatch {
                target,
                minor: target.minor,
                latest,
            });
        }
        Some(_) => {}
    }
    let mut cps: Vec<&inventory::NodeInv> = inv
        .nodes
        .iter()
        .filter(|n| n.role == Role::ControlPlane)
        .collect();
    cps.sort_by(|a, b| a.name.cmp(&b.name));
    if cps.is_empty() {
        return Err(PlanError::NoControlPlane);
    }
    let api_of =
        |n: &inventory::NodeInv| n.control_plane.as_ref().map_or(n.kubelet, |c| c.apiserver);
    for n in &inv.nodes {
        if n.kubelet > target {
            return Err(PlanError::Downgrade {
                target,
                node: n.name.clone(),
                what: "kubelet",
                current: n.kubelet,
            });
        }
        if n.role == Role::ControlPlane && api_of(n) > target {
            return Err(PlanError::Downgrade {
                target,
                node: n.name.clone(),
                what: "kube-apiserver",
                current: api_of(n),
            });
        }
    }
    let mut ctx = Ctx {
        inv,
        policy,
        findings: BTreeSet::new(),
        cap: Capacity::new(inv),
        gen_of: BTreeMap::new(),
        gen_order: Vec::new(),
    };
    // Budgets the drain unblocks by scaling up allow one eviction at a time.
    for (i, pdb) in inv.pdbs.iter().enumerate() {
        if ctx.scale_unblocks(pdb).is_some() {
            ctx.cap.assume_allowed(i, 1);
        }
    }
    ctx.generations();
    ctx.static_findings(target);

    // Current versions, and the skew check of the starting point.
    let mut versions = ClusterVersions::default();
    for n in &inv.nodes {
        let proxy = n.kube_proxy.unwrap_or(n.kubelet);
        versions.nodes.insert(n.name.clone(), (n.kubelet, proxy));
        if let Some(c) = &n.control_plane {
            versions.control_plane.insert(
                n.name.clone(),
                [c.apiserver, c.controller_manager, c.scheduler, n.kubelet],
            );
        } else if n.role == Role::ControlPlane {
            versions
                .control_plane
                .insert(n.name.clone(), [n.kubelet; 4]);
        }
    }
    for v in versions.violations() {
        ctx.findings.insert(finding(
            Severity::Blocker,
            "skew-now",
            vec![],
            format!("the cluster is already outside the version-skew policy: {v}"),
            "bring the component named into the supported window by hand first (kubelets: upgrade them to the control plane's minor)".into(),
        ));
    }

    // The stages: control-plane hops, with worker catch-ups where the skew window needs them.
    let cluster_version = cps.iter().map(|n| api_of(n)).max().unwrap_or(target);
    let oldest_kubelet = inv.nodes.iter().map(|n| n.kubelet).min().unwrap_or(target);
    let mut path = Vec::new();
    if cps.iter().any(|n| api_of(n) < cluster_version) {
        path.push(cluster_version); // finish a hop a previous upgrade left half done
    }
    path.extend(hops_between(cluster_version, target, policy)?);
    let mut kubelets: BTreeMap<String, Version> = inv
        .nodes
        .iter()
        .filter(|n| n.role == Role::Worker)
        .map(|n| (n.name.clone(), n.kubelet))
        .collect();
    let mut stages = Vec::new();
    let mut cp_now = cps
        .iter()
        .map(|n| api_of(n))
        .min()
        .unwrap_or(cluster_version);
    let mut applied = cluster_version;
    for &hop in &path {
        let floor = i32::from(hop.minor) - i32::from(skew::kubelet_skew(hop.minor));
        let lagging: Vec<String> = kubelets
            .iter()
            .filter(|(_, v)| i32::from(v.minor) < floor)
            .map(|(n, _)| n.clone())
            .collect();
        if !lagging.is_empty() {
            ctx.findings.insert(finding(
                Severity::Warning,
                "worker-catch-up",
                lagging.iter().map(|n| format!("node/{n}")).collect(),
                format!(
                    "{} worker(s) would fall out of the kubelet skew window when the control plane reaches {hop}; they are upgraded to {cp_now} first",
                    lagging.len()
                ),
                "nothing to do: the plan upgrades them first (keeping workers within two minors of the control plane avoids the extra drain)".into(),
            ));
            for n in &lagging {
                kubelets.insert(n.clone(), cp_now);
            }
            stages.push(Stage::Workers {
                to: cp_now,
                nodes: lagging,
                catch_up_for: Some(hop),
            });
        }
        let apply_on = (hop > applied).then(|| {
            cps.iter()
                .find(|n| api_of(n) >= applied)
                .or(cps.first())
                .map(|n| n.name.clone())
                .unwrap_or_default()
        });
        let mut nodes: Vec<String> = cps.iter().map(|n| n.name.clone()).collect();
        if let Some(first) = &apply_on {
            nodes.retain(|n| n != first);
            nodes.insert(0, first.clone());
        }
        // A node already at this hop (finishing a half-done one) is left alone.
        nodes.retain(|n| {
            let node = inv.nodes.iter().find(|x| &x.name == n);
            node.is_some_and(|x| api_of(x) < hop || x.kubelet < hop)
        });
        stages.push(Stage::ControlPlane {
            version: hop,
            apply_on,
            nodes,
        });
        applied = applied.max(hop);
        cp_now = hop;
    }
    let finals: Vec<String> = kubelets
        .iter()
        .filter(|(_, v)| **v < target)
        .map(|(n, _)| n.clone())
        .collect();
    if !finals.is_empty() {
        stages.push(Stage::Workers {
            to: target,
            nodes: finals,
            catch_up_for: None,
        });
    }

    // Units and batches.
    let mut from_now: BTreeMap<String, Version> = inv
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.kubelet))
        .collect();
    let mut phases = Vec::new();
    for stage in &stages {
        match stage {
            Stage::ControlPlane {
                version,
                apply_on,
                nodes,
            } => {
                phases.push(ctx.control_plane_phase(
                    *version,
                    apply_on.as_deref(),
                    nodes,
                    &mut from_now,
                ));
            }
            Stage::Workers {
                to,
                nodes,
                catch_up_for,
            } => {
                if policy.all_hops_in_one_drain {
                    phases.extend(ctx.worker_phases(
                        *to,
                        nodes,
                        *catch_up_for,
                        &mut from_now,
                        None,
                    )?);
                } else {
                    // One drain per minor: every worker takes hop 1, then hop 2, …
                    let lowest = nodes
                        .iter()
                        .filter_map(|n| from_now.get(n))
                        .min()
                        .copied()
                        .unwrap_or(*to);
                    for hop in hops_between(lowest, *to, policy)? {
                        let these: Vec<String> = nodes
                            .iter()
                            // A node on this minor already only takes the last (patch) hop.
                            .filter(|n| {
                                from_now.get(*n).is_some_and(|v| {
                                    v.minor < hop.minor || (hop == *to && *v < hop)
                                })
                            })
                            .cloned()
                            .collect();
                        phases.extend(ctx.worker_phases(
                            hop,
                            &these,
                            *catch_up_for,
                            &mut from_now,
                            Some(hop),
                        )?);
                    }
                }
            }
        }
    }
    name_units(&mut phases);
    number_batches(&mut phases);

    // Check every intermediate state against the skew policy, independently of how the
    // stages were built.
    for (batch, v) in simulate_skew(&versions, &phases) {
        ctx.findings.insert(finding(
            Severity::Blocker,
            "skew-during-plan",
            vec![],
            format!("batch {batch} would break the version-skew policy: {v}"),
            "report this plan: the planner should never produce it".into(),
        ));
    }

    // Durations and the maintenance windows.
    let start = schedule::place(&mut phases, policy, input.start);
    if let Some(first) = phases.first().and_then(|p| p.batches.first())
        && schedule::is_friday_afternoon(&first.start, policy)
    {
        ctx.findings.insert(finding(
            Severity::Warning,
            "friday-afternoon",
            vec![],
            format!("the plan starts on a Friday afternoon ({})", first.start),
            "start on Monday to Thursday morning, when people are around for the next hours".into(),
        ));
    }
    for p in &phases {
        if !p.fits_windows {
            ctx.findings.insert(finding(
                Severity::Warning,
                "window-overrun",
                vec![format!("phase/{}", p.name)],
                format!("a batch of phase {} is longer than any maintenance window", p.name),
                "widen the maintenance windows or make batches shorter (fewer pods per node, a lower drain estimate)".into(),
            ));
        }
    }
    // One finding per reason, naming every node it stops.
    let mut blocked: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for u in phases
        .iter()
        .flat_map(|p| &p.batches)
        .flat_map(|b| &b.units)
    {
        if let Some(why) = &u.blocked {
            let nodes = blocked.entry(why.clone()).or_default();
            let subject = format!("node/{}", u.node);
            if !nodes.contains(&subject) {
                nodes.push(subject);
            }
        }
    }
    for (why, nodes) in blocked {
        let (code, fix) = if why.contains("without a controller") {
            (
                "drain-refused",
                "see pod-unmanaged: recreate those pods under a controller or delete them",
            )
        } else if why.contains("PodDisruptionBudget") {
            (
                "pdb-blocks-drain",
                "scale the workload up (kubectl scale) or wait until its replicas are healthy, so the budget allows an eviction",
            )
        } else {
            (
                "capacity",
                "free capacity where the message says (scale down, move workloads, add a node), or relax the pods' node selectors",
            )
        };
        ctx.findings.insert(finding(
            Severity::Blocker,
            code,
            nodes.clone(),
            format!(
                "{} cannot be drained: {why}",
                nodes
                    .iter()
                    .map(|n| n.trim_start_matches("node/"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            fix.into(),
        ));
    }

    let estimate_secs = phases.iter().map(|p| p.estimate_secs).sum();
    let end = phases.last().map_or(start.clone(), |p| p.end.clone());
    let fits_windows = phases.iter().all(|p| p.fits_windows);
    // Every node already at the target: no node is drained, so what would block a drain
    // (budgets, unmanaged pods, local data, capacity) blocks nothing.
    let touches_nothing = phases
        .iter()
        .all(|p| p.batches.iter().all(|b| b.units.is_empty()));
    let findings: Vec<Finding> = if touches_nothing {
        Vec::new()
    } else {
        ctx.findings.iter().cloned().collect()
    };
    let generations = ctx.generation_summaries();
    Ok(PlanReport {
        api_version: REPORT_API_VERSION.into(),
        kind: "UpgradePlan".into(),
        target,
        control_plane_from: cluster_version,
        oldest_kubelet,
        path: path
            .iter()
            .map(|v| Hop {
                version: *v,
                package: policy.catalog.package_version(*v),
            })
            .collect(),
        package_manager: policy.package_manager,
        package_format: policy.catalog.package_format.clone(),
        generation_label: policy.generation_label.clone(),
        generations,
        control_plane_nodes: cps.iter().map(|n| n.name.clone()).collect(),
        external_etcd: cps.iter().all(|n| {
            n.control_plane
                .as_ref()
                .is_some_and(|c| c.observed && c.etcd.is_none())
        }),
        workers: inv.nodes.iter().filter(|n| n.role == Role::Worker).count(),
        pods: inv.pods.len(),
        blocked: findings.iter().any(|f| f.severity == Severity::Blocker),
        findings,
        phases,
        estimate_secs,
        start,
        end,
        fits_windows,
        drain_timeout_secs: policy.drain_timeout_secs,
        canary_soak_secs: policy.canary_soak_secs,
        wait_between_batches_secs: policy.wait_between_batches_secs,
    })
}

fn placeholder_unit() -> Unit {
    Unit {
        name: String::new(),
        node: String::new(),
        role: Role::Worker,
        generation: None,
        from: Version::new(0, 0, 0),
        to: Version::new(0, 0, 0),
        canary: false,
        stays_cordoned: false,
        evicted_pods: 0,
        blocked: None,
        estimate_secs: 0,
        steps: Vec::new(),
    }
}

fn solo(label: String, u: Unit) -> BatchReport {
    BatchReport {
        number: 0,
        label,
        units: vec![u],
        estimate_secs: 0,
        start: String::new(),
        end: String::new(),
        fits_window: true,
        limited_by: None,
    }
}

/// A node with several passes gets `NODE@vMAJOR.MINOR` names (`-kubeadm` / `-kubelet` when a
/// hop is split in two passes), so entries stay unique.
fn name_units(phases: &mut [PhaseReport]) {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for u in phases
        .iter()
        .flat_map(|p| &p.batches)
        .flat_map(|b| &b.units)
    {
        *count.entry(u.node.clone()).or_default() += 1;
    }
    for u in phases
        .iter_mut()
        .flat_map(|p| &mut p.batches)
        .flat_map(|b| &mut b.units)
    {
        if count.get(&u.node).copied().unwrap_or(0) > 1 {
            let kubeadm = u
                .steps
                .iter()
                .any(|s| matches!(s, Step::KubeadmUpgrade { .. }));
            let kubelet = u
                .steps
                .iter()
                .any(|s| matches!(s, Step::UpgradePackages { .. }));
            let pass = match (kubeadm, kubelet) {
                (true, false) => "-kubeadm",
                (false, true) => "-kubelet",
                _ => "",
            };
            u.name = format!("{}@v{}.{}{pass}", u.node, u.to.major, u.to.minor);
        }
    }
}

fn number_batches(phases: &mut [PhaseReport]) {
    let mut n = 0;
    for b in phases.iter_mut().flat_map(|p| &mut p.batches) {
        n += 1;
        b.number = n;
    }
}

/// Applies every step of every batch, in order, to the versions and returns each broken
/// rule with the batch number where it first shows.
pub fn simulate_skew(start: &ClusterVersions, phases: &[PhaseReport]) -> Vec<(usize, String)> {
    let mut v = start.clone();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for b in phases.iter().flat_map(|p| &p.batches) {
        for u in &b.units {
            for s in &u.steps {
                match s {
                    Step::KubeadmUpgrade { version, .. } => {
                        if let Some(c) = v.control_plane.get_mut(&u.node) {
                            c[0] = *version;
                            c[1] = *version;
                            c[2] = *version;
                        }
                        // Since 1.28 kubeadm upgrades the kube-proxy DaemonSet once the last
                        // control-plane node of the hop is done (apply or node).
                        if v.control_plane.values().all(|c| c[0] >= *version) {
                            for (_, proxy) in v.nodes.values_mut() {
                                *proxy = (*proxy).max(*version);
                            }
                        }
                    }
                    Step::UpgradePackages { version } => {
                        if let Some((kubelet, _)) = v.nodes.get_mut(&u.node) {
                            *kubelet = *version;
                        }
                        if let Some(c) = v.control_plane.get_mut(&u.node) {
                            c[3] = *version;
                        }
                    }
                    _ => continue,
                }
                for violation in v.violations() {
                    if seen.insert(violation.clone()) {
                        out.push((b.number, violation));
                    }
                }
            }
        }
    }
    out
}

impl Ctx<'_> {
    fn generations(&mut self) {
        let label = &self.policy.generation_label;
        let mut oldest: BTreeMap<String, (i64, String)> = BTreeMap::new();
        let mut unlabelled = Vec::new();
        for n in self.inv.nodes.iter().filter(|n| n.role == Role::Worker) {
            let g = match n.labels.get(label) {
                Some(g) => g.clone(),
                None => {
                    unlabelled.push(format!("node/{}", n.name));
                    "unlabelled".to_string()
                }
            };
            let key = (n.created.map_or(i64::MAX, |t| t.0), n.name.clone());
            let e = oldest.entry(g.clone()).or_insert(key.clone());
            if key < *e {
                *e = key;
            }
            self.gen_of.insert(n.name.clone(), g);
        }
        if !unlabelled.is_empty() {
            self.findings.insert(finding(
                Severity::Warning,
                "generation-unlabelled",
                unlabelled,
                format!("worker(s) without the generation label {label}: they form the generation \"unlabelled\""),
                format!("kubectl label node NODE {label}=GENERATION"),
            ));
        }
        let mut order: Vec<String> = self
            .policy
            .generation_order
            .iter()
            .filter(|g| oldest.contains_key(*g))
            .cloned()
            .collect();
        let mut rest: Vec<(&(i64, String), &String)> = oldest
            .iter()
            .filter(|(g, _)| !order.contains(g))
            .map(|(g, k)| (k, g))
            .collect();
        rest.sort();
        order.extend(rest.into_iter().map(|(_, g)| g.clone()));
        self.gen_order = order;
    }

    fn generation_summaries(&self) -> Vec<GenerationSummary> {
        self.gen_order
            .iter()
            .map(|g| {
                let nodes: Vec<&inventory::NodeInv> = self
                    .inv
                    .nodes
                    .iter()
                    .filter(|n| self.gen_of.get(&n.name) == Some(g))
                    .collect();
                let rule = self.policy.generation_rule(g);
                GenerationSummary {
                    name: g.clone(),
                    workers: nodes.len(),
                    oldest_node: nodes
                        .iter()
                        .min_by_key(|n| (n.created.map_or(i64::MAX, |t| t.0), n.name.clone()))
                        .map(|n| n.name.clone()),
                    max_unavailable: rule.max_unavailable.of(nodes.len()),
                    canaries: rule.canaries,
                }
            })
            .collect()
    }

    /// Findings that depend on the inventory alone.
    fn static_findings(&mut self, target: Version) {
        let inv = self.inv;
        for n in &inv.nodes {
            let subj = vec![format!("node/{}", n.name)];
            if target.needs_cgroup_v2() && n.cgroup == Some(1) {
                self.findings.insert(finding(
                    Severity::Blocker,
                    "cgroup-v1",
                    subj.clone(),
                    format!("node {} runs cgroup v1: the kubelet {target} refuses to start on cgroup v1", n.name),
                    "move the node to cgroup v2 (systemd.unified_cgroup_hierarchy=1 on the kernel command line, or a newer OS image) and reboot it before the upgrade".into(),
                ));
            }
            if target.needs_cgroup_v2() && n.cgroup.is_none() {
                self.findings.insert(finding(
                    Severity::Warning,
                    "cgroup-unknown",
                    subj.clone(),
                    format!("node {}'s cgroup version is unknown; {target} needs cgroup v2 (preflight checks it on the node)", n.name),
                    format!("annotate the node: kubectl annotate node {} {}=v2", n.name, inventory::CGROUP_KEY),
                ));
            }
            if n.unschedulable {
                self.findings.insert(finding(
                    Severity::Warning,
                    "node-cordoned",
                    subj.clone(),
                    format!("node {} is already cordoned: it is upgraded and left cordoned", n.name),
                    "nothing, unless it should take workloads again (then uncordon it yourself afterwards)".into(),
                ));
            }
            if !n.ready {
                self.findings.insert(finding(
                    Severity::Warning,
                    "node-not-ready",
                    subj.clone(),
                    format!(
                        "node {} is NotReady: its upgrade will fail verification",
                        n.name
                    ),
                    "repair the node first, or drain it and remove it from the cluster".into(),
                ));
            }
            if n.runtime.starts_with("docker://") {
                self.findings.insert(finding(
                    Severity::Blocker,
                    "runtime-docker",
                    subj.clone(),
                    format!(
                        "node {} uses {} (dockershim was removed in 1.24)",
                        n.name, n.runtime
                    ),
                    "switch the node to containerd or CRI-O (or cri-dockerd) first".into(),
                ));
            }
            if n.control_plane.as_ref().is_some_and(|c| !c.observed) {
                self.findings.insert(finding(
                    Severity::Warning,
                    "control-plane-versions-unknown",
                    subj.clone(),
                    format!("no static control-plane pods found for {}; its components are assumed at the kubelet's {}", n.name, n.kubelet),
                    "include kube-system pods in the snapshot (kubectl get … -A)".into(),
                ));
            }
        }
        // What the drain of each node refuses, and whose local data it loses: the same rule
        // the drain applies (`events::drain::triage`), under this policy's consents.
        let rules = DrainRules {
            evict_unmanaged: self.policy.evict_unmanaged_pods,
            delete_empty_dir_data: self.policy.delete_empty_dir_data,
        };
        let mut by_node: BTreeMap<String, Vec<inventory::PodInv>> = BTreeMap::new();
        for p in &inv.pods {
            if let Some(node) = &p.node {
                by_node.entry(node.clone()).or_default().push(p.clone());
            }
        }
        let pod = |k: &String| format!("pod/{k}");
        for (node, pods) in by_node {
            let t = drain::triage(pods, &inv.pdbs, rules);
            let unmanaged = t.refused_for(|r| matches!(r, DrainRefusal::Unmanaged));
            if !unmanaged.is_empty() {
                self.findings.insert(finding(
                    Severity::Blocker,
                    "pod-unmanaged",
                    unmanaged.iter().map(pod).collect(),
                    format!("node {node} runs {} pod(s) without a controller: a drain without --force refuses them, and --force would delete them for good", unmanaged.len()),
                    "recreate them under a Deployment or StatefulSet, or delete them deliberately".into(),
                ));
            }
            let empty_dir = t.refused_for(|r| matches!(r, DrainRefusal::EmptyDirData));
            if !empty_dir.is_empty() {
                self.findings.insert(finding(
                    Severity::Blocker,
                    "pod-local-data",
                    empty_dir.iter().map(pod).collect(),
                    format!("node {node} runs {} pod(s) with emptyDir data, which the drain refuses to delete (drain.deleteEmptyDirData: false)", empty_dir.len()),
                    "set drain.deleteEmptyDirData: true once that data may go, or move it off the node".into(),
                ));
            }
            let several = t.refused_for(|r| matches!(r, DrainRefusal::SeveralBudgets(_)));
            if !several.is_empty() {
                let budgets: BTreeSet<String> = t
                    .refused
                    .iter()
                    .flat_map(|(_, why)| why.iter())
                    .filter_map(|r| match r {
                        DrainRefusal::SeveralBudgets(b) => Some(b.clone()),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                self.findings.insert(finding(
                    Severity::Blocker,
                    "pod-several-budgets",
                    several.iter().map(pod).collect(),
                    format!("node {node} runs {} pod(s) covered by more than one PodDisruptionBudget ({}): the API server refuses every eviction of such a pod", several.len(), budgets.into_iter().collect::<Vec<_>>().join(", ")),
                    "leave one budget per pod: merge or narrow the budgets' selectors".into(),
                ));
            }
            if !t.losing_local_data.is_empty() {
                self.findings.insert(finding(
                    Severity::Warning,
                    "pod-local-data",
                    t.losing_local_data.iter().map(pod).collect(),
                    format!("node {node} runs {} pod(s) with emptyDir or local volumes: their data on the node is lost by the drain", t.losing_local_data.len()),
                    "make sure they keep nothing they need there (the drain uses --delete-emptydir-data)".into(),
                ));
            }
        }
        let controllers: BTreeMap<(String, String), u32> = inv
            .controllers
            .iter()
            .map(|c| ((c.namespace.clone(), c.name.clone()), c.replicas))
            .collect();
        for pdb in &inv.pdbs {
            let subj = vec![format!("pdb/{}/{}", pdb.namespace, pdb.name)];
            // The workload behind the budget, for the fix.
            let owner = inv
                .pods
                .iter()
                .find(|p| p.namespace == pdb.namespace && pdb.selector.matches(&p.labels))
                .and_then(|p| p.owner.clone());
            let scale = match &owner {
                Some(o) if o.kind == "Deployment" || o.kind == "StatefulSet" => {
                    let now = controllers
                        .get(&(pdb.namespace.clone(), o.name.clone()))
                        .copied()
                        .unwrap_or(pdb.expected_pods);
                    format!(
                        "kubectl scale {} {} -n {} --replicas={}",
                        o.kind.to_ascii_lowercase(),
                        o.name,
                        pdb.namespace,
                        now + 1
                    )
                }
                _ => "scale the workload up by one replica".into(),
            };
            if self.scale_unblocks(pdb).is_some() {
                self.findings.insert(finding(
                    Severity::Warning,
                    "pdb-scaled-to-unblock",
                    subj,
                    format!(
                        "PodDisruptionBudget {}/{} allows no eviction with its {} healthy pod(s): each drain of a node running its pods will scale its Deployment up by one and back (drain.scaleUpToUnblock)",
                        pdb.namespace, pdb.name, pdb.current_healthy
                    ),
                    format!("make sure one more replica fits and is harmless; or give the workload a spare replica for good ({scale})"),
                ));
            } else if pdb.never_allows() {
                self.findings.insert(finding(
                    Severity::Blocker,
                    "pdb-never-allows",
                    subj,
                    format!(
                        "PodDisruptionBudget {}/{} can never allow an eviction ({} with {} pod(s)): every drain of a node running its pods hangs until the timeout",
                        pdb.namespace,
                        pdb.name,
                        pdb.max_unavailable
                            .as_ref()
                            .map(|m| format!("maxUnavailable {m}"))
                            .or_else(|| pdb.min_available.as_ref().map(|m| format!("minAvailable {m}")))
                            .unwrap_or_default(),
                        pdb.expected_pods
                    ),
                    format!("give the workload a spare replica ({scale}) or relax the budget (maxUnavailable: 1)"),
                ));
            } else if pdb.disruptions_allowed == 0 && pdb.expected_pods > 0 {
                self.findings.insert(finding(
                    Severity::Blocker,
                    "pdb-zero-disruptions",
                    subj,
                    format!(
                        "PodDisruptionBudget {}/{} allows 0 disruptions now ({} healthy, {} needed): drains of its nodes would hang",
                        pdb.namespace, pdb.name, pdb.current_healthy, pdb.desired_healthy
                    ),
                    format!("wait until its replicas are healthy, or scale up temporarily: {scale}"),
                ));
            }
        }
    }

    /// With `drain.scaleUpToUnblock`: the Deployment a drain will scale up by one because
    /// `pdb` allows no eviction although all its pods are healthy (and one more pod helps).
    fn scale_unblocks(&self, pdb: &inventory::PdbInv) -> Option<inventory::Owner> {
        if !self.policy.scale_up_to_unblock
            || pdb.disruptions_allowed > 0
            || pdb.expected_pods == 0
            || pdb.current_healthy < pdb.expected_pods
            || !pdb.allows_at(pdb.expected_pods.saturating_add(1))
        {
            return None;
        }
        self.inv
            .pods
            .iter()
            .find(|p| p.namespace == pdb.namespace && pdb.selector.matches(&p.labels))
            .and_then(|p| p.owner.clone())
            .filter(|o| o.kind == "Deployment")
    }

    fn estimate(&self, steps: &[Step], evicted: usize) -> u64 {
        let d = &self.policy.durations;
        steps
            .iter()
            .map(|s| match s {
                Step::Preflight => d.preflight,
                Step::EtcdSnapshot => d.etcd_snapshot,
                Step::KubeadmUpgrade { apply: true, .. } => d.kubeadm_apply,
                Step::KubeadmUpgrade { apply: false, .. } => d.kubeadm_node,
                Step::Cordon => d.cordon,
                Step::Drain => {
                    (d.drain + d.drain_per_pod * evicted as u64).min(self.policy.drain_timeout_secs)
                }
                Step::UpgradePackages { .. } => d.upgrade_packages,
                Step::RestartKubelet => d.restart_kubelet,
                Step::Verify => d.verify,
                Step::Uncordon => d.uncordon,
                Step::Soak => self.policy.canary_soak_secs,
            })
            .sum()
    }

    fn node(&self, name: &str) -> Option<&inventory::NodeInv> {
        self.cap
            .node_index(name)
            .and_then(|i| self.inv.nodes.get(i))
    }

    fn evicted(&self, name: &str) -> usize {
        self.cap.node_index(name).map_or(0, |i| self.cap.evicted(i))
    }

    #[allow(clippy::too_many_arguments)]
    fn unit(
        &self,
        node: &str,
        from: Version,
        to: Version,
        steps: Vec<Step>,
        canary: bool,
        blocked: Option<String>,
        evicted: usize,
    ) -> Unit {
        let n = self.node(node);
        Unit {
            name: node.to_string(),
            node: node.to_string(),
            role: n.map_or(Role::Worker, |n| n.role),
            generation: self.gen_of.get(node).cloned(),
            from,
            to,
            canary,
            stays_cordoned: n.is_some_and(|n| n.unschedulable),
            evicted_pods: evicted,
            blocked,
            estimate_secs: self.estimate(&steps, evicted),
            steps,
        }
    }

    fn control_plane_phase(
        &mut self,
        version: Version,
        apply_on: Option<&str>,
        nodes: &[String],
        from_now: &mut BTreeMap<String, Version>,
    ) -> PhaseReport {
        // kubeadm on every control-plane node first, kubelets after: a kubelet must not be
        // newer than any apiserver, and until the last node's kubeadm ran, some are older.
        // The last node does both in one pass.
        let mut batches = Vec::new();
        let last = nodes.len().saturating_sub(1);
        let mut second = Vec::new();
        for (i, name) in nodes.iter().enumerate() {
            let apply = apply_on == Some(name.as_str());
            let mut steps = vec![Step::Preflight];
            if i == 0 {
                steps.push(Step::EtcdSnapshot);
            }
            steps.push(Step::KubeadmUpgrade { version, apply });
            let from = from_now.get(name).copied().unwrap_or(version);
            let what = if apply {
                " (kubeadm upgrade apply)"
            } else {
                " (kubeadm upgrade node)"
            };
            if i == last {
                steps.extend(Self::kubelet_steps(version));
                let evicted = self.evicted(name);
                let blocked = self.drain_in_model(name);
                let u = self.unit(name, from, version, steps, false, blocked, evicted);
                batches.push(solo(
                    format!("control plane {version}: {name}{what} + kubelet"),
                    u,
                ));
            } else {
                let u = self.unit(name, from, version, steps, false, None, 0);
                batches.push(solo(format!("control plane {version}: {name}{what}"), u));
                second.push((name.clone(), from));
            }
        }
        for (name, from) in second {
            let mut steps = vec![Step::Preflight];
            steps.extend(Self::kubelet_steps(version));
            let evicted = self.evicted(&name);
            let blocked = self.drain_in_model(&name);
            let u = self.unit(&name, from, version, steps, false, blocked, evicted);
            batches.push(solo(format!("control plane {version}: {name} kubelet"), u));
        }
        for name in nodes {
            from_now.insert(name.clone(), version);
        }
        PhaseReport {
            name: format!("control plane {version}"),
            kind: PhaseKind::ControlPlane,
            version,
            batches,
            estimate_secs: 0,
            start: String::new(),
            end: String::new(),
            fits_windows: true,
        }
    }

    fn kubelet_steps(version: Version) -> [Step; 6] {
        [
            Step::Cordon,
            Step::Drain,
            Step::UpgradePackages { version },
            Step::RestartKubelet,
            Step::Verify,
            Step::Uncordon,
        ]
    }

    /// Drains a node alone in the capacity model; the refusal, if any, as text.
    fn drain_in_model(&mut self, name: &str) -> Option<String> {
        let i = self.cap.node_index(name)?;
        if let Err(r) = self.cap.check_pdbs(&[i]) {
            return Some(r.describe());
        }
        if !self.cap.unmanaged_pods(i).is_empty() {
            return Some(format!(
                "{} pod(s) without a controller (drain refuses them without --force)",
                self.cap.unmanaged_pods(i).len()
            ));
        }
        self.cap.drain_alone(i).err().map(|r| r.describe())
    }

    fn worker_steps(
        &self,
        from: Version,
        to: Version,
        canary: bool,
    ) -> Result<Vec<Step>, PlanError> {
        let mut steps = vec![Step::Preflight, Step::Cordon, Step::Drain];
        for hop in hops_between(from, to, self.policy)? {
            steps.push(Step::KubeadmUpgrade {
                version: hop,
                apply: false,
            });
            steps.push(Step::UpgradePackages { version: hop });
        }
        steps.extend([Step::RestartKubelet, Step::Verify, Step::Uncordon]);
        if canary {
            steps.push(Step::Soak);
        }
        Ok(steps)
    }

    /// Canaries (one phase for all generations, oldest first), then one phase per generation.
    fn worker_phases(
        &mut self,
        to: Version,
        nodes: &[String],
        catch_up_for: Option<Version>,
        from_now: &mut BTreeMap<String, Version>,
        only_hop: Option<Version>,
    ) -> Result<Vec<PhaseReport>, PlanError> {
        let suffix = match (catch_up_for, only_hop) {
            (Some(h), _) => format!(" (before control plane {h})"),
            (None, Some(h)) => format!(" (hop {h})"),
            (None, None) => String::new(),
        };
        let kind_rest = if catch_up_for.is_some() {
            PhaseKind::WorkerCatchUp
        } else {
            PhaseKind::Generation
        };
        let mut by_gen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for n in nodes {
            by_gen
                .entry(
                    self.gen_of
                        .get(n)
                        .cloned()
                        .unwrap_or_else(|| "unlabelled".into()),
                )
                .or_default()
                .push(n.clone());
        }
        // Oldest machines first inside a generation, then by name.
        for list in by_gen.values_mut() {
            list.sort_by_key(|n| {
                (
                    self.node(n)
                        .and_then(|x| x.created)
                        .map_or(i64::MAX, |t| t.0),
                    n.clone(),
                )
            });
        }
        let order: Vec<String> = self
            .gen_order
            .iter()
            .filter(|g| by_gen.contains_key(*g))
            .cloned()
            .collect();
        let mut canary_batches = Vec::new();
        let mut rest_phases = Vec::new();
        let mut canaries: BTreeSet<String> = BTreeSet::new();
        for g in &order {
            let want = self.policy.generation_rule(g).canaries as usize;
            let list = by_gen.get(g).cloned().unwrap_or_default();
            let mut picked = 0;
            for n in &list {
                if picked >= want {
                    break;
                }
                let Some(i) = self.cap.node_index(n) else {
                    continue;
                };
                let cordoned = self.node(n).is_some_and(|x| x.unschedulable);
                if cordoned
                    || !self.cap.unmanaged_pods(i).is_empty()
                    || self.cap.check_alone(i).is_err()
                {
                    continue;
                }
                let evicted = self.cap.evicted(i);
                let _ = self.cap.drain_alone(i);
                let from = from_now.get(n).copied().unwrap_or(to);
                let steps = self.worker_steps(from, to, true)?;
                let u = self.unit(n, from, to, steps, true, None, evicted);
                canaries.insert(n.clone());
                picked += 1;
                canary_batches.push(solo(format!("canary {g}: {n}"), u));
            }
        }
        for g in &order {
            let mut remaining: Vec<String> = by_gen
                .get(g)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|n| !canaries.contains(n))
                .collect();
            let size = by_gen.get(g).map_or(0, Vec::len);
            let max = self.policy.generation_rule(g).max_unavailable.of(size);
            let mut batches = Vec::new();
            while !remaining.is_empty() {
                let idx: Vec<usize> = remaining
                    .iter()
                    .filter_map(|n| self.cap.node_index(n))
                    .collect();
                // Before the drains move them.
                let evicted: BTreeMap<String, usize> = remaining
                    .iter()
                    .take(max + 17)
                    .map(|n| (n.clone(), self.evicted(n)))
                    .collect();
                // Nodes with unmanaged pods go alone and blocked; so do nodes that fit nowhere.
                let first = remaining[0].clone();
                let first_i = self.cap.node_index(&first);
                let unmanaged = first_i.is_some_and(|i| !self.cap.unmanaged_pods(i).is_empty());
                let mut limited_by = None;
                let (members, refusal): (Vec<String>, Option<String>) = if unmanaged {
                    (
                        vec![first.clone()],
                        Some(format!(
                            "{} pod(s) without a controller (drain refuses them without --force)",
                            first_i.map_or(0, |i| self.cap.unmanaged_pods(i).len())
                        )),
                    )
                } else {
                    let eligible: Vec<usize> = idx
                        .iter()
                        .copied()
                        .filter(|&i| self.cap.unmanaged_pods(i).is_empty())
                        .collect();
                    let (batch, refusal, limit) = self.cap.next_batch(&eligible, max);
                    if batch.len() < max && eligible.len() > batch.len() {
                        limited_by = limit.map(|r| r.describe());
                    }
                    if batch.is_empty() {
                        (
                            vec![first.clone()],
                            refusal
                                .map(|r: Refusal| r.describe())
                                .or(Some("does not fit".into())),
                        )
                    } else {
                        let names = batch
                            .iter()
                            .filter_map(|&i| {
                                remaining
                                    .iter()
                                    .find(|n| self.cap.node_index(n) == Some(i))
                                    .cloned()
                            })
                            .collect();
                        (names, None)
                    }
                };
                let mut units = Vec::new();
                for n in &members {
                    let from = from_now.get(n).copied().unwrap_or(to);
                    let steps = self.worker_steps(from, to, false)?;
                    let ev = evicted.get(n).copied().unwrap_or(0);
                    units.push(self.unit(n, from, to, steps, false, refusal.clone(), ev));
                }
                remaining.retain(|n| !members.contains(n));
                batches.push(BatchReport {
                    limited_by,
                    units,
                    ..solo(String::new(), placeholder_unit())
                });
            }
            let total = batches.len();
            for (i, b) in batches.iter_mut().enumerate() {
                b.label = format!("{g} {}/{total}", i + 1);
            }
            rest_phases.push(PhaseReport {
                name: format!("{g} {to}{suffix}"),
                kind: kind_rest,
                version: to,
                batches,
                estimate_secs: 0,
                start: String::new(),
                end: String::new(),
                fits_windows: true,
            });
        }
        for n in nodes {
            from_now.insert(n.clone(), to);
        }
        let mut out = Vec::new();
        if !canary_batches.is_empty() {
            out.push(PhaseReport {
                name: format!("canaries {to}{suffix}"),
                kind: PhaseKind::Canaries,
                version: to,
                batches: canary_batches,
                estimate_secs: 0,
                start: String::new(),
                end: String::new(),
                fits_windows: true,
            });
        }
        out.extend(rest_phases.into_iter().filter(|p| !p.batches.is_empty()));
        Ok(out)
    }
}
