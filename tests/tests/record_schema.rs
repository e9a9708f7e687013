//! Every record's JSON form matches `schemas/record.schema.json` (generated from the types;
//! `planner/tests/planner.rs` fails when it is stale): one of every kind from the golden
//! samples, and every record of a real upgrade and of a rollback on the harness.

use std::time::Duration;

use upgraded_harness::{Harness, scenario};
use upgraded_tests::records;

const DAY: Duration = Duration::from_secs(24 * 3600);

#[test]
fn one_record_of_every_kind_matches_the_schema() {
    let v = records::validator();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../events/tests/golden");
    let mut kinds = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("golden samples") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("sample");
        let record = upgraded_events::codec::decode(&bytes)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        kinds.insert(record.event.kind().name());
        records::assert_valid(&v, &serde_json::to_value(&record).expect("JSON"));
    }
    assert_eq!(
        kinds.len(),
        upgraded_events::EventKind::ALL.len(),
        "a sample of every kind: {kinds:?}"
    );
    // The schema is not a rubber stamp: a record with a misspelt field is refused.
    let mut bad = serde_json::json!({"run": "01930000-0000-7000-8000-000000000001", "seq": 1, "at": 0,
        "event": {"RunHalted": {"reasn": "typo"}}});
    assert!(!v.is_valid(&bad));
    bad["event"] = serde_json::json!({"RunHalted": {"reason": "kept"}});
    assert!(v.is_valid(&bad), "{bad}");
}

/// A whole upgrade of the lab and a rollback of one of its workers: every record matches.
#[tokio::test(start_paused = true)]
async fn every_record_of_an_upgrade_and_a_rollback_matches_the_schema() {
    let v = records::validator();
    let policy = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 1, canaries: 1}
canarySoak: 5m
waitBetweenBatches: 1m
";
    let mut h = Harness::new(scenario("lab", 7), policy).await;
    let started = h.start("v1.35.3").await.expect("start");
    let forward = started["run"].as_str().expect("run").to_string();
    h.until_phase("completed", DAY).await;
    let r = h
        .json(
            hyper::Method::POST,
            "/v1/rollbacks",
            Some(&serde_json::json!({"nodes": ["w-1"]})),
        )
        .await
        .expect("rollback");
    let back = r["run"].as_str().expect("run").to_string();
    h.until(DAY, |st| {
        st["run"] == back.as_str() && st["phase"] == "completed"
    })
    .await;
    let mut n = 0;
    for run in [&forward, &back] {
        for e in h.events(run).await {
            records::assert_valid(&v, &e);
            n += 1;
        }
    }
    assert!(n > 100, "only {n} records");
}
