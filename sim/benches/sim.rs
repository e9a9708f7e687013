//! How fast the sim is: building large clusters, and draining a node in virtual time (what a
//! simulated upgrade of hundreds of nodes does over and over).

use criterion::{Criterion, criterion_group, criterion_main};
use upgraded_sim::clock::VIRTUAL_EPOCH;
use upgraded_sim::{Clock, World, scenario};

fn build(name: &str) -> World {
    scenario::build(name, Clock::virtual_at(VIRTUAL_EPOCH), 1).expect("scenario builds")
}

/// Cordon, evict everything evictable (retrying PDB refusals as time passes), restart the
/// kubelet, uncordon: one node's upgrade as the sim sees it.
fn drain_and_restart(w: &mut World, node: &str) {
    w.set_unschedulable(node, true).expect("node exists");
    for _ in 0..50 {
        let pods: Vec<(String, String)> = w
            .pods_on(node)
            .filter(|p| !p.is_daemonset() && !p.is_mirror() && p.deleting_at.is_none())
            .map(|p| p.key())
            .collect();
        if pods.is_empty() {
            break;
        }
        for (ns, name) in pods {
            let _ = w.evict(&ns, &name, None);
        }
        w.advance(5_000);
    }
    w.restart_kubelet(node, upgraded_events::version::Version::new(1, 33, 7))
        .expect("node exists");
    w.advance(20_000);
    w.set_unschedulable(node, false).expect("node exists");
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    g.sample_size(10);
    g.bench_function("build large-1000", |b| b.iter(|| build("large-1000")));
    g.bench_function("build large-5000", |b| b.iter(|| build("large-5000")));
    let seed = build("seed");
    g.bench_function("seed: drain + kubelet restart of r740-01", |b| {
        b.iter_batched(
            || build_clone(&seed),
            |mut w| drain_and_restart(&mut w, "r740-01"),
            criterion::BatchSize::LargeInput,
        )
    });
    let large = build("large-1000");
    let node = large
        .nodes
        .keys()
        .find(|n| n.starts_with("dell-r740"))
        .cloned()
        .expect("a r740 worker");
    g.bench_function("large-1000: drain + kubelet restart of one worker", |b| {
        b.iter_batched(
            || build_clone(&large),
            |mut w| drain_and_restart(&mut w, &node),
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn build_clone(w: &World) -> World {
    w.clone()
}

criterion_group!(sim, benches);
criterion_main!(sim);
