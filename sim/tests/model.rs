//! The cluster model: scenarios, virtual time, kubelets, faults, and (property test) that
//! evictions never break a PodDisruptionBudget and capacity is real.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};
use upgraded_events::inventory::{IntOrPercent, LabelSelector, Labels};
use upgraded_events::version::Version;
use upgraded_sim::admission::kinds::{self, DeleteOptions};
use upgraded_sim::admission::{ApiError, FieldValidation};
use upgraded_sim::clock::VIRTUAL_EPOCH;
use upgraded_sim::model::Propagation;
use upgraded_sim::model::{
    CrashLoopFault, EvictError, KUBELET_RESTART_MS, Kind, PodTemplate, SimPod, World,
};
use upgraded_sim::resource::Res;
use upgraded_sim::{Clock, scenario};

fn seed() -> World {
    scenario::build("seed", Clock::virtual_at(VIRTUAL_EPOCH), 1).expect("seed builds")
}

fn redis_pod(w: &World) -> String {
    w.pods
        .values()
        .find(|p| p.namespace == "prod")
        .map(|p| p.name.clone())
        .expect("redis runs")
}

fn select(app: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Labels::from([("app".to_string(), app.to_string())]),
        match_expressions: vec![],
    }
}

fn key(ns: &str, name: &str) -> (String, String) {
    (ns.to_string(), name.to_string())
}

#[test]
fn the_seed_matches_its_description() {
    let w = seed();
    assert_eq!(w.nodes.len(), 15);
    assert_eq!(
        w.nodes
            .values()
            .filter(|n| n.control_plane.is_some())
            .count(),
        3
    );
    let gens: BTreeMap<&str, usize> = w.nodes.values().fold(BTreeMap::new(), |mut m, n| {
        if n.control_plane.is_none() {
            *m.entry(n.labels["node.kubernetes.io/instance-type"].as_str())
                .or_default() += 1;
        }
        m
    });
    assert_eq!(
        gens,
        BTreeMap::from([("dell-r640", 5), ("dell-r740", 4), ("hp-dl380", 3)])
    );
    let v1: Vec<_> = w
        .nodes
        .values()
        .filter(|n| n.annotations.get(scenario::CGROUP_KEY).map(String::as_str) == Some("v1"))
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(v1, ["r640-03"]);
    // ~80% of worker CPU is requested, everything is placed and Ready.
    let used = w.used();
    let (mut req, mut cap) = (0, 0);
    for n in w.nodes.values().filter(|n| n.control_plane.is_none()) {
        req += used[n.name.as_str()].0;
        cap += n.cpu_millis;
    }
    let pct = req * 100 / cap;
    assert!((75..=85).contains(&pct), "worker CPU requests at {pct}%");
    assert!(
        w.pods
            .values()
            .all(|p| p.node.is_some() && p.is_ready(w.now(), &w.nodes))
    );
    let redis = &w.pdbs[&key("prod", "redis")];
    let s = w.pdb_status(redis);
    assert_eq!(
        (s.expected_pods, s.desired_healthy, s.disruptions_allowed),
        (3, 2, 1)
    );
    assert!(w.pods.contains_key(&key("default", "debug-shell")));
}

#[test]
fn large_scenarios_build_at_eighty_percent() {
    let w = scenario::build("large-200", Clock::virtual_at(VIRTUAL_EPOCH), 3).expect("builds");
    assert_eq!(w.nodes.len(), 200);
    let pending = w.pods.values().filter(|p| p.node.is_none()).count();
    assert_eq!(pending, 0);
    assert!(matches!(
        scenario::build("large-3", Clock::virtual_at(VIRTUAL_EPOCH), 3),
        Err(scenario::ScenarioError::Unknown(_))
    ));
    assert!(scenario::build("nope", Clock::virtual_at(VIRTUAL_EPOCH), 3).is_err());
}

#[test]
fn the_same_seed_gives_the_same_world() {
    let names = |w: &World| w.pods.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&seed()), names(&seed()));
    let other = scenario::build("seed", Clock::virtual_at(VIRTUAL_EPOCH), 2).expect("builds");
    assert_ne!(names(&seed()), names(&other));
}

#[test]
fn a_kubelet_restart_takes_simulated_time_and_reports_the_new_version() {
    let mut w = seed();
    let v = Version::new(1, 33, 7);
    w.restart_kubelet("r740-01", v).expect("node exists");
    assert!(!w.nodes["r740-01"].ready);
    w.advance(KUBELET_RESTART_MS - 1);
    assert!(!w.nodes["r740-01"].ready);
    w.advance(1);
    assert!(w.nodes["r740-01"].ready);
    assert_eq!(w.nodes["r740-01"].kubelet, v);
    // A whole day passes in one call.
    let t = w.now();
    w.advance(86_400_000);
    assert_eq!(w.now(), t + 86_400_000);
}

#[test]
fn a_machine_that_reboots_comes_back_with_the_kubelet_that_is_installed() {
    let mut w = seed();
    let before = w.nodes["r740-01"].kubelet;
    // Down in the middle of an upgrade: the kubelet package got installed, not restarted.
    let v = Version::new(1, 33, 7);
    w.install_package("r740-01", "kubelet", v)
        .expect("installed");
    w.set_node_down("r740-01", true).expect("down");
    assert!(!w.nodes["r740-01"].ready);
    assert_eq!(w.nodes["r740-01"].kubelet, before, "still what ran");
    w.advance(KUBELET_RESTART_MS);
    assert!(!w.nodes["r740-01"].ready, "a dead machine stays NotReady");
    w.set_node_down("r740-01", false).expect("up");
    w.advance(KUBELET_RESTART_MS);
    assert!(w.nodes["r740-01"].ready);
    assert_eq!(w.nodes["r740-01"].kubelet, v, "the installed one started");
    // That boot restarted the kubelet at the new version: noted apart from the agents'
    // effects; a reboot that changes nothing notes nothing.
    let key = format!("r740-01 restart-kubelet {v}");
    assert_eq!(w.boot_restarts.get(&key), Some(&1));
    assert_eq!(w.effects.get(&key), None);
    w.set_node_down("r740-01", true).expect("down");
    w.set_node_down("r740-01", false).expect("up");
    assert_eq!(w.boot_restarts.len(), 1, "{:?}", w.boot_restarts);
}

#[test]
fn faults_never_ready_crash_loop_slow_termination_and_blocking_pdbs() {
    let mut w = seed();
    w.faults.never_ready.insert("r640-01".into());
    w.restart_kubelet("r640-01", Version::new(1, 33, 7))
        .expect("exists");
    w.advance(3_600_000);
    assert!(!w.nodes["r640-01"].ready, "never comes back");

    // web crash-loops on nodes upgraded to 1.33.
    w.faults.crash_loops.push(CrashLoopFault {
        selector: select("web"),
        from: Version::new(1, 33, 0),
    });
    w.restart_kubelet("dl380-01", Version::new(1, 33, 7))
        .expect("exists");
    w.advance(KUBELET_RESTART_MS + 1);
    let looping: Vec<&SimPod> = w
        .pods_on("dl380-01")
        .filter(|p| p.crash_looping_since.is_some())
        .collect();
    assert!(!looping.is_empty());
    let restarts = looping[0].restarts;
    let name = looping[0].name.clone();
    w.advance(120_000);
    assert!(
        w.pods[&key("shop", &name)].restarts > restarts,
        "restarts keep rising"
    );
    assert!(!w.pods[&key("shop", &name)].is_ready(w.now(), &w.nodes));

    // A slow drain: evicted pods stay Terminating for 10 minutes; the Deployment replaces them
    // at once.
    w.faults
        .slow_termination_ms
        .insert("r740-02".into(), 600_000);
    let victim = w
        .pods_on("r740-02")
        .find(|p| p.spec.labels.get("app").map(String::as_str) == Some("api"))
        .map(|p| p.name.clone())
        .expect("api runs on r740-02");
    let api_before = w
        .pods
        .values()
        .filter(|p| p.spec.labels.get("app").map(String::as_str) == Some("api"))
        .count();
    w.evict("shop", &victim, None).expect("allowed");
    assert!(w.pods[&key("shop", &victim)].deleting_at.is_some());
    let api_now = w
        .pods
        .values()
        .filter(|p| p.spec.labels.get("app").map(String::as_str) == Some("api"))
        .count();
    assert_eq!(
        api_now,
        api_before + 1,
        "a replacement exists while the old pod terminates"
    );
    w.advance(600_000);
    assert!(!w.pods.contains_key(&key("shop", &victim)));

    // A PDB that blocks forever.
    w.faults.blocking_pdbs.insert("prod/redis".into());
    let redis = redis_pod(&w);
    assert!(matches!(
        w.evict("prod", &redis, None),
        Err(EvictError::Blocked { .. })
    ));
    w.advance(86_400_000);
    assert!(matches!(
        w.evict("prod", &redis, None),
        Err(EvictError::Blocked { .. })
    ));
}

#[test]
fn a_pod_under_two_pdbs_cannot_be_evicted_and_a_missing_one_is_not_found() {
    let mut w = seed();
    w.add_pdb(
        "prod",
        "redis-too",
        select("redis"),
        None,
        Some(IntOrPercent::Int(1)),
    )
    .expect("valid");
    let redis = redis_pod(&w);
    assert!(
        matches!(w.evict("prod", &redis, None), Err(EvictError::MultiplePdbs(v)) if v.len() == 2)
    );
    assert!(matches!(
        w.evict("prod", "gone", None),
        Err(EvictError::NotFound(_))
    ));
}

#[test]
fn a_control_plane_upgrade_moves_the_static_pods() {
    let mut w = seed();
    w.upgrade_control_plane("cp-1", Version::new(1, 33, 7), Some("3.5.21-0".into()))
        .expect("cp-1 is a control plane");
    let api = &w.pods[&key("kube-system", "kube-apiserver-cp-1")];
    assert_eq!(api.spec.image, "registry.k8s.io/kube-apiserver:v1.33.7");
    assert_eq!(
        w.pods[&key("kube-system", "etcd-cp-1")].spec.image,
        "registry.k8s.io/etcd:3.5.21-0"
    );
    assert!(
        w.upgrade_control_plane("r640-01", Version::new(1, 33, 7), None)
            .is_err()
    );
}

// ----- property: PDBs hold, capacity is real --------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Evict(usize),
    Advance(u64),
    Cordon(usize),
    Uncordon(usize),
    Restart(usize),
    /// Through the API: a Deployment (replicas, CPU millis, budget kind) and its budget.
    ApiDeployment(u32, u64, u8),
    /// Through the API: a bare pod of that many CPU millis.
    ApiPod(u64),
    /// Through the API: a Job of (completions, parallelism).
    ApiJob(u32, u32),
    /// Through the API: a namespace with a Deployment of 2 and a budget in it.
    ApiNamespace,
    /// Through the API: delete one of the objects made so far (a namespace takes what is in
    /// it), with or without a grace period.
    ApiDelete(usize, bool),
    /// Through the API: a pod's `app` label changed (its budgets and owner let it go).
    ApiRelabel(usize),
}

#[derive(Debug, Clone)]
struct Spec {
    nodes: Vec<u64>,
    apps: Vec<(bool, u32, u64, u8, u64)>,
    ops: Vec<Op>,
}

fn spec() -> impl Strategy<Value = Spec> {
    let nodes = prop::collection::vec(2_000u64..16_000, 2..7);
    // (stateful?, replicas, cpu millis, budget kind, termination ms)
    let apps = prop::collection::vec(
        (any::<bool>(), 1u32..7, 200u64..4_000, 0u8..4, 0u64..20_000),
        1..5,
    );
    let op = prop_oneof![
        4 => any::<usize>().prop_map(Op::Evict),
        2 => (1u64..30_000).prop_map(Op::Advance),
        1 => any::<usize>().prop_map(Op::Cordon),
        1 => any::<usize>().prop_map(Op::Uncordon),
        1 => any::<usize>().prop_map(Op::Restart),
        1 => (1u32..5, 100u64..3_000, 0u8..4).prop_map(|(r, c, b)| Op::ApiDeployment(r, c, b)),
        1 => (100u64..2_000).prop_map(Op::ApiPod),
        1 => (1u32..4, 1u32..3).prop_map(|(c, p)| Op::ApiJob(c, p)),
        1 => Just(Op::ApiNamespace),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(i, g)| Op::ApiDelete(i, g)),
        1 => any::<usize>().prop_map(Op::ApiRelabel),
    ];
    (nodes, apps, prop::collection::vec(op, 1..60)).prop_map(|(nodes, apps, ops)| Spec {
        nodes,
        apps,
        ops,
    })
}

fn build(s: &Spec) -> World {
    let mut w = World::new(Clock::virtual_at(VIRTUAL_EPOCH), 11);
    for (i, cpu) in s.nodes.iter().enumerate() {
        w.add_node(
            &format!("n{i}"),
            Labels::new(),
            Labels::new(),
            *cpu,
            64 << 30,
            Version::new(1, 33, 0),
            None,
            0,
        )
        .expect("unique");
    }
    for (i, (stateful, replicas, cpu, budget, term)) in s.apps.iter().enumerate() {
        let app = format!("a{i}");
        let t = PodTemplate {
            labels: Labels::from([("app".to_string(), app.clone())]),
            cpu_millis: *cpu,
            memory_bytes: 1 << 30,
            startup_ms: 3_000,
            termination_ms: *term,
            image: "x".into(),
            ..PodTemplate::default()
        };
        let kind = if *stateful {
            Kind::StatefulSet
        } else {
            Kind::Deployment
        };
        w.add_workload(kind, "ns", &app, *replicas, t)
            .expect("unique");
        let sel = select(&app);
        let (min, max) = match budget {
            0 => (Some(IntOrPercent::Int(replicas.saturating_sub(1))), None),
            1 => (None, Some(IntOrPercent::Int(1))),
            2 => (Some(IntOrPercent::Percent(50)), None),
            _ => (None, Some(IntOrPercent::Percent(34))),
        };
        w.add_pdb("ns", &app, sel, min, max).expect("valid");
    }
    w.tick();
    w.advance(5_000);
    w
}

/// Independent of the scheduler: can `p` fit on any node that accepts new pods?
fn fits_somewhere(w: &World, p: &SimPod) -> Option<String> {
    w.nodes.values().find_map(|n| {
        if !n.ready || n.down || n.unschedulable {
            return None;
        }
        let used: u64 = w
            .pods
            .values()
            .filter(|q| q.node.as_deref() == Some(n.name.as_str()) && !q.is_finished())
            .map(|q| q.spec.cpu_millis)
            .sum();
        (used + p.spec.cpu_millis <= n.cpu_millis).then(|| n.name.clone())
    })
}

fn check_capacity_and_replicas(w: &World) -> Result<(), TestCaseError> {
    // The requests the model keeps per node as pods come and go equal a recount.
    let mut recount: std::collections::BTreeMap<&str, (u64, u64, u32)> =
        w.nodes.keys().map(|n| (n.as_str(), (0, 0, 0))).collect();
    // A pod that ran to completion holds nothing (the scheduler skips finished pods).
    for p in w.pods.values().filter(|p| !p.is_finished()) {
        if let Some(u) = p.node.as_deref().and_then(|n| recount.get_mut(n)) {
            *u = (u.0 + p.spec.cpu_millis, u.1 + p.spec.memory_bytes, u.2 + 1);
        }
    }
    let kept: std::collections::BTreeMap<&str, (u64, u64, u32)> = w.used().into_iter().collect();
    prop_assert_eq!(kept, recount, "kept usage = recount");
    // Each budget's status, read from the pods it keeps as selected, counts what a scan of
    // every pod would.
    for b in w.pdbs.values() {
        let matched: Vec<&SimPod> = w
            .pods
            .values()
            .filter(|p| p.namespace == b.namespace && b.selector.matches(&p.spec.labels))
            .collect();
        let healthy = matched
            .iter()
            .filter(|p| p.is_ready(w.now(), &w.nodes))
            .count() as u32;
        let s = w.pdb_status(b);
        prop_assert_eq!(s.current_healthy, healthy, "{} healthy", &b.name);
        // An integer minAvailable counts the pods themselves (the rest count scale).
        if matches!(b.min_available, Some(IntOrPercent::Int(_))) {
            prop_assert_eq!(
                s.expected_pods,
                matched.len() as u32,
                "{} expected",
                &b.name
            );
        }
    }
    for p in w.pods.values().filter(|p| p.node.is_none()) {
        prop_assert!(
            fits_somewhere(w, p).is_none(),
            "{} is Pending but fits on {:?}",
            p.name,
            fits_somewhere(w, p)
        );
    }
    // A pod relabelled out of its controller's selector is no longer its.
    for p in w.pods.values() {
        if let Some(o) = &p.owner
            && let Some(wl) = w.workloads.values().find(|wl| wl.pod_owner().uid == o.uid)
        {
            prop_assert!(
                wl.selector.matches(&p.spec.labels),
                "{} owned but not selected",
                p.name
            );
        }
    }
    for wl in w.workloads.values() {
        let uid = wl.pod_owner().uid;
        let owned: Vec<&SimPod> = w
            .pods
            .values()
            .filter(|p| p.owner.as_ref().is_some_and(|o| o.uid == uid))
            .collect();
        match wl.kind {
            Kind::Deployment => {
                let active = owned.iter().filter(|p| p.deleting_at.is_none()).count() as u32;
                prop_assert_eq!(
                    active,
                    wl.replicas,
                    "{} has a replacement for every evicted pod",
                    &wl.name
                );
            }
            _ => {
                // A StatefulSet pod comes back under its own name once the old one is gone
                // (a pod relabelled out of the set keeps the name, and the set waits).
                let named = (0..wl.replicas)
                    .filter(|i| {
                        w.pods
                            .contains_key(&(wl.namespace.clone(), format!("{}-{i}", wl.name)))
                    })
                    .count() as u32;
                prop_assert_eq!(named, wl.replicas, "{} keeps its identities", &wl.name);
                prop_assert!(
                    owned.len() as u32 <= wl.replicas,
                    "{} owns no extra pods",
                    &wl.name
                );
            }
        }
    }
    Ok(())
}

// ----- objects made and deleted through the API, as kubectl makes them ------------------------

/// What the property test made through the API: (resource, namespace, name), and how many
/// Deployments so far (each gets its own label, so budgets never overlap).
#[derive(Default)]
struct Made {
    objects: Vec<(Res, String, String)>,
    deployments: u32,
}

fn budget_spec(app: &str, kind: u8, replicas: u32) -> Value {
    let mut spec = json!({"selector": {"matchLabels": {"app": app}}});
    match kind {
        0 => spec["minAvailable"] = json!(replicas.saturating_sub(1)),
        1 => spec["maxUnavailable"] = json!(1),
        2 => spec["minAvailable"] = json!("50%"),
        _ => spec["maxUnavailable"] = json!("34%"),
    }
    spec
}

fn pod_spec(app: &str, cpu: u64, restart: &str) -> Value {
    json!({
        "restartPolicy": restart,
        "containers": [{
            "name": app, "image": "nginx",
            "resources": {"requests": {"cpu": format!("{cpu}m"), "memory": "256Mi"}}
        }]
    })
}

/// `POST`s `body` as `res` in `ns`; returns the stored object's name.
fn post(w: &mut World, res: Res, ns: Option<&str>, body: Value) -> Result<String, TestCaseError> {
    let (v, _) = kinds::create(w, res, ns, &body, FieldValidation::Strict)
        .map_err(|e| TestCaseError::fail(format!("creating {res:?}: {e:?} for {body}")))?;
    Ok(v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}

fn api_deployment(
    w: &mut World,
    made: &mut Made,
    ns: &str,
    replicas: u32,
    cpu: u64,
    budget: u8,
) -> Result<(), TestCaseError> {
    made.deployments += 1;
    let app = format!("api-{}", made.deployments);
    let name = post(
        w,
        Res::Deployment,
        Some(ns),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": &app},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": &app}},
                "template": {"metadata": {"labels": {"app": &app}}, "spec": pod_spec("api", cpu, "Always")}
            }
        }),
    )?;
    made.objects
        .push((Res::Deployment, ns.to_string(), name.clone()));
    let pdb = post(
        w,
        Res::Budget,
        Some(ns),
        json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": &name},
            "spec": budget_spec(&app, budget, replicas)
        }),
    )?;
    made.objects.push((Res::Budget, ns.to_string(), pdb));
    Ok(())
}

fn api_op(w: &mut World, made: &mut Made, op: &Op) -> Result<(), TestCaseError> {
    match op {
        Op::ApiDeployment(r, cpu, b) => api_deployment(w, made, "ns", *r, *cpu, *b)?,
        Op::ApiPod(cpu) => {
            let name = post(
                w,
                Res::Pod,
                Some("ns"),
                json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"generateName": "bare-", "labels": {"app": "bare"}},
                    "spec": pod_spec("bare", *cpu, "Always")
                }),
            )?;
            made.objects.push((Res::Pod, "ns".into(), name));
        }
        Op::ApiJob(completions, parallelism) => {
            let name = post(
                w,
                Res::Job,
                Some("ns"),
                json!({
                    "apiVersion": "batch/v1", "kind": "Job",
                    "metadata": {"generateName": "job-"},
                    "spec": {
                        "completions": completions, "parallelism": parallelism,
                        "template": {"spec": pod_spec("job", 200, "Never")}
                    }
                }),
            )?;
            made.objects.push((Res::Job, "ns".into(), name));
        }
        Op::ApiNamespace => {
            let ns = post(
                w,
                Res::Namespace,
                None,
                json!({
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"generateName": "tmp-"}
                }),
            )?;
            made.objects
                .push((Res::Namespace, String::new(), ns.clone()));
            api_deployment(w, made, &ns, 2, 300, 1)?;
        }
        Op::ApiDelete(i, graceful) => {
            if made.objects.is_empty() {
                return Ok(());
            }
            let (res, ns, name) = made.objects.remove(i % made.objects.len());
            let opts = DeleteOptions {
                grace_ms: (!graceful).then_some(0),
                propagation: (res == Res::Job).then_some(Propagation::Background),
                ..DeleteOptions::default()
            };
            let ns = (!ns.is_empty()).then_some(ns.as_str());
            match kinds::delete(w, res, ns, &name, &opts) {
                // Gone with its namespace already, or by its owner.
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => {
                    return Err(TestCaseError::fail(format!(
                        "deleting {res:?} {name}: {e:?}"
                    )));
                }
            }
        }
        Op::ApiRelabel(i) => {
            let pods: Vec<(String, String)> = w.pods.keys().cloned().collect();
            let (ns, name) = &pods[i % pods.len()];
            let Some(mut pod) = upgraded_sim::kube::object(w, Res::Pod, ns, name) else {
                return Ok(());
            };
            if !pod["metadata"]["deletionTimestamp"].is_null() {
                return Ok(());
            }
            pod["metadata"]["labels"]["app"] = json!("moved");
            match kinds::update(w, Res::Pod, Some(ns), name, &pod, FieldValidation::Strict) {
                Ok(_) | Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(TestCaseError::fail(format!("relabel {name}: {e:?}"))),
            }
        }
        _ => unreachable!("not an API operation"),
    }
    Ok(())
}

/// Nothing outlives its namespace: once a namespace is gone, nothing is left in it.
fn check_namespaces(w: &World) -> Result<(), TestCaseError> {
    let live = |ns: &str| w.namespaces.contains_key(ns);
    for (ns, name) in w.pods.keys() {
        prop_assert!(live(ns), "pod {ns}/{name} outlived its namespace");
    }
    for (_, ns, name) in w.workloads.keys() {
        prop_assert!(live(ns), "workload {ns}/{name} outlived its namespace");
    }
    for (ns, name) in w.pdbs.keys().chain(w.jobs.keys()) {
        prop_assert!(live(ns), "{ns}/{name} outlived its namespace");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn evictions_never_break_a_budget_and_capacity_is_real(s in spec()) {
        let mut w = build(&s);
        w.watch_budgets();
        check_capacity_and_replicas(&w)?;
        let nodes: Vec<String> = w.nodes.keys().cloned().collect();
        // Each budget's lowest slack seen from outside, after every operation: the world's
        // own low water (noted only for the budgets a change touched) may be lower, never
        // higher.
        let mut seen: std::collections::BTreeMap<String, i64> = std::collections::BTreeMap::new();
        let mut look = |w: &World| {
            for b in w.pdbs.values() {
                let st = w.pdb_status(b);
                let slack = i64::from(st.current_healthy) - i64::from(st.desired_healthy);
                let e = seen.entry(format!("{}/{}", b.namespace, b.name)).or_insert(slack);
                *e = (*e).min(slack);
            }
        };
        look(&w);
        let mut made = Made::default();
        for op in &s.ops {
            match op {
                Op::Evict(i) => {
                    let pods: Vec<(String, String)> = w.pods.keys().cloned().collect();
                    let k = &pods[i % pods.len()];
                    let Some(pod) = w.pods.get(k).cloned() else { continue };
                    let was_ready = pod.is_ready(w.now(), &w.nodes);
                    let before: Vec<_> = w.pdbs_for(&pod).iter().map(|b| w.pdb_status(b)).collect();
                    let result = w.evict(&k.0, &k.1, None);
                    let after: Vec<_> = w.pdbs_for(&pod).iter().map(|b| w.pdb_status(b)).collect();
                    match result {
                        Ok(()) => {
                            for (b, a) in before.iter().zip(&after) {
                                if was_ready {
                                    prop_assert!(
                                        a.current_healthy >= a.desired_healthy,
                                        "evicting {} took its budget below minimum: {b:?} -> {a:?}", pod.name
                                    );
                                }
                                prop_assert!(a.current_healthy + 1 >= b.current_healthy);
                            }
                        }
                        Err(EvictError::Blocked { status, .. }) => {
                            prop_assert!(status.disruptions_allowed == 0 || !was_ready);
                            prop_assert_eq!(w.pods.get(k).map(|p| &p.uid), Some(&pod.uid), "a refused eviction changes nothing");
                        }
                        Err(e) => prop_assert!(false, "unexpected {e:?}"),
                    }
                }
                Op::Advance(ms) => w.advance(*ms),
                Op::Cordon(i) => w.set_unschedulable(&nodes[i % nodes.len()], true).map_err(|e| TestCaseError::fail(e.to_string()))?,
                Op::Uncordon(i) => w.set_unschedulable(&nodes[i % nodes.len()], false).map_err(|e| TestCaseError::fail(e.to_string()))?,
                Op::Restart(i) => w.restart_kubelet(&nodes[i % nodes.len()], Version::new(1, 34, 0)).map_err(|e| TestCaseError::fail(e.to_string()))?,
                api => api_op(&mut w, &mut made, api)?,
            }
            check_capacity_and_replicas(&w)?;
            check_namespaces(&w)?;
            look(&w);
        }
        let low = w.budget_low_water.clone().unwrap_or_default();
        for (b, outside) in &seen {
            let kept = low.get(b).copied();
            prop_assert!(kept.is_some_and(|k| k <= *outside), "{b}: kept {kept:?}, seen {outside}");
        }
    }
}
