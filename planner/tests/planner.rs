//! The planner: property tests of its invariants over random clusters, snapshot tests of its
//! three outputs for hand-made clusters, and the JSON Schemas generated from its types.
//!
//! `UPDATE_SNAPSHOTS=1 cargo test -p upgraded-planner --test planner` rewrites the snapshots
//! and schemas after an intended change; review the diff.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use proptest::prelude::*;
use upgraded_events::inventory::{
    ControlPlane, Inventory, LabelSelector, NodeInv, Owner, PdbInv, PodInv, Resources,
};
use upgraded_events::{Role, Step, Timestamp, Version};
use upgraded_planner::policy::{MaxUnavailable, PlanPolicy};
use upgraded_planner::{self as planner, PhaseKind, PlanInput, PlanReport, Severity};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Compares with a stored file, or rewrites it under UPDATE_SNAPSHOTS=1.
fn check(path: PathBuf, actual: &str) {
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_SNAPSHOTS=1)", path.display()));
    if want != actual {
        let first = want
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "{} differs from the output at line {}:\n  want: {:?}\n  got:  {:?}\n(UPDATE_SNAPSHOTS=1 rewrites it)",
            path.display(),
            first + 1,
            want.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

fn t(s: &str) -> Timestamp {
    Timestamp(s.parse::<jiff::Timestamp>().expect("time").as_millisecond())
}

fn v(s: &str) -> Version {
    s.parse().expect("version")
}

fn seed() -> (Inventory, PlanPolicy) {
    let inv = Inventory::from_kubectl_json(
        &std::fs::read_to_string(root().join("tests/fixtures/seed-cluster.json")).expect("read"),
    )
    .expect("seed cluster");
    let policy = PlanPolicy::from_yaml(
        &std::fs::read_to_string(root().join("tests/fixtures/seed-policy.yaml")).expect("read"),
    )
    .expect("seed policy");
    (inv, policy)
}

fn snapshot_all(name: &str, r: &PlanReport) {
    let dir = root().join("tests/snapshots");
    check(
        dir.join(format!("{name}.table.txt")),
        &planner::render::table(r),
    );
    check(
        dir.join(format!("{name}.plan.json")),
        &(serde_json::to_string_pretty(r).expect("json") + "\n"),
    );
    check(
        dir.join(format!("{name}.runbook.md")),
        &planner::render::runbook(r),
    );
}

/// Plans `inv` to v1.35.3 starting 2026-11-24 08:00 UTC (the fixed start of these tests).
fn plan_to_1_35(inv: &Inventory, policy: &PlanPolicy) -> planner::PlanReport {
    planner::plan(PlanInput {
        inventory: inv,
        policy,
        target: Some(v("v1.35.3")),
        start: t("2026-11-24T08:00:00Z"),
    })
    .expect("plan")
}

#[test]
fn seed_cluster_plan() {
    let (inv, policy) = seed();
    let r = planner::plan(PlanInput {
        inventory: &inv,
        policy: &policy,
        target: None,
        start: t("2026-11-24T10:00:00Z"),
    })
    .expect("plan");
    // The seed's cases, spelled out before the snapshots.
    let path: Vec<String> = r.path.iter().map(|h| h.version.to_string()).collect();
    assert_eq!(path, ["v1.33.7", "v1.34.6", "v1.35.3"]);
    assert_eq!(r.path[2].package, "1.35.3-1.1");
    let codes: BTreeSet<&str> = r.findings.iter().map(|f| f.code.as_str()).collect();
    for c in [
        "pdb-zero-disruptions",
        "cgroup-v1",
        "pod-unmanaged",
        "pod-local-data",
    ] {
        assert!(codes.contains(c), "missing finding {c}: {codes:?}");
    }
    assert!(r.blocked);
    let cg = r
        .findings
        .iter()
        .find(|f| f.code == "cgroup-v1")
        .expect("cgroup");
    assert_eq!(cg.subjects, ["node/r640-03"]);
    let gens: Vec<&str> = r.generations.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(gens, ["dell-r640", "dell-r740", "hp-dl380"]);
    let canaries: Vec<&str> = r
        .phases
        .iter()
        .filter(|p| p.kind == PhaseKind::Canaries)
        .flat_map(|p| &p.batches)
        .map(|b| b.units[0].node.as_str())
        .collect();
    // r740-01/02 and dl380-01 hold redis pods (its PDB allows nothing): not canaries.
    assert_eq!(canaries, ["r640-01", "r740-03", "dl380-02"]);
    snapshot_all("seed", &r);
}

/// 12 workers, max unavailable 2, plenty of room and no budgets: batches of two.
#[test]
fn twelve_workers_two_at_a_time() {
    let mut inv = Inventory::default();
    inv.nodes.push(node(
        "cp-1",
        Role::ControlPlane,
        "v1.34.2",
        "gen-a",
        0,
        8000,
    ));
    for i in 1..=12 {
        let g = if i <= 6 { "gen-a" } else { "gen-b" };
        inv.nodes.push(node(
            &format!("w-{i:02}"),
            Role::Worker,
            "v1.34.2",
            g,
            i,
            8000,
        ));
        inv.pods.push(pod(
            "apps",
            &format!("api-{i}"),
            &format!("w-{i:02}"),
            1000,
            "api",
        ));
    }
    let yaml = "generations: { maxUnavailable: 2, canaries: 1 }\nwaitBetweenBatches: 5m\n";
    let policy = PlanPolicy::from_yaml(yaml).expect("policy");
    let r = plan_to_1_35(&inv, &policy);
    let sizes: Vec<usize> = r
        .phases
        .iter()
        .filter(|p| p.kind == PhaseKind::Generation)
        .flat_map(|p| &p.batches)
        .map(|b| b.units.len())
        .collect();
    assert_eq!(
        sizes,
        [2, 2, 1, 2, 2, 1],
        "5 left per generation after its canary"
    );
    assert!(!r.blocked, "{:?}", r.findings);
    snapshot_all("twelve-workers", &r);
}

/// Workers four minors behind: caught up before the control plane's last hop; a node that
/// fits nowhere is named with what is missing.
#[test]
fn old_workers_and_a_full_cluster() {
    let mut inv = Inventory::default();
    inv.nodes
        .push(node("cp-1", Role::ControlPlane, "v1.32.4", "g", 0, 4000));
    inv.nodes
        .push(node("w-1", Role::Worker, "v1.30.2", "g", 1, 4000));
    inv.nodes
        .push(node("w-2", Role::Worker, "v1.32.4", "g", 2, 4000));
    inv.pods.push(pod("a", "big-1", "w-1", 3500, "big"));
    inv.pods.push(pod("a", "big-2", "w-2", 3500, "big"));
    let policy = PlanPolicy::default();
    let r = plan_to_1_35(&inv, &policy);
    let kinds: Vec<(PhaseKind, String)> = r
        .phases
        .iter()
        .map(|p| (p.kind, p.version.to_string()))
        .collect();
    assert_eq!(
        kinds,
        [
            (PhaseKind::ControlPlane, "v1.33.7".into()),
            // w-1 (v1.30) would be four minors behind a v1.34 apiserver: caught up first.
            // Neither worker can be drained (no room), so neither is a canary.
            (PhaseKind::WorkerCatchUp, "v1.33.7".into()),
            (PhaseKind::ControlPlane, "v1.34.6".into()),
            (PhaseKind::ControlPlane, "v1.35.3".into()),
            (PhaseKind::Generation, "v1.35.3".into()),
        ]
    );
    let cap = r
        .findings
        .iter()
        .find(|f| f.code == "capacity")
        .expect("capacity finding");
    assert!(
        cap.message
            .contains("w-1 cannot be drained: 1 evicted pod(s) would not fit: 3 CPU"),
        "{}",
        cap.message
    );
    snapshot_all("old-workers-full", &r);
}

#[test]
fn refusals_are_clear() {
    let (inv, policy) = seed();
    let plan = |to: &str| {
        planner::plan(PlanInput {
            inventory: &inv,
            policy: &policy,
            target: Some(v(to)),
            start: t("2026-11-24T10:00:00Z"),
        })
    };
    let e = plan("v1.31.0").expect_err("downgrade").to_string();
    assert!(e.contains("downgrade"), "{e}");
    let e = plan("v1.35.9").expect_err("unknown patch").to_string();
    assert!(e.contains("latest 1.35 release is v1.35.3"), "{e}");
    let e = plan("v1.40.0").expect_err("unknown minor").to_string();
    assert!(e.contains("no 1.40 release"), "{e}");
    for bad in [
        "",
        "{}",
        r#"{"kind":"Node"}"#,
        r#"{"kind":"List","items":[]}"#,
    ] {
        assert!(Inventory::from_kubectl_json(bad).is_err(), "{bad}");
    }
    let e = Inventory::from_kubectl_json(
        r#"{"kind":"List","items":[{"kind":"Node","metadata":{"name":"x"},"status":{"nodeInfo":{"kubeletVersion":"banana"}}}]}"#,
    )
    .expect_err("bad version")
    .to_string();
    assert!(
        e.contains("Node item 0 (x): status.nodeInfo.kubeletVersion"),
        "{e}"
    );
}

/// A budget at `minAvailable` = replicas, all healthy: without the policy it blocks the plan
/// and its nodes are never canaries; with `drain.scaleUpToUnblock` it is a warning and the
/// capacity model lets one of its pods go at a time.
#[test]
fn a_budget_allowing_nothing_is_planned_around_by_scaling_up_when_the_policy_says_so() {
    let (mut inv, mut policy) = seed();
    let redis = inv
        .pdbs
        .iter_mut()
        .find(|b| b.name == "redis")
        .expect("redis budget");
    redis.min_available = Some(upgraded_events::inventory::IntOrPercent::Int(3));
    redis.expected_pods = 3;
    redis.current_healthy = 3;
    redis.desired_healthy = 3;
    redis.disruptions_allowed = 0;
    let finding = |r: &PlanReport, code: &str| {
        r.findings
            .iter()
            .find(|f| f.code == code && f.subjects == ["pdb/prod/redis"])
            .map(|f| (f.severity, f.fix.clone()))
    };
    let before = plan_to_1_35(&inv, &policy);
    let (sev, fix) = finding(&before, "pdb-never-allows").expect("blocker without the policy");
    assert_eq!(sev, Severity::Blocker);
    assert!(
        fix.contains("kubectl scale statefulset redis -n prod --replicas=4"),
        "{fix}"
    );

    let yaml =
        "apiVersion: upgraded.dev/v1alpha1\nkind: UpgradePolicy\ndrain: {scaleUpToUnblock: true}\n";
    let parsed = PlanPolicy::from_yaml(yaml).expect("policy");
    assert!(parsed.scale_up_to_unblock && parsed.run_policy().scale_up_to_unblock);
    policy.scale_up_to_unblock = true;
    // A StatefulSet is never scaled (a new ordinal may bring a volume or a quorum member).
    let sts = plan_to_1_35(&inv, &policy);
    assert_eq!(
        finding(&sts, "pdb-never-allows").map(|f| f.0),
        Some(Severity::Blocker)
    );
    for p in inv.pods.iter_mut().filter(|p| p.namespace == "prod") {
        if let Some(o) = p.owner.as_mut().filter(|o| o.name == "redis") {
            o.kind = "Deployment".into();
        }
    }
    let after = plan_to_1_35(&inv, &policy);
    assert!(finding(&after, "pdb-never-allows").is_none());
    let (sev, _) = finding(&after, "pdb-scaled-to-unblock").expect("warning");
    assert_eq!(sev, Severity::Warning);
}

#[test]
fn hostile_names_are_quoted_in_the_runbook() {
    let mut inv = Inventory::default();
    inv.nodes
        .push(node("cp-1", Role::ControlPlane, "v1.34.2", "g", 0, 8000));
    inv.nodes.push(node(
        "w';reboot;'",
        Role::Worker,
        "v1.34.2",
        "g$(id)",
        1,
        8000,
    ));
    let r = planner::plan(PlanInput {
        inventory: &inv,
        policy: &PlanPolicy::default(),
        target: Some(v("v1.35.3")),
        start: t("2026-11-24T08:00:00Z"),
    })
    .expect("plan");
    let book = planner::render::runbook(&r);
    assert!(
        book.contains(r"kubectl drain 'w'\'';reboot;'\''' "),
        "{book}"
    );
    assert!(!book.contains("kubectl drain w';reboot"), "unquoted name");
}

#[test]
fn schemas_are_current() {
    let dir = root().join("../schemas");
    let plan = schemars::schema_for!(PlanReport);
    check(
        dir.join("plan.schema.json"),
        &(serde_json::to_string_pretty(&plan).expect("json") + "\n"),
    );
    let policy = schemars::schema_for!(upgraded_planner::policy::PolicyFile);
    check(
        dir.join("policy.schema.json"),
        &(serde_json::to_string_pretty(&policy).expect("json") + "\n"),
    );
    // Every record as `events`, NATS, exports and webhooks carry it.
    let record = schemars::schema_for!(upgraded_events::Record);
    check(
        dir.join("record.schema.json"),
        &(serde_json::to_string_pretty(&record).expect("json") + "\n"),
    );
}

// ---------- random clusters ----------

fn node(name: &str, role: Role, kubelet: &str, generation: &str, age: i64, cpu: u64) -> NodeInv {
    let kubelet = v(kubelet);
    let mut labels = BTreeMap::new();
    labels.insert(
        "node.kubernetes.io/instance-type".to_string(),
        generation.to_string(),
    );
    NodeInv {
        name: name.into(),
        role,
        labels,
        created: Some(Timestamp(1_500_000_000_000 + age * 86_400_000)),
        kubelet,
        kube_proxy: None,
        kernel: "6.1".into(),
        os_image: "Debian 12".into(),
        runtime: "containerd://1.7.24".into(),
        arch: "amd64".into(),
        cgroup: Some(2),
        allocatable: Resources {
            cpu_millis: cpu,
            memory_bytes: cpu << 22,
        },
        extended: Default::default(),
        taints: if role == Role::ControlPlane {
            vec![upgraded_events::inventory::Taint {
                key: "node-role.kubernetes.io/control-plane".into(),
                value: String::new(),
                effect: "NoSchedule".into(),
            }]
        } else {
            Vec::new()
        },
        unschedulable: false,
        ready: true,
        control_plane: (role == Role::ControlPlane).then(|| ControlPlane {
            apiserver: kubelet,
            controller_manager: kubelet,
            scheduler: kubelet,
            etcd: Some("3.5.16-0".into()),
            observed: true,
        }),
    }
}

fn pod(ns: &str, name: &str, node: &str, cpu: u64, app: &str) -> PodInv {
    PodInv {
        namespace: ns.into(),
        name: name.into(),
        node: Some(node.into()),
        labels: [("app".to_string(), app.to_string())].into(),
        owner: Some(Owner {
            kind: "Deployment".into(),
            name: app.into(),
        }),
        requests: Resources {
            cpu_millis: cpu,
            memory_bytes: cpu << 20,
        },
        node_selector: BTreeMap::new(),
        tolerations: Vec::new(),
        empty_dir: false,
        local_storage: false,
        mirror: false,
        phase: "Running".into(),
        ready: true,
        crash_looping: false,
        uid: String::new(),
    }
}

#[derive(Debug, Clone)]
struct Cluster {
    inv: Inventory,
    policy: PlanPolicy,
}

fn cluster() -> impl Strategy<Value = Cluster> {
    (
        1usize..4,                                                    // control planes
        prop::collection::vec((0u16..4, 0usize..3, 0u64..90), 1..30), // workers: minors behind, generation, utilisation %
        1u32..4,                                                      // max unavailable
        prop::collection::vec((0usize..6, 0u32..4), 0..4),            // PDBs: app, allowed
        0u16..3,       // control plane minors behind 1.35
        any::<bool>(), // one drain for all hops
    )
        .prop_map(|(cps, workers, max, pdbs, cp_behind, all_hops)| {
            let cp_minor = 35 - cp_behind;
            let mut inv = Inventory::default();
            for i in 0..cps {
                inv.nodes.push(node(
                    &format!("cp-{i}"),
                    Role::ControlPlane,
                    &format!("v1.{cp_minor}.1"),
                    "cp",
                    i as i64,
                    4000,
                ));
            }
            for (i, (behind, g, util)) in workers.iter().enumerate() {
                let minor = cp_minor - (*behind).min(3);
                let name = format!("w-{i:02}");
                inv.nodes.push(node(
                    &name,
                    Role::Worker,
                    &format!("v1.{minor}.2"),
                    &format!("gen-{g}"),
                    100 + (*g as i64) * 300 + i as i64,
                    8000,
                ));
                // Pods filling `util`% of the node, 4 pods of equal size, apps round-robin.
                let per = 8000 * util / 100 / 4;
                for k in 0..4 {
                    if per > 0 {
                        inv.pods.push(pod(
                            "apps",
                            &format!("p-{i}-{k}"),
                            &name,
                            per,
                            &format!("app{}", (i + k) % 6),
                        ));
                    }
                }
            }
            for (app, allowed) in pdbs {
                inv.pdbs.push(PdbInv {
                    namespace: "apps".into(),
                    name: format!("pdb-app{app}"),
                    selector: LabelSelector {
                        match_labels: [("app".to_string(), format!("app{app}"))].into(),
                        match_expressions: Vec::new(),
                    },
                    min_available: None,
                    max_unavailable: Some(upgraded_events::inventory::IntOrPercent::Int(
                        allowed.max(1),
                    )),
                    disruptions_allowed: allowed,
                    current_healthy: 4,
                    desired_healthy: 4 - allowed.min(4),
                    expected_pods: 4,
                });
            }
            let mut policy = PlanPolicy::default();
            policy.default_generation.max_unavailable = MaxUnavailable::Count(max);
            policy.all_hops_in_one_drain = all_hops;
            Cluster { inv, policy }
        })
}

fn minor(v: Version) -> i32 {
    i32::from(v.minor)
}

/// The invariants, checked without the planner's own helpers.
fn check_invariants(c: &Cluster, r: &PlanReport) -> Result<(), String> {
    let target = r.target;
    let units: Vec<(usize, &planner::Unit)> = r
        .phases
        .iter()
        .flat_map(|p| &p.batches)
        .flat_map(|b| b.units.iter().map(move |u| (b.number, u)))
        .collect();
    // 1. Skew, state by state.
    let mut api: BTreeMap<String, Version> = BTreeMap::new();
    let mut kubelet: BTreeMap<String, Version> = BTreeMap::new();
    for n in &c.inv.nodes {
        kubelet.insert(n.name.clone(), n.kubelet);
        if let Some(cp) = &n.control_plane {
            api.insert(n.name.clone(), cp.apiserver);
        }
    }
    for (b, u) in &units {
        for s in &u.steps {
            match s {
                Step::KubeadmUpgrade { version, .. } if u.role == Role::ControlPlane => {
                    api.insert(u.node.clone(), *version);
                }
                Step::UpgradePackages { version } => {
                    kubelet.insert(u.node.clone(), *version);
                }
                _ => continue,
            }
            let lo = api.values().copied().min().ok_or("no apiserver")?;
            let hi = api.values().copied().max().ok_or("no apiserver")?;
            if minor(hi) - minor(lo) > 1 {
                return Err(format!("batch {b}: apiservers {lo} and {hi}"));
            }
            for (n, k) in &kubelet {
                if minor(*k) > minor(lo) || minor(hi) - minor(*k) > 3 {
                    return Err(format!(
                        "batch {b}: kubelet {k} on {n} vs apiservers {lo}..{hi}"
                    ));
                }
            }
        }
    }
    // 2. Control plane before workers for each version.
    for (i, (_, u)) in units.iter().enumerate() {
        if u.role == Role::Worker {
            let later_cp = units[i..]
                .iter()
                .any(|(_, x)| x.role == Role::ControlPlane && minor(x.to) <= minor(u.to));
            if later_cp {
                return Err(format!(
                    "worker {} reaches {} before the control plane",
                    u.node, u.to
                ));
            }
        }
    }
    // 3. Every node takes each hop it needs exactly once; everyone ends at the target.
    for n in &c.inv.nodes {
        let kubeadm: Vec<Version> = units
            .iter()
            .filter(|(_, u)| u.node == n.name)
            .flat_map(|(_, u)| &u.steps)
            .filter_map(|s| match s {
                Step::KubeadmUpgrade { version, .. } => Some(*version),
                _ => None,
            })
            .collect();
        let packages: Vec<Version> = units
            .iter()
            .filter(|(_, u)| u.node == n.name)
            .flat_map(|(_, u)| &u.steps)
            .filter_map(|s| match s {
                Step::UpgradePackages { version } => Some(*version),
                _ => None,
            })
            .collect();
        let mut sorted = packages.clone();
        sorted.sort();
        sorted.dedup();
        if sorted != packages {
            return Err(format!(
                "{}: packages out of order or twice: {packages:?}",
                n.name
            ));
        }
        if kubeadm != packages {
            return Err(format!(
                "{}: kubeadm hops {kubeadm:?} vs packages {packages:?}",
                n.name
            ));
        }
        let from = n.kubelet;
        let want_minors = if from >= target {
            0
        } else if from.minor == target.minor {
            1
        } else {
            (target.minor - from.minor) as usize
        };
        let cp_from = n.control_plane.as_ref().map_or(from, |c| c.apiserver);
        let want = if n.role == Role::ControlPlane {
            if cp_from >= target {
                0
            } else if cp_from.minor == target.minor {
                1
            } else {
                (target.minor - cp_from.minor) as usize
            }
        } else {
            want_minors
        };
        if packages.len() != want || (want > 0 && packages.last() != Some(&target)) {
            return Err(format!("{}: from {from} took {packages:?}", n.name));
        }
    }
    // 4. Batches: size, budgets and room, with the pods as they were (the planner's
    // view only has more pods on a node, never fewer).
    let gen_size = |g: &str| {
        c.inv
            .nodes
            .iter()
            .filter(|n| {
                n.labels
                    .get("node.kubernetes.io/instance-type")
                    .map(String::as_str)
                    == Some(g)
                    && n.role == Role::Worker
            })
            .count()
    };
    let mut drained: BTreeSet<&str> = BTreeSet::new();
    for b in r.phases.iter().flat_map(|p| &p.batches) {
        // After its first drain a node's pods have moved elsewhere: the inventory's
        // placement only describes first drains.
        let first_drain = b.units.iter().all(|u| !drained.contains(u.node.as_str()));
        for u in b.units.iter().filter(|u| u.steps.contains(&Step::Drain)) {
            drained.insert(u.node.as_str());
        }
        if b.units.len() > 1 {
            let g = b.units[0].generation.clone().unwrap_or_default();
            let max = c
                .policy
                .generation_rule(&g)
                .max_unavailable
                .of(gen_size(&g));
            if b.units.len() > max {
                return Err(format!(
                    "batch {} has {} nodes, max {max}",
                    b.number,
                    b.units.len()
                ));
            }
            if b.units.iter().any(|u| u.blocked.is_some()) {
                return Err(format!("batch {} groups a blocked node", b.number));
            }
            if !first_drain {
                continue;
            }
            let names: BTreeSet<&str> = b.units.iter().map(|u| u.node.as_str()).collect();
            for pdb in &c.inv.pdbs {
                let need = c
                    .inv
                    .pods
                    .iter()
                    .filter(|p| {
                        p.node.as_deref().is_some_and(|n| names.contains(n))
                            && pdb.selector.matches(&p.labels)
                    })
                    .count() as u32;
                // A budget a batch touches lets at least one eviction through; the drains
                // take turns at it in any number of rounds when a replacement becomes Ready
                // within the drain timeout (which counts time without progress), else in one.
                let d = &c.policy.durations;
                let max_rounds = if d.pod_ready + 5 < c.policy.drain_timeout_secs {
                    u32::MAX
                } else {
                    1
                };
                if need > 0 && pdb.disruptions_allowed == 0 {
                    return Err(format!(
                        "batch {} evicts from {}, which allows none",
                        b.number, pdb.name
                    ));
                }
                if names.len() > 1
                    && need > 0
                    && need.div_ceil(pdb.disruptions_allowed) > max_rounds
                {
                    return Err(format!(
                        "batch {} needs {need} evictions from {}, {} at a time: more than {max_rounds} rounds",
                        b.number, pdb.name, pdb.disruptions_allowed
                    ));
                }
            }
            let evicted: u64 = c
                .inv
                .pods
                .iter()
                .filter(|p| p.node.as_deref().is_some_and(|n| names.contains(n)))
                .map(|p| p.requests.cpu_millis)
                .sum();
            let free: u64 = c
                .inv
                .nodes
                .iter()
                .filter(|n| {
                    !names.contains(n.name.as_str()) && !n.unschedulable && n.taints.is_empty()
                })
                .map(|n| n.allocatable.cpu_millis)
                .sum::<u64>()
                - c.inv
                    .pods
                    .iter()
                    .filter(|p| p.node.as_deref().is_some_and(|n| !names.contains(n)))
                    .map(|p| p.requests.cpu_millis)
                    .sum::<u64>();
            if evicted > free {
                return Err(format!(
                    "batch {} evicts {evicted}m CPU, {free}m free elsewhere",
                    b.number
                ));
            }
        }
    }
    // 5. Canaries first per worker stage, oldest generation first.
    for (i, p) in r.phases.iter().enumerate() {
        if p.kind == PhaseKind::Canaries {
            let gens: Vec<String> = p
                .batches
                .iter()
                .filter_map(|b| b.units[0].generation.clone())
                .collect();
            let order: Vec<String> = r
                .generations
                .iter()
                .map(|g| g.name.clone())
                .filter(|g| gens.contains(g))
                .collect();
            if gens != order {
                return Err(format!("canaries in {gens:?}, generations {order:?}"));
            }
            if i > 0
                && r.phases[i - 1].kind == PhaseKind::Generation
                && r.phases[i - 1].version == p.version
            {
                return Err("a generation phase before its canaries".into());
            }
        }
    }
    if r.findings.iter().any(|f| f.code == "skew-during-plan") {
        return Err("the planner's own skew check fired".into());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn plans_keep_their_invariants(c in cluster()) {
        let input = PlanInput { inventory: &c.inv, policy: &c.policy, target: Some(v("v1.35.3")), start: t("2026-11-24T08:00:00Z") };
        let r = planner::plan(input).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_invariants(&c, &r).map_err(TestCaseError::fail)?;
        // Deterministic: the same input gives the same plan.
        let again = planner::plan(input).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&r, &again);
        // Blocked exactly when a blocker is reported.
        prop_assert_eq!(r.blocked, r.findings.iter().any(|f| f.severity == Severity::Blocker));
        // The execution plan has unique entry names.
        let plan = r.execution_plan();
        let names: BTreeSet<&str> = plan.nodes().map(|(_, n)| n.name.as_str()).collect();
        prop_assert_eq!(names.len(), plan.nodes().count());
    }
}

#[test]
fn a_target_outside_1_x_names_its_own_major() {
    let (inv, policy) = seed();
    for (target, want) in [
        (
            "v2.0.0",
            "Kubernetes 2.x is not a version upgraded can go to",
        ),
        ("v1.99.0", "the catalog has no 1.99 release"),
    ] {
        let err = planner::plan(PlanInput {
            inventory: &inv,
            policy: &policy,
            target: Some(v(target)),
            start: t("2026-11-24T08:00:00Z"),
        })
        .expect_err(target)
        .to_string();
        assert!(err.contains(want), "{target}: {err}");
        assert!(!err.contains("1.0 release"), "{err}");
    }
}

/// The seed snapshot with one string replaced by `hostile`, as a forged List would carry it.
fn seed_with(pointer: &str, hostile: &str) -> Result<Inventory, String> {
    let mut v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/seed-cluster.json")).expect("read"),
    )
    .expect("json");
    *v.pointer_mut(pointer).expect("pointer") = serde_json::Value::String(hostile.into());
    Inventory::from_kubectl_value(&v).map_err(|e| e.to_string())
}

#[test]
fn names_the_apiserver_would_refuse_are_refused_with_the_item_index() {
    let payload = "w-1\ntouch /tmp/pwned #";
    let items: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/seed-cluster.json")).expect("read"),
    )
    .expect("json");
    let items = items["items"].as_array().expect("items");
    let first = |kind: &str| {
        items
            .iter()
            .position(|i| i["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} in the seed"))
    };
    let node = first("Node");
    let pod = first("Pod");
    for (pointer, index, what) in [
        (format!("/items/{node}/metadata/name"), node, "name"),
        (format!("/items/{pod}/metadata/name"), pod, "name"),
        (format!("/items/{pod}/metadata/namespace"), pod, "namespace"),
        (
            format!("/items/{node}/metadata/labels/kubernetes.io~1hostname"),
            node,
            "label",
        ),
    ] {
        let err = seed_with(&pointer, payload).expect_err(&pointer);
        assert!(
            err.contains(&format!("item {index} ")) && err.contains(what),
            "{pointer}: {err}"
        );
        assert!(
            !err.contains('\n'),
            "the message itself stays on one line: {err:?}"
        );
    }
}

#[test]
fn a_hostile_name_never_starts_a_line_of_the_runbook() {
    // Past the inventory's checks (a report built by other means): the renderers still keep
    // every character of data inside a comment's line or a quoted word.
    let (inv, policy) = seed();
    let mut r = plan_to_1_35(&inv, &policy);
    let payload = "touch /tmp/pwned";
    for phase in &mut r.phases {
        for batch in &mut phase.batches {
            for u in &mut batch.units {
                u.node = format!("{}\n{payload} #\r\u{2028}", u.node);
                u.stays_cordoned = true;
            }
        }
    }
    let book = planner::render::runbook(&r);
    let table = planner::render::table(&r);
    let mut in_sh = false;
    let mut seen = 0;
    for line in book.lines() {
        if line.starts_with("```") {
            in_sh = line.starts_with("```sh");
            continue;
        }
        if let Some(at) = line.find(payload) {
            seen += 1;
            let before = &line[..at];
            assert!(
                !before.trim().is_empty(),
                "the payload starts a line: {line:?}"
            );
            if in_sh {
                assert!(
                    before.contains('#') || before.matches('\'').count() % 2 == 1,
                    "the payload is neither commented nor quoted: {line:?}"
                );
            }
        }
    }
    assert!(seen > 0, "the payload is rendered somewhere");
    for line in table.lines() {
        if let Some(at) = line.find(payload) {
            assert!(!line[..at].trim().is_empty(), "{line:?}");
        }
    }
}

#[test]
fn a_cluster_at_the_target_has_nothing_to_do_and_nothing_blocks_it() {
    // The seed runs v1.32.4 everywhere, with budgets and pods that would block drains.
    let (inv, policy) = seed();
    let r = planner::plan(PlanInput {
        inventory: &inv,
        policy: &policy,
        target: Some(v("v1.32.4")),
        start: t("2026-11-24T08:00:00Z"),
    })
    .expect("plan");
    assert!(r.nothing_to_do());
    assert!(!r.blocked, "{:?}", r.findings);
    assert!(r.findings.is_empty(), "{:?}", r.findings);
    assert!(
        planner::render::table(&r).contains("Status: nothing to do"),
        "{}",
        planner::render::table(&r)
    );
    assert!(planner::render::runbook(&r).contains("Nothing to do"));
    // The same cluster to v1.35.3 still has its blockers.
    assert!(plan_to_1_35(&inv, &policy).blocked);
}

#[test]
fn the_plan_refuses_what_the_drain_refuses() {
    let (inv, policy) = seed();
    // The default lets emptyDir data go, as the drain does: a warning.
    let r = plan_to_1_35(&inv, &policy);
    let local: Vec<&planner::Finding> = r
        .findings
        .iter()
        .filter(|f| f.code == "pod-local-data")
        .collect();
    assert!(!local.is_empty() && local.iter().all(|f| f.severity == Severity::Warning));
    // A policy that keeps emptyDir data: the drain refuses those pods, so the plan blocks.
    let strict = PlanPolicy::from_yaml(
        &(std::fs::read_to_string(root().join("tests/fixtures/seed-policy.yaml")).expect("read")
            + "drain: {deleteEmptyDirData: false}\n"),
    )
    .expect("policy");
    let r = plan_to_1_35(&inv, &strict);
    let blocker = r
        .findings
        .iter()
        .find(|f| f.code == "pod-local-data")
        .expect("finding");
    assert_eq!(blocker.severity, Severity::Blocker, "{blocker:?}");
    assert!(
        blocker.fix.contains("deleteEmptyDirData"),
        "{}",
        blocker.fix
    );
    // A pod under two budgets: the API server never evicts it, so the plan blocks.
    let mut two = inv.clone();
    let web = two
        .pdbs
        .iter()
        .find(|p| p.namespace == "shop")
        .cloned()
        .expect("a shop budget");
    let mut second = web.clone();
    second.name = format!("{}-again", web.name);
    two.pdbs.push(second);
    let r = plan_to_1_35(&two, &policy);
    let f = r
        .findings
        .iter()
        .find(|f| f.code == "pod-several-budgets")
        .expect("several budgets found");
    assert_eq!(f.severity, Severity::Blocker);
    assert!(
        f.message.contains(&format!("shop/{}-again", web.name)),
        "{}",
        f.message
    );
    assert!(r.blocked);
}

/// Three control-plane nodes and four workers at `version`.
fn small_cluster(version: &str) -> Inventory {
    let mut inv = Inventory::default();
    for i in 1..=3 {
        inv.nodes.push(node(
            &format!("cp-{i}"),
            Role::ControlPlane,
            version,
            "gen-a",
            0,
            8000,
        ));
    }
    for i in 1..=4 {
        inv.nodes.push(node(
            &format!("w-{i}"),
            Role::Worker,
            version,
            "gen-a",
            i,
            8000,
        ));
    }
    inv
}

fn metrics(instance: &str, fixture: &str, up_hours: i64) -> upgraded_events::apis::ApiserverApis {
    let text = std::fs::read_to_string(root().join("tests/fixtures").join(fixture)).expect("read");
    planner::apis::parse_metrics(instance, &text, 1_764_065_600 + up_hours * 3600).expect("metrics")
}

/// The removed-API gate, hop by hop: a flowcontrol v1beta3 series on one of three
/// apiservers blocks 1.31 → 1.32 and names the instance and the series; the same cluster
/// going to 1.31 only, or with clean counters, is not blocked by it; a short window warns.
#[test]
fn a_removed_api_seen_on_one_apiserver_blocks_the_hop_that_removes_it() {
    let policy = PlanPolicy::default();
    let plan = |inv: &Inventory, to: &str| {
        planner::plan(PlanInput {
            inventory: inv,
            policy: &policy,
            target: Some(v(to)),
            start: t("2026-11-24T08:00:00Z"),
        })
        .expect("plan")
    };
    let mut inv = small_cluster("v1.31.6");
    inv.api_usage.apiservers = vec![
        metrics("cp-1", "apiserver-metrics-clean.txt", 72),
        metrics("cp-2", "apiserver-metrics-cp-2.txt", 72),
        metrics("cp-3", "apiserver-metrics-clean.txt", 5),
    ];
    let r = plan(&inv, "v1.32.4");
    let f: Vec<&planner::Finding> = r
        .findings
        .iter()
        .filter(|f| f.code == "removed-api-in-use")
        .collect();
    assert_eq!(f.len(), 1, "{:?}", r.findings);
    assert!(r.blocked);
    assert_eq!(f[0].subjects, ["apiserver/cp-2"]);
    assert!(
        f[0].message
            .contains("42 request(s) to flowcontrol.apiserver.k8s.io/v1beta3 flowschemas")
            && f[0].message.contains("1.31 → 1.32"),
        "{}",
        f[0].message
    );
    assert!(
        f[0].fix.contains("flowcontrol.apiserver.k8s.io/v1"),
        "{}",
        f[0].fix
    );
    let short: Vec<&Vec<String>> = r
        .findings
        .iter()
        .filter(|f| f.code == "apiserver-short-window")
        .map(|f| &f.subjects)
        .collect();
    assert_eq!(short, [&vec!["apiserver/cp-3".to_string()]]);
    // A hop that does not reach 1.32 is not blocked by it.
    let mut at_30 = small_cluster("v1.30.9");
    at_30.api_usage = inv.api_usage.clone();
    let r = plan(&at_30, "v1.31.6");
    assert!(
        !r.findings.iter().any(|f| f.code == "removed-api-in-use"),
        "{:?}",
        r.findings
    );
    // Clean counters everywhere: nothing.
    inv.api_usage.apiservers[1] = metrics("cp-2", "apiserver-metrics-clean.txt", 72);
    let r = plan(&inv, "v1.32.4");
    assert!(!r.findings.iter().any(|f| f.code == "removed-api-in-use"));
}

/// Objects last applied at a removed version are found while the snapshot is read, and
/// warn for the hop that removes their version.
#[test]
fn a_last_applied_removed_version_warns() {
    let mut list: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/seed-cluster.json")).expect("read"),
    )
    .expect("json");
    let items = list["items"].as_array_mut().expect("items");
    let pdb = items
        .iter_mut()
        .find(|i| i["kind"] == "PodDisruptionBudget")
        .expect("a budget in the seed");
    let applied = serde_json::json!({"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "x"}});
    pdb["metadata"]["annotations"] = serde_json::json!({
        upgraded_events::inventory::LAST_APPLIED: applied.to_string()
    });
    let inv = Inventory::from_kubectl_json(&list.to_string()).expect("inventory");
    assert_eq!(inv.api_usage.applied.len(), 1, "{:?}", inv.api_usage);
    assert_eq!(inv.api_usage.applied[0].api_version, "policy/v1beta1");
}

/// A generation of six: the oldest on another kernel (should match: a warning), one on
/// cgroup v1 (must match: blocks a 1.35 hop); the canary comes from the majority, not the
/// oldest node. With `drift: subgroup`, a node on another container runtime gets a canary
/// of its own instead of blocking.
#[test]
fn drift_within_a_generation_warns_blocks_and_keeps_the_canary_in_the_majority() {
    let mut inv = small_cluster("v1.34.4");
    inv.nodes.retain(|n| n.role == Role::ControlPlane);
    for i in 1..=6 {
        let mut n = node(
            &format!("r640-0{i}"),
            Role::Worker,
            "v1.34.4",
            "dell-r640",
            i,
            8000,
        );
        if i == 1 {
            n.kernel = "6.1.0-27-amd64".into();
        }
        if i == 4 {
            n.cgroup = Some(1);
        }
        inv.nodes.push(n);
    }
    let canaries = |r: &PlanReport| -> Vec<String> {
        r.phases
            .iter()
            .flat_map(|p| &p.batches)
            .filter(|b| b.label.starts_with("canary"))
            .map(|b| b.label.clone())
            .collect()
    };
    let codes = |r: &PlanReport, code: &str| -> Vec<String> {
        r.findings
            .iter()
            .filter(|f| f.code == code)
            .flat_map(|f| f.subjects.clone())
            .collect()
    };
    let r = plan_to_1_35(&inv, &PlanPolicy::default());
    assert_eq!(codes(&r, "drift-should-match"), ["node/r640-01"]);
    assert_eq!(codes(&r, "drift-must-match"), ["node/r640-04"]);
    assert!(r.blocked);
    assert_eq!(
        canaries(&r),
        ["canary dell-r640: r640-02"],
        "not the oldest, r640-01"
    );
    let warn = r
        .findings
        .iter()
        .find(|f| f.code == "drift-should-match")
        .expect("warning");
    assert!(
        warn.message
            .contains("kernel: 6.1.0-27-amd64 where 5 of 6 run 6.1"),
        "{}",
        warn.message
    );
    // Subgroups: a runtime outlier is upgraded after its own canary.
    let mut inv = inv.clone();
    for n in &mut inv.nodes {
        n.cgroup = Some(2);
        if n.name == "r640-05" {
            n.runtime = "containerd://2.0.5".into();
        }
    }
    let subgroup = PlanPolicy::from_yaml("drift: subgroup\n").expect("policy");
    let r = plan_to_1_35(&inv, &subgroup);
    assert!(codes(&r, "drift-must-match").is_empty());
    assert_eq!(codes(&r, "drift-subgroup"), ["node/r640-05"]);
    assert_eq!(
        canaries(&r),
        [
            "canary dell-r640: r640-02",
            "canary dell-r640 (container-runtime containerd://2.0.5): r640-05"
        ]
    );
    let r = plan_to_1_35(&inv, &PlanPolicy::default());
    assert_eq!(codes(&r, "drift-must-match"), ["node/r640-05"]);
    let bad = PlanPolicy::from_yaml("drift: loose\n").expect_err("refused");
    assert!(bad.to_string().contains("drift"), "{bad}");
}

/// A pod on an in-tree rbd volume blocks the hop to 1.31, which removed the plugin, and
/// not a plan that stays below it.
#[test]
fn an_in_tree_rbd_volume_blocks_the_hop_to_1_31() {
    let seed =
        std::fs::read_to_string(root().join("tests/fixtures/seed-cluster.json")).expect("read");
    let with_rbd = |at: &str| -> Inventory {
        let mut list: serde_json::Value =
            serde_json::from_str(&seed.replace("v1.32.4", at)).expect("json");
        let pod = list["items"]
            .as_array_mut()
            .expect("items")
            .iter_mut()
            .find(|i| i["kind"] == "Pod" && i["metadata"]["namespace"] == "shop")
            .expect("a shop pod");
        pod["spec"]["volumes"] = serde_json::json!([
            {"name": "data", "rbd": {"monitors": ["10.0.0.1:6789"], "image": "shop"}}
        ]);
        Inventory::from_kubectl_json(&list.to_string()).expect("inventory")
    };
    let plan = |inv: &Inventory, to: &str| {
        planner::plan(PlanInput {
            inventory: inv,
            policy: &PlanPolicy::default(),
            target: Some(v(to)),
            start: t("2026-11-24T08:00:00Z"),
        })
        .expect("plan")
    };
    let r = plan(&with_rbd("v1.30.9"), "v1.31.6");
    let hit: Vec<&planner::Finding> = r
        .findings
        .iter()
        .filter(|f| f.code == "in-tree-volume-removed")
        .collect();
    assert_eq!(hit.len(), 1, "{:?}", r.findings);
    assert!(r.blocked);
    assert!(
        hit[0].subjects[0].starts_with("pod/shop/")
            && hit[0].message.contains("rbd volume")
            && hit[0].message.contains("1.31 removed"),
        "{:?}",
        hit[0]
    );
    let r = plan(&with_rbd("v1.29.8"), "v1.30.9");
    assert!(
        !r.findings
            .iter()
            .any(|f| f.code == "in-tree-volume-removed")
    );
}
