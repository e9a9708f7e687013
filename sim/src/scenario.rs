//! Built-in clusters: the seed's 15 nodes in three hardware generations, a small lab cluster,
//! and generated large ones. Every scenario is a function of its name and a seed.

use upgraded_events::inventory::{IntOrPercent, LabelSelector, Labels, Toleration};
use upgraded_events::version::Version;

use crate::clock::{Clock, Millis};
use crate::model::{
    CONTROL_PLANE_LABEL, ControlPlane, GENERATION_LABEL, Kind, ModelError, PodTemplate, World,
    exists_toleration,
};

/// Annotation recording a node's cgroup version (the planner reads the same key).
pub const CGROUP_KEY: &str = upgraded_events::inventory::CGROUP_KEY;

const GI: u64 = 1 << 30;
const DAY: Millis = 86_400_000;

/// The names `sim serve --scenario` and the tests accept.
pub const NAMES: &[&str] = &[
    "seed",
    "kind",
    "lab",
    "lab-ha",
    "large-200",
    "large-1000",
    "large-5000",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    #[error(
        "unknown scenario {0:?}; known: seed, kind, lab, lab-ha, large-N (N nodes, 10 to 20000)"
    )]
    Unknown(String),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// A hardware generation: label value, CPU cores, memory GiB, and when such machines joined.
#[derive(Debug, Clone, Copy)]
struct Generation {
    name: &'static str,
    cores: u64,
    mem_gi: u64,
    /// Days before the clock's start.
    age_days: u64,
    /// GPUs in each worker (`nvidia.com/gpu`, registered by NVIDIA's device plugin).
    gpus: u64,
}

const GENERATIONS: [Generation; 3] = [
    Generation {
        name: "dell-r640",
        cores: 16,
        mem_gi: 64,
        age_days: 2000,
        gpus: 0,
    },
    Generation {
        name: "dell-r740",
        cores: 32,
        mem_gi: 128,
        age_days: 1400,
        gpus: 0,
    },
    Generation {
        name: "hp-dl380",
        cores: 48,
        mem_gi: 192,
        age_days: 800,
        gpus: 2,
    },
];

/// Builds the named scenario on a fresh world.
pub fn build(name: &str, clock: Clock, seed: u64) -> Result<World, ScenarioError> {
    let mut w = World::new(clock, seed);
    match name {
        "seed" => seed_cluster(&mut w, Version::new(1, 32, 4))?,
        "lab" => small(&mut w, 1, 3, Version::new(1, 33, 5))?,
        // Three control-plane nodes: the lab's etcd cluster of three members.
        "lab-ha" => small(&mut w, 3, 2, Version::new(1, 33, 5))?,
        "kind" => kind(&mut w, Version::new(1, 34, 0))?,
        _ => {
            let n = name
                .strip_prefix("large-")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| (10..=20_000).contains(n))
                .ok_or_else(|| ScenarioError::Unknown(name.to_string()))?;
            large(&mut w, n, Version::new(1, 32, 4))?;
        }
    }
    w.tick();
    // A kind cluster was made an hour ago; the others have run for a month.
    w.settle(if name == "kind" { DAY / 24 } else { 30 * DAY });
    Ok(w)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn template(app: &str, cpu_millis: u64, memory_bytes: u64) -> PodTemplate {
    PodTemplate {
        labels: labels(&[("app", app)]),
        cpu_millis,
        memory_bytes,
        image: format!("registry.example/{app}:1.0"),
        startup_ms: 5_000,
        termination_ms: 0,
        ..PodTemplate::default()
    }
}

fn control_plane(v: Version) -> ControlPlane {
    ControlPlane {
        apiserver: v,
        controller_manager: v,
        scheduler: v,
        // The etcd kubeadm installs with that release.
        etcd: if v.minor >= 34 { "3.6.4-0" } else { "3.5.16-0" }.into(),
    }
}

/// The operator guide's kind cluster (`kind create cluster --name upgrade-lab` with one
/// control-plane node and two workers): kind's node names, its CNI (kindnet) and its
/// local-path provisioner with the default `standard` StorageClass; nothing deployed yet. Its
/// nodes are containers on a laptop: 8 CPUs and 16 GiB each, no hardware generation label.
pub fn kind(w: &mut World, v: Version) -> Result<(), ScenarioError> {
    let names = [
        ("upgrade-lab-control-plane", true),
        ("upgrade-lab-worker", false),
        ("upgrade-lab-worker2", false),
    ];
    for (i, (name, cp)) in names.iter().enumerate() {
        let mut l = labels(&[
            ("kubernetes.io/hostname", name),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", "amd64"),
            ("beta.kubernetes.io/os", "linux"),
            ("beta.kubernetes.io/arch", "amd64"),
        ]);
        if *cp {
            l.insert(CONTROL_PLANE_LABEL.into(), String::new());
            l.insert(
                "node.kubernetes.io/exclude-from-external-load-balancers".into(),
                String::new(),
            );
        }
        let created = w.now().saturating_sub(DAY / 24);
        w.add_node(
            name,
            l,
            labels(&[(CGROUP_KEY, "v2")]),
            8000,
            16 * GI,
            v,
            cp.then(|| control_plane(v)),
            created,
        )?;
        if let Some(n) = w.nodes.get_mut(*name) {
            n.address = format!("172.18.0.{}", i + 2);
            n.os_image = "Debian GNU/Linux 12 (bookworm)".into();
            n.kernel = "6.8.0-49-generic".into();
            n.runtime = "containerd://2.1.3".into();
        }
    }
    system_workloads(w, v)?;
    let mut cni = template("kindnet", 100, 50 << 20);
    cni.labels = labels(&[("app", "kindnet"), ("k8s-app", "kindnet"), ("tier", "node")]);
    cni.image = "docker.io/kindest/kindnetd:v20250512-df8de77b".into();
    cni.tolerations = vec![exists_toleration()];
    w.add_workload(Kind::DaemonSet, "kube-system", "kindnet", 0, cni)?;
    let mut provisioner = template("local-path-provisioner", 0, 0);
    provisioner.image = "docker.io/kindest/local-path-provisioner:v20250214-acbabc1a".into();
    provisioner.tolerations = vec![Toleration {
        key: CONTROL_PLANE_LABEL.into(),
        operator: "Exists".into(),
        value: String::new(),
        effect: "NoSchedule".into(),
    }];
    provisioner.node_selector = labels(&[("kubernetes.io/os", "linux")]);
    w.add_workload(
        Kind::Deployment,
        "local-path-storage",
        "local-path-provisioner",
        1,
        provisioner,
    )?;
    Ok(())
}

/// Adds a node of a generation; `cgroup` is `v1` or `v2`.
pub fn add_machine(
    w: &mut World,
    name: &str,
    generation: &str,
    cp: Option<Version>,
    kubelet: Version,
    cgroup: &str,
    age_days: u64,
) -> Result<(), ModelError> {
    let g = GENERATIONS
        .iter()
        .find(|g| g.name == generation)
        .copied()
        .unwrap_or(GENERATIONS[1]);
    let mut l = labels(&[
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        (GENERATION_LABEL, generation),
    ]);
    if cp.is_some() {
        l.insert(CONTROL_PLANE_LABEL.into(), String::new());
    }
    let created = w.now().saturating_sub(age_days * DAY);
    w.add_node(
        name,
        l,
        labels(&[(CGROUP_KEY, cgroup)]),
        g.cores * 1000,
        g.mem_gi * GI,
        kubelet,
        cp.map(control_plane),
        created,
    )?;
    if cp.is_none()
        && g.gpus > 0
        && let Some(n) = w.nodes.get_mut(name)
    {
        n.extended.insert(GPU.into(), g.gpus);
    }
    Ok(())
}

/// The extended resource the newest generation's GPUs are advertised as.
pub const GPU: &str = "nvidia.com/gpu";

/// kube-proxy on every node and CoreDNS on the control plane, as kubeadm installs them.
/// What kubeadm keeps in kube-system: kube-proxy's configuration (`mode`: empty is
/// iptables) and the stored ClusterConfiguration (v1beta4 since kubeadm 1.31).
pub fn kubeadm_config_maps(w: &mut World, v: Version, proxy_mode: &str) {
    let cm = |name: &str, key: &str, doc: String| k8s_openapi::api::core::v1::ConfigMap {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("kube-system".into()),
            ..Default::default()
        },
        data: Some([(key.to_string(), doc)].into()),
        ..Default::default()
    };
    w.add_config_map(cm(
        "kube-proxy",
        "config.conf",
        format!(
            "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: \"{proxy_mode}\"\n"
        ),
    ));
    w.add_config_map(cm(
        "kubeadm-config",
        "ClusterConfiguration",
        format!(
            "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\nkubernetesVersion: {v}\n"
        ),
    ));
}

fn system_workloads(w: &mut World, v: Version) -> Result<(), ModelError> {
    let mut proxy = template("kube-proxy", 0, 0);
    proxy.labels = labels(&[("k8s-app", "kube-proxy")]);
    proxy.image = format!("registry.k8s.io/kube-proxy:{v}");
    proxy.tolerations = vec![exists_toleration()];
    proxy.startup_ms = 1_000;
    w.add_workload(Kind::DaemonSet, "kube-system", "kube-proxy", 0, proxy)?;
    let mut dns = template("coredns", 100, 70 << 20);
    dns.labels = labels(&[("k8s-app", "kube-dns")]);
    // The CoreDNS kubeadm installs with that release.
    dns.image = format!(
        "registry.k8s.io/coredns/coredns:{}",
        upgraded_events::check::run::coredns_for(v).unwrap_or("v1.11.3")
    );
    dns.tolerations = vec![Toleration {
        key: CONTROL_PLANE_LABEL.into(),
        operator: "Exists".into(),
        value: String::new(),
        effect: "NoSchedule".into(),
    }];
    w.add_workload(Kind::Deployment, "kube-system", "coredns", 2, dns)?;
    kubeadm_config_maps(w, v, "");
    w.add_system_service(
        "kube-system",
        "kube-dns",
        "10.96.0.10",
        &[("k8s-app", "kube-dns"), ("kubernetes.io/name", "CoreDNS")],
        Some(&[("k8s-app", "kube-dns")]),
        &[
            ("dns", "UDP", 53),
            ("dns-tcp", "TCP", 53),
            ("metrics", "TCP", 9153),
        ],
    );
    // The local-path provisioner kind ships, as bare-metal clusters often run it.
    w.add_storage_class("standard", "rancher.io/local-path", true, true);
    Ok(())
}

/// The budget operators add for CoreDNS (kubeadm and kind install none).
fn dns_budget(w: &mut World) -> Result<(), ModelError> {
    w.add_pdb(
        "kube-system",
        "coredns",
        LabelSelector {
            match_labels: labels(&[("k8s-app", "kube-dns")]),
            match_expressions: vec![],
        },
        None,
        Some(IntOrPercent::Int(1)),
    )
}

fn select_app(app: &str) -> LabelSelector {
    LabelSelector {
        match_labels: labels(&[("app", app)]),
        match_expressions: vec![],
    }
}

/// What the planner's usual blockers ask of an operator, on any cluster (the seed's two:
/// `default/debug-shell` and r640-03's cgroup v1): every pod without
/// a controller deleted (a drain without `--force` refuses it), every cgroup v1 machine
/// rebooted into cgroup v2. Returns what was done, a line each.
pub fn fix_blockers(w: &mut World) -> Result<Vec<String>, ModelError> {
    let mut done = Vec::new();
    let bare: Vec<(String, String)> = w
        .pods
        .values()
        .filter(|p| p.owner.is_none() && !p.is_mirror() && p.deleting_at.is_none())
        .map(|p| p.key())
        .collect();
    for (ns, name) in bare {
        w.delete_pod(&ns, &name, Some(0))?;
        done.push(format!(
            "deleted the unmanaged pod {ns}/{name} (nothing would recreate it)"
        ));
    }
    let v1: Vec<String> = w
        .nodes
        .values()
        .filter(|n| n.annotations.get(CGROUP_KEY).map(String::as_str) == Some("v1"))
        .map(|n| n.name.clone())
        .collect();
    for name in v1 {
        let n = &w.nodes[&name];
        let (labels, mut annotations, taints) =
            (n.labels.clone(), n.annotations.clone(), n.taints.clone());
        annotations.insert(CGROUP_KEY.into(), "v2".into());
        w.set_node_meta(&name, labels, annotations, taints)?;
        done.push(format!(
            "rebooted {name} with cgroup v2 (kubelet 1.35 refuses cgroup v1)"
        ));
    }
    w.tick();
    Ok(done)
}

/// Every machine of hardware `generation` cannot run a kubelet from `from` on (an old
/// kernel): restarted into such a kubelet it never becomes Ready. Returns the machines.
pub fn kubelet_fails_in_generation(w: &mut World, generation: &str, from: Version) -> Vec<String> {
    let machines = machines_of_generation(w, generation);
    for m in &machines {
        w.faults.kubelet_fails_from.insert(m.clone(), from);
    }
    machines
}

/// The nodes labelled as machines of `generation`.
pub fn machines_of_generation(w: &World, generation: &str) -> Vec<String> {
    w.nodes
        .values()
        .filter(|n| n.labels.get(GENERATION_LABEL).map(String::as_str) == Some(generation))
        .map(|n| n.name.clone())
        .collect()
}

/// A Deployment of `replicas` pods (500m, 512Mi) whose budget's `minAvailable` equals its
/// replicas: no eviction is ever allowed while it is healthy, only a scale-up makes room.
/// Its pods are scheduled and Ready when this returns.
pub fn strict_budget(
    w: &mut World,
    namespace: &str,
    name: &str,
    replicas: u32,
) -> Result<(), ScenarioError> {
    w.add_workload(
        Kind::Deployment,
        namespace,
        name,
        replicas,
        template(name, 500, GI / 2),
    )?;
    w.add_pdb(
        namespace,
        name,
        select_app(name),
        Some(IntOrPercent::Int(replicas)),
        None,
    )?;
    w.tick();
    w.settle(DAY);
    Ok(())
}

/// The seed's cluster: 3 control-plane nodes (dell-r740) and 12 workers — 5 dell-r640 (one
/// still on cgroup v1), 4 dell-r740, 3 hp-dl380 — with about 80% of worker CPU requested, a
/// redis Deployment under a PDB (minAvailable 2), web and api behind maxUnavailable PDBs,
/// batch workers using emptyDir, and one pod with no controller.
pub fn seed_cluster(w: &mut World, v: Version) -> Result<(), ScenarioError> {
    for i in 1..=3 {
        add_machine(
            w,
            &format!("cp-{i}"),
            "dell-r740",
            Some(v),
            v,
            "v2",
            1500 - i,
        )?;
    }
    for i in 1..=5u64 {
        let cg = if i == 3 { "v1" } else { "v2" };
        add_machine(
            w,
            &format!("r640-{i:02}"),
            "dell-r640",
            None,
            v,
            cg,
            2000 - i,
        )?;
    }
    for i in 1..=4u64 {
        add_machine(
            w,
            &format!("r740-{i:02}"),
            "dell-r740",
            None,
            v,
            "v2",
            1400 - i,
        )?;
    }
    for i in 1..=3u64 {
        add_machine(
            w,
            &format!("dl380-{i:02}"),
            "hp-dl380",
            None,
            v,
            "v2",
            800 - i,
        )?;
    }
    system_workloads(w, v)?;
    dns_budget(w)?;
    // Workers: 5×16 + 4×32 + 3×48 = 352 cores; these request 281.5 (80%).
    w.add_workload(
        Kind::Deployment,
        "shop",
        "web",
        100,
        template("web", 2000, 4 * GI),
    )?;
    w.add_pdb(
        "shop",
        "web",
        select_app("web"),
        None,
        Some(IntOrPercent::Percent(10)),
    )?;
    w.add_workload(
        Kind::Deployment,
        "shop",
        "api",
        60,
        template("api", 1000, 2 * GI),
    )?;
    w.add_pdb(
        "shop",
        "api",
        select_app("api"),
        None,
        Some(IntOrPercent::Int(2)),
    )?;
    w.add_workload(
        Kind::Deployment,
        "prod",
        "redis",
        3,
        template("redis", 1000, 4 * GI),
    )?;
    w.add_pdb(
        "prod",
        "redis",
        select_app("redis"),
        Some(IntOrPercent::Int(2)),
        None,
    )?;
    let mut batch = template("batch", 1500, GI);
    batch.empty_dir = true;
    w.add_workload(Kind::Deployment, "batch", "worker", 12, batch)?;
    w.add_bare_pod(
        "default",
        "debug-shell",
        template("debug-shell", 100, 64 << 20),
    );
    Ok(())
}

/// `control_planes` control-plane nodes (`cp-N`) and `workers` workers (`w-N`), all at `v`, with
/// a small Deployment under a PDB: the lab's cluster.
pub fn small(
    w: &mut World,
    control_planes: usize,
    workers: usize,
    v: Version,
) -> Result<(), ScenarioError> {
    for i in 1..=control_planes {
        add_machine(w, &format!("cp-{i}"), "dell-r740", Some(v), v, "v2", 900)?;
    }
    for i in 1..=workers {
        let g = GENERATIONS[(i - 1) % GENERATIONS.len()];
        add_machine(w, &format!("w-{i}"), g.name, None, v, "v2", g.age_days)?;
    }
    system_workloads(w, v)?;
    dns_budget(w)?;
    let replicas = (workers as u32).max(1) * 2;
    w.add_workload(
        Kind::Deployment,
        "default",
        "app",
        replicas,
        template("app", 500, GI),
    )?;
    w.add_pdb(
        "default",
        "app",
        select_app("app"),
        None,
        Some(IntOrPercent::Int(1)),
    )?;
    Ok(())
}

/// A cluster for property tests: one control-plane node, workers per generation (oldest
/// generation first), and applications.
#[derive(Debug, Clone)]
pub struct RandomCluster {
    /// Workers in each of the first generations (at most three).
    pub workers: Vec<usize>,
    pub apps: Vec<RandomApp>,
}

/// A Deployment in `apps`, and its budget.
#[derive(Debug, Clone)]
pub struct RandomApp {
    pub replicas: u32,
    pub cpu_millis: u64,
    /// `None`, or `maxUnavailable: n`.
    pub max_unavailable: Option<u32>,
}

/// Builds `c` at `v`.
pub fn random(w: &mut World, c: &RandomCluster, v: Version) -> Result<(), ScenarioError> {
    add_machine(w, "cp-1", "dell-r740", Some(v), v, "v2", 900)?;
    for (g, n) in c.workers.iter().take(GENERATIONS.len()).enumerate() {
        let gen_ = GENERATIONS[g];
        for i in 1..=*n {
            add_machine(
                w,
                &format!("w-{}-{i}", g + 1),
                gen_.name,
                None,
                v,
                "v2",
                gen_.age_days,
            )?;
        }
    }
    system_workloads(w, v)?;
    dns_budget(w)?;
    for (i, a) in c.apps.iter().enumerate() {
        let name = format!("app-{i}");
        w.add_workload(
            Kind::Deployment,
            "apps",
            &name,
            a.replicas,
            template(&name, a.cpu_millis, GI / 4),
        )?;
        if let Some(m) = a.max_unavailable {
            w.add_pdb(
                "apps",
                &name,
                select_app(&name),
                None,
                Some(IntOrPercent::Int(m)),
            )?;
        }
    }
    Ok(())
}

/// `n` nodes: 3 control-plane nodes and `n - 3` workers, 40/35/25% per generation (oldest
/// first), one Deployment with a PDB per ten workers, ~80% of worker CPU requested.
pub fn large(w: &mut World, n: usize, v: Version) -> Result<(), ScenarioError> {
    let cps = 3.min(n);
    for i in 1..=cps {
        add_machine(w, &format!("cp-{i}"), "dell-r740", Some(v), v, "v2", 1500)?;
    }
    let workers = n - cps;
    let mut cores = 0;
    for i in 0..workers {
        let g = match i * 100 / workers.max(1) {
            0..40 => GENERATIONS[0],
            40..75 => GENERATIONS[1],
            _ => GENERATIONS[2],
        };
        cores += g.cores;
        add_machine(
            w,
            &format!("{}-{:05}", g.name, i + 1),
            g.name,
            None,
            v,
            "v2",
            g.age_days - (i as u64 % 300),
        )?;
    }
    system_workloads(w, v)?;
    dns_budget(w)?;
    let apps = (workers / 10).max(1);
    // Each app requests an equal share of 80% of worker CPU, in pods of 2 cores.
    let per_app_millis = cores * 1000 * 8 / 10 / apps as u64;
    for a in 0..apps {
        let name = format!("app-{a:04}");
        let replicas = (per_app_millis / 2000).max(1) as u32;
        w.add_workload(
            Kind::Deployment,
            "apps",
            &name,
            replicas,
            template(&name, 2000, 2 * GI),
        )?;
        let budget = if a % 2 == 0 {
            IntOrPercent::Percent(10)
        } else {
            IntOrPercent::Int(1)
        };
        w.add_pdb("apps", &name, select_app(&name), None, Some(budget))?;
    }
    Ok(())
}
