//! Chaos in virtual time on the in-process harness (issue 27, first part): whole upgrades of
//! the lab while the API server refuses connections, answers 500/503 (with and without
//! `Retry-After`) or 429, or hangs. An outage around a step is retried without using the
//! step's attempts; a long one pauses the run with the reason, and a resume goes on. And
//! node agents that drop the connection before or after a command, or hang: the step is in
//! doubt, probed before it is redone, and nothing is done twice on a machine.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::Method;
use serde_json::Value;
use upgraded_events::Timestamp;
use upgraded_harness::faults::{ApiFault, ApiFaults, NodeFault, NodeFaults, NodeWindow, Window};
use upgraded_harness::{Harness, Options, scenario};
use upgraded_planner::policy::PlanPolicy;

const POLICY: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 1, canaries: 1}
canarySoak: 5m
waitBetweenBatches: 1m
drainTimeout: 10m
retries: {maxAttempts: 3, backoff: 10s, maxBackoff: 1m}
outage: {pauseAfter: 15m}
";

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The lab and a harness whose API faults follow `windows` (times from the start).
async fn lab(windows: &[(i64, i64, ApiFault)]) -> (Harness, std::sync::Arc<ApiFaults>) {
    let faults = ApiFaults::new(Vec::new());
    let h = Harness::with(
        scenario("lab", 7),
        PlanPolicy::from_yaml(POLICY).expect("policy"),
        Options {
            api_faults: Some(faults.clone()),
            ..Options::default()
        },
    )
    .await;
    let t0 = h.now().0;
    for (from, until, fault) in windows {
        faults.add(Window {
            from: Timestamp(t0 + from),
            until: Timestamp(t0 + until),
            fault: *fault,
        });
    }
    (h, faults)
}

/// Each node as the upgrade left it: kubelet, packages, cordoned.
fn nodes(h: &Harness) -> BTreeMap<String, String> {
    h.sim
        .world()
        .nodes
        .iter()
        .map(|(name, n)| {
            (
                name.clone(),
                format!("{} {:?} {}", n.kubelet, n.packages, n.unschedulable),
            )
        })
        .collect()
}

/// How many times each (entry, step) succeeded.
fn successes(events: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in events {
        if let Some(s) = e["event"].get("StepSucceeded") {
            *out.entry(format!("{} {}", s["node"], s["step"]))
                .or_insert(0) += 1;
        }
    }
    out
}

async fn upgrade(h: &mut Harness) -> (Value, Vec<Value>) {
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let end = h
        .until(DAY, |a| {
            ["completed", "halted", "paused"].contains(&a["phase"].as_str().unwrap_or(""))
        })
        .await;
    let events = h.events(&run).await;
    (end, events)
}

#[tokio::test(start_paused = true)]
async fn outages_of_every_kind_are_ridden_out_and_change_nothing_that_is_done() {
    let (mut calm, _) = lab(&[]).await;
    let (end, events) = upgrade(&mut calm).await;
    assert_eq!(end["phase"], "completed");
    let want_nodes = nodes(&calm);
    let want_steps = successes(&events);
    assert!(want_steps.values().all(|n| *n == 1));

    for fault in [
        ApiFault::Status {
            code: 503,
            retry_after: None,
        },
        ApiFault::Status {
            code: 500,
            retry_after: Some(5),
        },
        ApiFault::Status {
            code: 429,
            retry_after: Some(5),
        },
        ApiFault::Refused,
        ApiFault::Hang,
    ] {
        // 90 s in every 10 minutes, for two hours: longer than three attempts' backoff.
        let windows: Vec<_> = (0..12)
            .map(|i| (i * 600_000 + 120_000, i * 600_000 + 210_000, fault))
            .collect();
        let (mut h, faults) = lab(&windows).await;
        let (end, events) = upgrade(&mut h).await;
        assert_eq!(end["phase"], "completed", "{fault:?}: {end}");
        assert!(
            faults.met().get(fault.kind()).copied().unwrap_or(0) >= 1,
            "{fault:?} was met: {:?}",
            faults.met()
        );
        assert_eq!(
            nodes(&h),
            want_nodes,
            "{fault:?}: the same cluster at the end"
        );
        assert_eq!(
            successes(&events),
            want_steps,
            "{fault:?}: each step done once"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_long_outage_pauses_the_run_saying_what_did_not_answer_and_resume_goes_on() {
    // The API server answers 503 from minute 2 to minute 40; the policy pauses after 15.
    let fault = ApiFault::Status {
        code: 503,
        retry_after: None,
    };
    let (mut h, faults) = lab(&[(120_000, 2_400_000, fault)]).await;
    let (end, _) = upgrade(&mut h).await;
    assert_eq!(end["phase"], "paused", "{end}");
    let reason = end["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("could not reach") && reason.contains("503") && reason.contains("900s"),
        "{reason}"
    );
    assert!(
        faults.met()["api-5xx"] > 3,
        "retried past the step's three attempts: {:?}",
        faults.met()
    );
    // Once the API answers again, a resume carries the run to its end.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    h.json(Method::POST, "/v1/run/resume", None)
        .await
        .expect("resume");
    let end = h.until_phase("completed", DAY).await;
    assert_eq!(end["phase"], "completed");
}

#[tokio::test(start_paused = true)]
async fn lost_answers_from_the_nodes_are_probed_and_nothing_is_done_twice() {
    let (mut calm, _) = lab(&[]).await;
    let (end, events) = upgrade(&mut calm).await;
    assert_eq!(end["phase"], "completed");
    let want_effects = calm.sim.world().effects.clone();
    let want_steps = successes(&events);
    assert!(!want_effects.is_empty());

    // Lost answers after the command ran, at six phases of a 3-minute cycle (so every kind of
    // command meets one in some run), then lost requests and hangs.
    let schedules = (0..6)
        .map(|k| (NodeFault::DropAfter, k * 30_000))
        .chain([(NodeFault::DropBefore, 0), (NodeFault::Hang, 0)]);
    let mut met_all: BTreeMap<&str, u64> = BTreeMap::new();
    for (fault, offset) in schedules {
        let node_faults = NodeFaults::new();
        // 40 s in every 3 minutes, for three hours, on every node.
        let mut h = Harness::with(
            scenario("lab", 7),
            PlanPolicy::from_yaml(POLICY).expect("policy"),
            Options {
                node_faults: Some(node_faults.clone()),
                ..Options::default()
            },
        )
        .await;
        let t0 = h.now().0;
        for i in 0..60 {
            node_faults.add(NodeWindow {
                node: None,
                from: Timestamp(t0 + offset + i * 180_000 + 60_000),
                until: Timestamp(t0 + offset + i * 180_000 + 100_000),
                fault,
            });
        }
        let (end, events) = upgrade(&mut h).await;
        assert_eq!(end["phase"], "completed", "{fault:?}: {end}");
        let met = node_faults.met();
        assert!(
            met.get(fault.kind()).copied().unwrap_or(0) >= 1,
            "{fault:?}: {met:?}"
        );
        assert_eq!(
            h.sim.world().effects,
            want_effects,
            "{fault:?} at +{offset} ms: every effect on the machines once, as in a calm run"
        );
        assert_eq!(
            successes(&events),
            want_steps,
            "{fault:?}: each step done once"
        );
        for (k, n) in met {
            *met_all.entry(k).or_default() += n;
        }
    }
    eprintln!("node faults met: {met_all:?}");
}
