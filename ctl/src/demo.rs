//! `upgradectl demo`: a private daemon upgrades the embedded simulated cluster (the sim's
//! `seed` scenario: 15 nodes, three hardware generations), shown live.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use upgraded_api::{EventsQuery, StartRequest};
use upgraded_ctl::Client;
use upgraded_ctl::render::one_line;
use upgraded_ctl::render::record::describe;
use upgraded_planner::Severity;

/// Brings up the embedded demo world — the seed's 15-node, three-generation cluster in the sim,
/// served over the Kubernetes API on loopback with a kubeconfig for kubectl — and shows it.
fn demo_world(base: &std::path::Path) -> anyhow::Result<upgraded_sim::SimServer> {
    let world = upgraded_sim::scenario::build("seed", upgraded_sim::Clock::real(600.0), 1)?;
    let server = upgraded_sim::SimServer::start(world, ([127, 0, 0, 1], 0).into())
        .context("serving the demo world on loopback")?;
    let kubeconfig = base.join("kubeconfig");
    std::fs::write(&kubeconfig, upgraded_sim::kubeconfig(&server.url()))?;
    let w = server.sim.world();
    let used = w.used();
    println!(
        "upgraded demo: the embedded cluster (sim scenario `seed`) serves the Kubernetes API at {}",
        server.url()
    );
    println!(
        "  {} nodes, {} pods, {} PodDisruptionBudgets; from another terminal: kubectl --kubeconfig {} get nodes -o wide\n",
        w.nodes.len(),
        w.pods.len(),
        w.pdbs.len(),
        kubeconfig.display()
    );
    println!(
        "  {:<10} {:<14} {:<10} {:<8} {:<7} {:>9}",
        "NODE", "ROLE", "HARDWARE", "KUBELET", "CGROUP", "CPU REQ"
    );
    for n in w.nodes.values() {
        let (cpu, _, _) = used.get(n.name.as_str()).copied().unwrap_or_default();
        println!(
            "  {:<10} {:<14} {:<10} {:<8} {:<7} {:>8}%",
            n.name,
            if n.is_control_plane() {
                "control-plane"
            } else {
                "worker"
            },
            n.labels
                .get(upgraded_sim::model::GENERATION_LABEL)
                .map(String::as_str)
                .unwrap_or("?"),
            n.kubelet.to_string(),
            n.annotations
                .get(upgraded_sim::scenario::CGROUP_KEY)
                .map(String::as_str)
                .unwrap_or("?"),
            cpu * 100 / n.cpu_millis.max(1)
        );
    }
    println!();
    drop(w);
    Ok(server)
}

/// The demo's policy: the seed's generations two at a time after one canary each, real
/// soaks and waits (time runs 600x), and consent to lose the batch jobs' emptyDir scratch.
const DEMO_POLICY: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations:
  label: node.kubernetes.io/instance-type
  maxUnavailable: 2
  canaries: 1
canarySoak: 30m
waitBetweenBatches: 5m
drainTimeout: 10m
drain:
  deleteEmptyDirData: true
";

/// What an operator does about the seed's two blockers before starting, done to the sim.
fn demo_fix_blockers(server: &upgraded_sim::SimServer) -> anyhow::Result<()> {
    for done in upgraded_sim::scenario::fix_blockers(&mut server.sim.world())? {
        println!("  operator: {done}");
    }
    Ok(())
}

/// Runs a private daemon against the embedded sim — the real Kubernetes adapter over the
/// sim's HTTP API, node agents acting on its machines — and upgrades the seed cluster,
/// showing every step as it happens.
pub async fn run(to: &str, keep: Option<PathBuf>, story: Story) -> anyhow::Result<()> {
    let rollback = story == Story::Rollback;
    let tmp = tempfile::Builder::new()
        .prefix("upgraded-demo-")
        .tempdir()?;
    let base = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&base)?;
    let socket = base.join("api.sock");
    let sim = demo_world(&base)?;
    let policy = base.join("policy.yaml");
    std::fs::write(&policy, DEMO_POLICY)?;
    let exe = std::env::current_exe()?;
    let daemon_bin = exe.with_file_name("upgraded");
    if !daemon_bin.exists() {
        bail!(
            "{} not found next to upgradectl; build it with `cargo build --bins`",
            daemon_bin.display()
        );
    }
    let mut child = tokio::process::Command::new(&daemon_bin)
        .args(["--data-dir"])
        .arg(base.join("data"))
        .args(["--socket"])
        .arg(&socket)
        .args(["--kubeconfig"])
        .arg(base.join("kubeconfig"))
        .args(["--sim-agents", &sim.url()])
        .args(["--policy"])
        .arg(&policy)
        .args(["--time-scale", "600"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", daemon_bin.display()))?;
    let client = Client::new(&socket);
    let mut ready = false;
    for _ in 0..200 {
        if client.status().await.is_ok() {
            ready = true;
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!("the daemon exited before it was ready: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !ready {
        bail!(
            "the daemon did not answer on {} within 10 s",
            socket.display()
        );
    }
    println!(
        "(time runs 600x: a 30-minute soak takes 3 s; a second terminal can run `upgradectl --socket {} watch|status|pause|resume`)\n",
        socket.display()
    );
    let dry = client
        .start(&StartRequest {
            target: to.to_string(),
            dry_run: true,
            force: false,
        })
        .await?;
    let blockers: Vec<_> = dry
        .plan
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Blocker)
        .collect();
    if !blockers.is_empty() {
        println!(
            "the daemon's plan (from the live cluster) has {} blocker(s):",
            blockers.len()
        );
        for f in blockers {
            println!("  {}: {}", f.code, one_line(&f.message));
        }
        demo_fix_blockers(&sim)?;
        println!();
    }
    let target: upgraded_events::Version = to.parse().context("--to")?;
    match story {
        Story::Upgrade => {}
        Story::Rollback => demo_kernel_fault(&sim, target),
        Story::Network => demo_network_fault(&sim, target),
    }
    let v = client
        .start(&StartRequest {
            target: to.to_string(),
            dry_run: false,
            force: false,
        })
        .await?;
    print!("{}", upgraded_planner::render::table(&v.plan));
    println!();
    let run = v
        .run
        .context("the daemon recorded no run: the demo cluster is already at the target")?;
    let started = std::time::Instant::now();
    let next = follow(&client, run, 0).await?;
    let st = client.run(run).await?;
    println!(
        "\nrun {run}: {} in {:.1} s (real time)",
        st.phase.as_str(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", upgraded_ctl::render::status(Some(&st)));
    let mut shown = vec![run];
    if rollback && st.phase == upgraded_events::run::RunPhase::Halted {
        shown.push(operator_rolls_back(&client, run, next, &v.plan, target).await?);
    }
    for r in shown {
        timeline(&client, r).await?;
    }
    let w = sim.sim.world();
    let at: std::collections::BTreeMap<String, usize> =
        w.nodes.values().fold(Default::default(), |mut m, n| {
            *m.entry(n.kubelet.to_string()).or_default() += 1;
            m
        });
    let cordoned: Vec<&str> = w
        .nodes
        .values()
        .filter(|n| n.unschedulable)
        .map(|n| n.name.as_str())
        .collect();
    let ready_pods = w
        .pods
        .values()
        .filter(|p| p.is_ready(w.now(), &w.nodes))
        .count();
    let kubelets: Vec<String> = at.iter().map(|(v, n)| format!("{n} at {v}")).collect();
    println!(
        "cluster now: control plane {}; kubelets {}; {} of {} pods Ready; cordoned: {}",
        w.apiserver_version()
            .map_or_else(|| "?".to_string(), |v| v.to_string()),
        kubelets.join(", "),
        ready_pods,
        w.pods.len(),
        if cordoned.is_empty() {
            "none".to_string()
        } else {
            cordoned.join(", ")
        }
    );
    drop(w);
    let _ = child.start_kill();
    Ok(())
}

/// Prints a run's records from `from` as they are committed, until it completes, aborts or
/// halts; returns the seq after the last one printed.
async fn follow(client: &Client, run: upgraded_events::RunId, from: u64) -> anyhow::Result<u64> {
    use upgraded_events::Event;
    let mut next = from;
    client
        .records(run, EventsQuery { from, follow: true }, |r| {
            println!("{}", describe(&r));
            next = r.seq + 1;
            !matches!(
                r.event,
                Event::RunCompleted | Event::RunAborted | Event::RunHalted { .. }
            )
        })
        .await?;
    Ok(next)
}

/// The stories the demo tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Story {
    /// The seed cluster upgraded to the end, its checks passing.
    Upgrade,
    /// The oldest generation cannot run the new kubelet; the operator rolls back.
    Rollback,
    /// The oldest generation's pod network breaks with the new kubelet; its canary's
    /// network check catches it before the uncordon.
    Network,
}

/// The network story's fault: the oldest generation's CNI stops working on its old kernel
/// with the new kubelet. The kubelet starts and the node turns Ready: only a probe sees it.
fn demo_network_fault(server: &upgraded_sim::SimServer, target: upgraded_events::Version) {
    let generation = "dell-r640";
    let from = upgraded_events::Version::new(target.major, target.minor, 0);
    let mut w = server.sim.world();
    let machines = upgraded_sim::scenario::machines_of_generation(&w, generation);
    for m in &machines {
        w.faults.net_broken_from.insert(m.clone(), from);
    }
    println!(
        "  sim: the {generation} machines ({}) lose their pod network with kubelet {}.{}; they still turn Ready\n",
        machines.join(", "),
        from.major,
        from.minor
    );
}

/// The rollback story's fault: the oldest generation's machines (their kernel) cannot run
/// the target's kubelet. The preflight cannot see it; only the canary's restart shows it.
fn demo_kernel_fault(server: &upgraded_sim::SimServer, target: upgraded_events::Version) {
    let generation = "dell-r640";
    let from = upgraded_events::Version::new(target.major, target.minor, 0);
    let machines = upgraded_sim::scenario::kubelet_fails_in_generation(
        &mut server.sim.world(),
        generation,
        from,
    );
    println!(
        "  sim: the {generation} machines ({}) run a kernel that cannot run kubelet {}.{}; no preflight can see it\n",
        machines.join(", "),
        from.major,
        from.minor
    );
}

/// What the operator does after the daemon rolled the canary back and halted: abort the
/// run, then take the control plane back one minor with `upgradectl rollback --to`.
async fn operator_rolls_back(
    client: &Client,
    run: upgraded_events::RunId,
    next: u64,
    plan: &upgraded_planner::PlanReport,
    target: upgraded_events::Version,
) -> anyhow::Result<upgraded_events::RunId> {
    let back = plan
        .path
        .iter()
        .map(|h| h.version)
        .rfind(|v| v.minor + 1 == target.minor)
        .context("the plan took no hop through the previous minor: nothing to roll back to")?;
    println!(
        "\noperator: `upgradectl abort` (nodes the run cordoned are uncordoned), then `upgradectl rollback --to {back}`\n"
    );
    client.abort("rolling the control plane back").await?;
    follow(client, run, next).await?;
    let plan = client
        .rollback(&upgraded_api::RollbackRequest {
            nodes: Vec::new(),
            to: Some(back.to_string()),
            all: false,
            run: Some(run),
            plan_only: false,
            etcd: upgraded_api::EtcdMode::Keep,
            confirm_data_loss: false,
        })
        .await?;
    print!("\n{}", upgraded_ctl::render::rollback(&plan));
    let rollback = plan.run.context("the daemon recorded no rollback run")?;
    let undone = rollback;
    let started = std::time::Instant::now();
    follow(client, rollback, 0).await?;
    let st = client.run(rollback).await?;
    println!(
        "\nrollback run {rollback}: {} in {:.1} s (real time)",
        st.phase.as_str(),
        started.elapsed().as_secs_f64()
    );
    print!("{}", upgraded_ctl::render::status(Some(&st)));
    Ok(undone)
}

/// The run's timeline in the terminal, and as an HTML page left in the temp directory (it
/// outlives the demo's own files); the path is printed.
async fn timeline(client: &Client, run: upgraded_events::RunId) -> anyhow::Result<()> {
    let t = upgraded_events::timeline::of(&client.all_records(run).await?);
    let width = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(120);
    println!("\ntimeline of run {run}:");
    print!("{}", upgraded_ctl::render::timeline::gantt(&t, width));
    let path = std::env::temp_dir().join(format!("upgraded-demo-{run}.html"));
    let page = upgraded_ctl::render::timeline::html::html(&t);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(page.as_bytes())?;
    println!("HTML timeline: {} (open it in a browser)", path.display());
    Ok(())
}
