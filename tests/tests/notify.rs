//! Notifications from the real daemon on a fake world to receivers on loopback: a webhook
//! that fails and recovers gets every notice (deduplicated on its id), signed, as CloudEvents
//! whose data validates against the record schema; a sink that stays down costs failures,
//! not the run; Slack gets node notices coalesced, never more than one message a second;
//! `upgradectl notify test` says what the sink answered; a missing key stops the daemon.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use upgraded_ctl::Client;
use upgraded_events::Record;
use upgraded_events::notify::{Class, NoticeFold};

use common::receiver::{Receiver, Request};
use common::{run_events, start_run, wait_completed, wait_ready};

/// The fake-run policy with `sinks` as its notifications.
fn policy(dir: &Path, sinks: &str, generations: &str) -> std::path::PathBuf {
    let p = dir.join("notify-policy.yaml");
    let text = common::FAKE_RUN_POLICY
        .replace("generations: {maxUnavailable: 2, canaries: 1}", generations)
        + "notifications:\n"
        + sinks;
    std::fs::write(&p, text).expect("policy");
    p
}

async fn daemon(
    dir: &Path,
    workers: usize,
    policy: &Path,
    extra: &[&str],
) -> (common::Daemon, Client) {
    let mut c = common::quick_fake_world_with(dir, workers, policy);
    c.args(extra);
    let mut d = common::Daemon::from_child(c.spawn().expect("spawn"));
    let client = Client::new(&dir.join("api.sock"));
    wait_ready(&client, &mut d).await;
    (d, client)
}

async fn records(client: &Client, run: &str) -> Vec<Record> {
    run_events(client, run)
        .await
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("a record"))
        .collect()
}

/// The notices the log makes, of these classes: (id, type).
fn expected(records: &[Record], classes: &[Class]) -> BTreeSet<(String, String)> {
    let mut f = NoticeFold::new("cluster", "x/{run}", "upgradectl");
    records
        .iter()
        .flat_map(|r| f.apply(r))
        .filter(|n| classes.contains(&n.class))
        .map(|n| (n.id(), n.event_type()))
        .collect()
}

async fn wait_for(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("key");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn delivered(reqs: &[Request]) -> Vec<&Request> {
    reqs.iter()
        .filter(|r| (200..300).contains(&r.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_fails_twice_gets_every_notice_signed_as_a_cloudevent() {
    let hook = Receiver::start(vec![(500, vec![]), (500, vec![])]).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let key = tmp.path().join("ops.key");
    std::fs::write(&key, "s3cret-key\n").expect("key");
    let sinks = format!(
        "  - {{name: ops, kind: webhook, url: '{}/hook', secretFile: '{}', events: [run, canary, rollback, node]}}\n",
        hook.url(),
        key.display()
    );
    let p = policy(
        tmp.path(),
        &sinks,
        "generations: {maxUnavailable: 2, canaries: 1}",
    );
    let (_d, client) = daemon(tmp.path(), 3, &p, &[]).await;
    let v = start_run(&client, "v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    wait_completed(&client).await;
    let records = records(&client, &run).await;
    let want = expected(&records, &Class::ALL);
    assert!(
        want.iter().any(|(_, t)| t == "dev.upgraded.run.completed"),
        "{want:?}"
    );
    let got = || -> BTreeSet<(String, String)> {
        delivered(&hook.requests())
            .iter()
            .map(|r| {
                let ce: Value = serde_json::from_slice(&r.body).expect("JSON body");
                (
                    ce["id"].as_str().expect("id").to_string(),
                    ce["type"].as_str().expect("type").to_string(),
                )
            })
            .collect()
    };
    wait_for("every notice delivered", 30, || got() == want).await;
    let reqs = hook.requests();
    assert_eq!(reqs[0].status, 500);
    assert_eq!(reqs[1].status, 500);
    assert_eq!(
        reqs[0].body, reqs[2].body,
        "the failed notice is sent again"
    );
    let schema = upgraded_tests::records::validator();
    for r in &reqs {
        assert_eq!(r.path, "/hook");
        assert_eq!(
            r.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/cloudevents+json")
        );
        let sig = r
            .headers
            .get("x-upgraded-signature")
            .and_then(|v| v.to_str().ok())
            .expect("signed");
        assert_eq!(sig, format!("sha256={}", hmac_hex(b"s3cret-key", &r.body)));
        let ce: Value = serde_json::from_slice(&r.body).expect("JSON");
        assert_eq!(ce["specversion"], "1.0");
        assert_eq!(ce["source"], "upgraded/cluster");
        assert_eq!(ce["datacontenttype"], "application/json");
        assert!(ce["time"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert_eq!(
            ce["id"],
            format!(
                "{}:{}",
                ce["data"]["run"].as_str().expect("run"),
                ce["data"]["seq"]
            )
        );
        upgraded_tests::records::assert_valid(&schema, &ce["data"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_stays_down_costs_failures_not_the_run() {
    // 503 to everything (well past the run), then a 429 whose Retry-After is honoured.
    let mut script = vec![(503, vec![]); 4];
    script.push((429, vec![("retry-after", "2".to_string())]));
    let hook = Receiver::start(script).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let metrics = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let sinks = format!("  - {{name: down, kind: webhook, url: '{}'}}\n", hook.url());
    let p = policy(
        tmp.path(),
        &sinks,
        "generations: {maxUnavailable: 2, canaries: 1}",
    );
    let (_d, client) = daemon(tmp.path(), 2, &p, &["--metrics-address", &metrics]).await;
    let v = start_run(&client, "v1.34.1").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let t0 = std::time::Instant::now();
    wait_completed(&client).await;
    eprintln!("completed {:?} after the start", t0.elapsed());
    assert!(
        delivered(&hook.requests()).is_empty(),
        "the run completed while the sink was down"
    );
    let text = common::scrape_metrics(&metrics).await;
    assert!(
        text.contains("upgraded_consumer_failures_total{consumer=\"notify-down\"}")
            && !text.contains("upgraded_consumer_failures_total{consumer=\"notify-down\"} 0\n"),
        "{text}"
    );
    // It comes back: every notice (run, canary, rollback by default) arrives.
    let want = expected(
        &records(&client, &run).await,
        &Class::defaults().into_iter().collect::<Vec<_>>(),
    );
    wait_for("the backlog", 90, || {
        delivered(&hook.requests()).len() >= want.len()
    })
    .await;
    let reqs = hook.requests();
    let i = reqs.iter().position(|r| r.status == 429).expect("the 429");
    let gap = reqs[i + 1].at.duration_since(reqs[i].at);
    assert!(
        gap >= Duration::from_millis(1_900),
        "Retry-After honoured: {gap:?}"
    );
    // Without the node class, no node notice.
    for r in delivered(&reqs) {
        let ce: Value = serde_json::from_slice(&r.body).expect("JSON");
        assert!(
            !ce["type"]
                .as_str()
                .unwrap_or("")
                .starts_with("dev.upgraded.node.")
        );
        assert!(
            r.headers.get("x-upgraded-signature").is_none(),
            "no key, no signature"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_gets_node_notices_coalesced_at_most_one_message_a_second() {
    let slack = Receiver::start(Vec::new()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let sinks = format!(
        "  - {{name: chat, kind: slack, url: '{}/services/T/B/X', events: [node, run]}}\n",
        slack.url()
    );
    // One canary, then every other worker in one batch: their notices come together.
    let p = policy(
        tmp.path(),
        &sinks,
        "generations: {maxUnavailable: 30, canaries: 1}",
    );
    let (_d, client) = daemon(tmp.path(), 30, &p, &[]).await;
    let v = start_run(&client, "v1.33.1").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    wait_completed(&client).await;
    let records = records(&client, &run).await;
    let node_notices = expected(&records, &[Class::Node]).len();
    assert!(node_notices >= 30, "{node_notices}");
    wait_for("the completion message", 60, || {
        slack
            .requests()
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("completed"))
    })
    .await;
    let reqs = slack.requests();
    eprintln!(
        "{} Slack messages for {node_notices} node notices",
        reqs.len()
    );
    for w in reqs.windows(2) {
        let gap = w[1].at.duration_since(w[0].at);
        assert!(
            gap >= Duration::from_millis(980),
            "two messages {gap:?} apart"
        );
    }
    let mut text = String::new();
    for r in &reqs {
        assert_eq!(r.path, "/services/T/B/X");
        let v: Value = serde_json::from_slice(&r.body).expect("JSON");
        let t = v["text"].as_str().expect("text");
        assert_eq!(v.as_object().map(|o| o.len()), Some(1), "only text");
        text.push_str(t);
        text.push('\n');
    }
    assert!(
        reqs.len() * 3 < node_notices,
        "{} messages for {node_notices} node notices",
        reqs.len()
    );
    // Every node is named somewhere, and the run's start and end are there.
    for r in &records {
        if let upgraded_events::Event::StepStarted { node, .. } = &r.event {
            let host = node.as_str().split('@').next().unwrap_or("");
            assert!(text.contains(host), "{host} missing from:\n{text}");
        }
    }
    assert!(
        text.contains("started") && text.contains("completed"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_prints_the_answer_and_a_missing_key_stops_the_daemon() {
    let hook = Receiver::start(vec![(418, vec![])]).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let sinks = format!(
        "  - {{name: ops, kind: webhook, url: '{}', secretEnv: OPS_KEY}}\n",
        hook.url()
    );
    let p = policy(
        tmp.path(),
        &sinks,
        "generations: {maxUnavailable: 2, canaries: 1}",
    );

    // No OPS_KEY in its environment: refused, saying which sink and which variable.
    let out = common::quick_fake_world_with(tmp.path(), 1, &p)
        .env_remove("OPS_KEY")
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ops") && err.contains("OPS_KEY"), "{err}");

    let (_d, _client) = {
        let mut c = common::quick_fake_world_with(tmp.path(), 1, &p);
        c.env("OPS_KEY", "k");
        let mut d = common::Daemon::from_child(c.spawn().expect("spawn"));
        let client = Client::new(&tmp.path().join("api.sock"));
        wait_ready(&client, &mut d).await;
        (d, client)
    };
    let socket = tmp.path().join("api.sock");
    let ctl = move |args: &[&str]| {
        std::process::Command::new(common::binary("upgradectl"))
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .expect("upgradectl")
    };
    // The first answer is a refusal (418): printed, and a failure.
    let out = tokio::task::spawn_blocking({
        let ctl = ctl.clone();
        move || ctl(&["notify", "test", "ops"])
    })
    .await
    .expect("join");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(said.contains("ops answered 418"), "{said}");
    let out = tokio::task::spawn_blocking({
        let ctl = ctl.clone();
        move || ctl(&["notify", "test", "ops"])
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ops answered 200"));
    let reqs = hook.requests();
    assert_eq!(reqs.len(), 2);
    let ce: Value = serde_json::from_slice(&reqs[1].body).expect("JSON");
    assert_eq!(ce["type"], "dev.upgraded.run.test");
    assert_eq!(
        reqs[1]
            .headers
            .get("x-upgraded-signature")
            .and_then(|v| v.to_str().ok()),
        Some(format!("sha256={}", hmac_hex(b"k", &reqs[1].body)).as_str())
    );
    let out = tokio::task::spawn_blocking(move || ctl(&["notify", "test", "nope"]))
        .await
        .expect("join");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no notification sink \"nope\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
