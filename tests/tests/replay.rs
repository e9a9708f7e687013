//! Post-incident replay on the in-process harness: what `status` returned at every moment of
//! a run on the sim is what `replay --at` that moment folds from the log.

use std::cell::RefCell;
use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};
use upgraded_events::Record;
use upgraded_events::replay::{self, At};
use upgraded_harness::{Harness, scenario};

const POLICY: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 1, canaries: 1}
canarySoak: 5m
waitBetweenBatches: 1m
drainTimeout: 10m
retries: {backoff: 1s, maxBackoff: 5s}
";

const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test(start_paused = true)]
async fn replay_at_any_moment_equals_what_status_said_then() {
    let mut h = Harness::new(scenario("lab", 7), POLICY).await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run id").to_string();
    let seen: RefCell<Vec<Value>> = RefCell::new(Vec::new());
    // Every status the engine published until a worker is under way, then a pause by an
    // operator, a resume, and every status to the end.
    h.until(DAY, |s| {
        seen.borrow_mut().push(s.clone());
        s["nodes"].as_array().is_some_and(|ns| {
            ns.iter()
                .any(|n| n["name"] == "w-1" && n["phase"] != "pending")
        })
    })
    .await;
    h.json(
        Method::POST,
        "/v1/run/pause",
        Some(&json!({"reason": "look at w-1"})),
    )
    .await
    .expect("pause");
    h.until(DAY, |s| {
        seen.borrow_mut().push(s.clone());
        s["phase"] == "paused"
    })
    .await;
    // The operator looks for ten minutes.
    tokio::time::sleep(Duration::from_secs(600)).await;
    h.json(Method::POST, "/v1/run/resume", None)
        .await
        .expect("resume");
    h.until(DAY, |s| {
        seen.borrow_mut().push(s.clone());
        s["phase"] == "completed"
    })
    .await;

    let records: Vec<Record> = h
        .events(&run)
        .await
        .into_iter()
        .map(|r| serde_json::from_value(r).expect("a record"))
        .collect();
    let seen = seen.into_inner();
    assert!(seen.len() > 50, "only {} moments", seen.len());
    let mut compared = 0;
    for live in &seen {
        let Some(next) = live["nextSeq"].as_u64().filter(|n| *n > 0) else {
            continue;
        };
        let then = replay::at(&records, At::Seq(next - 1));
        let replayed = serde_json::to_value(&then.status).expect("json");
        assert_eq!(replayed, *live, "at seq {}", next - 1);
        compared += 1;
    }
    assert!(compared > 50, "{compared}");
    // Who paused it, and why, is in the replay from then on.
    let paused_at = records
        .iter()
        .find(|r| matches!(r.event, upgraded_events::Event::RunPaused { .. }))
        .expect("paused");
    let then = replay::at(&records, At::Time(paused_at.at));
    assert_eq!(then.status.phase.as_str(), "paused");
    assert_eq!(then.actions.len(), 1);
    assert_eq!(then.actions[0].what, "pause");
    assert_eq!(then.actions[0].reason, "look at w-1");
    // The same instant, said three ways.
    let start = records[0].at;
    let since = u64::try_from(paused_at.at.0 - start.0).expect("after the start");
    assert_eq!(
        replay::at(&records, At::SinceStart(since)),
        then,
        "+duration from the start"
    );
    let at = upgraded_events::window::rfc3339(paused_at.at);
    assert_eq!(
        At::parse(&at).expect("RFC 3339"),
        At::Time(upgraded_events::Timestamp(paused_at.at.0 / 1000 * 1000))
    );
    assert_eq!(At::parse("+1h30m"), Ok(At::SinceStart(5_400_000)));
    assert_eq!(At::parse("seq 42"), Ok(At::Seq(42)));
    assert!(At::parse("yesterday").is_err());
}
