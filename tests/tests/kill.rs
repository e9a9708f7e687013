//! `kill -9` the real daemon at random moments of real runs; after each restart the run must
//! carry on and finish with nothing that must happen once happening twice, no acknowledged
//! event lost, and no node left cordoned.
//!
//! `KILL_ITERATIONS` (default 20) sets the number of kills; `KILL_SEED` replays a sequence.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Method;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use upgraded_ctl::Client;
use upgraded_daemon::fake::read_effects;

use common::{DaemonOpts, spawn_daemon, wait_ready};

const DAEMON_ARGS: &[&str] = &[
    "--fake-control-planes",
    "1",
    "--fake-workers",
    "4",
    "--fake-delay-ms",
    "15",
    "--time-scale",
    "100",
];

/// The daemon's arguments for a round in `dir`, its policy written there.
fn round_args(dir: &std::path::Path) -> Vec<String> {
    let policy = dir.join("policy.yaml");
    std::fs::write(&policy, common::FAKE_RUN_POLICY).expect("write policy");
    DAEMON_ARGS
        .iter()
        .map(|a| a.to_string())
        .chain(["--policy".to_string(), policy.display().to_string()])
        .collect()
}

/// Follows the run's event stream in the background, keeping every line it was sent.
fn follow(
    client: &Client,
    run: &str,
    seen: &Arc<Mutex<BTreeMap<u64, String>>>,
) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    let seen = Arc::clone(seen);
    let path = format!("/v1/runs/{run}/events?follow=true");
    tokio::spawn(async move {
        let _ = client
            .lines(&path, |l| {
                let v: Value = serde_json::from_str(l).expect("JSON line");
                let seq = v["seq"].as_u64().expect("seq");
                let mut seen = seen.lock().expect("lock");
                if let Some(old) = seen.insert(seq, l.to_string()) {
                    assert_eq!(old, l, "seq {seq} was sent with two different contents");
                }
                true
            })
            .await;
    })
}

async fn phase(client: &Client) -> Option<String> {
    let v = client.json(Method::GET, "/v1/status", None).await.ok()?;
    v["active"]["phase"].as_str().map(str::to_string)
}

/// Kills the daemon at random moments (up to `max` times, `pause_ms` apart at most) until the
/// run completes, restarting it and the follower each time; returns the kills, the daemon
/// and the follower running now.
#[allow(clippy::too_many_arguments)]
async fn kill_until_done(
    client: &Client,
    opts: &DaemonOpts<'_>,
    mut child: common::Daemon,
    run: &str,
    seen: &Arc<Mutex<BTreeMap<u64, String>>>,
    rng: &mut StdRng,
    max: usize,
    pause_ms: u64,
) -> (usize, common::Daemon, tokio::task::JoinHandle<()>) {
    let mut follower = follow(client, run, seen);
    let mut kills = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..pause_ms))).await;
        if phase(client).await.as_deref() == Some("completed") || kills >= max {
            break;
        }
        child.kill_now();
        kills += 1;
        follower.abort();
        child = spawn_daemon(opts);
        wait_ready(client, &mut child).await;
        follower = follow(client, run, seen);
    }
    (kills, child, follower)
}

/// Waits (up to 30 s) for the active run to complete.
async fn until_completed(client: &Client) {
    for _ in 0..600 {
        if phase(client).await.as_deref() == Some("completed") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_and_repeats_nothing() {
    let want_kills: usize = common::env_number("KILL_ITERATIONS", 20);
    let seed = common::env_seed("KILL_SEED");
    eprintln!("kill test: {want_kills} kills, KILL_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kills = 0;
    let mut rounds = 0;
    let mut probes = 0;
    while kills < want_kills {
        rounds += 1;
        let tmp = tempfile::tempdir().expect("tempdir");
        let args = round_args(tmp.path());
        let extra: Vec<&str> = args.iter().map(String::as_str).collect();
        let opts = DaemonOpts {
            base: tmp.path(),
            extra: &extra,
        };
        let client = Client::new(&tmp.path().join("api.sock"));
        let mut child = spawn_daemon(&opts);
        wait_ready(&client, &mut child).await;
        let v = client
            .json(
                Method::POST,
                "/v1/runs",
                Some(&json!({ "target": "v1.35.3" })),
            )
            .await
            .expect("start");
        let run = v["run"].as_str().expect("run id").to_string();
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let (round_kills, mut child, follower) =
            kill_until_done(&client, &opts, child, &run, &seen, &mut rng, 7, 250).await;
        kills += round_kills;
        // Let the run finish.
        until_completed(&client).await;
        if phase(&client).await.as_deref() != Some("completed") {
            let status = client.json(Method::GET, "/v1/status", None).await;
            let mut tail = Vec::new();
            let _ = client
                .lines(&format!("/v1/runs/{run}/events"), |l| {
                    tail.push(l.to_string());
                    true
                })
                .await;
            let from = tail.len().saturating_sub(40);
            panic!(
                "round {rounds} did not complete (seed {seed})\nstatus: {status:#?}\nlast events:\n{}",
                tail[from..].join("\n")
            );
        }

        // The whole log, from the daemon.
        let mut log = Vec::new();
        client
            .lines(&format!("/v1/runs/{run}/events"), |l| {
                log.push(l.to_string());
                true
            })
            .await
            .expect("read log");
        let records: Vec<Value> = log
            .iter()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(
                r["seq"].as_u64(),
                Some(i as u64),
                "sequence has a gap or a duplicate at {i}"
            );
        }
        // Every record any client was ever sent is still there, unchanged.
        for (seq, line) in seen.lock().expect("lock").iter() {
            assert_eq!(
                log.get(*seq as usize),
                Some(line),
                "record {seq} was acknowledged, then lost or changed"
            );
        }
        // Unit variants are plain strings in JSON, the others one-key objects.
        let kinds = |k: &str| {
            records
                .iter()
                .filter(|r| r["event"].get(k).is_some() || r["event"] == k)
                .count()
        };
        assert!(kinds("RunRecovered") <= round_kills);
        assert_eq!(kinds("RunCompleted"), 1);
        probes += kinds("StepProbed");

        // Effects: installs and kubelet restarts exactly once per node and version.
        let effects = read_effects(&tmp.path().join("world/effects.jsonl")).expect("effects");
        let mut once: HashMap<(String, String, String), usize> = HashMap::new();
        let mut cordoned: HashMap<String, bool> = HashMap::new();
        // Kubelet restarts per node and installed version: a control-plane node restarts once
        // per hop, a worker once after all of its hops.
        let mut kubelet_restarts: HashMap<(String, String), usize> = HashMap::new();
        let mut installed: HashMap<String, String> = HashMap::new();
        for e in &effects {
            match e.op.as_str() {
                "install" => {
                    installed.insert(e.node.clone(), format!("{:?}", e.version));
                    *once
                        .entry((e.node.clone(), e.op.clone(), format!("{:?}", e.version)))
                        .or_default() += 1
                }
                "restart-kubelet" => {
                    let v = installed.get(&e.node).cloned().unwrap_or_default();
                    *kubelet_restarts.entry((e.node.clone(), v)).or_default() += 1
                }
                "cordon" => {
                    cordoned.insert(e.node.clone(), true);
                }
                "uncordon" => {
                    cordoned.insert(e.node.clone(), false);
                }
                _ => {}
            }
        }
        for (k, n) in &once {
            assert_eq!(
                *n, 1,
                "{k:?} happened {n} times (round {rounds}, seed {seed})"
            );
        }
        assert_eq!(once.len(), 5 * 3, "5 nodes x 3 hops installed");
        assert_eq!(
            kubelet_restarts.len(),
            3 + 4,
            "cp-1 once per hop, workers once"
        );
        assert!(
            kubelet_restarts.values().all(|&n| n == 1),
            "kubelet restarted twice: {kubelet_restarts:?}"
        );
        assert!(
            cordoned.values().all(|c| !c),
            "a node was left cordoned: {cordoned:?}"
        );
        follower.abort();
        child.kill_now();
    }
    eprintln!("kill test: {kills} kills over {rounds} runs, {probes} in-doubt steps probed");
}

/// `kill -9` during a rollback run: after each restart it carries on, and it ends with each
/// node back at its recorded version, installed once, restarted once, uncordoned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_rollback_loses_nothing_and_repeats_nothing() {
    let want_kills = common::env_number::<usize>("KILL_ITERATIONS", 20).div_ceil(2);
    let seed = common::env_seed("KILL_SEED");
    eprintln!("rollback kill test: {want_kills} kills, KILL_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kills = 0;
    let mut rounds = 0;
    while kills < want_kills {
        rounds += 1;
        let tmp = tempfile::tempdir().expect("tempdir");
        let args = round_args(tmp.path());
        let extra: Vec<&str> = args.iter().map(String::as_str).collect();
        let opts = DaemonOpts {
            base: tmp.path(),
            extra: &extra,
        };
        let client = Client::new(&tmp.path().join("api.sock"));
        let mut child = spawn_daemon(&opts);
        wait_ready(&client, &mut child).await;
        client
            .json(
                Method::POST,
                "/v1/runs",
                Some(&json!({ "target": "v1.35.3" })),
            )
            .await
            .expect("start");
        for _ in 0..1200 {
            if phase(&client).await.as_deref() == Some("completed") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            phase(&client).await.as_deref(),
            Some("completed"),
            "the forward run"
        );
        let effects_before = read_effects(&tmp.path().join("world/effects.jsonl"))
            .expect("effects")
            .len();
        let v = client
            .json(
                Method::POST,
                "/v1/rollbacks",
                Some(&json!({ "nodes": ["worker-01", "worker-02"] })),
            )
            .await
            .expect("rollback");
        let run = v["run"].as_str().expect("rollback run").to_string();
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let (round_kills, mut child, follower) =
            kill_until_done(&client, &opts, child, &run, &seen, &mut rng, 5, 150).await;
        kills += round_kills;
        until_completed(&client).await;
        assert_eq!(
            phase(&client).await.as_deref(),
            Some("completed"),
            "the rollback (round {rounds}, seed {seed})"
        );
        let mut log = Vec::new();
        client
            .lines(&format!("/v1/runs/{run}/events"), |l| {
                log.push(l.to_string());
                true
            })
            .await
            .expect("read log");
        for (seq, line) in seen.lock().expect("lock").iter() {
            assert_eq!(
                log.get(*seq as usize),
                Some(line),
                "record {seq} was acknowledged, then lost or changed"
            );
        }
        // What the rollback did: each node's install of its old version and its restart once.
        let effects = read_effects(&tmp.path().join("world/effects.jsonl")).expect("effects");
        let mut count: HashMap<(String, String), usize> = HashMap::new();
        for e in &effects[effects_before..] {
            if matches!(e.op.as_str(), "install" | "restart-kubelet") {
                *count.entry((e.node.clone(), e.op.clone())).or_default() += 1;
            }
        }
        for n in ["worker-01", "worker-02"] {
            for op in ["install", "restart-kubelet"] {
                assert_eq!(
                    count.get(&(n.to_string(), op.to_string())),
                    Some(&1),
                    "{n} {op} (round {rounds}, seed {seed}): {count:?}"
                );
            }
        }
        assert_eq!(count.len(), 4, "nothing else was touched: {count:?}");
        let status = client
            .json(Method::GET, "/v1/status", None)
            .await
            .expect("status");
        assert!(
            status["active"]["nodes"]
                .as_array()
                .is_some_and(|ns| ns.iter().all(|n| n["phase"] == "done")),
            "{status:#}"
        );
        follower.abort();
        child.kill_now();
    }
    eprintln!("rollback kill test: {kills} kills over {rounds} rollbacks");
}
