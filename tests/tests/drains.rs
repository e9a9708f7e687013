//! Batches sized by capacity on the in-process harness: the drains of one batch run
//! concurrently and share the budgets they touch. The sim records each budget's lowest slack
//! after every change; none may go below zero, no drain may starve (time out) while the
//! others take the evictions, and no pod may be left Pending.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use upgraded_harness::{Harness, scenario};

const POLICY: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 40%, canaries: 0}
waitBetweenBatches: 0s
drainTimeout: 30m
retries: {backoff: 10s, maxBackoff: 1m}
";

const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test(start_paused = true)]
async fn drains_of_a_batch_share_budgets_without_breaking_or_starving() {
    let mut world = scenario("large-40", 3);
    world.watch_budgets();
    let mut h = Harness::new(world, POLICY).await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    h.until(2 * DAY, |a| {
        assert!(a["phase"] != "halted", "halted: {a:#}");
        a["phase"] == "completed"
    })
    .await;
    let evs = h.events(&run).await;

    // Batches of several workers were planned and ran.
    let plan = evs
        .iter()
        .map(|e| &e["event"]["RunPlanned"]["plan"])
        .find(|p| !p.is_null())
        .map(|p| match p.as_str() {
            Some(text) => serde_json::from_str::<Value>(text).expect("plan JSON"),
            None => p.clone(),
        })
        .expect("plan");
    let batches: Vec<Vec<String>> = plan["batches"]
        .as_array()
        .expect("batches")
        .iter()
        .map(|b| {
            b["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .filter_map(|n| n["name"].as_str().map(String::from))
                .collect()
        })
        .collect();
    let wide = batches.iter().filter(|b| b.len() > 1).count();
    assert!(wide > 0, "no batch holds more than one node: {batches:?}");

    // Budgets were contended: drains of one batch were refused by the same budget.
    let mut blocked: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in &evs {
        if let Some(b) = e["event"].get("EvictionBlocked") {
            blocked
                .entry(b["pdb"].as_str().unwrap_or_default().to_string())
                .or_default()
                .insert(b["node"].as_str().unwrap_or_default().to_string());
        }
    }
    let shared = batches.iter().any(|b| {
        blocked
            .values()
            .any(|nodes| b.iter().filter(|n| nodes.contains(*n)).count() > 1)
    });
    assert!(
        shared,
        "no budget was shared by two drains of a batch: {blocked:?}"
    );
    // No drain starved: every drain succeeded at its first attempt.
    let failed: Vec<&Value> = evs
        .iter()
        .filter_map(|e| e["event"].get("StepFailed"))
        .filter(|f| f["step"] == "Drain")
        .collect();
    assert!(failed.is_empty(), "drains failed: {failed:?}");
    // Every budget held at every moment, and every pod found a place.
    let w = h.sim.world();
    let low = w.budget_low_water.clone().expect("watched");
    assert!(!low.is_empty());
    for (pdb, slack) in &low {
        assert!(
            *slack >= 0,
            "{pdb} went {slack} below its desired healthy count"
        );
    }
    let pending: Vec<String> = w
        .pods
        .values()
        .filter(|p| p.node.is_none())
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect();
    assert!(pending.is_empty(), "left Pending: {pending:?}");
}
