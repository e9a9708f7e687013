//! A 200-node cluster upgraded in virtual time, by the real engine, on the in-process
//! harness (`upgraded_harness`).
//!
//! Everything is the daemon's own code path — planner, sled log (fsync per group commit),
//! `decide`, the fold, steps, drains through the Eviction API, gates — with the kube-rs
//! adapter talking to the sim's HTTP API in process (the axum router as kube's service, no
//! sockets). Time is tokio's paused clock, shared by daemon and sim: it jumps to the next
//! timer whenever every task waits on one, so hours of upgrade take seconds. Node commands
//! take the policy's estimated durations in virtual time; drains, kubelet restarts and
//! readiness take what the sim's pods and kubelets take.
//!
//! Reported per policy (the same cluster, `large-200`: 3 control-plane nodes, 197 workers
//! in three generations, ~80% of worker CPU requested, a PDB per ten workers):
//! - makespan (virtual), control-plane phase, worker time per node, most workers down at once;
//! - the capacity lower bound: control-plane phase + ⌈workers / k⌉ × median worker time,
//!   k = most workers whose evictable requests fit in the others' free room (PDBs, canaries
//!   and waits ignored);
//! - wall time per step and per record, and the share spent inside the sim (HTTP handling
//!   and the model), the rest being the daemon's overhead.
//!
//! `cargo bench -p upgraded-harness --bench upgrade` prints a table, then criterion measures
//! the wall time of one whole upgrade of the `lab`-sized cluster (the per-step overhead with
//! little sim cost).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use upgraded_daemon::log::EventLog;
use upgraded_daemon::ports::{BoxFut, CommandOutput, NodeExecutor, PortError, RemoteCommand};
use upgraded_events::Host;
use upgraded_events::inventory::{CGROUP_KEY, Inventory};
use upgraded_events::{Actor, Event, Facts, Record, Role, Step, Version};
use upgraded_harness::{Harness, Options};
use upgraded_planner::policy::{Durations, PlanPolicy};
use upgraded_sim::{Sim, scenario};

/// Node commands acting on the sim's machines, each taking its estimated duration.
struct SimNodes {
    sim: Arc<Sim>,
    durations: Durations,
}

impl SimNodes {
    async fn exec(&self, node: &str, cmd: &RemoteCommand) -> Result<Facts, PortError> {
        let d = &self.durations;
        let secs = match cmd {
            RemoteCommand::Preflight { .. } => d.preflight,
            RemoteCommand::InstallPackages { .. } | RemoteCommand::DowngradePackages { .. } => {
                d.upgrade_packages
            }
            RemoteCommand::KubeadmUpgrade { apply: true, .. }
            | RemoteCommand::KubeadmDowngrade { apply: true, .. } => d.kubeadm_apply,
            RemoteCommand::KubeadmUpgrade { apply: false, .. }
            | RemoteCommand::KubeadmDowngrade { apply: false, .. } => d.kubeadm_node,
            RemoteCommand::EtcdSnapshot { .. } | RemoteCommand::EtcdRestore(_) => d.etcd_snapshot,
            RemoteCommand::InstalledKubelet
            | RemoteCommand::RestartKubelet
            | RemoteCommand::EtcdHealth => 0,
        };
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let model = |e: upgraded_sim::model::ModelError| PortError::fatal(e.to_string());
        let mut w = self.sim.world();
        let mut facts = Facts::new();
        let installed = |w: &upgraded_sim::World| {
            w.nodes
                .get(node)
                .and_then(|n| n.packages.get("kubelet").copied())
                .ok_or_else(|| PortError::fatal(format!("node {node}: no kubelet package")))
        };
        match cmd {
            RemoteCommand::Preflight { target } => {
                let n = w
                    .nodes
                    .get(node)
                    .ok_or_else(|| PortError::fatal(format!("no node {node}")))?;
                let cgroup = n.annotations.get(CGROUP_KEY).cloned().unwrap_or_default();
                if target.needs_cgroup_v2() && cgroup == "v1" {
                    return Err(PortError::fatal(format!("{node} runs cgroup v1")));
                }
                facts.insert("cgroup".into(), cgroup);
            }
            RemoteCommand::InstallPackages { version }
            | RemoteCommand::DowngradePackages { version, .. } => {
                let kubeadm = matches!(cmd, RemoteCommand::DowngradePackages { kubeadm: true, .. });
                for p in upgraded_events::plan::node_packages(kubeadm) {
                    w.install_package(node, p, *version).map_err(model)?;
                }
                facts.insert("installed".into(), version.to_string());
            }
            RemoteCommand::KubeadmUpgrade { version, apply }
            | RemoteCommand::KubeadmDowngrade { version, apply } => {
                w.install_package(node, "kubeadm", *version)
                    .map_err(model)?;
                let is_cp = w.nodes.get(node).is_some_and(|n| n.control_plane.is_some());
                if is_cp {
                    w.upgrade_control_plane(node, *version, None)
                        .map_err(model)?;
                } else if *apply {
                    return Err(PortError::fatal(format!("{node} runs no control plane")));
                }
            }
            RemoteCommand::EtcdSnapshot { .. } => {
                facts.insert("snapshot".into(), "simulated".into());
            }
            RemoteCommand::EtcdRestore(_) => {
                return Err(PortError::fatal(
                    "the benchmark's sim has no etcd to restore",
                ));
            }
            RemoteCommand::InstalledKubelet => {
                facts.insert("installed".into(), installed(&w)?.to_string());
            }
            RemoteCommand::EtcdHealth => {
                let members: Vec<bool> = w
                    .nodes
                    .values()
                    .filter(|n| n.control_plane.is_some())
                    .map(|n| n.ready && !n.down)
                    .collect();
                let healthy = members.iter().filter(|h| **h).count();
                facts.insert("members".into(), members.len().to_string());
                facts.insert("healthy".into(), healthy.to_string());
            }
            RemoteCommand::RestartKubelet => {
                let v = installed(&w)?;
                w.restart_kubelet(node, v).map_err(model)?;
                facts.insert("restarted".into(), v.to_string());
            }
        }
        Ok(facts)
    }
}

impl NodeExecutor for SimNodes {
    fn run<'a>(
        &'a self,
        host: &'a Host,
        cmd: &'a RemoteCommand,
        _timeout: Duration,
    ) -> BoxFut<'a, Result<CommandOutput, PortError>> {
        let node = host.as_str();
        Box::pin(async move {
            Ok(CommandOutput {
                facts: self.exec(node, cmd).await?,
            })
        })
    }
}

/// What one upgrade measured.
#[derive(Debug, Default)]
struct Outcome {
    makespan_ms: i64,
    control_plane_ms: i64,
    worker_ms: Vec<i64>,
    most_workers_down: usize,
    workers: usize,
    capacity_k: usize,
    steps: usize,
    records: usize,
    batches: usize,
    wall: Duration,
    in_sim: Duration,
    /// The cluster as the run found it.
    inventory: Option<Inventory>,
}

impl Outcome {
    fn median_worker_ms(&self) -> i64 {
        let mut w = self.worker_ms.clone();
        w.sort_unstable();
        w.get(w.len() / 2).copied().unwrap_or(0)
    }

    /// Control-plane phase + ⌈workers / k⌉ rounds of the median worker time.
    fn lower_bound_ms(&self) -> i64 {
        let rounds = self.workers.div_ceil(self.capacity_k.max(1));
        self.control_plane_ms + rounds as i64 * self.median_worker_ms()
    }
}

/// Most workers whose evictable pods fit, all at once, in the free room of the others
/// (CPU and memory; the cheapest nodes to empty first).
fn capacity_k(inv: &Inventory) -> usize {
    let mut movable: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    let mut used: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for p in inv.pods.iter().filter(|p| !p.is_finished()) {
        let Some(n) = p.node.as_deref() else { continue };
        let r = (p.requests.cpu_millis as i64, p.requests.memory_bytes as i64);
        let u = used.entry(n).or_default();
        u.0 += r.0;
        u.1 += r.1;
        if !p.is_daemonset() && !p.mirror {
            let m = movable.entry(n).or_default();
            m.0 += r.0;
            m.1 += r.1;
        }
    }
    let mut workers: Vec<((i64, i64), (i64, i64))> = inv
        .nodes
        .iter()
        .filter(|n| n.role == Role::Worker)
        .map(|n| {
            let u = used.get(n.name.as_str()).copied().unwrap_or_default();
            let free = (
                n.allocatable.cpu_millis as i64 - u.0,
                n.allocatable.memory_bytes as i64 - u.1,
            );
            let m = movable.get(n.name.as_str()).copied().unwrap_or_default();
            (m, free)
        })
        .collect();
    workers.sort_by_key(|(m, _)| *m);
    let (mut k, mut moved, mut room) = (0, (0i64, 0i64), (0i64, 0i64));
    for (_, f) in &workers {
        room.0 += f.0;
        room.1 += f.1;
    }
    for (m, f) in &workers {
        let (moved2, room2) = ((moved.0 + m.0, moved.1 + m.1), (room.0 - f.0, room.1 - f.1));
        if moved2.0 > room2.0 || moved2.1 > room2.1 {
            break;
        }
        (moved, room, k) = (moved2, room2, k + 1);
    }
    k
}

fn measure(records: &[Record], out: &mut Outcome) -> Result<(), String> {
    let mut roles: BTreeMap<String, Role> = BTreeMap::new();
    let (mut started, mut completed) = (None, None);
    let mut first: BTreeMap<&str, i64> = BTreeMap::new();
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    let mut down: Vec<(i64, i32)> = Vec::new();
    for r in records {
        match &r.event {
            Event::RunPlanned { plan, .. } => {
                out.batches = plan.0.batches.len();
                for (_, n) in plan.0.nodes() {
                    roles.insert(n.name.to_string(), n.role);
                }
            }
            Event::ClusterObserved { inventory, .. } => {
                out.inventory = Some(inventory.0.clone());
                out.capacity_k = capacity_k(&inventory.0);
                out.workers = inventory
                    .0
                    .nodes
                    .iter()
                    .filter(|n| n.role == Role::Worker)
                    .count();
            }
            Event::RunStarted { .. } => started = Some(r.at.0),
            Event::RunCompleted => completed = Some(r.at.0),
            Event::RunHalted { reason } => return Err(format!("halted: {reason}")),
            Event::StepStarted { node, .. } => {
                out.steps += 1;
                first.entry(node.as_str()).or_insert(r.at.0);
            }
            Event::StepSucceeded { node, step, .. } => {
                if *step != Step::Soak {
                    last.insert(node.as_str(), r.at.0);
                }
                if roles.get(node.as_str()) == Some(&Role::Worker) {
                    match step {
                        Step::Cordon => down.push((r.at.0, 1)),
                        Step::Uncordon => down.push((r.at.0, -1)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out.records = records.len();
    let (Some(s), Some(c)) = (started, completed) else {
        return Err("the run did not complete".into());
    };
    out.makespan_ms = c - s;
    for (node, end) in &last {
        let begin = first.get(node).copied().unwrap_or(*end);
        match roles.get(*node) {
            Some(Role::Worker) => out.worker_ms.push(end - begin),
            _ => out.control_plane_ms = out.control_plane_ms.max(end - s),
        }
    }
    down.sort_unstable();
    let mut now = 0i32;
    for (_, d) in down {
        now += d;
        out.most_workers_down = out.most_workers_down.max(now.max(0) as usize);
    }
    Ok(())
}

/// Upgrades scenario `name` to v1.35.3 under `policy`, in virtual time.
fn upgrade(name: &str, policy: &str) -> Result<Outcome, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| e.to_string())?;
    let policy = PlanPolicy::from_yaml(policy).map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let world =
            scenario::build(name, upgraded_harness::sim_clock(), 1).map_err(|e| e.to_string())?;
        let in_sim = Arc::new(AtomicU64::new(0));
        let timed = Arc::clone(&in_sim);
        let durations = policy.durations.clone();
        let options = Options {
            nodes: Some(Box::new(move |sim: &Arc<Sim>| {
                Arc::new(SimNodes {
                    sim: Arc::clone(sim),
                    durations: durations.clone(),
                }) as Arc<dyn NodeExecutor>
            })),
            kube_layer: Some(Box::new(move |router: axum::Router| {
                let timed = Arc::clone(&timed);
                router.layer(axum::middleware::from_fn(
                    move |req: axum::extract::Request, next: axum::middleware::Next| {
                        let timed = Arc::clone(&timed);
                        async move {
                            let t = Instant::now();
                            let resp = next.run(req).await;
                            timed.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                            resp
                        }
                    },
                ))
            })),
        };
        let h = Harness::with(world, policy, options).await;
        let daemon = h.daemon();
        let wall = Instant::now();
        let mut status = daemon.status();
        let (run, _report) = daemon
            .start(Version::new(1, 35, 3), Actor::daemon(), false, true)
            .await
            .map_err(|e| e.to_string())?;
        let run = run.ok_or("no run")?;
        loop {
            let phase = status.borrow_and_update().as_ref().map(|s| s.phase);
            match phase {
                Some(p) if p.is_terminal() => break,
                Some(upgraded_events::run::RunPhase::Halted) => break,
                _ => {}
            }
            status.changed().await.map_err(|e| e.to_string())?;
        }
        let mut out = Outcome {
            wall: wall.elapsed(),
            in_sim: Duration::from_nanos(in_sim.load(Ordering::Relaxed)),
            ..Outcome::default()
        };
        let records = daemon.log().read(run, 0).map_err(|e| e.to_string())?;
        measure(&records, &mut out)?;
        Ok(out)
    })
}

const BASE: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
retries: {backoff: 10s, maxBackoff: 1m}
";

fn hours(ms: i64) -> String {
    format!("{:.1} h", ms as f64 / 3_600_000.0)
}

fn report(label: &str, o: &Outcome) {
    println!(
        "{label:<34} makespan {:>8}  (control plane {}, worker median {:.1} min, {} batches, ≤{} workers down)",
        hours(o.makespan_ms),
        hours(o.control_plane_ms),
        o.median_worker_ms() as f64 / 60_000.0,
        o.batches,
        o.most_workers_down,
    );
    println!(
        "{:<34} wall {:.2} s for {} steps / {} records: {:.2} ms per step, {:.0}% of it inside the sim",
        "",
        o.wall.as_secs_f64(),
        o.steps,
        o.records,
        o.wall.as_secs_f64() * 1000.0 / o.steps.max(1) as f64,
        o.in_sim.as_secs_f64() * 100.0 / o.wall.as_secs_f64().max(1e-9),
    );
}

fn makespans() {
    let planned = format!(
        "{BASE}generations: {{maxUnavailable: 20%, canaries: 1}}\ncanarySoak: 10m\nwaitBetweenBatches: 1m\n"
    );
    let planned_no_waits = format!(
        "{BASE}generations: {{maxUnavailable: 20%, canaries: 0}}\nwaitBetweenBatches: 0s\n"
    );
    let one =
        format!("{BASE}generations: {{maxUnavailable: 1, canaries: 0}}\nwaitBetweenBatches: 0s\n");
    // UPGRADE_BENCH_SCENARIO=lab: the same table for a small cluster (a quick check).
    let scenario =
        std::env::var("UPGRADE_BENCH_SCENARIO").unwrap_or_else(|_| "large-200".to_string());
    println!("{scenario} → v1.35.3 in virtual time");
    let mut lb = None;
    let mut rows = Vec::new();
    for (label, policy) in [
        ("planned (20%, canaries, soak 10m)", planned.as_str()),
        (
            "planned (20%, no canaries/waits)",
            planned_no_waits.as_str(),
        ),
        ("one node at a time", one.as_str()),
    ] {
        match upgrade(&scenario, policy) {
            Ok(o) => {
                report(label, &o);
                lb.get_or_insert((o.lower_bound_ms(), o.capacity_k, o.workers));
                // The lower bound (planner::bounds) under this run's policy, from its own
                // control-plane phase and median worker time.
                let bound = match (&o.inventory, PlanPolicy::from_yaml(policy)) {
                    (Some(inv), Ok(p)) => Some(upgraded_planner::bounds::lower_bound(
                        inv,
                        &p,
                        (o.control_plane_ms / 1000) as u64,
                        (o.median_worker_ms() / 1000) as u64,
                    )),
                    _ => None,
                };
                rows.push((label, o.makespan_ms, bound));
            }
            Err(e) => println!("{label}: FAILED: {e}"),
        }
    }
    if let Some((ms, k, w)) = lb {
        println!(
            "capacity lower bound               makespan {:>8}  (k = {k} of {w} workers fit at once)",
            hours(ms)
        );
    }
    let one = rows.last().map_or(0, |(_, m, _)| *m);
    for (label, m, bound) in &rows {
        let Some(b) = bound else { continue };
        println!(
            "{label:<34} lower bound {:>6} (control plane {}, canaries {}); one-at-a-time / this {:.2}x, this / lower bound {:.2}x",
            hours(b.total_secs as i64 * 1000),
            hours(b.control_plane_secs as i64 * 1000),
            hours(b.canaries_secs as i64 * 1000),
            one as f64 / (*m).max(1) as f64,
            *m as f64 / (b.total_secs as f64 * 1000.0).max(1.0)
        );
        for g in &b.generations {
            println!(
                "{:<34}   {:<12} {:>3} workers: capacity {} (k = {}), budget {} ({})",
                "",
                g.generation,
                g.workers,
                hours(g.capacity_secs as i64 * 1000),
                g.capacity_k,
                hours(g.budget_secs as i64 * 1000),
                g.budget.as_deref().unwrap_or("-")
            );
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
        b.iter(|| upgrade("lab", &one).expect("upgrade"))
    });
    g.finish();
}

criterion_group!(upgrade_bench, benches);
criterion_main!(upgrade_bench);
