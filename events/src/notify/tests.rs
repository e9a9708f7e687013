//! The notices a run makes, Slack's coalescing, and the answer table, a row per case.

use super::*;
use crate::event::Facts;
use crate::plan::{Batch, NodePlan, Role};
use crate::{Actor, Entry, Host, Json, Policy};

fn plan() -> Plan {
    let v = Version::new(1, 34, 6);
    let node = |n: &str| NodePlan {
        name: Entry::new(n),
        host: Some(Host::new(n)),
        role: Role::Worker,
        from: Version::new(1, 33, 9),
        steps: vec![
            Step::Drain,
            Step::UpgradePackages { version: v },
            Step::Soak,
        ],
        estimate_secs: 0,
    };
    Plan {
        target: Some(v),
        batches: vec![
            Batch {
                label: "canary r640: w-1".into(),
                phase: String::new(),
                nodes: vec![node("w-1")],
            },
            Batch {
                label: "r640 1/1".into(),
                phase: String::new(),
                nodes: vec![node("w-2"), node("w-3")],
            },
        ],
        undoes: None,
    }
}

fn rec(seq: u64, at: i64, event: Event) -> Record {
    Record {
        run: RunId::from_u128(7),
        seq,
        at: Timestamp(at),
        epoch: 0,
        event,
    }
}

fn fold_all(records: &[Record]) -> Vec<Notice> {
    let mut f = NoticeFold::new("prod", "https://ops/t/{run}.html", "upgradectl");
    records.iter().flat_map(|r| f.apply(r)).collect()
}

fn step_done(seq: u64, at: i64, node: &str, step: Step) -> Record {
    rec(
        seq,
        at,
        Event::StepSucceeded {
            node: Entry::new(node),
            step,
            attempt: 1,
            facts: Facts::new(),
        },
    )
}

fn started(seq: u64, at: i64, node: &str) -> Record {
    rec(
        seq,
        at,
        Event::StepStarted {
            node: Entry::new(node),
            step: Step::Drain,
            attempt: 1,
        },
    )
}

fn a_run() -> Vec<Record> {
    vec![
        rec(
            0,
            0,
            Event::RunPlanned {
                target: Version::new(1, 34, 6),
                plan: Json(plan()),
                policy: Json(Policy::default()),
                by: Actor::daemon(),
            },
        ),
        rec(
            1,
            1_000,
            Event::RunStarted {
                by: Actor {
                    uid: Some(1000),
                    name: "alice".into(),
                },
            },
        ),
        started(2, 2_000, "w-1"),
        step_done(3, 62_000, "w-1", Step::Soak),
        started(4, 63_000, "w-2"),
        rec(
            5,
            70_000,
            Event::NodeParked {
                node: Entry::new("w-2"),
                reason: "db's budget allows no disruption".into(),
                uncordon: false,
            },
        ),
        started(6, 63_000, "w-3"),
        step_done(7, 200_000, "w-3", Step::Soak),
        rec(
            8,
            201_000,
            Event::RunHalted {
                reason: "w-2 is parked".into(),
            },
        ),
        rec(9, 300_000, Event::RunCompleted),
    ]
}

#[test]
fn records_become_typed_notices_with_what_to_do_next() {
    let n = fold_all(&a_run());
    let types: Vec<String> = n.iter().map(Notice::event_type).collect();
    assert_eq!(
        types,
        [
            "dev.upgraded.run.started",
            "dev.upgraded.canary.passed",
            "dev.upgraded.node.upgraded",
            "dev.upgraded.node.parked",
            "dev.upgraded.node.upgraded",
            "dev.upgraded.run.halted",
            "dev.upgraded.run.completed",
        ]
    );
    assert!(n[0].text.contains("alice"), "{}", n[0].text);
    assert!(n[3].text.contains("`upgradectl resume`"), "{}", n[3].text);
    assert_eq!(n[3].node.as_deref(), Some("w-2"));
    assert!(n[5].text.contains("w-2 is parked"));
    let done = &n[6].text;
    assert!(done.contains("v1.33.9 → v1.34.6"), "{done}");
    assert!(done.contains("slowest node w-3 (2m17s)"), "{done}");
    assert!(
        done.contains(&format!("https://ops/t/{}.html", RunId::from_u128(7))),
        "{done}"
    );
}

#[test]
fn a_cloudevent_carries_the_record_as_data_and_its_id() {
    let n = fold_all(&a_run());
    let ce = n[6].cloudevent("prod");
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["id"], format!("{}:9", RunId::from_u128(7)));
    assert_eq!(ce["type"], "dev.upgraded.run.completed");
    assert_eq!(ce["source"], "upgraded/prod");
    assert_eq!(ce["time"], "1970-01-01T00:05:00.000Z");
    assert_eq!(
        ce["data"],
        serde_json::to_value(&n[6].record).expect("json")
    );
}

#[test]
fn classes_default_to_all_but_node() {
    assert_eq!(
        Class::defaults(),
        BTreeSet::from([Class::Run, Class::Canary, Class::Rollback])
    );
}

#[test]
fn node_notices_in_a_row_fold_into_one_slack_message() {
    let n = fold_all(&a_run());
    let msgs = slack_messages(&n);
    // started | canary | node×3 (upgraded, parked, upgraded: one message) | halted | completed
    assert_eq!(msgs.len(), 5, "{msgs:#?}");
    assert!(msgs[2].1.starts_with("3 node events:"), "{}", msgs[2].1);
    assert_eq!(msgs[2].0, 7, "it covers up to the last of them");
    assert_eq!(msgs.last().map(|m| m.0), Some(9));
}

/// The answer table, a row per case.
#[test]
fn answers_are_delivered_retried_or_dropped() {
    let rows: &[(Option<u16>, Option<u64>, u32, Verdict)] = &[
        (Some(200), None, 0, Verdict::Delivered),
        (Some(204), None, 3, Verdict::Delivered),
        (Some(429), Some(7), 0, Verdict::Retry(7_000)),
        (
            Some(429),
            Some(86_400),
            0,
            Verdict::Retry(RETRY_AFTER_MAX_MS),
        ),
        (Some(429), None, 2, Verdict::Retry(2_000)),
        (Some(500), None, 0, Verdict::Retry(500)),
        (Some(503), None, 1, Verdict::Retry(1_000)),
        (Some(502), None, 30, Verdict::Retry(RETRY_MAX_MS)),
        (None, None, 0, Verdict::Retry(500)),
        (Some(400), None, 0, Verdict::Drop),
        (Some(401), None, 0, Verdict::Drop),
        (Some(404), None, 0, Verdict::Drop),
        (Some(410), None, 0, Verdict::Drop),
        (Some(301), None, 0, Verdict::Drop),
    ];
    for (status, after, failures, want) in rows {
        assert_eq!(
            verdict(*status, *after, *failures),
            *want,
            "{status:?} {after:?} {failures}"
        );
    }
}
