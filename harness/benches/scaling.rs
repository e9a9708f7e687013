//! How a rehearsal grows with the cluster: the same policy (10% of a generation at a time, one
//! canary, the default checks on) rehearsed on `large-243` and on `large-1000`, the wall time
//! of each and their ratio (issue 24's budget: 1,000 nodes in at most 5x the time of 243, and
//! under 60 s). Each size is rehearsed once and reported; criterion then measures the 243-node
//! rehearsal alone (ten samples).
//!
//! `cargo bench -p upgraded-harness --bench scaling`
//! `SCALING_SIZES=243,500` rehearses other sizes (the first is the one criterion measures).

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use upgraded_events::Version;
use upgraded_harness::rehearse::{self, Cluster, Rehearsal};
use upgraded_planner::policy::PlanPolicy;

const POLICY: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 10%, canaries: 1}
retries: {backoff: 10s, maxBackoff: 1m}
";

fn rehearsal(nodes: usize) -> Rehearsal {
    Rehearsal {
        helm_secrets: Vec::new(),
        cluster: Cluster::Scenario(format!("large-{nodes}")),
        policy: PlanPolicy::from_yaml(POLICY).expect("the bench's policy"),
        target: Version::new(1, 35, 3),
        faults: vec![],
        assume_fixed: false,
        compare: false,
        start: upgraded_events::Timestamp(upgraded_sim::clock::VIRTUAL_EPOCH as i64),
    }
}

fn sizes() -> Vec<usize> {
    std::env::var("SCALING_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![243, 1000])
}

fn report() {
    let mut first: Option<(usize, f64)> = None;
    for n in sizes() {
        let t0 = Instant::now();
        match rehearse::rehearse(&rehearsal(n)) {
            Ok((r, _)) => {
                let wall = t0.elapsed().as_secs_f64();
                let p = &r.planned;
                let ratio = first.map(|(m, w)| format!(", {:.1}x the time of {m} nodes", wall / w));
                println!(
                    "large-{n}: {wall:.1} s of wall time{} ({} steps, {} records, {:.2} ms per step, {:.2} ms of it in the daemon); makespan {} ({})",
                    ratio.unwrap_or_default(),
                    p.steps,
                    p.records,
                    p.wall_ms as f64 / p.steps.max(1) as f64,
                    p.wall_ms.saturating_sub(p.sim_ms) as f64 / p.steps.max(1) as f64,
                    rehearse::human(p.makespan_secs),
                    p.outcome,
                );
                first.get_or_insert((n, wall));
            }
            Err(e) => println!("large-{n}: FAILED: {e}"),
        }
    }
}

fn benches(c: &mut Criterion) {
    report();
    let n = sizes()[0];
    let mut g = c.benchmark_group("rehearse");
    g.sample_size(10).measurement_time(Duration::from_secs(60));
    g.bench_function(format!("large-{n}, 10%, checks on"), |b| {
        b.iter(|| rehearse::rehearse(&rehearsal(n)).expect("rehearsal"))
    });
    g.finish();
}

criterion_group!(scaling_bench, benches);
criterion_main!(scaling_bench);
