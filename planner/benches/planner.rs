//! Plans a 5,000-node / 150,000-pod cluster (three generations, 60% utilised, PDBs on a
//! tenth of the workloads) and reports time; the peak memory of the whole bench process is
//! printed from /proc/self/status (VmHWM) at the end.

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use upgraded_events::inventory::{
    ControlPlane, IntOrPercent, Inventory, LabelSelector, NodeInv, Owner, PdbInv, PodInv, Resources,
};
use upgraded_events::{Role, Timestamp, Version};
use upgraded_planner::policy::{MaxUnavailable, PlanPolicy};
use upgraded_planner::{self as planner, PlanInput};

fn big() -> Inventory {
    let v = Version::new(1, 32, 4);
    let mut inv = Inventory::default();
    for i in 0..5_000usize {
        let role = if i < 3 {
            Role::ControlPlane
        } else {
            Role::Worker
        };
        let generation = ["dell-r640", "dell-r740", "hp-dl380"][i % 3];
        let name = format!("node-{i:05}");
        inv.nodes.push(NodeInv {
            name: name.clone(),
            role,
            labels: [(
                "node.kubernetes.io/instance-type".to_string(),
                generation.to_string(),
            )]
            .into(),
            created: Some(Timestamp(
                1_500_000_000_000 + (i % 3) as i64 * 86_400_000_000 + i as i64,
            )),
            kubelet: v,
            kube_proxy: None,
            kernel: "6.1".into(),
            os_image: "Debian 12".into(),
            runtime: "containerd://1.7.24".into(),
            arch: "amd64".into(),
            cgroup: Some(2),
            allocatable: Resources {
                cpu_millis: 32_000,
                memory_bytes: 128 << 30,
            },
            extended: Default::default(),
            taints: Vec::new(),
            unschedulable: false,
            ready: true,
            control_plane: (role == Role::ControlPlane).then(|| ControlPlane {
                apiserver: v,
                controller_manager: v,
                scheduler: v,
                etcd: Some("3.5.16-0".into()),
                observed: true,
            }),
        });
        for k in 0..30usize {
            let app = format!("app-{}", (i * 30 + k) % 5_000);
            inv.pods.push(PodInv {
                namespace: format!("ns-{}", (i * 30 + k) % 50),
                name: format!("{app}-{i}-{k}"),
                node: Some(name.clone()),
                labels: [("app".to_string(), app.clone())].into(),
                owner: Some(Owner {
                    kind: "Deployment".into(),
                    name: app,
                }),
                requests: Resources {
                    cpu_millis: 640,
                    memory_bytes: 2 << 30,
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
            });
        }
    }
    for a in (0..5_000).step_by(10) {
        inv.pdbs.push(PdbInv {
            namespace: format!("ns-{}", a % 50),
            name: format!("pdb-{a}"),
            selector: LabelSelector {
                match_labels: [("app".to_string(), format!("app-{a}"))].into(),
                match_expressions: Vec::new(),
            },
            min_available: None,
            max_unavailable: Some(IntOrPercent::Int(2)),
            disruptions_allowed: 2,
            current_healthy: 30,
            desired_healthy: 28,
            expected_pods: 30,
        });
    }
    inv
}

fn bench(c: &mut Criterion) {
    let inv = big();
    let mut policy = PlanPolicy::default();
    policy.default_generation.max_unavailable = MaxUnavailable::Percent(5);
    let input = PlanInput {
        inventory: &inv,
        policy: &policy,
        target: Some(Version::new(1, 35, 3)),
        start: Timestamp(1_795_000_000_000),
    };
    let r = planner::plan(input).expect("plan");
    eprintln!(
        "5,000 nodes / 150,000 pods: {} batches, {} findings, blocked: {}",
        r.phases.iter().map(|p| p.batches.len()).sum::<usize>(),
        r.findings.len(),
        r.blocked
    );
    let mut g = c.benchmark_group("planner");
    g.sample_size(10);
    g.bench_function("plan 5000 nodes 150000 pods", |b| {
        b.iter(|| planner::plan(input).expect("plan"))
    });
    g.finish();
    if let Ok(s) = std::fs::read_to_string("/proc/self/status") {
        for l in s
            .lines()
            .filter(|l| l.starts_with("VmHWM") || l.starts_with("VmRSS"))
        {
            eprintln!("bench process {l}");
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
