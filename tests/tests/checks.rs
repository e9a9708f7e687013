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
    cluster_with(POLICY, |f| {
        if net_broken {
            f.net_broken_from
                .insert("w-1".into(), "v1.35.0".parse().expect("v"));
        }
    })
    .await
}

/// `control_planes` and `workers` (generations in turn) at v1.33.5, settled for 30 days.
fn small_world(control_planes: usize, workers: usize) -> upgraded_sim::World {
    let mut world = upgraded_sim::World::new(upgraded_harness::sim_clock(), 7);
    upgraded_sim::scenario::small(
        &mut world,
        control_planes,
        workers,
        "v1.33.5".parse().expect("v"),
    )
    .expect("cluster");
    world.tick();
    world.settle(30 * 24 * 3600 * 1000);
    world
}

/// The keys of `objects` (pods, Jobs, claims, Services) left in the checks' namespace.
fn left_in_checks<V>(
    objects: &std::collections::BTreeMap<(String, String), V>,
) -> Vec<&(String, String)> {
    objects
        .keys()
        .filter(|(ns, _)| ns == "upgraded-checks")
        .collect()
}

/// The same cluster under `policy`, with `faults` set before the daemon starts.
async fn cluster_with(
    policy: &str,
    faults: impl FnOnce(&mut upgraded_sim::model::Faults),
) -> Harness {
    let mut world = small_world(1, 6);
    faults(&mut world.faults);
    Harness::new(world, policy).await
}

/// Waits until the canary w-1's pod-network check after its upgrade has started.
async fn until_canary_check_started(h: &mut Harness, run: &str) {
    h.until_record(run, DAY, |r| {
        let s = &r["event"]["CheckStarted"];
        s["subject"] == "w-1" && s["check"] == "pod-network" && s["boundary"] == "after-canary"
    })
    .await;
}

/// `node` was never uncordoned at the new version: its first Uncordon is its rollback's.
fn assert_rolled_back_before_uncordon(evs: &[Value], node: &str) {
    let first_uncordon = evs
        .iter()
        .position(|e| {
            e["event"]["StepStarted"]["node"] == node
                && e["event"]["StepStarted"]["step"] == "Uncordon"
        })
        .unwrap_or_else(|| panic!("{node} uncordoned at last"));
    let rolling_back = evs
        .iter()
        .position(|e| e["event"].get("NodeRollingBack").is_some())
        .expect("rolled back");
    assert!(
        rolling_back < first_uncordon,
        "{node}: rolled back at {rolling_back}, first uncordoned at {first_uncordon}"
    );
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
        // DNS: the API's name and the probe Service's resolved, its ClusterIP answered;
        // pod networking both ways and from the host network.
        let dns = passed
            .iter()
            .rfind(|p| p["check"] == "dns" && p["subject"] == w)
            .expect("dns passed");
        assert_eq!(dns["facts"]["resolved"], "2", "{dns}");
        assert!(
            dns["facts"]["service"]
                .as_str()
                .is_some_and(|s| s.starts_with("10.96.") && s.ends_with(":8080")),
            "{dns}"
        );
        let net = passed
            .iter()
            .rfind(|p| p["check"] == "pod-network" && p["subject"] == w)
            .expect("net passed");
        assert_eq!(
            net["facts"]["dialled_back"], net["facts"]["dialled"],
            "{net}"
        );
        assert_eq!(
            net["facts"]["hostNetwork/dialled"], net["facts"]["dialled"],
            "{net}"
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
    let services: Vec<&(String, String)> = left_in_checks(&w.services);
    assert!(services.is_empty(), "probe Services left: {services:?}");
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
    assert_rolled_back_before_uncordon(&evs, "w-1");
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

/// A check that already fails before the upgrade is a finding about the cluster as it was:
/// recorded at the baseline, left out of that node's later checks, never blamed on the
/// upgrade. Here CoreDNS answers nobody from the start; the run completes.
#[tokio::test(start_paused = true)]
async fn what_fails_at_the_baseline_is_recorded_and_never_blamed_on_the_upgrade() {
    let mut h = cluster(false).await;
    h.sim.world().faults.dns_broken_from = Some("v1.0.0".parse().expect("v"));
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    h.until_phase("completed", DAY).await;
    let evs = h.events(&run).await;
    let started = of(&evs, "CheckStarted");
    for w in ["w-1", "w-2", "w-3", "w-4", "w-5", "w-6"] {
        let dns: Vec<&&Value> = started
            .iter()
            .filter(|s| s["subject"] == w && s["check"] == "dns")
            .collect();
        // Only at the baseline: the canaries (w-1..w-3) also as the run's samples.
        let sampled = ["w-1", "w-2", "w-3"].contains(&w);
        assert_eq!(dns.len(), 1 + usize::from(sampled), "{w}: {dns:#?}");
        assert!(dns.iter().all(|d| d["boundary"] == "preflight"), "{dns:#?}");
        // Its pod network is still proven after the upgrade.
        assert!(
            started.iter().any(|s| s["subject"] == w
                && s["check"] == "pod-network"
                && s["boundary"] != "preflight"),
            "{w}"
        );
        let excluded = evs.iter().any(|e| {
            let s = &e["event"]["StepSucceeded"];
            s["node"] == w && s["facts"]["excluded_at_baseline"] == "dns"
        });
        assert!(excluded, "{w}'s checks say what they left out");
    }
    let failed = of(&evs, "CheckFailed");
    assert_eq!(
        failed.len(),
        9,
        "one baseline finding per worker, and per sample: {failed:#?}"
    );
    assert!(failed.iter().all(|f| f["check"] == "dns"));
}

/// A daemon killed while a probe runs: the restarted one adopts the probe of the check it
/// had started (the same attempt, the same names) instead of creating it again, records
/// the one verdict owed, and leaves nothing behind.
#[tokio::test(start_paused = true)]
async fn a_restart_while_a_probe_runs_adopts_it() {
    let mut h = cluster(false).await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    until_canary_check_started(&mut h, &run).await;
    // Let the daemon create the probes, then kill it before their verdict.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    h.crash();
    tokio::time::sleep(Duration::from_secs(60)).await;
    h.restart().await;
    h.until_phase("completed", DAY).await;
    let evs = h.events(&run).await;
    let on_w1 = |kind: &str| -> Vec<Value> {
        of(&evs, kind)
            .into_iter()
            .filter(|e| e["subject"] == "w-1" && e["check"] == "pod-network")
            .cloned()
            .collect()
    };
    let started = on_w1("CheckStarted");
    let verdicts = on_w1("CheckPassed");
    // As the run's sample, at its own baseline and after the canary: the restart started
    // nothing again.
    assert_eq!(started.len(), 3, "{started:#?}");
    assert_eq!(verdicts.len(), 3, "{verdicts:#?}");
    assert_eq!(started[2]["attempt"], verdicts[2]["attempt"]);
    // Each of the attempt's probe pods was created once (the sim records a pod's start).
    let w = h.sim.world();
    let starts: Vec<String> = w
        .events
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Started"))
        .filter_map(|e| e.involved_object.name.clone())
        .filter(|n| n.starts_with("upg-pod-network-w-1-"))
        .collect();
    let mut unique = starts.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        2,
        "one probe per boundary and attempt: {starts:?}"
    );
    // The baseline's name served the sample and the node's own preflight, one after the
    // other; the canary's probe was created once.
    assert_eq!(starts.len(), 3, "none created twice: {starts:?}");
    assert!(
        w.pods
            .values()
            .all(|p| p.namespace != "upgraded-checks" || p.deleting_at.is_some())
    );
}

/// A probe evicted before it answered says nothing about the node: its check is
/// inconclusive, the step is tried again, and the node is never rolled back for it.
#[tokio::test(start_paused = true)]
async fn an_evicted_probe_is_inconclusive_and_retried() {
    let mut h = cluster(false).await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    until_canary_check_started(&mut h, &run).await;
    // The echo pods are Running two seconds later; the probe then runs for five.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let evicted: Vec<String> = {
        let mut w = h.sim.world();
        let probes: Vec<String> = w
            .pods
            .values()
            .filter(|p| {
                p.namespace == "upgraded-checks" && p.name.starts_with("upg-pod-network-w-1-")
            })
            .filter(|p| p.deleting_at.is_none() && !p.is_finished())
            .map(|p| p.name.clone())
            .collect();
        for name in &probes {
            w.evict("upgraded-checks", name, None).expect("evicted");
        }
        probes
    };
    assert_eq!(evicted.len(), 1, "the probe was running: {evicted:?}");
    h.until_phase("completed", DAY).await;
    let evs = h.events(&run).await;
    let unsure: Vec<&Value> = of(&evs, "CheckInconclusive")
        .into_iter()
        .filter(|e| e["subject"] == "w-1" && e["check"] == "pod-network")
        .collect();
    assert_eq!(unsure.len(), 1, "{unsure:#?}");
    assert!(
        unsure[0]["why"]
            .as_str()
            .unwrap_or_default()
            .contains("deleted before it ended"),
        "{unsure:#?}"
    );
    let failed_steps: Vec<&Value> = of(&evs, "StepFailed")
        .into_iter()
        .filter(|f| f["node"] == "w-1")
        .collect();
    assert_eq!(failed_steps.len(), 1, "{failed_steps:#?}");
    assert_eq!(failed_steps[0]["facts"]["verdict"], "inconclusive");
    // Retried and passed: no rollback, no failed check.
    assert!(of(&evs, "NodeRollingBack").is_empty());
    assert!(of(&evs, "CheckFailed").is_empty());
    assert!(
        of(&evs, "CheckPassed")
            .iter()
            .any(|p| p["subject"] == "w-1" && p["check"] == "pod-network" && p["attempt"] == 2)
    );
}

const STORAGE_POLICY: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 1, canaries: 1, order: [dell-r640, dell-r740, hp-dl380]}
canarySoak: 10m
waitBetweenBatches: 1m
retries: {maxAttempts: 2, backoff: 1s, maxBackoff: 2s}
gates: {nodeReadyTimeout: 5m}
checks: {storageClasses: [standard]}
";

/// The guide's "storage mounts fail on upgraded nodes": each worker's storage check writes
/// a nonce on a claim of the policy's StorageClass before its kubelet restarts and reads it
/// back after; on the canary whose new kubelet cannot mount volumes the read fails, before
/// its uncordon, and it is rolled back and parked. Elsewhere every read passes and no claim
/// is left behind.
#[tokio::test(start_paused = true)]
async fn storage_is_written_before_the_restart_and_read_back_after_it() {
    for broken in [false, true] {
        let mut h = cluster_with(STORAGE_POLICY, |f| {
            if broken {
                f.storage_broken_from
                    .insert("w-1".into(), "v1.35.0".parse().expect("v"));
            }
        })
        .await;
        let v = h.start("v1.35.3").await.expect("start");
        let run = v["run"].as_str().expect("run").to_string();
        let end = h
            .until_phase(if broken { "halted" } else { "completed" }, DAY)
            .await;
        let evs = h.events(&run).await;
        let storage = |kind: &str, w: &str| -> Vec<Value> {
            of(&evs, kind)
                .into_iter()
                .filter(|e| e["subject"] == w && e["check"] == "storage/standard")
                .cloned()
                .collect()
        };
        if broken {
            let reason = end["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains("check storage/standard failed: MountVolume.SetUp failed on w-1")
                    && reason.contains("w-1 was rolled back to v1.33.5 and parked"),
                "{reason}"
            );
            // The baselines (as the run's sample, then its own) and the writer before the
            // restart passed: the old kubelet mounts.
            let passed = storage("CheckPassed", "w-1");
            assert_eq!(passed.len(), 3, "{passed:#?}");
            continue;
        }
        for w in ["w-1", "w-2", "w-3", "w-4", "w-5", "w-6"] {
            let started: Vec<String> = storage("CheckStarted", w)
                .iter()
                .map(|s| s["boundary"].as_str().unwrap_or_default().to_string())
                .collect();
            // The canaries were the run's samples too.
            let extra = usize::from(["w-1", "w-2", "w-3"].contains(&w));
            assert_eq!(started.len(), 3 + extra, "{w}: {started:?}");
            assert!(
                started[..=extra].iter().all(|b| b == "preflight"),
                "{started:?}"
            );
            assert_eq!(started[1 + extra], "before-kubelet-restart");
            assert!(started[2 + extra].starts_with("after-"), "{started:?}");
            assert_eq!(storage("CheckPassed", w).len(), 3 + extra, "{w}");
        }
        let world = h.sim.world();
        let claims: Vec<_> = left_in_checks(&world.claims);
        assert!(claims.is_empty(), "claims left: {claims:?}");
    }
}

/// The guide's "device plugins register devices" row: the hp-dl380 canary w-3 has two GPUs;
/// with its new kubelet their plugin no longer registers, so its allocatable
/// `nvidia.com/gpu` reads 0. Ready at its versions, it passes verify; its devices check,
/// read until its timeout while it is still cordoned, fails against the baseline; it is
/// rolled back (its GPUs come back with the old kubelet) and parked, and the run halts.
/// The other canaries, without GPUs, never ran a devices check.
#[tokio::test(start_paused = true)]
async fn a_canary_that_loses_its_devices_is_caught_before_uncordon_and_rolled_back() {
    let mut h = cluster_with(POLICY, |f| {
        f.devices_lost_from
            .insert("w-3".into(), "v1.35.0".parse().expect("v"));
    })
    .await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let halted = h.until_phase("halted", DAY).await;
    let reason = halted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("check devices failed: allocatable extended resources lost since the baseline: nvidia.com/gpu: 2 → 0")
            && reason.contains("w-3 was rolled back to v1.33.5 and parked"),
        "{reason}"
    );
    let evs = h.events(&run).await;
    let devices = |kind: &str| -> Vec<Value> {
        of(&evs, kind)
            .into_iter()
            .filter(|e| e["check"] == "devices")
            .cloned()
            .collect()
    };
    // The baseline saw both GPUs; only w-3 and w-6 have any.
    let passed = devices("CheckPassed");
    assert!(
        passed
            .iter()
            .any(|p| p["subject"] == "w-3" && p["facts"]["devices"] == "nvidia.com/gpu=2"),
        "{passed:#?}"
    );
    for s in devices("CheckStarted") {
        assert!(
            s["subject"] == "w-3" || s["subject"] == "w-6",
            "a node without devices was checked for them: {s}"
        );
    }
    let failed = devices("CheckFailed");
    assert!(
        !failed.is_empty() && failed.iter().all(|f| f["subject"] == "w-3"),
        "{failed:#?}"
    );
    assert_rolled_back_before_uncordon(&evs, "w-3");
    let w = h.sim.world();
    assert_eq!(w.nodes["w-3"].kubelet.to_string(), "v1.33.5");
    assert!(!w.nodes["w-3"].devices_lost, "its GPUs are back");
}

/// The policy above with the sim's Prometheus and an operator's command at the end.
fn run_checks_policy() -> String {
    format!(
        "{POLICY}checks:
  prometheusUrl: http://sim.in-process/sim/v1/prometheus
  user:
  - id: smoke
    command: [sh, -c, 'test \"$UPGRADED_BOUNDARY\" = final && echo checked \"$UPGRADED_SUBJECT\"']
    at: [final]
"
    )
}

/// The run's own checks: at the baseline on the plan's first entry, after the control
/// plane on its last node, after each canary and batch, and the final smoke tests once
/// every other node is done; a scheduling Job per generation placed by the scheduler,
/// the addons at kubeadm's versions, Prometheus against its baseline, the operator's
/// command; every Job deleted.
#[tokio::test(start_paused = true)]
async fn the_runs_checks_run_at_each_boundary_and_the_smoke_tests_last() {
    let mut h = cluster_with(&run_checks_policy(), |_| {}).await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    h.until_phase("completed", DAY).await;
    let evs = h.events(&run).await;
    assert!(
        of(&evs, "CheckFailed").is_empty(),
        "{:#?}",
        of(&evs, "CheckFailed")
    );
    let started = of(&evs, "CheckStarted");
    let at = |check: &str, subject: &str, boundary: &str| {
        started
            .iter()
            .filter(|s| s["check"] == check && s["subject"] == subject && s["boundary"] == boundary)
            .count()
    };
    for g in ["dell-r640", "dell-r740", "hp-dl380"] {
        let subject = format!("(generation {g})");
        assert_eq!(at("scheduling", &subject, "preflight"), 1, "{g}");
        assert_eq!(at("scheduling", &subject, "final"), 1, "{g}");
        // After each hop's control plane: the new scheduler places on it.
        assert_eq!(at("scheduling", &subject, "after-control-plane"), 2, "{g}");
        assert_eq!(at("scheduling", &subject, "after-canary"), 0, "{g}");
    }
    // One hop per minor: 1.34 and 1.35.
    assert_eq!(at("addons", "(cluster)", "after-control-plane"), 2);
    assert_eq!(at("addons", "(cluster)", "final"), 1);
    assert_eq!(at("prometheus", "(cluster)", "preflight"), 1);
    assert!(at("prometheus", "(cluster)", "after-batch") >= 3);
    assert_eq!(at("user/smoke", "(cluster)", "final"), 1);
    let passed = of(&evs, "CheckPassed");
    let addons = passed
        .iter()
        .rfind(|p| p["check"] == "addons")
        .expect("addons passed");
    assert_eq!(
        addons["facts"]["coredns_image"],
        "registry.k8s.io/coredns/coredns:v1.12.1"
    );
    assert_eq!(
        addons["facts"]["kube_proxy_image"],
        "registry.k8s.io/kube-proxy:v1.35.3"
    );
    // Each scheduling pod ran on a node of its generation.
    let w = h.sim.world();
    for p in passed.iter().filter(|p| p["check"] == "scheduling") {
        let node = p["facts"]["node"].as_str().expect("placed");
        let g = &w.nodes[node].labels["node.kubernetes.io/instance-type"];
        assert!(
            p["subject"].as_str().expect("s").contains(g.as_str()),
            "{p}"
        );
    }
    // The smoke tests came after every other node's last step.
    let smoke = evs
        .iter()
        .position(|e| e["event"]["CheckStarted"]["check"] == "user/smoke")
        .expect("smoke");
    let last_other = evs
        .iter()
        .rposition(|e| {
            let s = &e["event"]["StepSucceeded"];
            s["step"] == "Uncordon" && s["node"] != "w-6"
        })
        .expect("uncordons");
    assert!(
        last_other < smoke,
        "smoke tests at {smoke}, last uncordon at {last_other}"
    );
    let left: Vec<&(String, String)> = left_in_checks(&w.jobs);
    assert!(left.is_empty(), "Jobs left: {left:?}");
}

/// kubeadm that skipped its addon phase: the control plane is at 1.34, kube-proxy and
/// CoreDNS are not. The addons check after the control plane halts the run before any
/// worker is touched.
#[tokio::test(start_paused = true)]
async fn addons_kubeadm_did_not_upgrade_halt_the_run_after_the_control_plane() {
    let mut h = cluster_with(POLICY, |f| f.addons_skipped = true).await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let status = h.until_phase("halted", DAY).await;
    let reason = status["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("check addons failed"), "{reason}");
    assert!(
        reason.contains("kube-proxy runs registry.k8s.io/kube-proxy:v1.33.5, not v1.34"),
        "{reason}"
    );
    let evs = h.events(&run).await;
    let failed = of(&evs, "CheckFailed");
    assert!(
        failed
            .iter()
            .any(|f| f["check"] == "addons" && f["subject"] == "(cluster)"),
        "{failed:#?}"
    );
    let workers_cordoned = evs.iter().any(|e| {
        let s = &e["event"]["StepStarted"];
        s["step"] == "Cordon" && s["node"].as_str().is_some_and(|n| n.starts_with("w-"))
    });
    assert!(!workers_cordoned, "no worker was touched");
}

/// Prometheus against its baseline: a target down before the upgrade is the cluster as
/// it was and never fires; a new one, seen twice in a row, halts the run naming it.
#[tokio::test(start_paused = true)]
async fn a_target_down_at_the_baseline_is_ignored_a_new_one_halts() {
    let policy =
        format!("{POLICY}checks: {{prometheusUrl: http://sim.in-process/sim/v1/prometheus}}\n");
    let mut h = cluster_with(&policy, |f| {
        f.scrape_broken_from
            .insert("w-2".into(), "v1.0.0".parse().expect("v"));
        f.scrape_broken_from
            .insert("w-1".into(), "v1.35.0".parse().expect("v"));
    })
    .await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let status = h.until_phase("halted", DAY).await;
    let reason = status["reason"].as_str().unwrap_or_default().to_string();
    let w1 = h.sim.world().nodes["w-1"].address.clone();
    let w2 = h.sim.world().nodes["w-2"].address.clone();
    assert!(reason.contains("check prometheus failed"), "{reason}");
    assert!(
        reason.contains(&format!("target kubelet {w1}:10250 down")),
        "{reason}"
    );
    assert!(!reason.contains(&format!("{w2}:10250")), "{reason}");
    let evs = h.events(&run).await;
    let baseline = of(&evs, "CheckPassed")
        .into_iter()
        .find(|p| p["check"] == "prometheus")
        .expect("the baseline");
    assert!(
        baseline["facts"]["problems"]
            .as_str()
            .is_some_and(|p| p.contains(&w2)),
        "{baseline}"
    );
}

/// Three control-plane nodes and three workers at v1.33.5, under `POLICY`.
async fn three_control_planes(faults: impl FnOnce(&mut upgraded_sim::World)) -> Harness {
    let mut world = small_world(3, 3);
    faults(&mut world);
    Harness::new(world, POLICY).await
}

/// The steps started on `node`'s entries (their `step` as recorded).
fn steps_on<'a>(evs: &'a [Value], node: &str) -> Vec<&'a Value> {
    evs.iter()
        .map(|e| &e["event"]["StepStarted"])
        .filter(|s| s["node"].as_str().is_some_and(|n| n.starts_with(node)))
        .map(|s| &s["step"])
        .collect()
}

/// cp-2's kube-apiserver does not start at 1.34 (its static pod crash-loops). The load
/// balancer keeps answering through cp-1 and cp-3; the check that asks each instance on
/// its own node fails after cp-2's kubeadm step, and the run halts naming it before
/// cp-3's control plane or any worker is touched.
#[tokio::test(start_paused = true)]
async fn an_apiserver_that_does_not_come_back_halts_before_the_next_control_plane_node() {
    let mut h = three_control_planes(|w| {
        w.faults
            .apiserver_fails_from
            .insert("cp-2".into(), "v1.34.0".parse().expect("v"));
    })
    .await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let status = h.until_phase("halted", DAY).await;
    let reason = status["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("check apiserver-readyz failed"), "{reason}");
    assert!(
        reason.contains("kube-apiserver on cp-2 did not answer"),
        "{reason}"
    );
    assert!(reason.contains("check mirror-pods failed"), "{reason}");
    let evs = h.events(&run).await;
    // Each control-plane node's step was checked at its own boundary; cp-1's passed
    // with every instance answering 200.
    let started = of(&evs, "CheckStarted");
    assert!(
        started.iter().any(
            |s| s["check"] == "apiserver-readyz" && s["boundary"] == "after-control-plane-node"
        ),
        "{started:#?}"
    );
    let passed = of(&evs, "CheckPassed");
    let first = passed
        .iter()
        .find(|p| p["check"] == "apiserver-readyz" && p["facts"]["readyz/cp-1"] == "200")
        .expect("cp-1's step passed");
    assert_eq!(first["facts"]["readyz/cp-3"], "200");
    let failed = of(&evs, "CheckFailed");
    assert!(
        failed
            .iter()
            .any(|f| f["check"] == "apiserver-readyz" && f["facts"]["readyz/cp-2"] == "0"),
        "{failed:#?}"
    );
    let cp3_kubeadm_134 = steps_on(&evs, "cp-3").into_iter().any(|s| {
        s["KubeadmUpgrade"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("v1.34"))
    });
    assert!(!cp3_kubeadm_134, "cp-3's control plane was not touched");
    for w in ["w-1", "w-2", "w-3"] {
        assert!(
            !steps_on(&evs, w).iter().any(|s| *s == "Cordon"),
            "{w} was not touched"
        );
    }
}

/// A control plane that is already broken before the run (cp-2's apiserver crash-looping)
/// is a finding that blocks: the baseline's checks step halts, nothing is upgraded.
#[tokio::test(start_paused = true)]
async fn a_control_plane_failing_at_the_baseline_blocks_the_run() {
    let mut h = three_control_planes(|w| {
        let key = ("kube-system".to_string(), "kube-apiserver-cp-2".to_string());
        let now = w.now();
        if let Some(p) = w.pods.get_mut(&key) {
            p.crash_looping_since = Some(now);
            p.restarts = 3;
        }
    })
    .await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let status = h.until_phase("halted", DAY).await;
    let reason = status["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("check apiserver-readyz fails before the upgrade"),
        "{reason}"
    );
    let evs = h.events(&run).await;
    let touched = evs.iter().any(|e| {
        let s = &e["event"]["StepStarted"]["step"];
        s.get("KubeadmUpgrade").is_some() || *s == "Cordon"
    });
    assert!(!touched, "nothing was upgraded");
}

/// An air-gapped registry that lacks the probes' image: the baseline's probes cannot pull
/// it, and the run halts there naming the image's policy field, before any node is touched
/// (later every check would be inconclusive).
#[tokio::test(start_paused = true)]
async fn a_probe_image_the_registry_lacks_halts_at_the_baseline() {
    let image = "registry.example/agnhost:2.53";
    let policy = format!("{POLICY}checks: {{images: {{probe: '{image}'}}}}\n");
    let mut h = cluster_with(&policy, |f| {
        f.unpullable_images.insert(image.into());
    })
    .await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let status = h.until_phase("halted", DAY).await;
    let reason = status["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("could not be pulled (ErrImagePull) at the baseline"),
        "{reason}"
    );
    assert!(reason.contains("checks.images"), "{reason}");
    let evs = h.events(&run).await;
    let inconclusive = of(&evs, "CheckInconclusive");
    assert!(
        inconclusive
            .iter()
            .any(|c| c["facts"]["image_pull"] == "ErrImagePull"),
        "{inconclusive:#?}"
    );
    let touched = evs
        .iter()
        .any(|e| e["event"]["StepStarted"]["step"] == "Cordon");
    assert!(!touched, "no node was cordoned");
}

/// The probe script as a real cluster runs it (agnhost's sh, nc, curl), with fake tools in
/// front of PATH: a target that answers but cannot dial this node's echo pod back fails
/// naming the way back; one that does passes.
#[test]
fn the_probe_script_dials_each_target_and_asks_it_to_dial_back() {
    let run = |curl_answer: &str| -> (i32, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let tool = |name: &str, body: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write");
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .expect("chmod");
        };
        tool("nc", "exit 0");
        // netexec's /dial answers what the dial got back.
        tool(
            "curl",
            &format!(
                "case \"$*\" in *host=10.244.9.9*port=8080*) printf '%s' '{curl_answer}';; *) exit 7;; esac"
            ),
        );
        let log = dir.path().join("termination-log");
        let out = std::process::Command::new("sh")
            .args(["-c", upgraded_events::check::probe::PROBE_SCRIPT])
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    dir.path().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("UPGRADED_PROBE", "pod-network")
            .env("UPGRADED_TARGETS", "10.244.1.5:8080,10.244.2.9:8080")
            .env("UPGRADED_BACK_TO", "10.244.9.9:8080")
            .env("UPGRADED_NONCE", "")
            .env("UPGRADED_TERMINATION_LOG", &log)
            .output()
            .expect("sh runs");
        (
            out.status.code().unwrap_or(-1),
            std::fs::read_to_string(&log).unwrap_or_default(),
        )
    };
    let (code, msg) = run(r#"{"responses":["echo-w-1"]}"#);
    assert_eq!(code, 0, "{msg}");
    assert!(msg.contains("\"ok\":true"), "{msg}");
    let (code, msg) = run(r#"{"errors":["dial timeout"]}"#);
    assert_eq!(code, 1, "{msg}");
    assert!(
        msg.contains("dial back from 10.244.1.5:8080 to 10.244.9.9:8080: no answer"),
        "{msg}"
    );
}

/// The ingress check: an HTTP GET through the cluster's ingress controller (the sim's, in
/// front of Service default/app) answers 200 at the baseline, after each batch and at the
/// end; a route whose Service has no ready pod (503 already before the upgrade) is a
/// finding recorded at the baseline and never blamed on the upgrade.
#[tokio::test(start_paused = true)]
async fn the_ingress_routes_through_the_run_and_a_route_broken_before_is_only_recorded() {
    for (service, app, broken) in [("app", "app", false), ("orphan", "nobody", true)] {
        let policy = format!(
            "{POLICY}checks: {{ingressUrl: 'http://sim.in-process/sim/v1/ingress/default/{service}/'}}\n"
        );
        let mut h = cluster_with(&policy, |_| {}).await;
        h.sim
            .world()
            .add_app_service("default", service, app, 8080)
            .expect("service");
        let v = h.start("v1.35.3").await.expect("start");
        let run = v["run"].as_str().expect("run").to_string();
        h.until_phase("completed", DAY).await;
        let evs = h.events(&run).await;
        let started: Vec<&Value> = of(&evs, "CheckStarted")
            .into_iter()
            .filter(|s| s["check"] == "ingress")
            .collect();
        let failed: Vec<&Value> = of(&evs, "CheckFailed")
            .into_iter()
            .filter(|f| f["check"] == "ingress")
            .collect();
        if broken {
            assert_eq!(started.len(), 1, "only the baseline: {started:#?}");
            assert_eq!(started[0]["boundary"], "preflight");
            assert!(
                failed.len() == 1
                    && failed[0]["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("503")),
                "{failed:#?}"
            );
        } else {
            assert!(failed.is_empty(), "{failed:#?}");
            let at = |b: &str| started.iter().filter(|s| s["boundary"] == b).count();
            assert_eq!(at("preflight"), 1);
            assert_eq!(at("final"), 1);
            assert!(at("after-batch") >= 3, "{started:#?}");
        }
    }
}

/// The operator's own checks of the other two kinds: a Job of theirs (its exit code
/// decides; renamed, labelled and deleted by the daemon) after every batch, and an HTTP
/// probe (here the sim's ingress) at the end, each with its verdict recorded.
#[tokio::test(start_paused = true)]
async fn the_operators_job_and_http_checks_run_where_they_say() {
    let policy = format!(
        "{POLICY}checks:
  user:
  - id: checkout
    at: [after-batch]
    job: |
      kind: Job
      spec: {{template: {{spec: {{containers: [{{name: t, image: 'registry.example/smoke:1', command: [/smoke, --fast]}}]}}}}}}
  - id: shop
    at: [final]
    http: {{url: 'http://sim.in-process/sim/v1/ingress/default/app/', status: 200}}
"
    );
    let mut h = cluster_with(&policy, |_| {}).await;
    h.sim
        .world()
        .add_app_service("default", "app", "app", 8080)
        .expect("service");
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    h.until_phase("completed", DAY).await;
    let evs = h.events(&run).await;
    let passed = of(&evs, "CheckPassed");
    let count = |id: &str| passed.iter().filter(|p| p["check"] == id).count();
    assert!(count("user/checkout") >= 3, "after each batch: {passed:#?}");
    assert_eq!(count("user/shop"), 1);
    assert!(
        of(&evs, "CheckFailed").is_empty(),
        "{:#?}",
        of(&evs, "CheckFailed")
    );
    let w = h.sim.world();
    let left: Vec<&(String, String)> = left_in_checks(&w.jobs);
    assert!(left.is_empty(), "Jobs left: {left:?}");
}

/// CoreDNS of the new control plane's version stops answering. The run's baseline proved
/// DNS on one worker of each generation before anything was touched, so when the canary's
/// own preflight (after the control plane moved) finds it broken, that is the run's doing,
/// not a finding about the cluster as it was: the run halts naming the check before any
/// worker is cordoned.
#[tokio::test(start_paused = true)]
async fn a_coredns_that_breaks_with_the_control_plane_halts_before_any_worker_is_touched() {
    let mut h = cluster_with(POLICY, |f| {
        f.dns_broken_from = Some("v1.35.0".parse().expect("v"));
    })
    .await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let halted = h.until_phase("halted", DAY).await;
    let reason = halted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("check dns passed on w-1 before the run changed anything and fails now"),
        "{reason}"
    );
    assert!(
        reason.contains("lookup kubernetes.default.svc.cluster.local"),
        "{reason}"
    );
    let evs = h.events(&run).await;
    // The samples were checked on the plan's first entry, at the baseline.
    let sampled: Vec<&Value> = of(&evs, "CheckPassed")
        .into_iter()
        .filter(|p| p["check"] == "dns")
        .collect();
    for w in ["w-1", "w-2", "w-3"] {
        assert!(
            sampled.iter().any(|p| p["subject"] == w),
            "{w}: {sampled:#?}"
        );
    }
    assert!(
        !evs.iter()
            .any(|e| e["event"]["StepStarted"]["step"] == "Cordon"
                && e["event"]["StepStarted"]["node"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("w-"))),
        "no worker was cordoned"
    );
}

/// A daemon stopped in the middle of a checks step: the verdicts that execution already
/// recorded are kept by the restarted daemon, which runs only the rest (a long checks step
/// under repeated restarts still ends).
#[tokio::test(start_paused = true)]
async fn a_restart_in_a_checks_step_keeps_the_verdicts_already_recorded() {
    let mut h = cluster(false).await;
    let v = h.start("v1.35.3").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    h.until_record(&run, DAY, |r| {
        let s = &r["event"]["CheckStarted"];
        s["subject"] == "w-1" && s["check"] == "dns" && s["boundary"] == "after-canary"
    })
    .await;
    h.crash();
    tokio::time::sleep(Duration::from_secs(30)).await;
    h.restart().await;
    h.until_phase("completed", DAY).await;
    let evs = h.events(&run).await;
    let started = |check: &str| {
        of(&evs, "CheckStarted")
            .into_iter()
            .filter(|s| {
                s["subject"] == "w-1" && s["check"] == check && s["boundary"] == "after-canary"
            })
            .count()
    };
    assert_eq!(started("pod-network"), 1, "kept, not run again");
    assert_eq!(started("dns"), 1, "its probe adopted");
    assert!(
        evs.iter().any(|e| e["event"].get("RunRecovered").is_some()),
        "the restart recovered the run"
    );
}
