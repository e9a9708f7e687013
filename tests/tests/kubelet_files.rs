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

/// The kubelet files of sim node `name`: (kubeadm-flags.env's flags, instance config,
/// CRI-socket annotation).
fn files(h: &Harness, name: &str) -> (Vec<String>, Option<String>, Option<String>) {
    let w = h.sim.world();
    let n = &w.nodes[name];
    (
        n.host.files.flags.clone(),
        n.host.files.instance_config.clone(),
        n.annotations
            .get(upgraded_events::inventory::CRI_SOCKET_KEY)
            .cloned(),
    )
}

/// A worker taken 1.33 → 1.34 has its CRI socket moved by kubeadm (out of kubeadm-flags.env
/// and the node annotation, into instance-config.yaml). Rolled back to 1.33, its flags file,
/// the instance config's absence and the annotation are what its preflight kept.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_rollback_from_1_34_to_1_33_restores_the_flags_file_and_the_annotation() {
    let policy = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 1, canaries: 0}
waitBetweenBatches: 1m
";
    let mut h = Harness::new(world_at("v1.33.5", 3), policy).await;
    let before = files(&h, "w-1");
    assert!(
        before
            .0
            .iter()
            .any(|f| f.starts_with("--container-runtime-endpoint=")),
        "{before:?}"
    );
    assert!(before.1.is_none() && before.2.is_some(), "{before:?}");

    let v = h.start("v1.34.2").await.expect("start");
    let forward = v["run"].as_str().expect("run").to_string();
    h.until_phase("completed", DAY).await;
    let upgraded = files(&h, "w-1");
    assert!(
        upgraded.1.is_some() && upgraded.2.is_none(),
        "kubeadm 1.34 moved the socket: {upgraded:?}"
    );
    assert!(
        !upgraded
            .0
            .iter()
            .any(|f| f.starts_with("--container-runtime-endpoint")),
        "{upgraded:?}"
    );

    let plan = h
        .json(
            hyper::Method::POST,
            "/v1/rollbacks",
            Some(&json!({"nodes": ["w-1"], "planOnly": true})),
        )
        .await
        .expect("plan");
    let why = plan["why"][0].as_str().unwrap_or_default();
    assert!(
        why.contains("kubeadm-flags.env") && why.contains("CRI-socket annotation"),
        "{why}"
    );
    let r = h
        .json(
            hyper::Method::POST,
            "/v1/rollbacks",
            Some(&json!({"nodes": ["w-1"]})),
        )
        .await
        .expect("rollback");
    let back = r["run"].as_str().expect("run").to_string();
    assert_ne!(back, forward);
    h.until(DAY, |st| {
        st["run"] == back.as_str() && st["phase"] == "completed"
    })
    .await;
    assert_eq!(
        files(&h, "w-1"),
        before,
        "w-1's files as its preflight kept them"
    );
    assert_eq!(h.sim.world().nodes["w-1"].kubelet.to_string(), "v1.33.5");
    let evs = h.events(&back).await;
    let restored = evs
        .iter()
        .filter_map(|e| e["event"].get("StepSucceeded"))
        .find(|s| s["step"].get("RestoreKubeletFiles").is_some())
        .map(|s| s["facts"].clone())
        .expect("a restore step succeeded");
    assert_eq!(
        restored["cri_socket_annotation"],
        upgraded_sim::model::host::CRI_SOCKET
    );
    // w-2, not rolled back, keeps 1.34's layout.
    assert!(files(&h, "w-2").2.is_none());
}
