//! The daemon's `/metrics`, `/healthz` and `/readyz` on TCP, scraped during and after a real
//! run of the binary on a fake world and read by a Prometheus text parser: the counts are the
//! log's, names follow Prometheus's rules, and no label names a node or a run.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use upgraded_ctl::Client;

use common::{active, run_events, start_run, wait_ready};

/// `GET path` on `addr` over plain HTTP/1.0: (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, body.to_string())
}

/// A free port on loopback (bound, then let go).
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not Prometheus text ({e}):\n{text}"))
}

/// The value of `name` whose labels include `labels`.
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|m| m.metric == name)
        .filter(|m| labels.iter().all(|(k, v)| m.labels.get(k) == Some(*v)))
        .map(|m| match m.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_the_logs_counts_with_bounded_labels() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let socket = tmp.path().join("api.sock");
    let addr = free_addr();
    let child = common::quick_fake_world(tmp.path(), 3)
        .args(["--metrics-address", &addr])
        .spawn()
        .expect("spawn");
    let mut daemon = common::Daemon::from_child(child);
    let client = Client::new(&socket);
    wait_ready(&client, &mut daemon).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let a = addr.clone();
    while tokio::task::spawn_blocking({
        let a = a.clone();
        move || std::net::TcpStream::connect(&a).is_err()
    })
    .await
    .expect("join")
    {
        assert!(Instant::now() < deadline, "no metrics endpoint");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let scrape = |path: &'static str| {
        let a = addr.clone();
        tokio::task::spawn_blocking(move || get(&a, path))
    };
    assert_eq!(scrape("/healthz").await.expect("join").0, 200);
    assert_eq!(scrape("/readyz").await.expect("join").0, 200);

    let v = start_run(&client, "v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    // During the run: a well-formed scrape with the run in it.
    let (status, during) = scrape("/metrics").await.expect("join");
    assert_eq!(status, 200);
    let during = parse(&during);
    assert_eq!(value(&during, "upgraded_runs", &[("kind", "upgrade")]), 1.0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while active(&client).await["phase"] != "completed" {
        assert!(Instant::now() < deadline, "the run did not complete");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events = run_events(&client, &run).await;
    // The engine's last records reach the metrics through the log's publication.
    let mut text = String::new();
    for _ in 0..200 {
        text = scrape("/metrics").await.expect("join").1;
        let s = parse(&text);
        if value(&s, "upgraded_log_records_total", &[]) >= events.len() as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let after = parse(&text);
    let count = |kind: &str| {
        events
            .iter()
            .filter(|e| e["event"].get(kind).is_some())
            .count() as f64
    };
    assert_eq!(
        value(&after, "upgraded_steps_total", &[("result", "succeeded")]),
        count("StepSucceeded"),
        "{text}"
    );
    assert_eq!(
        value(&after, "upgraded_steps_total", &[("result", "failed")]),
        count("StepFailed")
    );
    assert_eq!(
        value(
            &after,
            "upgraded_runs",
            &[("kind", "upgrade"), ("state", "completed")]
        ),
        1.0
    );
    assert_eq!(
        value(&after, "upgraded_evictions_refused_total", &[]),
        count("EvictionBlocked")
    );
    assert!(count("StepSucceeded") > 0.0);
    assert!(text.contains("upgraded_step_duration_seconds_bucket{step=\"drain\",le=\"+Inf\"}"));
    assert!(value(&after, "upgraded_last_progress_timestamp_seconds", &[]) > 0.0);

    // Naming: prefix, base units, _total on counters; no label value is a node or the run.
    let nodes: Vec<String> = events
        .iter()
        .filter_map(|e| e["event"].get("StepStarted"))
        .filter_map(|s| s["node"].as_str().map(str::to_string))
        .collect();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut w = line.split_whitespace().skip(2);
        let (name, kind) = (w.next().expect("name"), w.next().expect("type"));
        assert!(name.starts_with("upgraded_"), "{line}");
        assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
        if kind == "histogram" {
            assert!(name.ends_with("_seconds"), "{line}");
        }
    }
    for s in &after.samples {
        for (_, v) in s.labels.iter() {
            assert!(
                !nodes.iter().any(|n| n == v),
                "a node name as a label: {s:?}"
            );
            assert_ne!(v, &run, "the run id as a label");
        }
    }
    daemon.kill_now();
}
