//! `upgradectl plan`: a plan from a cluster snapshot, offline (no daemon, no cluster).

use std::path::PathBuf;

use anyhow::{Context, bail};

/// `upgradectl plan`: prints the plan; returns whether it is blocked.
pub fn run(
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
