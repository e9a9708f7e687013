//! `upgraded-rehearse`: the daemon's engine upgrading a simulated copy of a cluster, in
//! virtual time; what `upgradectl rehearse` runs. Nothing runs against a real cluster.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use upgraded_events::inventory::Inventory;
use upgraded_events::replay::At;
use upgraded_events::{Timestamp, Version};
use upgraded_harness::rehearse::{self, Cluster, Fault, Rehearsal};
use upgraded_planner::policy::PlanPolicy;

#[derive(Debug, Parser)]
#[command(
    name = "upgradectl rehearse",
    bin_name = "upgradectl rehearse",
    version,
    about = "Rehearse an upgrade: the real engine, planner to completion, on a simulated copy of \
             the cluster, in virtual time (seconds for hours). Nothing runs against a cluster."
)]
struct Args {
    /// The cluster, as `kubectl get nodes,pods,pdb,deploy,sts,ds -A -o json` prints it
    /// (the snapshot `upgradectl plan` reads); `-` for stdin.
    #[arg(
        long,
        required_unless_present = "scenario",
        conflicts_with = "scenario"
    )]
    snapshot: Option<PathBuf>,
    /// A built-in simulated cluster instead (seed, lab, lab-ha, large-N).
    #[arg(long)]
    scenario: Option<String>,
    /// The policy (YAML, `kind: UpgradePolicy`); without one, the defaults.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The target version (default: the policy's `target`).
    #[arg(long)]
    to: Option<String>,
    /// table or json.
    #[arg(short = 'o', long = "output", default_value = "table", value_parser = ["table", "json"])]
    output: String,
    /// Also write the rehearsed run's timeline as an HTML page (a new file, 0600).
    #[arg(long)]
    timeline_html: Option<PathBuf>,
    /// Break something on purpose (repeatable): kubelet-fails:GENERATION@VERSION,
    /// never-ready:NODE, crash-loop:KEY=VALUE@VERSION, blocking-pdb:NAMESPACE/NAME,
    /// slow-drain:NODE=SECONDS, net-broken:GENERATION@VERSION,
    /// storage-broken:GENERATION@VERSION, devices-lost:NODE@VERSION,
    /// apiserver-broken:NODE@VERSION, deprecated-api:NODE:GROUP/VERSION/RESOURCE,
    /// drift:NODE:FIELD=VALUE (kernel, os-image, container-runtime, cgroup, containerd-config,
    /// swap, reboot-required, kernel-installed, kubelet-flag, kubelet.KEY),
    /// dns-broken@VERSION.
    #[arg(long = "fault")]
    faults: Vec<Fault>,
    /// First do what the plan's usual blockers ask: delete pods without a controller, move
    /// cgroup v1 machines to v2 (a blocked plan is otherwise rehearsed as it stands).
    #[arg(long)]
    assume_fixed: bool,
    /// Helm 3's deployed releases, as `kubectl get secrets -A -l owner=helm,status=deployed
    /// -o json` prints them: put in the rehearsed cluster, where the start finds objects at
    /// an API version the target removes.
    #[arg(long)]
    helm_secrets: Option<PathBuf>,
    /// Skip the second rehearsal, one node at a time (no ratio).
    #[arg(long)]
    no_compare: bool,
    /// When the rehearsed run starts, RFC 3339 (`2026-12-01T19:00:00Z`): the policy's
    /// maintenance windows are met from then on. Default: 2026-01-05T06:00:00Z, a Monday,
    /// so a rehearsal gives the same answer whenever it runs.
    #[arg(long)]
    start: Option<String>,
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(3),
        Err(e) => {
            eprintln!("upgradectl rehearse: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Whether the rehearsed run completed with every budget kept and no pod left Pending.
fn run(a: Args) -> anyhow::Result<bool> {
    let cluster = match (&a.snapshot, &a.scenario) {
        (Some(path), _) => {
            let text = if path.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?
            } else {
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the snapshot {}", path.display()))?
            };
            let inv = Inventory::from_kubectl_json(&text)
                .with_context(|| format!("in {}", path.display()))?;
            Cluster::Snapshot(Box::new(inv))
        }
        (None, Some(name)) => Cluster::Scenario(name.clone()),
        (None, None) => bail!("give --snapshot FILE or --scenario NAME"),
    };
    let policy = match &a.policy {
        Some(p) => {
            let y = std::fs::read_to_string(p)
                .with_context(|| format!("reading the policy {}", p.display()))?;
            PlanPolicy::from_yaml(&y).with_context(|| format!("in {}", p.display()))?
        }
        None => PlanPolicy::default(),
    };
    let target = match (&a.to, policy.target) {
        (Some(t), _) => Version::parse_release(t)
            .with_context(|| format!("--to {t:?}: expected a version like v1.35.3"))?,
        (None, Some(t)) => t,
        (None, None) => bail!("give --to VERSION (the policy names no target)"),
    };
    if let Some(p) = &a.timeline_html
        && p.exists()
    {
        bail!(
            "--timeline-html {}: the file exists (it is never overwritten)",
            p.display()
        );
    }
    let start = match &a.start {
        None => Timestamp(upgraded_sim::clock::VIRTUAL_EPOCH as i64),
        Some(s) => match At::parse(s) {
            Ok(At::Time(t)) => t,
            _ => bail!("--start {s:?}: expected an RFC 3339 time like 2026-12-01T19:00:00Z"),
        },
    };
    let helm_secrets = match &a.helm_secrets {
        None => Vec::new(),
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("--helm-secrets: reading {}", p.display()))?;
            // Checked as the planner reads them, so a wrong file is named here.
            upgraded_planner::apis::helm_objects(&text)
                .with_context(|| format!("--helm-secrets {}", p.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("--helm-secrets {}", p.display()))?;
            match v["items"].as_array() {
                Some(items) => items.clone(),
                None => vec![v],
            }
        }
    };
    let r = Rehearsal {
        helm_secrets,
        start,
        cluster,
        policy,
        target,
        faults: a.faults,
        assume_fixed: a.assume_fixed,
        compare: !a.no_compare,
    };
    let (report, records) = rehearse::rehearse(&r).map_err(anyhow::Error::msg)?;
    match a.output.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&report)?),
        _ => print!("{}", rehearse::table(&report)),
    }
    if let Some(path) = &a.timeline_html {
        let t = upgraded_events::timeline::of(&records);
        let page = upgraded_ctl::render::timeline::html::html(&t);
        upgraded_ctl::write_private(path, page.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        if a.output == "table" {
            println!(
                "timeline written to {} ({} bytes)",
                path.display(),
                page.len()
            );
        }
    }
    let p = &report.planned;
    Ok(p.outcome == "completed" && p.budget_violations.is_empty() && p.pending_pods.is_empty())
}
