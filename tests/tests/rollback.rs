//! Rollback on the in-process harness: the real engine rolls nodes of a finished run back
//! on the simulated cluster, in virtual time, and survives a crash at any of its records.

use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};
use upgraded_harness::{Harness, scenario};
use upgraded_sim::scenario as sim_scenario;

const POLICY: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 1, canaries: 0}
waitBetweenBatches: 1m
drainTimeout: 10m
retries: {backoff: 1s, maxBackoff: 5s}
";

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The lab (cp-1, w-1..w-3 at v1.33.5) upgraded to v1.35.3; the forward run's id.
async fn upgraded_lab() -> (Harness, String) {
    let mut h = Harness::new(scenario("lab", 7), POLICY).await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run id").to_string();
    h.until_phase("completed", DAY).await;
    (h, run)
}

async fn rollback(h: &Harness, body: Value) -> Result<Value, upgraded_harness::Refused> {
    h.json(Method::POST, "/v1/rollbacks", Some(&body)).await
}

/// (kubelet running, packages kubelet/kubectl/kubeadm, cordoned) of a sim node.
fn node_state(h: &Harness, name: &str) -> (String, Vec<String>, bool) {
    let w = h.sim.world();
    let n = &w.nodes[name];
    let pkgs = ["kubelet", "kubectl", "kubeadm"]
        .iter()
        .map(|p| {
            n.packages
                .get(*p)
                .map(ToString::to_string)
                .unwrap_or_default()
        })
        .collect();
    (n.kubelet.to_string(), pkgs, n.unschedulable)
}

#[tokio::test(start_paused = true)]
async fn a_node_of_a_finished_run_goes_back_to_what_the_run_recorded() {
    let (mut h, forward) = upgraded_lab().await;

    // The plan: what, in order, and why; nothing recorded.
    let p = rollback(&h, json!({"nodes": ["w-1"], "planOnly": true}))
        .await
        .expect("plan");
    assert!(p["run"].is_null(), "{p:#}");
    assert_eq!(p["undoes"], forward.as_str());
    let why = p["why"][0].as_str().unwrap_or_default();
    assert!(
        why.contains("w-1") && why.contains("v1.35.3 → v1.33.5"),
        "{why}"
    );
    let runs = h.json(Method::GET, "/v1/runs", None).await.expect("runs");
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(1),
        "a plan records nothing"
    );

    // What cannot be rolled back is refused by name.
    let e = rollback(&h, json!({"nodes": ["nope"]}))
        .await
        .expect_err("unknown");
    assert_eq!(e.status, 404, "{e}");
    let e = rollback(&h, json!({"nodes": ["cp-1"]}))
        .await
        .expect_err("cp");
    assert!(e.message.contains("control plane"), "{e}");
    let e = rollback(&h, json!({"nodes": ["w-1;reboot"]}))
        .await
        .expect_err("hostile");
    assert_eq!(e.status, 400, "{e}");
    let e = rollback(&h, json!({"nodes": ["w-1"], "plan": true}))
        .await
        .expect_err("a mistyped field");
    assert!(e.message.contains("unknown field `plan`"), "{e}");

    // The rollback itself.
    let r = rollback(&h, json!({"nodes": ["w-1"]}))
        .await
        .expect("rollback");
    let run = r["run"].as_str().expect("a rollback run").to_string();
    // Only one run at a time.
    let busy = h.start("v1.35.3").await.expect_err("busy");
    assert_eq!(busy.status, 409, "{busy}");
    h.until_phase("completed", DAY).await;
    assert_eq!(
        node_state(&h, "w-1"),
        (
            "v1.33.5".to_string(),
            vec![
                "v1.33.5".to_string(),
                "v1.33.5".to_string(),
                "v1.33.5".to_string()
            ],
            false
        ),
        "kubelet, kubectl and kubeadm back, uncordoned"
    );
    for other in ["w-2", "w-3", "cp-1"] {
        assert_eq!(node_state(&h, other).0, "v1.35.3", "{other} left alone");
    }
    let evs = h.events(&run).await;
    let planned = evs
        .iter()
        .find_map(|e| e["event"].get("RunPlanned"))
        .expect("planned");
    assert_eq!(
        planned["plan"]["undoes"],
        forward.as_str(),
        "linked to the run it undoes"
    );
    let restored = evs
        .iter()
        .filter_map(|e| e["event"].get("StepSucceeded"))
        .find(|s| s["step"].get("DowngradePackages").is_some())
        .expect("downgraded");
    assert_eq!(
        restored["facts"]["kubelet_config_restored"],
        "/var/lib/upgraded/kubelet-config/v1.33.5.yaml"
    );
    // A rollback is not rolled back.
    let e = rollback(&h, json!({"nodes": ["w-1"]}))
        .await
        .expect_err("again");
    assert!(e.message.contains("is itself the rollback"), "{e}");
}

/// Every record of the rollback run is a place the daemon can die: each time, the restarted
/// daemon finishes it, no step succeeds twice, and the cluster ends as after an
/// uninterrupted rollback.
#[tokio::test(start_paused = true)]
async fn a_rollback_crashed_at_any_record_finishes_the_same_with_nothing_done_twice() {
    let mut crashed_at = 0;
    for cut in 0.. {
        let (mut h, _) = upgraded_lab().await;
        let r = rollback(&h, json!({"nodes": ["w-1", "w-2"]}))
            .await
            .expect("rollback");
        let run = r["run"].as_str().expect("run").to_string();
        let total = {
            // Run to the end once to know how many records an uninterrupted rollback has.
            let found = h
                .until_record(&run, DAY, |e| {
                    e["seq"].as_u64() == Some(cut) || e["event"] == "RunCompleted"
                })
                .await;
            if found["event"] == "RunCompleted" {
                break;
            }
            found
        };
        assert_eq!(total["seq"].as_u64(), Some(cut));
        h.crash();
        h.restart().await;
        h.until_phase("completed", DAY).await;
        crashed_at += 1;
        for n in ["w-1", "w-2"] {
            assert_eq!(
                node_state(&h, n),
                (
                    "v1.33.5".to_string(),
                    vec![
                        "v1.33.5".to_string(),
                        "v1.33.5".to_string(),
                        "v1.33.5".to_string()
                    ],
                    false
                ),
                "crash at record {cut}: {n}"
            );
        }
        assert_eq!(node_state(&h, "w-3").0, "v1.35.3");
        let mut done = std::collections::BTreeMap::new();
        for e in h.events(&run).await {
            let ok = e["event"]
                .get("StepSucceeded")
                .or_else(|| e["event"].get("StepProbed").filter(|p| p["done"] == true));
            if let Some(s) = ok {
                *done
                    .entry((s["node"].to_string(), s["step"].to_string()))
                    .or_insert(0) += 1;
            }
        }
        assert!(
            done.values().all(|&n| n == 1),
            "crash at record {cut}: a step succeeded twice: {done:?}"
        );
        // Preflight, cordon, drain, packages, kubelet files, restart, verify, uncordon.
        assert_eq!(done.len(), 16, "two nodes of eight steps each: {done:?}");
    }
    assert!(crashed_at >= 20, "only {crashed_at} records to crash at");
}

/// `--to` one minor back: kubelets first, kube-proxy, then the control plane through the
/// target's kubeadm; the cluster ends at the target everywhere, nothing cordoned.
#[tokio::test(start_paused = true)]
async fn the_cluster_goes_back_one_minor_and_no_further() {
    let (mut h, forward) = upgraded_lab().await;
    // The hop the run took through 1.34.
    let via = h
        .events(&forward)
        .await
        .iter()
        .filter_map(|e| e["event"]["StepStarted"]["step"]["KubeadmUpgrade"]["version"].as_str())
        .find(|v| v.starts_with("v1.34."))
        .expect("a hop through 1.34")
        .to_string();
    let e = rollback(&h, json!({"to": "v1.33.5"}))
        .await
        .expect_err("two minors");
    assert!(e.message.contains("only one minor at a time"), "{e}");
    let e = rollback(&h, json!({"to": via, "nodes": ["w-1"]}))
        .await
        .expect_err("both");
    assert!(e.message.contains("choose one"), "{e}");
    // etcd's data goes back only when asked, with --to, and from a snapshot that exists: the
    // sim's snapshots are not files, so a restore is refused here by name, never pretended.
    let e = rollback(
        &h,
        json!({"nodes": ["w-1"], "etcd": "restore-snapshot", "confirmDataLoss": true}),
    )
    .await
    .expect_err("nodes keep etcd");
    assert!(e.message.contains("goes with --to"), "{e}");
    let e = rollback(
        &h,
        json!({"to": via, "etcd": "restore-snapshot", "confirmDataLoss": true}),
    )
    .await
    .expect_err("no snapshot file");
    assert!(
        e.message.contains("recorded no verified etcd snapshot"),
        "{e}"
    );
    let e = rollback(&h, json!({"to": via, "etcd": "restore"}))
        .await
        .expect_err("unknown value");
    assert!(e.message.contains("restore-snapshot"), "{e}");

    let p = rollback(&h, json!({"to": via, "planOnly": true}))
        .await
        .expect("plan");
    let why: Vec<&str> = p["why"]
        .as_array()
        .expect("why")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        why.len(),
        5,
        "3 workers, cp-1's kubelet, cp-1's control plane: {why:#?}"
    );
    assert!(
        why[4].starts_with("cp-1: control plane v1.35.3 →"),
        "{why:#?}"
    );
    assert!(
        p["etcd"]
            .as_str()
            .unwrap_or_default()
            .contains("won't downgrade etcd")
    );

    let r = rollback(&h, json!({"to": via})).await.expect("rollback");
    let run = r["run"].as_str().expect("run").to_string();
    h.until_phase("completed", DAY).await;
    {
        let w = h.sim.world();
        for n in w.nodes.values() {
            assert_eq!(n.kubelet.to_string(), via, "{}", n.name);
            assert!(!n.unschedulable, "{} left cordoned", n.name);
            if let Some(cp) = &n.control_plane {
                assert_eq!(cp.apiserver.to_string(), via);
                assert_eq!(cp.controller_manager.to_string(), via);
                assert_eq!(cp.scheduler.to_string(), via);
            }
        }
        let proxies: Vec<&str> = w
            .pods
            .values()
            .filter(|p| p.name.starts_with("kube-proxy"))
            .map(|p| p.spec.image.as_str())
            .collect();
        assert!(!proxies.is_empty());
        assert!(
            proxies.iter().all(|i| i.ends_with(&format!(":{via}"))),
            "{proxies:?}"
        );
    }
    let steps: Vec<String> = h
        .events(&run)
        .await
        .iter()
        .filter_map(|e| e["event"].get("StepSucceeded"))
        .map(|s| format!("{} {}", s["node"].as_str().unwrap_or(""), s["step"]))
        .collect();
    let proxy = steps
        .iter()
        .position(|s| s.contains("KubeProxy"))
        .expect("kube-proxy");
    let apply = steps
        .iter()
        .position(|s| s.contains("KubeadmDowngrade"))
        .expect("kubeadm");
    let last_kubelet = steps
        .iter()
        .rposition(|s| s.contains("DowngradePackages"))
        .expect("pkgs");
    assert!(last_kubelet < proxy && proxy < apply, "{steps:#?}");

    // The run history says what happened to both runs.
    let runs: Vec<upgraded_api::RunEntry> =
        serde_json::from_value(h.json(Method::GET, "/v1/runs", None).await.expect("runs"))
            .expect("run entries");
    let history: Vec<_> = runs.iter().filter_map(|r| r.history.clone()).collect();
    assert_eq!(history.len(), 2, "{history:#?}");
    let (up, down) = (&history[0], &history[1]);
    assert_eq!(up.run.to_string(), forward);
    assert_eq!(
        (
            up.kind.as_str(),
            up.from.as_deref(),
            up.to.as_deref(),
            up.state.as_str()
        ),
        ("upgrade", Some("v1.33.5"), Some("v1.35.3"), "rolled back")
    );
    assert_eq!(down.run.to_string(), run);
    assert_eq!(down.undoes, Some(up.run));
    assert_eq!(
        (
            down.kind.as_str(),
            down.from.as_deref(),
            down.to.as_deref(),
            down.state.as_str()
        ),
        ("rollback", Some("v1.35.3"), Some(via.as_str()), "completed")
    );
    for h in &history {
        assert!(
            h.steps > 0 && h.started.is_some() && h.ended >= h.started,
            "{h:?}"
        );
        assert!(h.started_by.is_some(), "{h:?}");
    }
    // The table: a header, one line per run, columns aligned.
    let table = upgraded_ctl::render::runs(&runs);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    // Columns in characters (an id is shortened with "…").
    let col = |l: &str, word: &str| l.find(word).map(|i| l[..i].chars().count());
    let state = col(lines[0], "STATE").expect("STATE");
    assert_eq!(col(lines[1], "rolled back"), Some(state), "{table}");
    assert_eq!(col(lines[2], "completed"), Some(state), "{table}");
    assert!(lines[2].contains("rollback of "), "{table}");
    assert!(!table.contains('{'), "no raw JSON: {table}");
}

/// Two workers per generation; w-1 and w-4 are dell-r640, the oldest, so w-1 is the first
/// canary. `fails_from`: w-1's machine cannot run a kubelet from that version on.
async fn canary_cluster(policy: &str, fails_from: Option<&str>) -> Harness {
    let mut world = upgraded_sim::World::new(upgraded_harness::sim_clock(), 7);
    upgraded_sim::scenario::small(&mut world, 1, 6, "v1.33.5".parse().expect("v"))
        .expect("cluster");
    world.tick();
    world.settle(30 * 24 * 3600 * 1000);
    if let Some(v) = fails_from {
        world
            .faults
            .kubelet_fails_from
            .insert("w-1".into(), v.parse().expect("v"));
    }
    Harness::new(world, policy).await
}

const CANARY_POLICY: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 1, canaries: 1, order: [dell-r640, dell-r740, hp-dl380]}
canarySoak: 10m
waitBetweenBatches: 1m
retries: {maxAttempts: 2, backoff: 1s, maxBackoff: 2s}
gates: {nodeReadyTimeout: 5m}
";

fn started_nodes(evs: &[Value]) -> std::collections::BTreeSet<String> {
    evs.iter()
        .filter_map(|e| e["event"].get("StepStarted"))
        .filter_map(|s| s["node"].as_str().map(str::to_string))
        .collect()
}

/// The operator guide's story: one generation's machines cannot run the new kubelet. The
/// canary never comes back Ready; the daemon rolls it back to its recorded versions, parks
/// it, and halts before the rest of its generation starts.
#[tokio::test(start_paused = true)]
async fn a_canary_that_never_comes_back_is_rolled_back_parked_and_the_run_halts() {
    let mut h = canary_cluster(CANARY_POLICY, Some("v1.35.0")).await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let halted = h.until_phase("halted", DAY).await;
    let reason = halted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("node w-1: verify failed 2 time(s)")
            && reason.contains("w-1 was rolled back to v1.33.5 and parked")
            && reason.contains("upgradectl resume"),
        "the halt says what failed, what was done and what next: {reason}"
    );
    {
        let w = h.sim.world();
        let n = &w.nodes["w-1"];
        assert_eq!(n.kubelet.to_string(), "v1.33.5");
        assert!(n.ready, "back on the version its machine runs");
        assert!(!n.unschedulable, "uncordoned after the rollback");
    }
    let evs = h.events(&run).await;
    let rollbacks: Vec<&Value> = evs
        .iter()
        .filter_map(|e| e["event"].get("NodeRollingBack"))
        .collect();
    assert_eq!(rollbacks.len(), 1, "{rollbacks:?}");
    assert_eq!(rollbacks[0]["node"], "w-1");
    // Every evaluation of the trigger is recorded with its inputs and verdict.
    let verdicts: Vec<&Value> = evs
        .iter()
        .filter_map(|e| e["event"].get("StepFailed"))
        .filter(|f| f["step"] == "Verify")
        .collect();
    assert_eq!(verdicts.len(), 2, "maxAttempts 2: {verdicts:#?}");
    for f in verdicts {
        assert_eq!(f["facts"]["gate"], "node");
        assert_eq!(f["facts"]["ready"], "false");
        assert_eq!(f["facts"]["kubelet_version"], "v1.35.3");
        assert!(f["error"].as_str().unwrap_or("").contains("not Ready"));
    }
    let started = started_nodes(&evs);
    for rest in ["w-4", "w-2", "w-3", "w-5", "w-6"] {
        assert!(!started.contains(rest), "{rest} started: {started:?}");
    }
    assert_eq!(
        halted["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n["name"] == "w-1"))
            .map(|n| n["phase"].clone()),
        Some(json!("parked"))
    );
}

/// A rollback that fails halts and says so; it never answers itself with another.
#[tokio::test(start_paused = true)]
async fn a_failing_rollback_halts_and_never_loops() {
    let mut h = canary_cluster(CANARY_POLICY, None).await;
    h.sim.world().faults.never_ready.insert("w-1".into());
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let halted = h.until_phase("halted", DAY).await;
    let reason = halted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("the automatic rollback of w-1 failed")
            && reason.contains("nothing else is tried"),
        "{reason}"
    );
    let evs = h.events(&run).await;
    assert_eq!(
        evs.iter()
            .filter(|e| e["event"].get("NodeRollingBack").is_some())
            .count(),
        1
    );
}

/// `gates.onFailure: halt`: no rollback, the run halts on the failed gate as before.
#[tokio::test(start_paused = true)]
async fn with_on_failure_halt_a_failed_gate_only_halts() {
    let policy = format!("{CANARY_POLICY}gates: {{nodeReadyTimeout: 5m, onFailure: halt}}\n")
        .replacen("gates: {nodeReadyTimeout: 5m}\n", "", 1);
    let mut h = canary_cluster(&policy, Some("v1.35.0")).await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let halted = h.until_phase("halted", DAY).await;
    let reason = halted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("node w-1: verify failed 2 time(s)"),
        "{reason}"
    );
    assert!(
        h.events(&run)
            .await
            .iter()
            .all(|e| e["event"].get("NodeRollingBack").is_none())
    );
    assert_eq!(h.sim.world().nodes["w-1"].kubelet.to_string(), "v1.35.3");
}

/// `upgradectl demo --scenario rollback`, on the harness: the seed cluster, whose oldest
/// generation's machines cannot run kubelet 1.35. The daemon rolls that generation's canary
/// back and halts; the operator aborts and rolls the control plane back one minor. The
/// cluster ends at the previous minor: no kubelet newer, nothing cordoned, every pod Ready.
#[tokio::test(start_paused = true)]
async fn the_demos_rollback_story() {
    const DEMO_POLICY: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations:
  label: node.kubernetes.io/instance-type
  maxUnavailable: 2
  canaries: 1
canarySoak: 30m
waitBetweenBatches: 5m
drainTimeout: 10m
drain:
  deleteEmptyDirData: true
";
    let mut world = scenario("seed", 1);
    // What the demo's operator fixes before starting (the seed's blockers), and its fault.
    sim_scenario::fix_blockers(&mut world).expect("fixes");
    let r640 = sim_scenario::kubelet_fails_in_generation(
        &mut world,
        "dell-r640",
        "v1.35.0".parse().expect("v"),
    );
    let mut h = Harness::new(world, DEMO_POLICY).await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let back = v["plan"]["path"]
        .as_array()
        .expect("path")
        .iter()
        .filter_map(|hop| hop["version"].as_str())
        .rfind(|v| v.starts_with("v1.34."))
        .expect("a hop through 1.34")
        .to_string();
    let halted = h.until_phase("halted", 7 * DAY).await;
    let reason = halted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("verify failed") && reason.contains("rolled back to v1.32.4 and parked"),
        "{reason}"
    );
    let canary = r640
        .iter()
        .find(|m| reason.contains(&format!("{m} was rolled back")))
        .expect("an r640 canary")
        .clone();
    let started = started_nodes(&h.events(&run).await);
    for m in r640.iter().filter(|m| **m != canary) {
        assert!(
            !started.contains(m.as_str()),
            "{m} started after its canary failed"
        );
    }
    h.json(
        Method::POST,
        "/v1/run/abort",
        Some(&json!({"reason": "rolling back"})),
    )
    .await
    .expect("abort");
    h.until_phase("aborted", DAY).await;
    let r = rollback(&h, json!({"to": back, "run": run}))
        .await
        .expect("rollback --to");
    assert!(r["run"].is_string(), "{r:#}");
    h.until_phase("completed", 7 * DAY).await;
    let w = h.sim.world();
    let back_v: upgraded_events::Version = back.parse().expect("v");
    assert_eq!(
        w.apiserver_version(),
        Some(back_v),
        "the control plane is one minor back"
    );
    for n in w.nodes.values() {
        assert!(n.kubelet <= back_v, "{} runs kubelet {}", n.name, n.kubelet);
        assert!(!n.unschedulable, "{} left cordoned", n.name);
    }
    assert_eq!(w.nodes[&canary].kubelet.to_string(), "v1.32.4");
    let not_ready: Vec<&str> = w
        .pods
        .values()
        .filter(|p| !p.is_ready(w.now(), &w.nodes))
        .map(|p| p.name.as_str())
        .collect();
    assert!(not_ready.is_empty(), "pods not Ready: {not_ready:?}");
}

/// Rollbacks of one run compose: after `--node w-1`, a `--to` of the same run leaves w-1
/// where the first rollback put it and takes the rest one minor back.
#[tokio::test(start_paused = true)]
async fn a_second_rollback_of_the_same_run_builds_on_the_first() {
    let (mut h, forward) = upgraded_lab().await;
    rollback(&h, json!({"nodes": ["w-1"]}))
        .await
        .expect("--node");
    h.until_phase("completed", DAY).await;
    let via = h
        .events(&forward)
        .await
        .iter()
        .filter_map(|e| e["event"]["StepStarted"]["step"]["KubeadmUpgrade"]["version"].as_str())
        .find(|v| v.starts_with("v1.34."))
        .expect("a hop through 1.34")
        .to_string();
    // The newest run is a rollback: name the run to undo.
    let e = rollback(&h, json!({"to": via}))
        .await
        .expect_err("newest is a rollback");
    assert!(e.message.contains("is itself the rollback"), "{e}");
    let p = rollback(&h, json!({"to": via, "run": forward, "planOnly": true}))
        .await
        .expect("plan");
    let hosts: Vec<&str> = p["plan"]["batches"]
        .as_array()
        .expect("batches")
        .iter()
        .flat_map(|b| b["nodes"].as_array().into_iter().flatten())
        .filter_map(|n| n["host"].as_str().or(n["name"].as_str()))
        .collect();
    assert!(
        !hosts.contains(&"w-1"),
        "w-1 is below the target already: {hosts:?}"
    );
    rollback(&h, json!({"to": via, "run": forward}))
        .await
        .expect("--to");
    h.until_phase("completed", DAY).await;
    let w = h.sim.world();
    assert_eq!(w.nodes["w-1"].kubelet.to_string(), "v1.33.5");
    for n in ["w-2", "w-3", "cp-1"] {
        assert_eq!(w.nodes[n].kubelet.to_string(), via, "{n}");
    }
    assert_eq!(w.apiserver_version().map(|v| v.to_string()), Some(via));
}

/// A rollback run is a run: pause, resume and abort act on it as on any run, and an abort
/// uncordons what it cordoned.
#[tokio::test(start_paused = true)]
async fn pause_resume_and_abort_work_on_a_rollback_run() {
    let (mut h, _) = upgraded_lab().await;
    let r = rollback(&h, json!({"nodes": ["w-1", "w-2"]}))
        .await
        .expect("rollback");
    let run = r["run"].as_str().expect("run").to_string();
    h.until_record(&run, DAY, |e| {
        e["event"]["StepSucceeded"]["step"] == "Cordon"
    })
    .await;
    h.json(
        Method::POST,
        "/v1/run/pause",
        Some(&json!({"reason": "look first"})),
    )
    .await
    .expect("pause");
    let paused = h.until_phase("paused", DAY).await;
    assert_eq!(paused["run"], run.as_str());
    h.json(Method::POST, "/v1/run/resume", None)
        .await
        .expect("resume");
    h.until_phase("running", DAY).await;
    h.json(
        Method::POST,
        "/v1/run/abort",
        Some(&json!({"reason": "enough"})),
    )
    .await
    .expect("abort");
    h.until_phase("aborted", DAY).await;
    assert!(
        h.sim.world().nodes.values().all(|n| !n.unschedulable),
        "an abort uncordons"
    );
    let evs = h.events(&run).await;
    for kind in ["RunPaused", "RunResumed", "AbortRequested"] {
        assert!(evs.iter().any(|e| e["event"].get(kind).is_some()), "{kind}");
    }
    assert!(evs.iter().any(|e| e["event"] == "RunAborted"));
}

/// `gates.onFailure: rollback-run`: a worker that cannot run the new kubelet fails its gate
/// after the control plane has moved two minors; the run is aborted and the whole of it
/// rolled back by itself: the control plane one minor at a time to where it started, every
/// node it changed to its recorded version. Nothing is left newer, cordoned or unready.
#[tokio::test(start_paused = true)]
async fn rollback_run_takes_the_whole_run_back_by_itself() {
    let policy =
        format!("{CANARY_POLICY}gates: {{nodeReadyTimeout: 5m, onFailure: rollback-run}}\n")
            .replacen("gates: {nodeReadyTimeout: 5m}\n", "", 1);
    let mut h = canary_cluster(&policy, Some("v1.35.0")).await;
    let v = h.start("v1.35.3").await.expect("start");
    let forward = v["run"].as_str().expect("run").to_string();
    // The forward run ends aborted; its whole-run rollback starts and completes.
    let done = h
        .until(7 * DAY, |a| {
            a["run"] != forward.as_str() && a["phase"] == "completed"
        })
        .await;
    let rollback = done["run"].as_str().expect("the rollback run").to_string();
    let evs = h.events(&forward).await;
    assert!(
        evs.iter()
            .any(|e| e["event"].get("RollbackRequested").is_some())
    );
    assert!(evs.iter().any(|e| e["event"] == "RunAborted"));
    let planned = h
        .events(&rollback)
        .await
        .into_iter()
        .find_map(|e| e["event"].get("RunPlanned").cloned())
        .expect("planned");
    assert_eq!(planned["plan"]["undoes"], forward.as_str());
    assert_eq!(
        planned["by"]["name"], "upgraded",
        "started by the daemon itself"
    );
    let w = h.sim.world();
    assert_eq!(
        w.apiserver_version().map(|v| v.to_string()).as_deref(),
        Some("v1.33.5")
    );
    for n in w.nodes.values() {
        assert_eq!(n.kubelet.to_string(), "v1.33.5", "{}", n.name);
        assert!(n.ready, "{} not Ready", n.name);
        assert!(!n.unschedulable, "{} left cordoned", n.name);
    }
}

/// A crash as the run is aborted for `rollback-run`: the restarted daemon still rolls the
/// run back, and only once.
#[tokio::test(start_paused = true)]
async fn a_crash_between_the_abort_and_the_whole_run_rollback_loses_neither() {
    let policy =
        format!("{CANARY_POLICY}gates: {{nodeReadyTimeout: 5m, onFailure: rollback-run}}\n")
            .replacen("gates: {nodeReadyTimeout: 5m}\n", "", 1);
    let mut h = canary_cluster(&policy, Some("v1.35.0")).await;
    let v = h.start("v1.35.3").await.expect("start");
    let forward = v["run"].as_str().expect("run").to_string();
    h.until_record(&forward, 7 * DAY, |e| e["event"] == "RunAborted")
        .await;
    h.crash();
    h.restart().await;
    let done = h
        .until(7 * DAY, |a| {
            a["run"] != forward.as_str() && a["phase"] == "completed"
        })
        .await;
    let runs = h.json(Method::GET, "/v1/runs", None).await.expect("runs");
    assert_eq!(
        runs.as_array().map(Vec::len),
        Some(2),
        "one forward, one rollback: {runs:#}"
    );
    assert_eq!(done["target"], "v1.33.5");
    assert!(
        h.sim
            .world()
            .nodes
            .values()
            .all(|n| n.kubelet.to_string() == "v1.33.5" && !n.unschedulable)
    );
}

/// `upgradectl rollback --all`: the operator's whole-run rollback, the same plan rollback-run
/// makes by itself.
#[tokio::test(start_paused = true)]
async fn rollback_all_takes_a_finished_run_back_to_where_it_started() {
    let (mut h, forward) = upgraded_lab().await;
    let e = rollback(&h, json!({"all": true, "nodes": ["w-1"]}))
        .await
        .expect_err("both");
    assert!(e.message.contains("choose one"), "{e}");
    let p = rollback(&h, json!({"all": true, "planOnly": true}))
        .await
        .expect("plan");
    let why: Vec<&str> = p["why"]
        .as_array()
        .expect("why")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        why.iter()
            .any(|w| w.starts_with("cp-1: control plane v1.35.3 →")),
        "{why:#?}"
    );
    assert!(why.iter().any(|w| w.contains("→ v1.33.5")), "{why:#?}");
    let r = rollback(&h, json!({"all": true}))
        .await
        .expect("rollback --all");
    assert_eq!(r["undoes"], forward.as_str());
    h.until_phase("completed", DAY).await;
    let w = h.sim.world();
    assert_eq!(
        w.apiserver_version().map(|v| v.to_string()).as_deref(),
        Some("v1.33.5")
    );
    for n in w.nodes.values() {
        assert_eq!(n.kubelet.to_string(), "v1.33.5", "{}", n.name);
        assert!(!n.unschedulable, "{}", n.name);
    }
}
