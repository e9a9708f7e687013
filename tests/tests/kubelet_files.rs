//! What kubeadm does to a node's kubelet files, on the in-process harness (real engine, sim
//! in-process, virtual time): a hand edit of the kubelet config that `kubeadm upgrade node`
//! drops halts the generation at its canary, naming the key; a node rolled back below 1.34
//! gets back the files and the annotation kubeadm 1.34 moved.

use serde_json::{Value, json};
use upgraded_harness::Harness;

const DAY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn world_at(version: &str, workers: usize) -> upgraded_sim::World {
    let mut world = upgraded_sim::World::new(upgraded_harness::sim_clock(), 7);
    upgraded_sim::scenario::small(&mut world, 1, workers, version.parse().expect("v"))
        .expect("cluster");
    world.tick();
    world.settle(30 * 24 * 3600 * 1000);
    world
}

fn started_nodes(events: &[Value]) -> std::collections::BTreeSet<String> {
    events
        .iter()
        .filter_map(|e| e["event"].get("StepStarted"))
        .filter_map(|s| s["node"].as_str().map(str::to_string))
        .collect()
}

/// Every dell-r640 (w-1, w-4) reserves CPUs 0-1 for the system by a hand edit of its
/// kubelet config (no drift: the generation agrees). kubeadm 1.34 regenerates the file on
/// the canary w-1 and the edit is gone: the run halts there, naming the key and kubeadm's
/// `--patches`; w-4 is never touched.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_lost_reserved_cpus_edit_halts_the_generation_at_its_canary() {
    let mut world = world_at("v1.33.5", 6);
    for n in ["w-1", "w-4"] {
        world
            .edit_host(n, |h| {
                h.files
                    .config
                    .insert("reservedSystemCPUs".into(), json!("0-1"));
            })
            .expect("edit");
    }
    let policy = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 1, canaries: 1, order: [dell-r640, dell-r740, hp-dl380]}
canarySoak: 10m
";
    let mut h = Harness::new(world, policy).await;
    let v = h.start("v1.34.2").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let halted = h.until_phase("halted", DAY).await;
    let reason = halted["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("w-1")
            && reason.contains("reservedSystemCPUs was \"0-1\" and is gone")
            && reason.contains("--patches"),
        "{reason}"
    );
    let evs = h.events(&run).await;
    let lost = evs
        .iter()
        .filter_map(|e| e["event"].get("StepFailed"))
        .find(|f| f["node"] == "w-1")
        .map(|f| f["facts"]["kubelet_config_lost"].clone());
    assert_eq!(lost, Some(json!("reservedSystemCPUs")), "recorded: {evs:?}");
    let started = started_nodes(&evs);
    assert!(started.contains("w-1"));
    assert!(!started.contains("w-4"), "w-4 was touched: {started:?}");
}
