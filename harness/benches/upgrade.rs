//! A 200-node cluster upgraded in virtual time, by the real engine, on the in-process
//! harness: a rehearsal (`upgraded_harness::rehearse`, what `upgradectl rehearse` runs).
//!
//! Everything is the daemon's own code path — planner, sled log (fsync per group commit),
//! `decide`, the fold, steps, drains through the Eviction API, gates — with the kube-rs
//! adapter talking to the sim's HTTP API in process (the axum router as kube's service, no
//! sockets). Time is tokio's paused clock, shared by daemon and sim. Node commands take the
//! policy's estimated durations in virtual time; drains, kubelet restarts and readiness take
//! what the sim's pods and kubelets take.
//!
//! Reported per policy (`large-200`: 3 control-plane nodes, 197 workers in three
//! generations, ~80% of worker CPU requested, a PDB per ten workers):
//! - makespan (virtual), batches, most nodes unavailable at once, budget violations and
//!   pods left Pending;
//! - the same policy one node at a time (`maxUnavailable: 1`), and the ratio;
//! - the lower bound (`planner::bounds`) and the ratio to it;
//! - wall time per step, and the daemon's share (the sim's HTTP handling and model left out).
//!
//! `cargo bench -p upgraded-harness --bench upgrade` prints the table, then criterion measures
//! the wall time of one whole upgrade of the `lab`-sized cluster.
//! `UPGRADE_BENCH_SCENARIO=lab` prints the table for a small cluster (a quick check).

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use upgraded_events::Version;
use upgraded_harness::rehearse::{self, Cluster, Rehearsal};
use upgraded_planner::policy::PlanPolicy;

const BASE: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
retries: {backoff: 10s, maxBackoff: 1m}
";

fn rehearsal(scenario: &str, policy: &str, compare: bool) -> Rehearsal {
    Rehearsal {
        helm_secrets: Vec::new(),
        cluster: Cluster::Scenario(scenario.to_string()),
        policy: PlanPolicy::from_yaml(policy).expect("the bench's policy"),
        target: Version::new(1, 35, 3),
        faults: vec![],
        assume_fixed: false,
        compare,
        start: upgraded_events::Timestamp(upgraded_sim::clock::VIRTUAL_EPOCH as i64),
    }
}

fn makespans() {
    let planned = format!(
        "{BASE}generations: {{maxUnavailable: 20%, canaries: 1}}\ncanarySoak: 10m\nwaitBetweenBatches: 1m\n"
    );
    let no_waits = format!(
        "{BASE}generations: {{maxUnavailable: 20%, canaries: 0}}\nwaitBetweenBatches: 0s\n"
    );
    let scenario =
        std::env::var("UPGRADE_BENCH_SCENARIO").unwrap_or_else(|_| "large-200".to_string());
    println!("{scenario} → v1.35.3 in virtual time");
    for (label, policy) in [
        ("20%, canaries, soak 10m, wait 1m", planned.as_str()),
        ("20%, no canaries, no waits", no_waits.as_str()),
    ] {
        match rehearse::rehearse(&rehearsal(&scenario, policy, true)) {
            Ok((r, _)) => {
                let p = &r.planned;
                let one = r.one_at_a_time.as_ref().map_or(0, |o| o.makespan_secs);
                println!(
                    "{label:<34} makespan {:>7} ({}), {} batches, ≤{} unavailable, {} budget violations, {} Pending",
                    rehearse::human(p.makespan_secs),
                    p.outcome,
                    p.batches,
                    p.most_unavailable,
                    p.budget_violations.len(),
                    p.pending_pods.len()
                );
                println!(
                    "{:<34} one at a time {:>7}: {:.2}x faster; lower bound {:>7}: {:.2}x of it",
                    "",
                    rehearse::human(one),
                    r.speedup.unwrap_or(0.0),
                    rehearse::human(r.lower_bound.total_secs),
                    r.to_lower_bound
                );
                for g in &r.lower_bound.generations {
                    println!(
                        "{:<34}   {:<12} {:>3} workers: capacity {} (k = {}), budget {} ({})",
                        "",
                        g.generation,
                        g.workers,
                        rehearse::human(g.capacity_secs),
                        g.capacity_k,
                        rehearse::human(g.budget_secs),
                        g.budget.as_deref().unwrap_or("-")
                    );
                }
                println!(
                    "{:<34} wall {:.2} s for {} steps / {} records: {:.2} ms per step, {:.2} ms of it in the daemon (sim excluded)",
                    "",
                    p.wall_ms as f64 / 1000.0,
                    p.steps,
                    p.records,
                    p.wall_ms as f64 / p.steps.max(1) as f64,
                    p.wall_ms.saturating_sub(p.sim_ms) as f64 / p.steps.max(1) as f64,
                );
            }
            Err(e) => println!("{label}: FAILED: {e}"),
        }
    }
}

fn benches(c: &mut Criterion) {
    makespans();
    let mut g = c.benchmark_group("engine");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    let one =
        format!("{BASE}generations: {{maxUnavailable: 1, canaries: 0}}\nwaitBetweenBatches: 0s\n");
    g.bench_function("lab (1 cp + 3 workers) 1.33.5 → 1.35.3, whole run", |b| {
        b.iter(|| rehearse::rehearse(&rehearsal("lab", &one, false)).expect("upgrade"))
    });
    g.finish();
}

criterion_group!(upgrade_bench, benches);
criterion_main!(upgrade_bench);
