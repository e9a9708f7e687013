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

pub mod apis;
pub mod bounds;
pub mod capacity;
pub mod catalog;
pub mod permissions;
pub mod policy;
pub mod render;
pub mod rollback;
pub mod schedule;
pub mod skew;

use std::collections::{BTreeMap, BTreeSet};

use capacity::Capacity;
use policy::PlanPolicy;
use skew::ClusterVersions;
use upgraded_events::Step;
use upgraded_events::Version;
use upgraded_events::inventory::{self, Inventory};
use upgraded_events::plan::Role;

mod findings;
mod phases;
mod report;
mod stages;

pub use report::*;

pub(crate) struct Ctx<'a> {
    inv: &'a Inventory,
    policy: &'a PlanPolicy,
    findings: BTreeSet<Finding>,
    cap: Capacity,
    gen_of: BTreeMap<String, String>,
    gen_order: Vec<String>,
    /// Each generation's drift (`Ctx::drift_findings`): the canaries come from the
    /// majority.
    drift: Vec<upgraded_events::drift::DriftReport>,
}

pub(crate) fn finding(
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

/// The hops a node from `from` to `to` takes: each minor's release (the catalog's latest for
/// the minors in between, `to` for the last), or one patch hop.
pub(crate) fn hops_between(
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

/// Plans an upgrade, stage by stage (each a function named for what it does):
/// 1. [`stages::Start::survey`]: the target and the cluster as it stands (refusals);
/// 2. the context: generations, the budgets a scale-up unblocks, the inventory's findings,
///    and the skew of the starting point;
/// 3. [`stages::path_and_stages`]: one minor hop at a time, with worker catch-ups;
/// 4. [`stages::phases`]: units and batches per stage, named and numbered;
/// 5. the checks of the result: skew simulated batch by batch, time and windows, and what
///    stops a drain;
/// 6. the report.
pub fn plan(input: PlanInput<'_>) -> Result<PlanReport, PlanError> {
    let policy = input.policy;
    let start = stages::Start::survey(&input)?;
    let mut ctx = Ctx::new(input.inventory, policy, start.target);
    let versions = stages::versions_now(input.inventory);
    ctx.skew_now(&versions);
    let (path, stages) = stages::path_and_stages(&mut ctx, &start)?;
    ctx.api_findings(start.cluster_version, &path);
    let mut phases = stages::phases(&mut ctx, &stages)?;
    ctx.add_run_checks(&mut phases);
    ctx.skew_during(&versions, &phases);
    let begin = schedule::place(&mut phases, policy, input.start);
    ctx.time_findings(&phases);
    ctx.drain_findings(&phases);
    Ok(report(&ctx, &start, &path, phases, begin))
}

/// The report of a plan whose phases are placed in time.
fn report(
    ctx: &Ctx<'_>,
    start: &stages::Start,
    path: &[Version],
    phases: Vec<PhaseReport>,
    begin: String,
) -> PlanReport {
    let (inv, policy) = (ctx.inv, ctx.policy);
    let estimate_secs = phases.iter().map(|p| p.estimate_secs).sum();
    let end = phases.last().map_or(begin.clone(), |p| p.end.clone());
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
    PlanReport {
        api_version: REPORT_API_VERSION.into(),
        kind: "UpgradePlan".into(),
        target: start.target,
        control_plane_from: start.cluster_version,
        oldest_kubelet: start.oldest_kubelet,
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
        generations: ctx.generation_summaries(),
        control_plane_nodes: start.control_planes.clone(),
        external_etcd: start.external_etcd,
        workers: inv.nodes.iter().filter(|n| n.role == Role::Worker).count(),
        pods: inv.pods.len(),
        blocked: findings.iter().any(|f| f.severity == Severity::Blocker),
        findings,
        drift: ctx.drift.clone(),
        phases,
        estimate_secs,
        start: begin,
        end,
        fits_windows,
        drain_timeout_secs: policy.drain_timeout_secs,
        canary_soak_secs: policy.canary_soak_secs,
        wait_between_batches_secs: policy.wait_between_batches_secs,
    }
}

pub(crate) fn placeholder_unit() -> Unit {
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

pub(crate) fn solo(label: String, u: Unit) -> BatchReport {
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
pub(crate) fn name_units(phases: &mut [PhaseReport]) {
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

pub(crate) fn number_batches(phases: &mut [PhaseReport]) {
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
                if !ClusterVersions::changes_versions(s) {
                    continue;
                }
                v.apply(&u.node, s);
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

impl<'a> Ctx<'a> {
    /// The context of a plan to `target`: generations, the budgets a scale-up unblocks (they
    /// allow one eviction at a time), and the findings the inventory alone gives.
    fn new(inv: &'a Inventory, policy: &'a PlanPolicy, target: Version) -> Ctx<'a> {
        let mut ctx = Ctx {
            inv,
            policy,
            findings: BTreeSet::new(),
            cap: Capacity::new(inv),
            gen_of: BTreeMap::new(),
            gen_order: Vec::new(),
            drift: Vec::new(),
        };
        for (i, pdb) in inv.pdbs.iter().enumerate() {
            if ctx.scale_unblocks(pdb).is_some() {
                ctx.cap.assume_allowed(i, 1);
            }
        }
        ctx.generations();
        ctx.drift_findings();
        ctx.static_findings(target);
        ctx
    }

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
}
