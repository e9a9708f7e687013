//! Traces over OTLP/HTTP from the real daemon on a fake world, received by an in-process
//! collector that decodes the protobuf (`opentelemetry-proto`): the tree, names, kinds and
//! attributes of a run; every step attempt exactly once across a `kill -9`; a collector that
//! is down costs failures, not the run; `upgradectl export --otlp` sends the same spans.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::Value;
use upgraded_ctl::Client;

use common::receiver::Receiver;
use common::{run_events, start_run, wait_completed, wait_ready};

/// Every span the receiver decoded, in arrival order.
fn spans(r: &Receiver) -> Vec<Span> {
    let mut out = Vec::new();
    for req in r.requests() {
        assert_eq!(req.path, "/v1/traces");
        assert_eq!(
            req.headers
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("application/x-protobuf")
        );
        let msg = ExportTraceServiceRequest::decode(req.body.as_ref()).expect("OTLP protobuf");
        for rs in msg.resource_spans {
            let resource = rs.resource.expect("resource");
            assert!(
                resource
                    .attributes
                    .iter()
                    .any(|kv| kv.key == "service.name"),
                "the resource names the service"
            );
            for ss in rs.scope_spans {
                out.extend(ss.spans);
            }
        }
    }
    out
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Any> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text<'a>(s: &'a Span, key: &str) -> &'a str {
    match attr(s, key) {
        Some(Any::StringValue(v)) => v,
        other => panic!("{key} on span {:?}: {other:?}", s.name),
    }
}

fn int(s: &Span, key: &str) -> i64 {
    match attr(s, key) {
        Some(Any::IntValue(v)) => *v,
        other => panic!("{key} on span {:?}: {other:?}", s.name),
    }
}

fn run_bytes(run: &str) -> Vec<u8> {
    let hex: String = run.chars().filter(|c| *c != '-').collect();
    (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

async fn wait_until(what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// (entry, step as shown, attempt) of every attempt the log started.
fn attempts(events: &[Value]) -> BTreeSet<(String, String, i64)> {
    events
        .iter()
        .filter_map(|e| e["event"].get("StepStarted"))
        .map(|s| {
            (
                s["node"].as_str().expect("node").to_string(),
                s["step"].clone().to_string(),
                s["attempt"].as_i64().expect("attempt"),
            )
        })
        .collect()
}

fn is_root(s: &Span) -> bool {
    s.parent_span_id.is_empty() && s.name.starts_with("upgrade ")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_arrives_as_a_tree_with_the_ci_cd_attributes_and_the_logs_times() {
    let collector = Receiver::start(Vec::new()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let child = common::quick_fake_world(tmp.path(), 3)
        .args([
            "--otlp-endpoint",
            &collector.url(),
            "--cluster-name",
            "prod",
        ])
        .args(["--timeline-url", "https://ops.example/t/{run}.html"])
        .spawn()
        .expect("spawn");
    let mut daemon = common::Daemon::from_child(child);
    let client = Client::new(&tmp.path().join("api.sock"));
    wait_ready(&client, &mut daemon).await;
    let v = start_run(&client, "v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    wait_completed(&client).await;
    // The run span, and the engine's own span that ends with the drive.
    wait_until("the run's span and the daemon's own", 20, || {
        let s = spans(&collector);
        s.iter().any(is_root) && s.iter().any(|s| s.name == "run")
    })
    .await;
    let all = spans(&collector);
    let events = run_events(&client, &run).await;
    let trace = run_bytes(&run);

    let roots: Vec<_> = all.iter().filter(|s| is_root(s)).collect();
    assert_eq!(roots.len(), 1, "one run span");
    let root = roots[0];
    assert_eq!(root.name, "upgrade prod");
    assert_eq!(root.kind, SpanKind::Server as i32);
    assert_eq!(root.trace_id, trace, "the trace id is the run id");
    assert_eq!(text(root, "cicd.pipeline.result"), "success");
    assert_eq!(text(root, "cicd.pipeline.run.id"), run);
    assert_eq!(text(root, "cicd.pipeline.name"), "upgrade prod");
    assert_eq!(text(root, "k8s.cluster.name"), "prod");
    assert_eq!(text(root, "upgraded.version.target"), "v1.35.3");

    let log: Vec<&Span> = all.iter().filter(|s| s.name != "run").collect();
    let passes: BTreeMap<Vec<u8>, &Span> = log
        .iter()
        .filter(|s| s.name == "node pass")
        .map(|s| (s.span_id.clone(), *s))
        .collect();
    let entries: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e["event"]["StepStarted"]["node"].as_str())
        .collect();
    assert_eq!(passes.len(), entries.len(), "one pass per entry");
    for p in passes.values() {
        assert_eq!(p.parent_span_id, root.span_id);
        assert!(!text(p, "k8s.node.name").is_empty());
        assert!(text(p, "upgraded.version.to").starts_with("v1.3"));
    }
    let nodes: BTreeSet<&str> = passes.values().map(|p| text(p, "k8s.node.name")).collect();
    let mut seen = BTreeMap::new();
    for s in &log {
        assert_eq!(s.trace_id, trace, "{}", s.name);
        assert!(s.end_time_unix_nano >= s.start_time_unix_nano);
        for n in &nodes {
            assert!(
                !s.name.contains(n),
                "a node name in the span name {:?}",
                s.name
            );
        }
        if attr(s, "upgraded.step.kind").is_some() {
            assert!(
                passes.contains_key(&s.parent_span_id),
                "a step under a pass"
            );
            assert_eq!(s.kind, SpanKind::Internal as i32);
            for key in [
                "cicd.pipeline.task.name",
                "cicd.pipeline.task.run.id",
                "cicd.pipeline.task.run.result",
                "k8s.node.name",
            ] {
                assert!(!text(s, key).is_empty(), "{key}");
            }
            assert!(
                text(s, "cicd.pipeline.task.run.url.full")
                    .starts_with(&format!("https://ops.example/t/{run}.html#step-")),
                "a link to the step's bar"
            );
            let key = (
                text(s, "upgraded.entry").to_string(),
                text(s, "cicd.pipeline.task.name").to_string(),
                int(s, "upgraded.step.attempt"),
            );
            *seen.entry(key).or_insert(0) += 1;
        }
        if s.name.starts_with("check ") {
            assert!(s.parent_span_id == root.span_id || passes.contains_key(&s.parent_span_id));
        }
    }
    // Every attempt the log started, exactly once, with its start and end from the log.
    let started = attempts(&events);
    assert_eq!(seen.len(), started.len());
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    let first_step = events
        .iter()
        .find(|e| e["event"].get("StepStarted").is_some())
        .expect("a step");
    let step = &first_step["event"]["StepStarted"];
    let span = log
        .iter()
        .find(|s| {
            attr(s, "upgraded.entry").is_some()
                && text(s, "upgraded.entry") == step["node"].as_str().expect("node")
                && attr(s, "upgraded.step.attempt").is_some()
                && int(s, "upgraded.step.attempt") == step["attempt"].as_i64().expect("attempt")
                && s.start_time_unix_nano == first_step["at"].as_u64().expect("at") * 1_000_000
        })
        .expect("the first step's span");
    let ended = events
        .iter()
        .find(|e| {
            ["StepSucceeded", "StepFailed"].iter().any(|k| {
                e["event"][k]["node"] == step["node"] && e["event"][k]["attempt"] == step["attempt"]
            })
        })
        .expect("its outcome");
    assert_eq!(
        span.end_time_unix_nano,
        ended["at"].as_u64().expect("at") * 1_000_000
    );

    // The daemon's own span links to the run's trace.
    let own = all
        .iter()
        .find(|s| s.name == "run")
        .expect("the daemon's span");
    assert!(
        own.links
            .iter()
            .any(|l| l.trace_id == trace && l.span_id == root.span_id),
        "{:?}",
        own.links
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_neither_duplicates_nor_loses_a_span() {
    let collector = Receiver::start(Vec::new()).await;
    let tmp = tempfile::tempdir().expect("tempdir");
    let url = collector.url();
    let policy = tmp.path().join("policy.yaml");
    std::fs::write(&policy, common::FAKE_RUN_POLICY).expect("policy");
    // Slower node commands than quick_fake_world's, so the kill lands mid-run.
    let daemon = || {
        let d = tmp.path();
        let mut c =
            common::fake_world_daemon(&d.join("data"), &d.join("api.sock"), &d.join("world"));
        c.args(["--fake-control-planes", "1", "--fake-workers", "4"])
            .args(["--fake-delay-ms", "40", "--time-scale", "100", "--policy"])
            .arg(&policy)
            .args(["--otlp-endpoint", &url]);
        c.spawn().expect("spawn")
    };
    let mut first = common::Daemon::from_child(daemon());
    let client = Client::new(&tmp.path().join("api.sock"));
    wait_ready(&client, &mut first).await;
    let v = start_run(&client, "v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    wait_until("some step spans", 60, || {
        spans(&collector)
            .iter()
            .filter(|s| attr(s, "upgraded.step.kind").is_some())
            .count()
            >= 5
    })
    .await;
    first.kill_now();
    let before = spans(&collector).len();
    let mut second = common::Daemon::from_child(daemon());
    wait_ready(&client, &mut second).await;
    wait_completed(&client).await;
    wait_until("the run span", 20, || spans(&collector).iter().any(is_root)).await;
    let all = spans(&collector);
    assert!(all.len() > before, "the restarted daemon went on");
    let trace = run_bytes(&run);
    let events = run_events(&client, &run).await;
    let mut ids = BTreeMap::new();
    let mut steps = BTreeSet::new();
    for s in all.iter().filter(|s| s.name != "run") {
        assert_eq!(s.trace_id, trace, "one trace across the restart");
        *ids.entry(s.span_id.clone()).or_insert(0) += 1;
        if attr(s, "upgraded.step.kind").is_some() {
            steps.insert((
                text(s, "upgraded.entry").to_string(),
                text(s, "cicd.pipeline.task.name").to_string(),
                int(s, "upgraded.step.attempt"),
            ));
        }
    }
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    let names: Vec<_> = twice
        .iter()
        .filter_map(|(id, _)| all.iter().find(|s| &&s.span_id == id))
        .map(|s| (s.name.clone(), s.attributes.clone()))
        .collect();
    assert!(twice.is_empty(), "spans sent twice: {names:?}");
    assert_eq!(steps.len(), attempts(&events).len(), "every attempt, once");
    assert!(
        events
            .iter()
            .any(|e| e["event"].get("RunRecovered").is_some()),
        "the restart was recorded"
    );
    // The restarted daemon's own span, which drove the rest of the run, links to its trace.
    wait_until("the restarted daemon's span", 20, || {
        spans(&collector).iter().any(|s| {
            s.name == "run"
                && s.links
                    .iter()
                    .any(|l| l.trace_id == trace && l.span_id.len() == 8)
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_failures_and_export_sends_the_same_spans_later() {
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let metrics = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let child = common::quick_fake_world(tmp.path(), 2)
        .args(["--otlp-endpoint", &format!("http://{closed}")])
        .args(["--otlp-timeout-secs", "1", "--metrics-address", &metrics])
        .spawn()
        .expect("spawn");
    let mut daemon = common::Daemon::from_child(child);
    let client = Client::new(&tmp.path().join("api.sock"));
    wait_ready(&client, &mut daemon).await;
    let v = start_run(&client, "v1.34.1").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    wait_completed(&client).await;
    let failures = |t: &str| -> f64 {
        t.lines()
            .find_map(|l| l.strip_prefix("upgraded_consumer_failures_total{consumer=\"traces\"} "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let t = common::scrape_metrics(&metrics).await;
    assert!(failures(&t) >= 1.0, "{t}");

    // `upgradectl export --otlp URL RUN` sends the finished run's spans from the daemon's
    // log; the same ids as the daemon's own, which it sends when the collector is back.
    let collector = Receiver::start(Vec::new()).await;
    let out = tokio::process::Command::new(common::binary("upgradectl"))
        .arg("--socket")
        .arg(tmp.path().join("api.sock"))
        .args([
            "export",
            "--otlp",
            &collector.url(),
            &run,
            "--cluster-name",
            "cluster",
        ])
        .output()
        .await
        .expect("upgradectl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("spans of run"), "{said}");
    let exported = spans(&collector);
    assert!(exported.iter().any(is_root));
    drop(daemon);
    let child = common::quick_fake_world(tmp.path(), 2)
        .args(["--otlp-endpoint", &collector.url()])
        .spawn()
        .expect("spawn");
    let mut daemon = common::Daemon::from_child(child);
    wait_ready(&client, &mut daemon).await;
    let n = exported.len();
    wait_until("the daemon's backlog", 30, || {
        spans(&collector).iter().filter(|s| s.name != "run").count() >= 2 * n
    })
    .await;
    let all = spans(&collector);
    let ids = |spans: &[Span]| -> BTreeMap<Vec<u8>, (String, u64, u64)> {
        spans
            .iter()
            .filter(|s| s.name != "run")
            .map(|s| {
                (
                    s.span_id.clone(),
                    (s.name.clone(), s.start_time_unix_nano, s.end_time_unix_nano),
                )
            })
            .collect()
    };
    assert_eq!(
        ids(&all[..n]),
        ids(&all[n..]),
        "the same spans, the same ids"
    );
}
