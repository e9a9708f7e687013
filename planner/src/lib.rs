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

pub use report::*;

pub(crate) struct Ctx<'a> {
    inv: &'a Inventory,
    policy: &'a PlanPolicy,
    findings: BTreeSet<Finding>,
    cap: Capacity,
    gen_of: BTreeMap<String, String>,
    gen_order: Vec<String>,
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
}
