//! `upgradectl plan`: a plan from a cluster snapshot, offline (no daemon, no cluster).

use std::path::PathBuf;

use anyhow::{Context, bail};

/// The captured API usage the removed-API gate reads: each instance's metrics (named by
/// `NAME=` or the file's stem; read at the file's modification time) and Helm's releases.
fn api_usage(
    metrics: &[String],
    helm: Option<&std::path::Path>,
) -> anyhow::Result<upgraded_events::apis::ApiUsage> {
    let mut usage = upgraded_events::apis::ApiUsage::default();
    for m in metrics {
        let (name, file) = match m.split_once('=') {
            Some((n, f)) if !n.is_empty() && !n.contains('/') => (n.to_string(), PathBuf::from(f)),
            _ => {
                let file = PathBuf::from(m);
                let stem = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_else(|| m.clone());
                (stem, file)
            }
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("--apiserver-metrics: reading {}", file.display()))?;
        let read_at = std::fs::metadata(&file)
            .and_then(|md| md.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let a = upgraded_planner::apis::parse_metrics(&name, &text, read_at)
            .with_context(|| format!("--apiserver-metrics {}", file.display()))?;
        if usage.apiservers.iter().any(|b| b.instance == a.instance) {
            bail!("--apiserver-metrics: instance {name:?} given twice (name each file: NAME=FILE)");
        }
        usage.apiservers.push(a);
    }
    if let Some(h) = helm {
        let text = std::fs::read_to_string(h)
            .with_context(|| format!("--helm-secrets: reading {}", h.display()))?;
        usage.helm = upgraded_planner::apis::helm_objects(&text)
            .with_context(|| format!("--helm-secrets {}", h.display()))?;
    }
    Ok(usage)
}

/// `upgradectl plan`: prints the plan; returns whether it is blocked.
pub fn run(args: crate::cli::PlanArgs) -> anyhow::Result<bool> {
    use upgraded_events::inventory::Inventory;
    use upgraded_planner::{self as planner, PlanInput, policy::PlanPolicy};
    let crate::cli::PlanArgs {
        snapshot,
        to,
        policy,
        output,
        runbook,
        start,
        apiserver_metrics,
        helm_secrets,
    } = args;
    let snapshot = snapshot.as_path();
    let output = output.as_str();
    let text = if snapshot.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading stdin")?;
        s
    } else {
        std::fs::read_to_string(snapshot)
            .with_context(|| format!("reading the snapshot {}", snapshot.display()))?
    };
    let mut inventory = Inventory::from_kubectl_json(&text)
        .with_context(|| format!("in {}", snapshot.display()))?;
    let usage = api_usage(&apiserver_metrics, helm_secrets.as_deref())?;
    inventory.api_usage.apiservers = usage.apiservers;
    inventory.api_usage.helm = usage.helm;
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
