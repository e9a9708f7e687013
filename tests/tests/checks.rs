//! Node checks on the in-process harness: each worker's probe pods run on the sim while it
//! is still cordoned, their verdicts are recorded, and a machine whose pod network breaks
//! with the new kubelet is caught on the canary before its uncordon, rolled back and parked.

use std::time::Duration;

use serde_json::Value;
use upgraded_harness::Harness;

const DAY: Duration = Duration::from_secs(24 * 3600);

const POLICY: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 1, canaries: 1, order: [dell-r640, dell-r740, hp-dl380]}
canarySoak: 10m
waitBetweenBatches: 1m
retries: {maxAttempts: 2, backoff: 1s, maxBackoff: 2s}
gates: {nodeReadyTimeout: 5m}
";

/// One control-plane node and six workers, two per generation; w-1 (dell-r640) is the
/// first canary. `net_broken`: w-1's pod network breaks from v1.35.0 on.
async fn cluster(net_broken: bool) -> Harness {
    let mut world = upgraded_sim::World::new(upgraded_harness::sim_clock(), 7);
    upgraded_sim::scenario::small(&mut world, 1, 6, "v1.33.5".parse().expect("v"))
        .expect("cluster");
    world.tick();
    world.settle(30 * 24 * 3600 * 1000);
    if net_broken {
        world
            .faults
            .net_broken_from
            .insert("w-1".into(), "v1.35.0".parse().expect("v"));
    }
    Harness::new(world, POLICY).await
}

fn of<'a>(evs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    evs.iter().filter_map(|e| e["event"].get(kind)).collect()
}

#[tokio::test(start_paused = true)]
async fn every_worker_is_checked_before_its_uncordon_and_the_probes_are_cleaned_up() {
    let mut h = cluster(false).await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    h.until_phase("completed", DAY).await;
    let evs = h.events(&run).await;
    let passed = of(&evs, "CheckPassed");
    for w in ["w-1", "w-2", "w-3", "w-4", "w-5", "w-6"] {
        assert!(
            passed
                .iter()
                .any(|p| p["check"] == "pod-network" && p["subject"] == w),
            "{w}'s pod network was proven: {passed:#?}"
        );
        // Its checks came before its uncordon.
        let seq_of = |f: &dyn Fn(&Value) -> bool| {
            evs.iter()
                .position(f)
                .unwrap_or_else(|| panic!("{w}: no such record"))
        };
        let checked = seq_of(&|e| {
            e["event"]["CheckPassed"]["subject"] == w
                && e["event"]["CheckPassed"]["check"] == "pod-network"
        });
        let uncordoned = seq_of(&|e| {
            e["event"]["StepSucceeded"]["node"] == w
                && e["event"]["StepSucceeded"]["step"] == "Uncordon"
        });
        assert!(
            checked < uncordoned,
            "{w}: checked at {checked}, uncordoned at {uncordoned}"
        );
    }
    assert!(of(&evs, "CheckFailed").is_empty());
    // Every CheckStarted has its verdict, and no probe pod is left behind.
    assert_eq!(
        of(&evs, "CheckStarted").len(),
        of(&evs, "CheckPassed").len() + of(&evs, "CheckInconclusive").len()
    );
    let w = h.sim.world();
    // Deleted, every one (the last may still be within its 1 s grace period).
    let left: Vec<&String> = w
        .pods
        .values()
        .filter(|p| p.namespace == "upgraded-checks" && p.deleting_at.is_none())
        .map(|p| &p.name)
        .collect();
    assert!(left.is_empty(), "probe pods left: {left:?}");
}

/// The guide's "networking between nodes fails" trigger: the canary's new kubelet breaks
/// its machine's pod network; Ready and at its versions, it passes verify, but its
/// pod-network check fails while it is still cordoned, so it is rolled back, parked, and
/// the run halts naming the check; the rest of its generation never starts.
#[tokio::test(start_paused = true)]
async fn a_canary_whose_pod_network_breaks_is_caught_before_uncordon_and_rolled_back() {
    let mut h = cluster(true).await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let halted = h.until_phase("halted", DAY).await;
    let reason = halted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("node w-1: checks after-canary failed 2 time(s)")
            && reason.contains("check pod-network failed: dial ")
            && reason.contains("i/o timeout")
            && reason.contains("w-1 was rolled back to v1.33.5 and parked"),
        "{reason}"
    );
    let evs = h.events(&run).await;
    let failed = of(&evs, "CheckFailed");
    assert!(failed.iter().all(|f| f["subject"] == "w-1"), "{failed:#?}");
    // Both attempts (maxAttempts 2) saw it; DNS, which needs the pod network, too.
    for check in ["pod-network", "dns"] {
        let n = failed.iter().filter(|f| f["check"] == check).count();
        assert_eq!(n, 2, "{check}: {failed:#?}");
    }
    // Never uncordoned at the new version: the first Uncordon of w-1 is the rollback's.
    let first_uncordon = evs
        .iter()
        .position(|e| {
            e["event"]["StepStarted"]["node"] == "w-1"
                && e["event"]["StepStarted"]["step"] == "Uncordon"
        })
        .expect("w-1 uncordoned at last");
    let rolling_back = evs
        .iter()
        .position(|e| e["event"].get("NodeRollingBack").is_some())
        .expect("rolled back");
    assert!(rolling_back < first_uncordon);
    let started: std::collections::BTreeSet<&str> = of(&evs, "StepStarted")
        .iter()
        .filter_map(|s| s["node"].as_str())
        .collect();
    for rest in ["w-2", "w-3", "w-4", "w-5", "w-6"] {
        assert!(!started.contains(rest), "{rest} started: {started:?}");
    }
    let w = h.sim.world();
    assert_eq!(w.nodes["w-1"].kubelet.to_string(), "v1.33.5");
    assert!(
        w.pod_network_works("w-1"),
        "back on a kubelet its network runs with"
    );
}
