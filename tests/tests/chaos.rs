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
use upgraded_harness::{Harness, Options, chaos, scenario};
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
    lab_with(POLICY, windows).await
}

/// The lab's harness under `policy` (YAML) with `options`.
async fn lab_under(policy: &str, options: Options) -> Harness {
    Harness::with(
        scenario("lab", 7),
        PlanPolicy::from_yaml(policy).expect("policy"),
        options,
    )
    .await
}

/// Options with node faults from `faults` only.
fn node_faults_only(faults: &std::sync::Arc<NodeFaults>) -> Options {
    Options {
        node_faults: Some(faults.clone()),
        ..Options::default()
    }
}

/// [`lab`] under `policy` (YAML).
async fn lab_with(
    policy: &str,
    windows: &[(i64, i64, ApiFault)],
) -> (Harness, std::sync::Arc<ApiFaults>) {
    let faults = ApiFaults::new(Vec::new());
    let h = lab_under(
        policy,
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

/// The lab upgraded without faults: the measure of the faulted runs; its records.
async fn calm_lab() -> (Harness, Vec<Value>) {
    let (mut calm, _) = lab(&[]).await;
    let (end, events) = upgrade(&mut calm).await;
    assert_eq!(end["phase"], "completed");
    (calm, events)
}

#[tokio::test(start_paused = true)]
async fn outages_of_every_kind_are_ridden_out_and_change_nothing_that_is_done() {
    let (calm, events) = calm_lab().await;
    let want_nodes = chaos::nodes_of(&calm);
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
            chaos::nodes_of(&h),
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
async fn a_long_outage_pauses_the_run_saying_what_did_not_answer_and_it_resumes_when_it_answers() {
    // The API server answers 503 from minute 2 to minute 40; the policy pauses after 15.
    let fault = ApiFault::Status {
        code: 503,
        retry_after: None,
    };
    let (mut h, faults) = lab(&[(120_000, 2_400_000, fault)]).await;
    let t0 = h.now().0;
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
    // Nobody resumes it: once the API answers again, the daemon does (outage.resume: auto).
    let run = end["run"].as_str().expect("run").to_string();
    let end = h.until_phase("completed", DAY).await;
    assert_eq!(end["phase"], "completed");
    let events = h.events(&run).await;
    let resumed = events
        .iter()
        .find(|e| e["event"].get("RunResumed").is_some())
        .expect("resumed");
    assert_eq!(resumed["event"]["RunResumed"]["by"]["name"], "upgraded");
    let at = resumed["at"].as_i64().expect("at");
    assert!(
        at >= t0 + 2_400_000 && at < t0 + 2_400_000 + 120_000,
        "resumed {} s after the API answered again",
        (at - t0 - 2_400_000) / 1000
    );
}

#[tokio::test(start_paused = true)]
async fn under_outage_resume_manual_the_paused_run_waits_for_an_operator() {
    let policy = POLICY.replace(
        "outage: {pauseAfter: 15m}",
        "outage: {pauseAfter: 15m, resume: manual}",
    );
    let fault = ApiFault::Status {
        code: 503,
        retry_after: None,
    };
    let (mut h, _) = lab_with(&policy, &[(120_000, 2_400_000, fault)]).await;
    let (end, _) = upgrade(&mut h).await;
    assert_eq!(end["phase"], "paused", "{end}");
    // Hours after the API is back, still paused; a resume carries the run to its end.
    tokio::time::sleep(Duration::from_secs(4 * 3600)).await;
    assert_eq!(h.active().await["phase"], "paused");
    h.json(Method::POST, "/v1/run/resume", None)
        .await
        .expect("resume");
    let end = h.until_phase("completed", DAY).await;
    assert_eq!(end["phase"], "completed");
}

#[tokio::test(start_paused = true)]
async fn lost_answers_from_the_nodes_are_probed_and_nothing_is_done_twice() {
    let (calm, events) = calm_lab().await;
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
        let mut h = lab_under(POLICY, node_faults_only(&node_faults)).await;
        let t0 = h.now().0;
        for i in 0..60 {
            node_faults.add(NodeWindow {
                node: None,
                from: Timestamp(t0 + offset + i * 180_000 + 60_000),
                until: Timestamp(t0 + offset + i * 180_000 + 100_000),
                fault,
                next_change: false,
                only: None,
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

/// Steps done (succeeded, or found done by a probe) per (entry, step).
fn done_steps(events: &[Value]) -> BTreeMap<String, usize> {
    let mut out = successes(events);
    for e in events {
        if let Some(p) = e["event"].get("StepProbed")
            && p["done"] == true
        {
            *out.entry(format!("{} {}", p["node"], p["step"]))
                .or_insert(0) += 1;
        }
    }
    out
}

/// The lab under `fault`, met by `node` at its first command that changes it (and whose
/// name starts with `only`, when given).
async fn lab_with_node_fault(
    node: &str,
    fault: NodeFault,
    only: Option<&'static str>,
) -> (Harness, std::sync::Arc<NodeFaults>) {
    let node_faults = NodeFaults::new();
    let h = lab_under(POLICY, node_faults_only(&node_faults)).await;
    let t0 = h.now().0;
    node_faults.add(NodeWindow {
        node: Some(node.to_string()),
        from: Timestamp(t0),
        until: Timestamp(t0 + DAY.as_millis() as i64),
        fault,
        next_change: true,
        only,
    });
    (h, node_faults)
}

/// A machine that reboots in the middle of its package install (the first package in, the
/// rest not; down five minutes): the step is in doubt, its probes cannot look while the
/// machine is down (recorded, no attempts used), then find the install partial, and the
/// install runs again; the run completes as a calm one, every effect once. A worker that
/// never comes back parks as it is (cordoned) after `gates.nodeReadyTimeout`, and the run
/// ends halted naming it once every other node is done; a control-plane node that never
/// comes back halts the run.
#[tokio::test(start_paused = true)]
async fn a_machine_rebooting_mid_step_is_probed_and_one_that_never_comes_back_parks() {
    let (calm, events) = calm_lab().await;
    let want_effects = calm.sim.world().effects.clone();
    let want_steps = done_steps(&events);
    let (worker, cp) = {
        let w = calm.sim.world();
        let of = |cp: bool| {
            w.nodes
                .iter()
                .find(|(_, n)| n.control_plane.is_some() == cp)
                .map(|(name, _)| name.clone())
                .expect("a node of each role")
        };
        (of(false), of(true))
    };

    let reboot = NodeFault::Reboot { down_secs: 300 };
    let (mut h, faults) = lab_with_node_fault(&worker, reboot, Some("InstallPackages")).await;
    let (end, events) = upgrade(&mut h).await;
    assert_eq!(end["phase"], "completed", "{end}");
    assert_eq!(
        faults.met().get("node-reboot"),
        Some(&1),
        "{:?}",
        faults.met()
    );
    assert_eq!(h.sim.world().effects, want_effects, "every effect once");
    assert_eq!(done_steps(&events), want_steps, "each step done once");
    let on = |e: &&Value, kind: &str| e["event"][kind]["node"] == worker.as_str();
    let blind = events
        .iter()
        .filter(|e| on(e, "StepFailed"))
        .filter(|e| e["event"]["StepFailed"]["facts"]["probe"] == "failed")
        .count();
    if std::env::var("CHAOS_VERBOSE").is_ok() {
        for e in events
            .iter()
            .filter(|e| e["event"].to_string().contains(worker.as_str()))
        {
            eprintln!("{} {}", e["at"], e["event"]);
        }
    }
    assert!(blind >= 1, "probes that could not look are recorded");
    assert!(
        events
            .iter()
            .filter(|e| on(e, "StepFailed"))
            .all(|e| e["event"]["StepFailed"]["facts"]["failure"] != "transient"),
        "no attempt used"
    );
    let probed: Vec<&Value> = events.iter().filter(|e| on(e, "StepProbed")).collect();
    assert!(
        probed
            .iter()
            .any(|e| e["event"]["StepProbed"]["done"] == false),
        "the partial install found partial: {probed:?}"
    );

    // Never back: parked cordoned after the node's timeout; the others finish.
    let (mut h, _) = lab_with_node_fault(&worker, NodeFault::Gone, None).await;
    let (end, events) = upgrade(&mut h).await;
    assert_eq!(end["phase"], "halted", "{end}");
    let reason = end["reason"].as_str().unwrap_or_default();
    for part in [
        worker.as_str(),
        "parked",
        "has not answered",
        "nodeReadyTimeout",
    ] {
        assert!(reason.contains(part), "{part}: {reason}");
    }
    let parked = events.iter().find(|e| on(e, "NodeParked")).expect("parked");
    assert_eq!(parked["event"]["NodeParked"]["uncordon"], false);
    let lost = events
        .iter()
        .find(|e| on(e, "StepFailed"))
        .expect("the lost answer");
    let waited = parked["at"].as_i64().unwrap_or(0) - lost["at"].as_i64().unwrap_or(0);
    assert!(
        waited >= 600_000,
        "parked {waited} ms after the answer was lost"
    );
    {
        let w = h.sim.world();
        assert!(w.nodes[&worker].unschedulable, "left cordoned");
        for (name, n) in w.nodes.iter().filter(|(n, _)| **n != worker) {
            assert_eq!(n.kubelet.to_string(), "v1.35.3", "{name} upgraded");
        }
    }

    // A control plane that never comes back: halted, the workers not passing it.
    let (mut h, _) = lab_with_node_fault(&cp, NodeFault::Gone, None).await;
    let (end, _) = upgrade(&mut h).await;
    assert_eq!(end["phase"], "halted", "{end}");
    let reason = end["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(cp.as_str()) && reason.contains("control plane"),
        "{reason}"
    );
    let w = h.sim.world();
    for (name, n) in w.nodes.iter().filter(|(_, n)| n.control_plane.is_none()) {
        assert_ne!(
            n.kubelet.to_string(),
            "v1.35.3",
            "{name} passed its control plane"
        );
    }
}

/// The campaign: runs of every plan (upgrades and rollbacks of the seed, lab and large-40
/// clusters), each under a schedule of several faults drawn from `CHAOS_SEED`, on two
/// threads of paused time. Every promise is checked after every run (`harness::chaos`); a
/// failing schedule is shrunk to the fewest faults that still fail and printed to replay
/// with `CHAOS_SEED=… CHAOS_SCHEDULE=…` (that one run alone). `CHAOS_RUNS` sets the runs.
#[test]
fn a_thousand_faults_lose_nothing_and_do_nothing_twice() {
    use upgraded_harness::chaos::{Op, Plan, Rng, Schedule};
    const fn plan(scenario: &'static str, op: Op) -> Plan {
        Plan { scenario, op }
    }
    // A cycle of eight runs, the small clusters more often (a run of large-40 costs eight
    // of the lab's in wall time); a rollback plan is an upgrade and then a rollback, faults
    // falling on both. Every other cycle rolls the lab back instead of large-40.
    const PLANS: [Plan; 8] = [
        plan("lab", Op::Upgrade),
        plan("seed", Op::Upgrade),
        plan("lab", Op::Rollback),
        plan("large-40", Op::Upgrade),
        plan("lab", Op::Upgrade),
        plan("seed", Op::Rollback),
        plan("lab", Op::Rollback),
        plan("large-40", Op::Rollback),
    ];
    let plan_of = |r: usize| match PLANS[r % PLANS.len()] {
        p if p.op == Op::Rollback && p.scenario == "large-40" && (r / PLANS.len()) % 2 == 1 => {
            plan("lab", Op::Upgrade)
        }
        p => p,
    };
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .map(|s| s.parse().expect("CHAOS_SEED: a number"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    say!("CHAOS_SEED={seed}");
    let plan_named = |s: &str| {
        PLANS
            .into_iter()
            .find(|p| p.to_string() == s)
            .unwrap_or_else(|| {
                let mut known: Vec<String> = PLANS.iter().map(ToString::to_string).collect();
                known.sort();
                known.dedup();
                panic!("CHAOS_SCHEDULE: no plan {s:?}; known: {}", known.join(", "))
            })
    };
    // One schedule, replayed.
    if let Ok(text) = std::env::var("CHAOS_SCHEDULE") {
        let (plan, faults) = text.split_once('|').unwrap_or_else(|| {
            panic!(
                "CHAOS_SCHEDULE {text:?}: expected PLAN|FAULTS, as a failure prints it \
                 ('upgrade of lab|api-503@300+120,crash@900+20')"
            )
        });
        let plan = plan_named(plan);
        let schedule: Schedule = faults
            .parse()
            .unwrap_or_else(|e| panic!("CHAOS_SCHEDULE: {e}"));
        let report = paused_runtime().block_on(async {
            let base = chaos::baseline(plan).await;
            chaos::run(plan, &schedule, &base).await
        });
        match report {
            Ok(r) => eprintln!(
                "{plan}: {} ({}) met {:?}; {} hits, {} records",
                r.end, r.reason, r.met, r.hits, r.records
            ),
            Err(e) => panic!("{plan} under {schedule}: {e}"),
        }
        return;
    }
    let runs: usize = std::env::var("CHAOS_RUNS")
        .ok()
        .map(|s| s.parse().expect("CHAOS_RUNS: a number"))
        .unwrap_or(64);
    let started = std::time::Instant::now();
    // Each plan's calm run once (the costliest first), then the runs, on two threads.
    let mut plans: Vec<Plan> = PLANS.to_vec();
    plans.sort_by_key(|p| (std::cmp::Reverse(p.scenario.len()), std::cmp::Reverse(p.op)));
    plans.dedup();
    let bases: BTreeMap<Plan, chaos::Baseline> =
        on_two_threads(plans.len(), |i| chaos::baseline(plans[i]))
            .into_iter()
            .map(|(i, b)| (plans[i], b))
            .collect();
    let bases = &bases;
    let shrunk = &std::sync::atomic::AtomicBool::new(false);
    let results = on_two_threads(runs, |r| async move {
        let plan = plan_of(r);
        let base = &bases[&plan];
        let mut rng = Rng::new(seed ^ (r as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let n = rng.range(30, 50) as usize;
        let schedule = chaos::draw(&mut rng, base, n);
        let wall = std::time::Instant::now();
        let result = chaos::run(plan, &schedule, base).await;
        if std::env::var_os("CHAOS_VERBOSE").is_some() {
            eprintln!(
                "run {r}, {plan}: {:.1} s, {:?}",
                wall.elapsed().as_secs_f64(),
                result
                    .as_ref()
                    .map(|r| (&r.end, &r.reason, r.faults(), r.hits, r.records))
            );
        }
        // The first failure is shrunk (each try is a run); the others are reported as drawn.
        let result = match result {
            Ok(report) => Ok(report),
            Err(e) if !shrunk.swap(true, std::sync::atomic::Ordering::SeqCst) => {
                let (smallest, why) = chaos::shrink(plan, schedule, base).await;
                Err((
                    e,
                    format!("shrunk to {} fault(s): {why}", smallest.0.len()),
                    smallest,
                ))
            }
            Err(e) => Err((e, "not shrunk (only the first failure is)".into(), schedule)),
        };
        (plan, result)
    });
    let results: Vec<_> = results
        .into_iter()
        .map(|(r, (plan, result))| (r, plan, result))
        .collect();
    let mut faults = 0;
    let mut hits = 0;
    let mut stale = 0;
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_end: BTreeMap<String, u64> = BTreeMap::new();
    let mut failed = Vec::new();
    for (r, plan, result) in results {
        match result {
            Ok(report) => {
                faults += report.faults();
                hits += report.hits;
                stale += report.stale_answers;
                for (k, n) in &report.met {
                    *by_kind.entry(k).or_default() += n;
                }
                *by_end.entry(format!("{} {}", plan, report.end)).or_default() += 1;
            }
            Err((e, shrunk, schedule)) => failed.push(format!(
                "run {r}, {plan}: {e}\n  {shrunk}\n  replay: CHAOS_SEED={seed} CHAOS_SCHEDULE='{plan}|{schedule}'"
            )),
        }
    }
    say!(
        "chaos: {faults} faults in {runs} runs (seed {seed}), {hits} requests, commands and appends met one, {:.0} s",
        started.elapsed().as_secs_f64()
    );
    say!("chaos: by kind {by_kind:?}; {stale} reads answered stale");
    say!("chaos: by outcome {by_end:?}");
    assert!(
        failed.is_empty(),
        "{} run(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert!(faults >= 1000, "only {faults} faults took effect");
}

/// A line straight to the process's stderr, past the test harness's capture: the seed and
/// the campaign's summary show in every CI log, passed or failed.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
use say;

/// A current-thread runtime in paused time (each job of the campaign gets its own).
fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime")
}

/// Jobs `0..jobs` on two threads, each taking the next job when it is free; the results by
/// job, in order.
fn on_two_threads<T, F, Fut>(jobs: usize, f: F) -> Vec<(usize, T)>
where
    T: Send,
    F: Fn(usize) -> Fut + Sync,
    Fut: std::future::Future<Output = T>,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let mut all: Vec<(usize, T)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        if i >= jobs {
                            return out;
                        }
                        out.push((i, paused_runtime().block_on(f(i))));
                    }
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|t| t.join().expect("a campaign thread"))
            .collect()
    });
    all.sort_by_key(|(i, _)| *i);
    all
}

/// The API faults as a client meets them: a read that accepts a cached answer
/// (`resourceVersion=0`) inside a stale window gets the apiserver's view of 30 s before,
/// a consistent read the present; a cut answer is an error to the client though the write
/// behind it was done.
#[tokio::test(start_paused = true)]
async fn a_stale_window_answers_cached_reads_from_the_past_and_a_cut_loses_the_answer() {
    use k8s_openapi::api::core::v1::Node;
    use kube::api::{Api, ListParams, Patch, PatchParams};
    use upgraded_daemon::ports::Clock;
    use upgraded_harness::TokioClock;
    use upgraded_harness::faults::FaultyApi;
    let world = scenario("lab", 7);
    let clock = std::sync::Arc::new(TokioClock::at(world.now() as i64));
    let sim = upgraded_sim::Sim::new(world);
    let faults = ApiFaults::new(Vec::new());
    let client = kube::Client::new(
        FaultyApi {
            router: upgraded_sim::server::router(std::sync::Arc::clone(&sim)),
            faults: faults.clone(),
            clock: clock.clone(),
        },
        "default",
    );
    let t0 = clock.now().0;
    faults.add(Window {
        from: Timestamp(t0 + 20_000),
        until: Timestamp(t0 + 60_000),
        fault: ApiFault::Stale { secs: 30 },
    });
    faults.add(Window {
        from: Timestamp(t0 + 60_000),
        until: Timestamp(t0 + 70_000),
        fault: ApiFault::Cut,
    });
    let nodes: Api<Node> = Api::all(client);
    let cordoned = |list: &kube::core::ObjectList<Node>| {
        list.items
            .iter()
            .filter(|n| n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true))
            .count()
    };
    let cached = ListParams::default().match_any();
    assert_eq!(
        cordoned(&nodes.list(&cached).await.expect("list")),
        0,
        "t=0"
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    sim.world().set_unschedulable("w-1", true).expect("cordon");
    tokio::time::sleep(Duration::from_secs(30)).await;
    // t=40 s: the cached read answers with t=0's list; the consistent one with the present.
    assert_eq!(cordoned(&nodes.list(&cached).await.expect("stale")), 0);
    assert_eq!(
        cordoned(&nodes.list(&ListParams::default()).await.expect("live")),
        1
    );
    assert_eq!(faults.met().get("api-stale-answered"), Some(&1));
    // t=65 s: the cordon of w-2 is done, its answer cut.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let patch = serde_json::json!({"spec": {"unschedulable": true}});
    nodes
        .patch("w-2", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect_err("the answer was cut");
    assert!(sim.world().nodes["w-2"].unschedulable, "the write was done");
}
