//! The lower bound of an upgrade's makespan: what no plan can beat on this cluster with this
//! policy, so a plan (or a rehearsal) can be judged against it.
//!
//! It is the control-plane phase, plus one canary per generation with its soak, plus, for
//! each generation (they go one after the other), the larger of
//! - the **capacity bound**: ⌈remaining workers / k⌉ rounds of one worker's time, k being the
//!   most of the generation's workers whose evictable pods fit, all at once, in the free room
//!   of the other schedulable workers (the cheapest to empty first; CPU and memory); and
//! - the **budget bound**: for the slowest budget, the evictions it must serialise on the
//!   generation's workers (the canary's share left out: its time counts them),
//!   ⌈pods / disruptionsAllowed⌉ rounds, each waiting for a replacement to become Ready
//!   (`durations.podReady`).
//!
//! Waits between batches, maintenance windows and retries are left out: they only add.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use upgraded_events::inventory::{Inventory, NodeInv};
use upgraded_events::plan::Role;

use crate::policy::PlanPolicy;

/// One generation's part of the bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GenerationBound {
    pub generation: String,
    pub workers: usize,
    /// Most workers whose pods fit elsewhere at once.
    pub capacity_k: usize,
    pub capacity_secs: u64,
    /// The slowest budget and its serialised evictions' time.
    pub budget: Option<String>,
    pub budget_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LowerBound {
    pub control_plane_secs: u64,
    pub canaries_secs: u64,
    pub generations: Vec<GenerationBound>,
    pub total_secs: u64,
}

/// The bound, from the control-plane phase's and one worker's times (measured or
/// estimated).
pub fn lower_bound(
    inv: &Inventory,
    policy: &PlanPolicy,
    control_plane_secs: u64,
    worker_secs: u64,
) -> LowerBound {
    let label = &policy.generation_label;
    let mut gens: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for n in inv.nodes.iter().filter(|n| n.role == Role::Worker) {
        let g = n
            .labels
            .get(label)
            .cloned()
            .unwrap_or_else(|| "unlabelled".into());
        gens.entry(g).or_default().push(n.name.as_str());
    }
    // Requests per worker: everything, and what a drain moves.
    let mut used: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut movable: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for p in inv.pods.iter().filter(|p| !p.is_finished()) {
        let Some(n) = p.node.as_deref() else { continue };
        let r = (
            i64::try_from(p.requests.cpu_millis).unwrap_or(i64::MAX),
            i64::try_from(p.requests.memory_bytes).unwrap_or(i64::MAX),
        );
        let u = used.entry(n).or_default();
        *u = (u.0.saturating_add(r.0), u.1.saturating_add(r.1));
        if !p.is_daemonset() && !p.mirror {
            let m = movable.entry(n).or_default();
            *m = (m.0.saturating_add(r.0), m.1.saturating_add(r.1));
        }
    }
    let by_name: BTreeMap<&str, &NodeInv> =
        inv.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let free = |name: &str| {
        by_name
            .get(name)
            .filter(|n| !n.unschedulable)
            .map_or((0, 0), |n| {
                let u = used.get(name).copied().unwrap_or_default();
                (
                    i64::try_from(n.allocatable.cpu_millis).unwrap_or(i64::MAX) - u.0,
                    i64::try_from(n.allocatable.memory_bytes).unwrap_or(i64::MAX) - u.1,
                )
            })
    };
    let all_workers: Vec<&str> = gens.values().flatten().copied().collect();
    let mut out = Vec::new();
    let mut canaries_secs = 0;
    for (g, nodes) in &gens {
        let canary = u64::from(policy.generation_rule(g).canaries.min(1) > 0 && !nodes.is_empty());
        canaries_secs += canary * (worker_secs + policy.canary_soak_secs);
        let rest = nodes.len().saturating_sub(canary as usize);
        // Capacity: the cheapest of the generation to empty first, into the room the
        // other workers have.
        let mut cost: Vec<((i64, i64), (i64, i64))> = nodes
            .iter()
            .map(|n| (movable.get(n).copied().unwrap_or_default(), free(n)))
            .collect();
        cost.sort_by_key(|(m, _)| *m);
        let mut room = all_workers
            .iter()
            .map(|n| free(n))
            .fold((0i64, 0i64), |a, f| (a.0 + f.0.max(0), a.1 + f.1.max(0)));
        let (mut k, mut moved) = (0usize, (0i64, 0i64));
        for (m, f) in &cost {
            let (moved2, room2) = (
                (moved.0 + m.0, moved.1 + m.1),
                (room.0 - f.0.max(0), room.1 - f.1.max(0)),
            );
            if moved2.0 > room2.0 || moved2.1 > room2.1 {
                break;
            }
            (moved, room, k) = (moved2, room2, k + 1);
        }
        let capacity_secs = if rest == 0 {
            0
        } else {
            rest.div_ceil(k.max(1)) as u64 * worker_secs
        };
        // Budgets: the evictions each must let through on this generation.
        let mut budget = None;
        let mut budget_secs = 0;
        let here: BTreeSet<&str> = nodes.iter().copied().collect();
        for b in &inv.pdbs {
            let pods = inv
                .pods
                .iter()
                .filter(|p| !p.is_finished() && p.namespace == b.namespace)
                .filter(|p| p.node.as_deref().is_some_and(|n| here.contains(n)))
                .filter(|p| b.selector.matches(&p.labels))
                .count() as u64;
            // The canary's own evictions are inside its time already.
            let pods = pods * rest as u64 / nodes.len().max(1) as u64;
            if pods == 0 {
                continue;
            }
            let secs =
                pods.div_ceil(u64::from(b.disruptions_allowed.max(1))) * policy.durations.pod_ready;
            if secs > budget_secs {
                budget_secs = secs;
                budget = Some(format!("{}/{}", b.namespace, b.name));
            }
        }
        out.push(GenerationBound {
            generation: g.clone(),
            workers: nodes.len(),
            capacity_k: k,
            capacity_secs,
            budget,
            budget_secs,
        });
    }
    let total_secs = control_plane_secs
        + canaries_secs
        + out
            .iter()
            .map(|g| g.capacity_secs.max(g.budget_secs))
            .sum::<u64>();
    LowerBound {
        control_plane_secs,
        canaries_secs,
        generations: out,
        total_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_is_the_control_plane_the_canaries_and_each_generations_slower_bound() {
        let inv = Inventory::from_kubectl_json(include_str!("../tests/fixtures/seed-cluster.json"))
            .expect("seed inventory");
        let policy = PlanPolicy::from_yaml(include_str!("../tests/fixtures/seed-policy.yaml"))
            .expect("seed policy");
        let b = lower_bound(&inv, &policy, 3600, 900);
        let gens: Vec<(&str, usize)> = b
            .generations
            .iter()
            .map(|g| (g.generation.as_str(), g.workers))
            .collect();
        assert_eq!(gens, [("dell-r640", 5), ("dell-r740", 4), ("hp-dl380", 3)]);
        // One canary each, with its soak.
        assert_eq!(b.canaries_secs, 3 * (900 + policy.canary_soak_secs));
        for g in &b.generations {
            assert!(g.capacity_k >= 1, "{g:?}");
            // The capacity bound: the workers after the canary, k at a time.
            assert_eq!(
                g.capacity_secs,
                (g.workers - 1).div_ceil(g.capacity_k) as u64 * 900,
                "{g:?}"
            );
        }
        // shop/web allows 3 evictions and runs on the r640s: its rounds take podReady each.
        let r640 = &b.generations[0];
        assert!(
            r640.budget.is_some() && r640.budget_secs >= policy.durations.pod_ready,
            "{r640:?}"
        );
        assert_eq!(
            b.total_secs,
            3600 + b.canaries_secs
                + b.generations
                    .iter()
                    .map(|g| g.capacity_secs.max(g.budget_secs))
                    .sum::<u64>()
        );
        // A budget that allowed one eviction at a time would serialise every pod.
        let mut strict = inv.clone();
        for p in &mut strict.pdbs {
            p.disruptions_allowed = 1;
        }
        let s = lower_bound(&strict, &policy, 3600, 900);
        assert!(s.total_secs >= b.total_secs);
    }
}
