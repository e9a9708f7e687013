//! The plan's shape before it is placed in time: the cluster as it stands (and what the
//! planner refuses), the path of minor hops with the worker catch-ups the skew window needs,
//! and each stage's units and batches.

use std::collections::BTreeMap;

use upgraded_events::Version;
use upgraded_events::inventory::{self, Inventory};
use upgraded_events::plan::Role;

use crate::skew::{self, ClusterVersions};
use crate::{Ctx, PhaseReport, PlanError, PlanInput, Severity, finding, hops_between};

/// The target and the cluster as the plan starts from it.
pub(crate) struct Start {
    pub target: Version,
    /// Control-plane nodes, by name.
    pub control_planes: Vec<String>,
    /// Each control-plane node's kube-apiserver (its kubelet when not observed).
    apiservers: BTreeMap<String, Version>,
    /// The newest kube-apiserver: the version the cluster is at.
    pub cluster_version: Version,
    pub oldest_kubelet: Version,
    pub external_etcd: bool,
    /// Workers' kubelets.
    workers: BTreeMap<String, Version>,
    /// Every node's kubelet.
    kubelets: BTreeMap<String, Version>,
}

fn apiserver(n: &inventory::NodeInv) -> Version {
    n.control_plane.as_ref().map_or(n.kubelet, |c| c.apiserver)
}

impl Start {
    /// Reads the target and the cluster; refuses what no plan can do: no target, another
    /// major, a release the catalog does not know, no control plane, a downgrade.
    pub fn survey(input: &PlanInput<'_>) -> Result<Start, PlanError> {
        let (inv, policy) = (input.inventory, input.policy);
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
        for n in &inv.nodes {
            if n.kubelet > target {
                return Err(PlanError::Downgrade {
                    target,
                    node: n.name.clone(),
                    what: "kubelet",
                    current: n.kubelet,
                });
            }
            if n.role == Role::ControlPlane && apiserver(n) > target {
                return Err(PlanError::Downgrade {
                    target,
                    node: n.name.clone(),
                    what: "kube-apiserver",
                    current: apiserver(n),
                });
            }
        }
        Ok(Start {
            target,
            control_planes: cps.iter().map(|n| n.name.clone()).collect(),
            apiservers: cps.iter().map(|n| (n.name.clone(), apiserver(n))).collect(),
            cluster_version: cps.iter().map(|n| apiserver(n)).max().unwrap_or(target),
            oldest_kubelet: inv.nodes.iter().map(|n| n.kubelet).min().unwrap_or(target),
            external_etcd: cps.iter().all(|n| {
                n.control_plane
                    .as_ref()
                    .is_some_and(|c| c.observed && c.etcd.is_none())
            }),
            workers: inv
                .nodes
                .iter()
                .filter(|n| n.role == Role::Worker)
                .map(|n| (n.name.clone(), n.kubelet))
                .collect(),
            kubelets: inv
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.kubelet))
                .collect(),
        })
    }

    fn apiserver(&self, node: &str) -> Version {
        self.apiservers
            .get(node)
            .copied()
            .unwrap_or(self.cluster_version)
    }
}

/// Every component's version as the cluster stands, for the skew checks.
pub(crate) fn versions_now(inv: &Inventory) -> ClusterVersions {
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
    versions
}

/// A stage of the plan before batching.
pub(crate) enum Stage {
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

/// The path of control-plane hops (one minor at a time, finishing a hop a previous upgrade
/// left half done first) and the stages that walk it: before each hop, the workers that
/// would fall out of the kubelet skew window are brought up; after the last, every worker
/// still below the target.
pub(crate) fn path_and_stages(
    ctx: &mut Ctx<'_>,
    start: &Start,
) -> Result<(Vec<Version>, Vec<Stage>), PlanError> {
    let target = start.target;
    let mut path = Vec::new();
    if start
        .control_planes
        .iter()
        .any(|n| start.apiserver(n) < start.cluster_version)
    {
        path.push(start.cluster_version); // finish a hop a previous upgrade left half done
    }
    path.extend(hops_between(start.cluster_version, target, ctx.policy)?);
    let mut kubelets = start.workers.clone();
    let mut stages = Vec::new();
    let mut cp_now = start
        .apiservers
        .values()
        .min()
        .copied()
        .unwrap_or(start.cluster_version);
    let mut applied = start.cluster_version;
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
            start
                .control_planes
                .iter()
                .find(|n| start.apiserver(n) >= applied)
                .or(start.control_planes.first())
                .cloned()
                .unwrap_or_default()
        });
        let mut nodes = start.control_planes.clone();
        if let Some(first) = &apply_on {
            nodes.retain(|n| n != first);
            nodes.insert(0, first.clone());
        }
        // A node already at this hop (finishing a half-done one) is left alone.
        nodes.retain(|n| {
            start.apiserver(n) < hop || start.kubelets.get(n).is_some_and(|k| *k < hop)
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
    Ok((path, stages))
}

/// Each stage's units and batches, in order, named and numbered.
pub(crate) fn phases(ctx: &mut Ctx<'_>, stages: &[Stage]) -> Result<Vec<PhaseReport>, PlanError> {
    let policy = ctx.policy;
    let mut from_now: BTreeMap<String, Version> = ctx
        .inv
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.kubelet))
        .collect();
    let mut phases = Vec::new();
    for stage in stages {
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
    crate::name_units(&mut phases);
    crate::number_batches(&mut phases);
    Ok(phases)
}
