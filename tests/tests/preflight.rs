//! What `start`'s preflight finds before anything is touched, on the in-process harness
//! (real engine, sim in-process, virtual time): the removed-API gate reading each
//! apiserver instance.

use upgraded_harness::Harness;

const POLICY: &str = "apiVersion: upgraded.dev/v1alpha1\nkind: UpgradePolicy\n";

/// Three control-plane nodes and three workers at `version`, settled.
fn world_at(version: &str) -> upgraded_sim::World {
    let mut world = upgraded_sim::World::new(upgraded_harness::sim_clock(), 7);
    upgraded_sim::scenario::small(&mut world, 3, 3, version.parse().expect("v")).expect("cluster");
    world.tick();
    world.settle(30 * 24 * 3600 * 1000);
    world
}

/// The plan a dry-run start to `target` answers with (nothing recorded).
async fn dry_run(h: &Harness, target: &str) -> serde_json::Value {
    h.json(
        hyper::Method::POST,
        "/v1/runs",
        Some(&serde_json::json!({"target": target, "dryRun": true})),
    )
    .await
    .expect("a dry run")["plan"]
        .clone()
}

/// That plan's findings, as text.
async fn findings(h: &Harness, target: &str) -> String {
    dry_run(h, target).await["findings"].to_string()
}

fn v1beta3_on(node: &str) -> upgraded_sim::model::DeprecatedCalls {
    upgraded_sim::model::DeprecatedCalls {
        node: node.into(),
        group: "flowcontrol.apiserver.k8s.io".into(),
        version: "v1beta3".into(),
        resource: "flowschemas".into(),
        removed_release: "1.32".into(),
        requests: 57,
    }
}

/// A flowcontrol v1beta3 series seen on one of three apiservers refuses the start of a
/// 1.31 → 1.32 run, naming the instance and the API; nothing was touched. The same counters
/// do not refuse a run that stays at 1.31.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_hop_to_1_32_is_refused_for_a_v1beta3_series_on_one_apiserver() {
    let mut world = world_at("v1.31.6");
    let cps: Vec<String> = world
        .nodes
        .values()
        .filter(|n| n.control_plane.is_some())
        .map(|n| n.name.clone())
        .collect();
    assert_eq!(cps.len(), 3);
    world.faults.deprecated_apis.push(v1beta3_on(&cps[1]));
    let h = Harness::new(world, POLICY).await;
    let refused = h.start("v1.32.4").await.expect_err("refused");
    let why = refused.to_string();
    assert!(why.contains("removed-api-in-use"), "{why}");
    assert!(
        why.contains(&format!("apiserver {}", cps[1]))
            && why.contains("57 request(s) to flowcontrol.apiserver.k8s.io/v1beta3 flowschemas")
            && why.contains("1.31 → 1.32"),
        "{why}"
    );
    assert!(
        !why.contains(&format!("apiserver {} served", cps[0])),
        "{why}"
    );
    let w = h.sim.world();
    assert!(
        w.nodes.values().all(|n| !n.unschedulable),
        "nothing was cordoned"
    );
}

/// An apiserver that does not answer is named as unread (a warning): the start goes on.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn an_apiserver_that_cannot_be_read_is_a_warning_not_a_refusal() {
    let mut world = world_at("v1.33.5");
    let cp = world
        .nodes
        .values()
        .find(|n| n.control_plane.is_some())
        .map(|n| n.name.clone())
        .expect("a control plane");
    world
        .faults
        .apiserver_fails_from
        .insert(cp.clone(), "v1.33.0".parse().expect("v"));
    let h = Harness::new(world, POLICY).await;
    let plan = dry_run(&h, "v1.34.2").await;
    let findings = plan["findings"].to_string();
    assert!(
        findings.contains("api-usage-unread") && findings.contains(&format!("apiserver {cp}")),
        "{findings}"
    );
}

/// Three workers of one generation (w-1, w-4, w-7 are dell-r640 in `small`'s rotation).
fn nine_workers() -> upgraded_sim::World {
    let mut world = upgraded_sim::World::new(upgraded_harness::sim_clock(), 7);
    upgraded_sim::scenario::small(&mut world, 1, 9, "v1.33.5".parse().expect("v"))
        .expect("cluster");
    world.tick();
    world.settle(30 * 24 * 3600 * 1000);
    world
}

/// What the agents read on the machines at the start is judged before anything is done: a
/// node whose kubelet reserves CPUs its siblings do not (read from `/configz` through the
/// API) refuses the start by name; another whose installed kernel waits for a reboot does
/// too, unless the policy only warns of pending reboots.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn drift_read_on_the_machines_and_a_pending_reboot_refuse_the_start() {
    let mut world = nine_workers();
    world
        .edit_host("w-4", |h| {
            h.files
                .config
                .insert("reservedSystemCPUs".into(), serde_json::json!("0-1"));
        })
        .expect("edit");
    world
        .edit_host("w-2", |h| {
            h.installed_kernel = Some("6.1.0-31-amd64".into())
        })
        .expect("edit");
    let h = Harness::new(world.clone(), POLICY).await;
    let refused = h.start("v1.34.2").await.expect_err("refused");
    let why = refused.to_string();
    assert!(
        why.contains("drift-must-match")
            && why.contains("node w-4 differs from generation dell-r640 in kubelet:reservedSystemCPUs: \"0-1\" where 2 of 3 run unset"),
        "{why}"
    );
    assert!(
        why.contains("pending-reboot")
            && why.contains("kernel 6.1.0-31-amd64 is installed but 6.1.0-28-amd64 is running"),
        "{why}"
    );
    assert!(h.sim.world().nodes.values().all(|n| !n.unschedulable));

    // The same machines with the edit everywhere and reboots only warned of: it starts.
    for n in ["w-1", "w-7"] {
        world
            .edit_host(n, |h| {
                h.files
                    .config
                    .insert("reservedSystemCPUs".into(), serde_json::json!("0-1"));
            })
            .expect("edit");
    }
    let h = Harness::new(world, &format!("{POLICY}pendingReboot: warn\n")).await;
    let plan = dry_run(&h, "v1.34.2").await;
    let findings = plan["findings"].to_string();
    assert!(!findings.contains("drift-must-match"), "{findings}");
    assert!(
        findings.contains("pending-reboot") && findings.contains("\"warning\""),
        "{findings}"
    );
    // Only warned of, it is still no canary: its generation's comes from the others.
    let plan_text = plan["phases"].to_string();
    assert!(plan_text.contains("canary dell-r740: "), "{plan_text}");
    assert!(!plan_text.contains("canary dell-r740: w-2"), "{plan_text}");
}

/// Drift is recorded before anything is touched and again after each batch, comparing the
/// machines of a generation at the same kubelet version; status shows the latest. w-4 holds
/// only two of the three packages (a should-match field: a warning, the run goes on).
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn drift_is_recorded_at_the_start_and_after_each_batch() {
    let mut world = nine_workers();
    world
        .edit_host("w-4", |h| h.held = vec!["kubeadm".into(), "kubelet".into()])
        .expect("edit");
    let policy = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 3, canaries: 1}
canarySoak: 5m
waitBetweenBatches: 1m
";
    let mut h = Harness::new(world, policy).await;
    let v = h.start("v1.34.2").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let done = h
        .until_phase("completed", std::time::Duration::from_secs(86_400))
        .await;
    let evs = h.events(&run).await;
    let drift: Vec<&serde_json::Value> = evs
        .iter()
        .filter_map(|e| e["event"].get("DriftObserved"))
        .collect();
    let at_start = drift
        .iter()
        .find(|d| d["after"].is_null())
        .expect("at the start");
    let text = at_start["reports"].to_string();
    assert!(
        text.contains("package-holds") && text.contains("w-4") && text.contains("dell-r640"),
        "{text}"
    );
    // One reading after each batch that upgraded workers, none twice.
    let plan = &evs
        .iter()
        .find_map(|e| e["event"].get("RunPlanned"))
        .expect("plan")["plan"]["batches"];
    let worker_batches: Vec<u64> = plan
        .as_array()
        .expect("batches")
        .iter()
        .enumerate()
        .filter(|(_, b)| {
            b["nodes"]
                .as_array()
                .is_some_and(|ns| ns.iter().any(|n| n["role"] == "worker"))
        })
        .map(|(i, _)| i as u64)
        .collect();
    let mut after: Vec<u64> = drift.iter().filter_map(|d| d["after"].as_u64()).collect();
    after.sort_unstable();
    assert_eq!(after, worker_batches, "{drift:?}");
    // Status: dell-r640's latest reading compares its machines at v1.34.2, where w-4 still
    // holds less.
    assert_eq!(done["driftReadings"].as_u64(), Some(drift.len() as u64));
    let last = done["drift"].to_string();
    assert!(
        last.contains("dell-r640 at v1.34.2") && last.contains("w-4"),
        "status: {last}"
    );
    // Its records came before the run's end.
    let end = evs
        .iter()
        .position(|e| e["event"] == "RunCompleted")
        .expect("completed");
    let last_drift = evs
        .iter()
        .rposition(|e| e["event"].get("DriftObserved").is_some())
        .expect("drift");
    assert!(last_drift < end);
}

/// kube-proxy's mode and kubeadm's stored configuration are read from their ConfigMaps:
/// ipvs is a warning for a hop to 1.35, not for one to 1.34.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn kube_proxy_in_ipvs_mode_is_a_warning_at_1_35() {
    let mut world = world_at("v1.34.2");
    upgraded_sim::scenario::kubeadm_config_maps(&mut world, "v1.34.2".parse().expect("v"), "ipvs");
    let h = Harness::new(world, POLICY).await;
    let to_135 = findings(&h, "v1.35.3").await;
    assert!(
        to_135.contains("kube-proxy-ipvs") && to_135.contains("nftables"),
        "{to_135}"
    );
    assert!(!to_135.contains("kubeadm-config-v1beta4"), "{to_135}");
    let to_134 = findings(&h, "v1.34.6").await;
    assert!(!to_134.contains("kube-proxy-ipvs"), "{to_134}");
}

/// `start` reads Helm's deployed releases through the API: a chart that still ships a
/// flowcontrol v1beta3 FlowSchema is named (release, namespace, kind, apiVersion) for a hop
/// to 1.32, and not for one that stays below it.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_helm_release_with_a_removed_api_is_named_at_start() {
    let mut world = world_at("v1.31.6");
    let secret = upgraded_tests::helm::release_secret(
        "default",
        "traffic",
        upgraded_tests::helm::FLOWSCHEMA_V1BETA3,
    );
    world.add_secret(serde_json::from_value(secret).expect("a Secret"));
    let h = Harness::new(world, POLICY).await;
    let to_132 = findings(&h, "v1.32.4").await;
    assert!(
        to_132.contains("helm-removed-api")
            && to_132.contains("traffic")
            && to_132.contains("FlowSchema")
            && to_132.contains("flowcontrol.apiserver.k8s.io/v1beta3"),
        "{to_132}"
    );
    assert!(!to_132.contains("Helm release Secrets"), "read: {to_132}");
    let to_131 = findings(&h, "v1.31.9").await;
    assert!(!to_131.contains("helm-removed-api"), "{to_131}");
}
