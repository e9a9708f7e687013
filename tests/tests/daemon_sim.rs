//! The daemon's engine against the simulated cluster, on the in-process harness
//! (`upgraded_harness`): the real engine, sled log, kube-rs adapter, node agents and API on
//! the sim's router, in paused virtual time. Hours of upgrade take seconds; every wait is
//! bounded in virtual time, nothing sleeps, and each scenario ends the same on every run.
//! (The real binaries over real sockets: `sim_serve.rs`, `kill.rs`, the lab.)
//!
//! Covers: a PodDisruptionBudget that refuses every eviction → `EvictionBlocked`, the nodes
//! parked (uncordoned), the run halted with a message naming the budget; the budget fixed →
//! `resume` finishes the run; a node cordoned by someone else stays cordoned; hostile node
//! names are refused before anything is done; maintenance windows; a canary's health gate;
//! a scale-up to unblock a drain that a crash does not leave behind; missing rights; a pod
//! under two budgets.

use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};
use upgraded_harness::{Harness, scenario, sim_clock};
use upgraded_sim::scenario as sim_scenario;

const POLICY: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 1, canaries: 0}
waitBetweenBatches: 1m
drainTimeout: 2m
retries: {backoff: 1s, maxBackoff: 5s}
drain: {onBlocked: park, uncordonParked: true}
";

/// Virtual time a scenario may take before it fails (the lab's upgrade takes about two
/// hours of it).
const DAY: Duration = Duration::from_secs(24 * 3600);

fn run_id(v: &Value) -> String {
    v["run"].as_str().expect("run id").to_string()
}

#[tokio::test(start_paused = true)]
async fn blocked_budget_parks_then_resume_finishes_and_foreign_cordon_stays() {
    let mut world = scenario("lab", 7);
    world.set_unschedulable("w-3", true).expect("cordon w-3");
    let mut h = Harness::new(world, POLICY).await;

    let v = h.start("v1.35.3").await.expect("start");
    let run = run_id(&v);
    // The planner saw a healthy budget; during the control-plane phase its replicas become
    // unhealthy and it refuses every eviction.
    h.sim
        .world()
        .faults
        .blocking_pdbs
        .insert("default/app".into());

    let halted = h.until_phase("halted", DAY).await;
    let reason = halted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("parked") && reason.contains("pdb/default/app"),
        "the halt says which nodes and which budget: {reason}"
    );
    let evs = h.events(&run).await;
    let blocked: Vec<&Value> = evs
        .iter()
        .filter_map(|e| e["event"].get("EvictionBlocked"))
        .collect();
    let app: Vec<&&Value> = blocked
        .iter()
        .filter(|b| b["pdb"] == "pdb/default/app")
        .collect();
    assert!(
        !app.is_empty(),
        "no EvictionBlocked for the app: {blocked:?}"
    );
    assert!(app.iter().all(|b| b["disruptions_allowed"] == 0), "{app:?}");
    let parked: Vec<&Value> = evs
        .iter()
        .filter_map(|e| e["event"].get("NodeParked"))
        .collect();
    assert!(!parked.is_empty());
    {
        // Parked nodes were uncordoned; only the foreign cordon remains.
        let w = h.sim.world();
        for n in w.nodes.values() {
            assert_eq!(n.unschedulable, n.name == "w-3", "{}", n.name);
        }
    }

    // While it is halted, a dry run plans (recording nothing); a real start is refused.
    let dry = h
        .json(
            Method::POST,
            "/v1/runs",
            Some(&serde_json::json!({"target": "v1.35.3", "dryRun": true})),
        )
        .await
        .expect("a dry run while another run is halted");
    assert!(
        dry["run"].is_null() && dry["plan"]["target"] == "v1.35.3",
        "{dry:#}"
    );
    let busy = h.start("v1.35.3").await.expect_err("busy");
    assert!(busy.to_string().contains("HTTP 409"), "{busy}");

    // The operator fixes the budget and resumes.
    h.sim.world().faults.blocking_pdbs.clear();
    h.json(Method::POST, "/v1/run/resume", None)
        .await
        .expect("resume");
    h.until_phase("completed", DAY).await;
    let w = h.sim.world();
    for n in w.nodes.values() {
        assert_eq!(n.kubelet.to_string(), "v1.35.3", "{}", n.name);
        assert_eq!(
            n.unschedulable,
            n.name == "w-3",
            "{}: cordoned by someone else stays cordoned, the rest are schedulable",
            n.name
        );
    }
    for p in w.pdbs.values() {
        assert!(w.pdb_status(p).current_healthy >= w.pdb_status(p).desired_healthy);
    }
    // (That the daemon names itself in the apiserver's audit trail is a property of its
    // real HTTP client: `sim_serve.rs` checks it on the real binaries.)
}

#[tokio::test(start_paused = true)]
async fn hostile_node_names_are_refused_before_anything_happens() {
    let mut world = scenario("lab", 7);
    sim_scenario::add_machine(
        &mut world,
        "w-4;reboot",
        "dell-r640",
        None,
        "v1.33.5".parse().expect("v"),
        "v2",
        10,
    )
    .expect("hostile node");
    let h = Harness::new(world, POLICY).await;
    let err = h.start("v1.35.3").await.expect_err("must refuse");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("w-4;reboot") && msg.contains("DNS-1123"),
        "clear error naming the node: {msg}"
    );
    let runs = h.json(Method::GET, "/v1/runs", None).await.expect("runs");
    assert_eq!(runs, json!([]), "nothing recorded");
    assert!(h.sim.world().nodes.values().all(|n| !n.unschedulable));
}

/// The current minute since the epoch, on the harness's clock (taken once: the windows and
/// the checks must agree).
fn this_minute(h: &Harness) -> i64 {
    h.now().0 / 60_000
}

/// `HH:MM` UTC of `base` + `minutes`.
fn hh_mm(base: i64, minutes: i64) -> String {
    let m = (base + minutes).rem_euclid(24 * 60);
    format!("{:02}:{:02}", m / 60, m % 60)
}

fn millis(base: i64, minutes: i64) -> i64 {
    (base + minutes) * 60_000
}

#[tokio::test(start_paused = true)]
async fn a_closing_maintenance_window_makes_the_run_wait_then_it_resumes_by_itself() {
    // Window A is open now and closes in 12 minutes; window B opens in 40. Each node is
    // estimated at about 8 minutes, so only the first ones fit in A; nothing may start in
    // between, and the rest start in B by themselves.
    let (a0, a1, b0, b1) = (-10, 12, 40, 600);
    let base = upgraded_sim::clock::VIRTUAL_EPOCH as i64 / 60_000;
    let policy = format!(
        "{POLICY}durations: {{preflight: 1m, etcdSnapshot: 1m, kubeadmApply: 1m, kubeadmNode: 1m, drain: 1m, upgradePackages: 1m, restartKubelet: 1m, verify: 1m}}\nmaintenanceWindows:\n  - {{days: [mon, tue, wed, thu, fri, sat, sun], start: '{}', end: '{}'}}\n  - {{days: [mon, tue, wed, thu, fri, sat, sun], start: '{}', end: '{}'}}\n",
        hh_mm(base, a0),
        hh_mm(base, a1),
        hh_mm(base, b0),
        hh_mm(base, b1)
    );
    let mut h = Harness::new(scenario("lab", 7), &policy).await;
    assert_eq!(
        this_minute(&h),
        base,
        "both harnesses start at the same minute"
    );
    let v = h.start("v1.35.3").await.expect("start");
    let run = run_id(&v);

    // Every status the engine publishes is checked (not a sample of them).
    let waited = std::cell::RefCell::new(None);
    h.until(2 * DAY, |a| {
        if let Some(w) = a["waiting"].as_str() {
            let busy: Vec<&Value> = a["nodes"]
                .as_array()
                .map(|ns| {
                    ns.iter()
                        .filter(|n| !matches!(n["phase"].as_str(), Some("pending" | "done")))
                        .collect()
                })
                .unwrap_or_default();
            assert!(busy.is_empty(), "waiting with nodes under way: {busy:?}");
            waited.borrow_mut().get_or_insert_with(|| w.to_string());
        }
        assert!(a["phase"] != "halted", "halted: {a:#}");
        a["phase"] == "completed"
    })
    .await;
    let waited = waited.take().expect("the run waited for the next window");
    assert!(
        waited.contains("outside the maintenance windows"),
        "{waited}"
    );

    // Every node started inside a window with its estimate fitting; some only in B.
    let evs = h.events(&run).await;
    let plan = evs
        .iter()
        .find_map(|e| e["event"].get("RunPlanned"))
        .expect("planned");
    let mut estimate = std::collections::BTreeMap::new();
    for b in plan["plan"]["batches"].as_array().expect("batches") {
        for n in b["nodes"].as_array().expect("nodes") {
            let name = n["name"].as_str().expect("name").to_string();
            estimate.insert(name, n["estimateSecs"].as_i64().unwrap_or(0) * 1000);
        }
    }
    let mut started = std::collections::BTreeMap::new();
    for e in &evs {
        if let Some(s) = e["event"].get("StepStarted") {
            let name = s["node"].as_str().expect("node").to_string();
            started.entry(name).or_insert(e["at"].as_i64().expect("at"));
        }
    }
    let (a0, a1, b0, b1) = (
        millis(base, a0),
        millis(base, a1),
        millis(base, b0),
        millis(base, b1),
    );
    let mut in_b = 0;
    for (name, t) in &started {
        let est = estimate[name];
        let fits = |s: i64, e: i64| *t >= s && t + est <= e;
        assert!(
            fits(a0, a1) || fits(b0, b1),
            "{name} started at {t} (estimate {est} ms) outside the windows"
        );
        in_b += usize::from(fits(b0, b1));
    }
    assert!(in_b > 0, "nothing waited for window B: {started:?}");
}

#[tokio::test(start_paused = true)]
async fn a_canary_failing_its_health_gate_halts_before_the_rest_of_its_generation() {
    use upgraded_events::inventory::LabelSelector;
    use upgraded_sim::model::CrashLoopFault;

    // Two workers per generation: w-1 and w-4 are dell-r640 (the oldest), and so on.
    let mut world = upgraded_sim::World::new(sim_clock(), 7);
    sim_scenario::small(&mut world, 1, 6, "v1.33.5".parse().expect("v")).expect("cluster");
    world.tick();
    world.settle(30 * 24 * 3600 * 1000);
    let policy = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 1, canaries: 1, order: [dell-r640, dell-r740, hp-dl380]}
canarySoak: 10m
waitBetweenBatches: 1m
retries: {maxAttempts: 2, backoff: 1s, maxBackoff: 2s}
";
    let mut h = Harness::new(world, policy).await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = run_id(&v);

    // When the first canary starts, its new kubelet turns out to crash-loop kube-proxy.
    h.until(DAY, |st| {
        let w1 = st["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n["name"] == "w-1"))
            .map(|n| n["phase"].clone())
            .unwrap_or(Value::Null);
        w1 != "pending" && !w1.is_null()
    })
    .await;
    h.sim.world().faults.crash_loops.push(CrashLoopFault {
        selector: LabelSelector {
            match_labels: [("k8s-app".to_string(), "kube-proxy".to_string())].into(),
            match_expressions: vec![],
        },
        from: "v1.35.0".parse().expect("v"),
    });

    let halted = h.until_phase("halted", DAY).await;
    let reason = halted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("w-1") && reason.contains("CrashLoopBackOff"),
        "the halt names the canary and the gate: {reason}"
    );
    let evs = h.events(&run).await;
    let started: std::collections::BTreeSet<String> = evs
        .iter()
        .filter_map(|e| e["event"].get("StepStarted"))
        .filter_map(|s| s["node"].as_str().map(str::to_string))
        .collect();
    assert!(started.contains("w-1"));
    for rest in ["w-4", "w-2", "w-3", "w-5", "w-6"] {
        assert!(
            !started.contains(rest),
            "{rest} started after the canary failed: {started:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_budget_allowing_nothing_is_unblocked_by_a_scale_up_that_a_crash_does_not_leave_behind() {
    let mut world = scenario("lab", 7);
    // Two replicas under minAvailable 2: no eviction allowed while healthy.
    sim_scenario::strict_budget(&mut world, "prod", "solo", 2).expect("solo");
    // Evicted pods take 20 minutes to go: the scale-up stays in place long enough for the
    // daemon to crash in the middle of it.
    for w in ["w-1", "w-2", "w-3"] {
        world
            .faults
            .slow_termination_ms
            .insert(w.into(), 20 * 60 * 1000);
    }
    let policy = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 1, canaries: 0}
waitBetweenBatches: 1m
drainTimeout: 2h
retries: {backoff: 1s, maxBackoff: 5s}
drain: {onBlocked: pause, scaleUpToUnblock: true}
gates: {nodeReadyTimeout: 2h}
";
    let mut h = Harness::new(world, policy).await;
    let v = h
        .start("v1.35.3")
        .await
        .expect("start: a warning, not a blocker");
    let run = run_id(&v);

    // The daemon dies as soon as the first scale-up is recorded.
    let first = h
        .until_record(&run, DAY, |e| {
            e["event"]["WorkloadScaled"]["restore"] == false
        })
        .await["event"]["WorkloadScaled"]
        .clone();
    h.crash();
    assert_eq!(
        (first["from"].clone(), first["to"].clone()),
        (json!(2), json!(3))
    );
    assert_eq!(first["name"], "solo");

    h.restart().await;
    h.until_phase("completed", DAY).await;
    let evs = h.events(&run).await;
    // Every scale-up is followed by its restore, by the same node, before that node's
    // uncordon; the first one's restore came from the restarted daemon.
    let mut open: Option<(String, u64)> = None;
    let mut ups = 0;
    let mut recovered_between = false;
    for e in &evs {
        let seq = e["seq"].as_u64().expect("seq");
        if e["event"].get("RunRecovered").is_some() && open.is_some() && ups == 1 {
            recovered_between = true;
        }
        if let Some(s) = e["event"].get("WorkloadScaled") {
            let node = s["node"].as_str().expect("node").to_string();
            if s["restore"] == false {
                assert!(open.is_none(), "scaled twice without a restore: {s}");
                open = Some((node, seq));
                ups += 1;
            } else {
                let (n, _) = open.take().expect("a restore without a scale-up");
                assert_eq!(n, node);
                assert_eq!(s["to"], 2, "restored to the original replicas: {s}");
            }
        }
        if let Some(s) = e["event"].get("StepSucceeded")
            && s["step"] == "Uncordon"
            && let Some((n, at)) = &open
        {
            assert_ne!(
                s["node"].as_str(),
                Some(n.as_str()),
                "{n} uncordoned with its scale-up (seq {at}) not restored"
            );
        }
    }
    assert!(open.is_none(), "a scale-up was never restored");
    assert!(recovered_between, "the kill did not land inside a scale-up");
    assert!(ups >= 2, "each worker holding a solo pod scales it: {ups}");
    let status = h.active().await;
    assert!(status.get("scaled").is_none(), "{status:#}");

    let w = h.sim.world();
    let solo = w
        .workloads
        .values()
        .find(|d| d.name == "solo")
        .expect("solo");
    assert_eq!(solo.replicas, 2, "the original replicas are back");
    for p in w.pdbs.values() {
        let s = w.pdb_status(p);
        assert!(s.current_healthy >= s.desired_healthy, "{}: {s:?}", p.name);
    }
    for n in w.nodes.values() {
        assert_eq!(n.kubelet.to_string(), "v1.35.3", "{}", n.name);
        assert!(!n.unschedulable, "{} left cordoned", n.name);
    }
}

#[tokio::test(start_paused = true)]
async fn a_role_missing_a_right_is_refused_before_the_plan_is_recorded() {
    let h = Harness::new(scenario("lab", 7), POLICY).await;
    {
        let mut w = h.sim.world();
        w.faults.denied.insert("patch nodes".into());
        w.faults.denied.insert("create pods/eviction".into());
    }
    let err = h.start("v1.35.3").await.expect_err("must refuse");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("HTTP 403")
            && msg.contains("patch nodes (cordon and uncordon)")
            && msg.contains("create pods/eviction (drains through the Eviction API)")
            && !msg.contains("list pods"),
        "names every missing right, and only those: {msg}"
    );
    let runs = h.json(Method::GET, "/v1/runs", None).await.expect("runs");
    assert_eq!(runs, serde_json::json!([]), "nothing was recorded");
    assert!(
        h.sim.world().nodes.values().all(|n| !n.unschedulable),
        "no node was touched"
    );
    // Granted, the same start goes ahead.
    h.sim.world().faults.denied.clear();
    h.start("v1.35.3").await.expect("start with the rights");
}

#[tokio::test(start_paused = true)]
async fn a_pod_under_two_budgets_halts_the_drain_at_once_with_the_reason() {
    let mut h = Harness::new(scenario("lab", 7), POLICY).await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = run_id(&v);
    // After the plan (which would have refused it), someone adds a second budget over the
    // same pods: the API server answers their evictions with 500, never with a yes.
    {
        let mut w = h.sim.world();
        let selector = w
            .pdbs
            .get(&("default".to_string(), "app".to_string()))
            .expect("the lab's budget")
            .selector
            .clone();
        w.add_pdb(
            "default",
            "app-again",
            selector,
            None,
            Some(upgraded_events::inventory::IntOrPercent::Int(1)),
        )
        .expect("second budget");
    }
    let halted = h.until_phase("halted", DAY).await;
    let reason = halted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("more than one PodDisruptionBudget"),
        "the halt names the cause: {reason}"
    );
    let failed: Vec<Value> = h
        .events(&run)
        .await
        .into_iter()
        .filter_map(|e| e["event"].get("StepFailed").cloned())
        .filter(|f| f["step"] == "Drain")
        .collect();
    assert!(!failed.is_empty());
    assert!(
        failed.iter().all(|f| f["attempt"] == 1),
        "refused once, not retried: {failed:?}"
    );
}

/// A run's records with what differs between two runs by design taken out: the run id and
/// the absolute time (each harness starts where virtual time stands).
async fn normalized(h: &Harness, run: &str) -> Vec<Value> {
    let evs = h.events(run).await;
    let t0 = evs.first().and_then(|e| e["at"].as_i64()).unwrap_or(0);
    evs.into_iter()
        .map(|mut e| {
            e["at"] = json!(e["at"].as_i64().unwrap_or(0) - t0);
            e["run"] = Value::Null;
            e
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_same_scenario_records_the_same_run_twice() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut world = scenario("lab", 7);
        world.set_unschedulable("w-3", true).expect("cordon w-3");
        let mut h = Harness::new(world, POLICY).await;
        let run = run_id(&h.start("v1.35.3").await.expect("start"));
        h.sim
            .world()
            .faults
            .blocking_pdbs
            .insert("default/app".into());
        h.until_phase("halted", DAY).await;
        h.sim.world().faults.blocking_pdbs.clear();
        h.json(Method::POST, "/v1/run/resume", None)
            .await
            .expect("resume");
        h.until_phase("completed", DAY).await;
        runs.push(normalized(&h, &run).await);
    }
    assert!(runs[0].len() > 50, "a whole run: {} records", runs[0].len());
    for (a, b) in runs[0].iter().zip(&runs[1]) {
        assert_eq!(a, b, "the runs differ");
    }
    assert_eq!(runs[0].len(), runs[1].len());
}

/// The operator guide's lab: the `kind` scenario with the exercise's nginx and its budget,
/// made through the API as `kubectl create` makes them, carried from v1.34.0 to v1.35.3.
#[tokio::test(start_paused = true)]
async fn the_guides_kind_cluster_goes_to_v1_35_with_its_budget_kept() {
    use upgraded_sim::admission::{FieldValidation, kinds};
    use upgraded_sim::resource::Res;

    let mut world = scenario("kind", 7);
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nginx", "labels": {"app": "nginx"}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}
            }
        }
    });
    let budget = json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "nginx-pdb"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "nginx"}}}
    });
    for (res, body) in [(Res::Deployment, deployment), (Res::Budget, budget)] {
        kinds::create(
            &mut world,
            res,
            Some("default"),
            &body,
            FieldValidation::Strict,
        )
        .unwrap_or_else(|e| panic!("{res:?}: {e:?}"));
    }
    world.advance(60_000);
    // Watched from when the new pods are Ready: the upgrade must not take the budget lower.
    world.watch_budgets();
    assert_eq!(
        world
            .budget_low_water
            .as_ref()
            .and_then(|l| l.get("default/nginx-pdb")),
        Some(&1)
    );
    let mut h = Harness::new(world, POLICY).await;

    let plan = h
        .json(
            Method::POST,
            "/v1/runs",
            Some(&json!({"target": "v1.35.3", "dryRun": true})),
        )
        .await
        .expect("a plan for the kind cluster");
    let hops: Vec<&str> = plan["plan"]["path"]
        .as_array()
        .map(|hs| hs.iter().filter_map(|h| h["version"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(hops, ["v1.35.3"], "one minor: {plan:#}");
    assert_eq!(plan["plan"]["workers"], 2, "{plan:#}");

    let run = run_id(&h.start("v1.35.3").await.expect("start"));
    h.until_phase("completed", DAY).await;
    let evs = h.events(&run).await;
    let blocked = evs
        .iter()
        .filter(|e| e["event"].get("EvictionBlocked").is_some())
        .count();
    let w = h.sim.world();
    for n in w.nodes.values() {
        assert_eq!(n.kubelet.to_string(), "v1.35.3", "{}", n.name);
        assert!(!n.unschedulable, "{} uncordoned", n.name);
    }
    let cp = w.nodes["upgrade-lab-control-plane"]
        .control_plane
        .as_ref()
        .expect("the control plane");
    assert_eq!(cp.apiserver.to_string(), "v1.35.3");
    let low = w.budget_low_water.clone().expect("watched");
    assert!(blocked > 0, "the last worker's drain waited on the budget");
    assert!(
        low.get("default/nginx-pdb").is_some_and(|l| *l == 0),
        "nginx kept two Ready at every change: {low:?} ({blocked} evictions refused on the way)"
    );
    let ready = w
        .pods
        .values()
        .filter(|p| p.spec.labels.get("app").map(String::as_str) == Some("nginx"))
        .filter(|p| p.is_ready(w.now(), &w.nodes))
        .count();
    assert_eq!(ready, 3);
}
