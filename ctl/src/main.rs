//! `upgradectl`: start, observe and steer upgrades run by `upgraded`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use hyper::Method;
use serde_json::{Value, json};
use upgraded_ctl::{Client, default_socket};

#[derive(Debug, Parser)]
#[command(name = "upgradectl", version, about = "Drive and observe upgraded")]
struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, env = "UPGRADED_SOCKET", default_value_os_t = default_socket())]
    socket: PathBuf,
    /// Seconds to wait for the daemon to connect and answer (a followed stream, once it
    /// has begun, is not bounded).
    #[arg(long, global = true, env = "UPGRADECTL_TIMEOUT", default_value_t = 60.0, value_parser = positive_secs)]
    timeout: f64,
    #[command(subcommand)]
    cmd: Cmd,
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds above 0 and at most 86400"
        )),
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Plan an upgrade offline from a cluster snapshot; no daemon, no cluster.
    ///
    /// The snapshot is what `kubectl get nodes,pods,pdb,deploy,sts,ds -A -o json` prints.
    /// Exits 2 when the plan has blockers.
    Plan {
        /// The kubectl List (JSON); `-` reads standard input.
        #[arg(long)]
        snapshot: PathBuf,
        /// Target version (default: the policy's `target`).
        #[arg(long)]
        to: Option<String>,
        /// Policy file (YAML); built-in defaults without it.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// `table` (default) or `json`.
        #[arg(long, short = 'o', default_value = "table")]
        output: String,
        /// Print the plan as a Markdown runbook instead.
        #[arg(long)]
        runbook: bool,
        /// Planned start, RFC 3339 (default: now); places batches in the maintenance windows.
        #[arg(long)]
        start: Option<String>,
    },
    /// Plan and start an upgrade to a version (e.g. v1.35.3).
    Start {
        #[arg(long)]
        to: String,
        /// Print the plan without recording or starting anything.
        #[arg(long)]
        dry_run: bool,
        /// Start although the plan has blockers (recorded in the log as forced).
        #[arg(long)]
        force: bool,
    },
    /// Live progress: the run, each batch and each node under way, with blocked reasons.
    Watch {
        /// Redraw interval in milliseconds.
        #[arg(long, default_value_t = 500)]
        interval_ms: u64,
    },
    /// The active (or last) run, node by node.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Stop starting new steps; steps in flight finish.
    Pause {
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Continue a paused or halted run (a halted step gets fresh attempts).
    Resume,
    /// Stop the run, uncordoning every node it cordoned.
    Abort {
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// A run's records as JSON lines.
    Events {
        /// Run id (default: the active run).
        #[arg(long)]
        run: Option<String>,
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Keep streaming until the run ends.
        #[arg(long, short)]
        follow: bool,
    },
    /// List runs.
    Runs,
    /// A simulated cluster behind the Kubernetes API, to point kubectl at and rehearse drains.
    Sim {
        #[command(subcommand)]
        cmd: SimCmd,
    },
    /// Upgrade a built-in fake cluster (1 control plane + 5 workers, v1.32 → v1.35), live.
    Demo {
        #[arg(long, default_value = "v1.35.3")]
        to: String,
        /// Keep the demo's data directory afterwards.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum SimCmd {
    /// Serve a built-in scenario until interrupted (Ctrl-C).
    Serve {
        /// seed (3 control planes + 12 workers), lab (1 + 3), or large-N (N nodes).
        #[arg(long, default_value = "seed")]
        scenario: String,
        /// Port on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Address to listen on; only loopback unless you mean it.
        #[arg(long, default_value = "127.0.0.1")]
        address: std::net::IpAddr,
        /// Where to write a kubeconfig for kubectl (`kubectl --kubeconfig FILE get nodes`).
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Seed of the sim's randomness (pod names, uids).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How much faster than real time the sim's clock runs.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
}

#[tokio::main]
async fn main() {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("upgradectl: {e:#}");
        std::process::exit(1);
    }
}

/// `upgradectl events | head`: when the reader goes away, stop quietly instead of panicking
/// in `println!` (Rust ignores SIGPIPE, so the write fails with EPIPE).
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info)
    }));
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.socket).with_timeout(Duration::from_secs_f64(cli.timeout));
    match cli.cmd {
        Cmd::Plan {
            snapshot,
            to,
            policy,
            output,
            runbook,
            start,
        } => {
            let blocked = plan(&snapshot, to, policy, &output, runbook, start)?;
            if blocked {
                std::process::exit(2);
            }
        }
        Cmd::Watch { interval_ms } => watch(&client, interval_ms).await?,
        Cmd::Start { to, dry_run, force } => {
            let v = client
                .json(
                    Method::POST,
                    "/v1/runs",
                    Some(&json!({ "target": to, "dryRun": dry_run, "force": force })),
                )
                .await?;
            print_plan(&v["plan"]);
            match v["run"].as_str() {
                Some(run) => println!("\nstarted run {run}; follow it with `upgradectl events -f`"),
                None if dry_run => println!("\n(dry run: nothing recorded)"),
                None => println!("\nnothing to do: no run was recorded"),
            }
        }
        Cmd::Status { json } => {
            let v = client.json(Method::GET, "/v1/status", None).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v["active"])?);
            } else {
                print_status(&v["active"]);
            }
        }
        Cmd::Pause { reason } => {
            let v = client
                .json(
                    Method::POST,
                    "/v1/run/pause",
                    Some(&json!({ "reason": reason })),
                )
                .await?;
            println!("paused run {}", v["run"].as_str().unwrap_or("?"));
        }
        Cmd::Resume => {
            let v = client.json(Method::POST, "/v1/run/resume", None).await?;
            println!("resumed run {}", v["run"].as_str().unwrap_or("?"));
        }
        Cmd::Abort { reason } => {
            let v = client
                .json(
                    Method::POST,
                    "/v1/run/abort",
                    Some(&json!({ "reason": reason })),
                )
                .await?;
            println!(
                "aborting run {}: nodes it cordoned are being uncordoned",
                v["run"].as_str().unwrap_or("?")
            );
        }
        Cmd::Events { run, from, follow } => {
            let run = match run {
                Some(r) => r,
                None => active_run(&client).await?,
            };
            client
                .lines(
                    &format!("/v1/runs/{run}/events?from={from}&follow={follow}"),
                    |l| {
                        println!("{l}");
                        true
                    },
                )
                .await?;
        }
        Cmd::Runs => {
            let v = client.json(Method::GET, "/v1/runs", None).await?;
            for r in v.as_array().into_iter().flatten() {
                println!(
                    "{}  {:<10} {:<8} {} records",
                    s(&r["run"]),
                    s(&r["phase"]),
                    s(&r["target"]),
                    r["records"]
                );
            }
        }
        Cmd::Demo { to, keep } => demo(&to, keep).await?,
        Cmd::Sim {
            cmd:
                SimCmd::Serve {
                    scenario,
                    port,
                    address,
                    kubeconfig,
                    seed,
                    speed,
                },
        } => sim_serve(&scenario, address, port, &kubeconfig, seed, speed).await?,
    }
    Ok(())
}

fn s(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

async fn active_run(client: &Client) -> anyhow::Result<String> {
    let v = client.json(Method::GET, "/v1/status", None).await?;
    v["active"]["run"]
        .as_str()
        .map(str::to_string)
        .context("no run yet: start one with `upgradectl start --to vX.Y.Z`")
}

fn print_plan(plan: &Value) {
    match serde_json::from_value::<upgraded_planner::PlanReport>(plan.clone()) {
        Ok(report) => print!("{}", upgraded_planner::render::table(&report)),
        Err(_) => println!("{}", serde_json::to_string_pretty(plan).unwrap_or_default()),
    }
}

/// Redraws the progress view until the run completes or is aborted (Ctrl-C stops watching,
/// not the run). On a terminal the screen is redrawn; otherwise a view is printed when it
/// changes.
async fn watch(client: &Client, interval_ms: u64) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let tty = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let v = client.json(Method::GET, "/v1/status", None).await?;
        let a = &v["active"];
        let view = upgraded_ctl::watch::render(a);
        if view != last {
            if tty {
                print!("\x1b[H\x1b[2J");
            }
            println!("{view}");
            last = view;
        }
        if upgraded_ctl::watch::finished(a) || a.is_null() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(interval_ms.max(50))).await;
    }
}

fn print_status(a: &Value) {
    if a.is_null() {
        println!("no run yet");
        return;
    }
    println!(
        "run {}  {}  target {}",
        s(&a["run"]),
        s(&a["phase"]),
        s(&a["target"])
    );
    if let Some(r) = a["reason"].as_str() {
        println!("  reason: {r}");
    }
    for n in a["nodes"].as_array().into_iter().flatten() {
        let step = n["step"].as_str().unwrap_or("-");
        let err = n["lastError"]
            .as_str()
            .map(|e| format!("  ({e})"))
            .unwrap_or_default();
        println!(
            "  {:<14} batch {:<3} {:<12} {}{}",
            s(&n["name"]),
            n["batch"],
            s(&n["phase"]),
            step,
            err
        );
    }
}

/// `upgradectl sim serve`: the scenario on a real clock until Ctrl-C.
async fn sim_serve(
    scenario: &str,
    address: std::net::IpAddr,
    port: u16,
    kubeconfig: &std::path::Path,
    seed: u64,
    speed: f64,
) -> anyhow::Result<()> {
    let world = upgraded_sim::scenario::build(scenario, upgraded_sim::Clock::real(speed), seed)?;
    let listener = tokio::net::TcpListener::bind((address, port))
        .await
        .with_context(|| format!("binding {address}:{port}"))?;
    let url = format!("http://{}", listener.local_addr()?);
    std::fs::write(kubeconfig, upgraded_sim::kubeconfig(&url))
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    let sim = upgraded_sim::Sim::new(world);
    {
        let w = sim.world();
        println!(
            "sim: scenario {scenario}: {} nodes, {} pods, {} PodDisruptionBudgets; serving {url}",
            w.nodes.len(),
            w.pods.len(),
            w.pdbs.len()
        );
    }
    println!(
        "sim: kubeconfig written to {}; try `kubectl --kubeconfig {} get nodes -o wide`",
        kubeconfig.display(),
        kubeconfig.display()
    );
    upgraded_sim::server::serve(listener, sim, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    println!("sim: stopped");
    Ok(())
}

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
    let mut w = server.sim.world();
    if w.pods
        .contains_key(&("default".to_string(), "debug-shell".to_string()))
    {
        w.delete_pod("default", "debug-shell", Some(0))?;
        println!(
            "  operator: deleted the unmanaged pod default/debug-shell (nothing would recreate it)"
        );
    }
    let v1: Vec<String> = w
        .nodes
        .values()
        .filter(|n| {
            n.annotations
                .get(upgraded_sim::scenario::CGROUP_KEY)
                .map(String::as_str)
                == Some("v1")
        })
        .map(|n| n.name.clone())
        .collect();
    for name in v1 {
        let n = &w.nodes[&name];
        let (labels, mut annotations, taints) =
            (n.labels.clone(), n.annotations.clone(), n.taints.clone());
        annotations.insert(upgraded_sim::scenario::CGROUP_KEY.into(), "v2".into());
        w.set_node_meta(&name, labels, annotations, taints)?;
        println!("  operator: rebooted {name} with cgroup v2 (kubelet 1.35 refuses cgroup v1)");
    }
    Ok(())
}

/// Runs a private daemon against the embedded sim — the real Kubernetes adapter over the
/// sim's HTTP API, node agents acting on its machines — and upgrades the seed cluster,
/// showing every step as it happens.
async fn demo(to: &str, keep: Option<PathBuf>) -> anyhow::Result<()> {
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
        if client.json(Method::GET, "/v1/status", None).await.is_ok() {
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
        .json(
            Method::POST,
            "/v1/runs",
            Some(&json!({ "target": to, "dryRun": true })),
        )
        .await?;
    let blockers = dry["plan"]["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["severity"] == "blocker")
        .count();
    if blockers > 0 {
        println!("the daemon's plan (from the live cluster) has {blockers} blocker(s):");
        for f in dry["plan"]["findings"].as_array().into_iter().flatten() {
            if f["severity"] == "blocker" {
                println!("  {}: {}", s(&f["code"]), s(&f["message"]));
            }
        }
        demo_fix_blockers(&sim)?;
        println!();
    }
    let v = client
        .json(Method::POST, "/v1/runs", Some(&json!({ "target": to })))
        .await?;
    print_plan(&v["plan"]);
    println!();
    let run = s(&v["run"]);
    let started = std::time::Instant::now();
    client
        .lines(&format!("/v1/runs/{run}/events?follow=true"), |l| {
            if let Ok(r) = serde_json::from_str::<Value>(l) {
                println!("{}", describe(&r));
            }
            true
        })
        .await?;
    let st = client
        .json(Method::GET, &format!("/v1/runs/{run}"), None)
        .await?;
    println!(
        "\nrun {run}: {} in {:.1} s (real time)",
        s(&st["phase"]),
        started.elapsed().as_secs_f64()
    );
    print_status(&st);
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
    println!(
        "cluster now: kubelets {at:?}; {} of {} pods Ready; cordoned: {}",
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

/// One readable line per record.
fn describe(r: &Value) -> String {
    let seq = r["seq"].as_u64().unwrap_or(0);
    let (kind, body) = r["event"]
        .as_object()
        .and_then(|o| o.iter().next())
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap_or_else(|| (s(&r["event"]), Value::Null));
    let step = |b: &Value| match &b["step"] {
        Value::String(x) => x.clone(),
        Value::Object(o) => o
            .iter()
            .next()
            .map(|(k, v)| {
                format!(
                    "{k} {}",
                    v["version"]
                        .as_str()
                        .map_or_else(|| v.to_string(), |x| x.to_string())
                )
            })
            .unwrap_or_default(),
        other => other.to_string(),
    };
    let what = match kind.as_str() {
        "StepStarted" => format!(
            "{:<12} ▶ {} (attempt {})",
            s(&body["node"]),
            step(&body),
            body["attempt"]
        ),
        "StepSucceeded" => format!("{:<12} ✓ {}", s(&body["node"]), step(&body)),
        "StepFailed" => format!(
            "{:<12} ✗ {}: {}",
            s(&body["node"]),
            step(&body),
            s(&body["error"])
        ),
        "StepProbed" => format!(
            "{:<12} ? {} probed: done={}",
            s(&body["node"]),
            step(&body),
            body["done"]
        ),
        "ClusterObserved" => format!(
            "run: cluster observed: {} nodes, {} pods, {} budgets; apiserver {}",
            body["inventory"]["nodes"].as_array().map_or(0, Vec::len),
            body["inventory"]["pods"].as_array().map_or(0, Vec::len),
            body["inventory"]["pdbs"].as_array().map_or(0, Vec::len),
            s(&body["apiserver"])
        ),
        "RunPlanned" => format!(
            "run: plan recorded: {} batch(es), {} node pass(es) to {}",
            body["plan"]["batches"].as_array().map_or(0, Vec::len),
            body["plan"]["batches"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| b["nodes"].as_array().map_or(0, Vec::len))
                .sum::<usize>(),
            s(&body["target"])
        ),
        "EvictionBlocked" => format!(
            "{:<12} ⏸ eviction of {} refused by {} (disruptionsAllowed {}); retrying",
            s(&body["node"]),
            s(&body["pod"]),
            s(&body["pdb"]),
            body["disruptions_allowed"]
        ),
        "NodeParked" => format!(
            "{:<12} ⏏ parked{}: {}",
            s(&body["node"]),
            if body["uncordon"] == true {
                " (uncordoned)"
            } else {
                " (left cordoned)"
            },
            s(&body["reason"])
        ),
        other => format!(
            "run: {other} {}",
            if body.is_null() {
                String::new()
            } else {
                body.to_string()
            }
        ),
    };
    format!("{seq:>4}  {what}")
}

/// `upgradectl plan`: prints the plan; returns whether it is blocked.
fn plan(
    snapshot: &std::path::Path,
    to: Option<String>,
    policy: Option<PathBuf>,
    output: &str,
    runbook: bool,
    start: Option<String>,
) -> anyhow::Result<bool> {
    use upgraded_events::inventory::Inventory;
    use upgraded_planner::{self as planner, PlanInput, policy::PlanPolicy};
    let text = if snapshot.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading stdin")?;
        s
    } else {
        std::fs::read_to_string(snapshot)
            .with_context(|| format!("reading the snapshot {}", snapshot.display()))?
    };
    let inventory = Inventory::from_kubectl_json(&text)
        .with_context(|| format!("in {}", snapshot.display()))?;
    let policy = match &policy {
        Some(p) => {
            let y = std::fs::read_to_string(p)
                .with_context(|| format!("reading the policy {}", p.display()))?;
            PlanPolicy::from_yaml(&y).with_context(|| format!("in {}", p.display()))?
        }
        None => PlanPolicy::default(),
    };
    let target = match to {
        Some(t) => Some(
            upgraded_events::Version::parse_release(&t)
                .with_context(|| format!("--to {t:?}: expected a version like v1.35.3"))?,
        ),
        None => None,
    };
    let start = match start {
        Some(s) => {
            let t: i64 = s
                .parse::<jiff::Timestamp>()
                .with_context(|| {
                    format!("--start {s:?}: expected RFC 3339 like 2026-11-24T20:00:00Z")
                })?
                .as_millisecond();
            upgraded_events::Timestamp(t)
        }
        None => upgraded_events::Timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0),
        ),
    };
    let report = planner::plan(PlanInput {
        inventory: &inventory,
        policy: &policy,
        target,
        start,
    })?;
    if runbook {
        print!("{}", planner::render::runbook(&report));
    } else {
        match output {
            "table" => print!("{}", planner::render::table(&report)),
            "json" => println!("{}", serde_json::to_string_pretty(&report)?),
            o => bail!("-o {o:?}: expected table or json"),
        }
    }
    Ok(report.blocked)
}
