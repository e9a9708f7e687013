//! A file-backed fake world: a few nodes whose every effect is appended to `effects.jsonl`.
//!
//! It stands in for the cluster and the nodes until the simulated cluster exists, and it
//! outlives the daemon: a restarted (or `kill -9`ed) daemon finds the world as it was left,
//! and tests count the effects to prove that nothing that must happen once happened twice.
//! Each effect is one `write` of one line on an `O_APPEND` file, so a killed process leaves
//! either the whole line or nothing.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use upgraded_events::Host;
use upgraded_events::check::ProbeEnd;
use upgraded_events::inventory::{
    ControlPlane, Inventory, NodeInv, Owner, PdbInv, PodInv, Resources,
};
use upgraded_events::state::PodHealth;
use upgraded_events::{Facts, Role, Version};
use upgraded_planner::permissions::Permission;

use crate::ports::{
    BoxFut, ClusterApi, CommandOutput, Eviction, NodeExecutor, NodeStatus, Observed, PortError,
    ProbePod, RemoteCommand, ScaleChange, Workload,
};

/// `inventory.json`: the world before any effect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorldSpec {
    pub nodes: Vec<FakeNodeSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FakeNodeSpec {
    pub name: String,
    pub role: Role,
    pub version: Version,
    #[serde(default)]
    pub unschedulable: bool,
    #[serde(default)]
    pub pods: u32,
}

/// One line of `effects.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    pub node: String,
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    pub pid: u32,
}

#[derive(Debug, Clone)]
struct NodeNow {
    spec: FakeNodeSpec,
    installed: Version,
    running: Version,
    unschedulable: bool,
    /// Control-plane nodes: the version kubeadm last upgraded its static pods to.
    control_plane: Option<Version>,
    /// The node's pods were evicted (they come back when it is uncordoned).
    drained: bool,
}

#[derive(Debug)]
pub struct FakeWorld {
    dir: PathBuf,
    nodes: Mutex<BTreeMap<String, NodeNow>>,
    effects: Mutex<File>,
    delay: Duration,
    /// Probe pods created by this process, by `namespace/name`: the fake world's network and
    /// DNS always work, so each ends at once with the probe's "all answered".
    /// Probe pods by `namespace/name`, with their labels.
    probes: Mutex<BTreeMap<String, Value>>,
}

#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    #[error("fake world {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("fake world {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl WorldSpec {
    /// `control` control-plane nodes and `workers` workers at `version`.
    pub fn generate(control: usize, workers: usize, version: Version) -> WorldSpec {
        let node = |name: String, role| FakeNodeSpec {
            name,
            role,
            version,
            unschedulable: false,
            pods: 12,
        };
        let mut nodes: Vec<_> = (1..=control)
            .map(|i| node(format!("cp-{i}"), Role::ControlPlane))
            .collect();
        nodes.extend((1..=workers).map(|i| node(format!("worker-{i:02}"), Role::Worker)));
        WorldSpec { nodes }
    }
}

impl FakeWorld {
    /// Opens the world in `dir`, writing `inventory` first if the directory has none, and
    /// replaying the effects recorded so far.
    pub fn open(
        dir: &Path,
        inventory: Option<&WorldSpec>,
        delay: Duration,
    ) -> Result<FakeWorld, FakeError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| FakeError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let inv_path = dir.join("inventory.json");
        if !inv_path.exists() {
            let inv = inventory
                .cloned()
                .unwrap_or_else(|| WorldSpec::generate(1, 5, Version::new(1, 32, 4)));
            let text = serde_json::to_vec_pretty(&inv).map_err(|source| FakeError::Json {
                path: inv_path.clone(),
                source,
            })?;
            std::fs::write(&inv_path, text).map_err(io(&inv_path))?;
        }
        let text = std::fs::read(&inv_path).map_err(io(&inv_path))?;
        let inv: WorldSpec = serde_json::from_slice(&text).map_err(|source| FakeError::Json {
            path: inv_path.clone(),
            source,
        })?;
        let mut nodes: BTreeMap<String, NodeNow> = inv
            .nodes
            .into_iter()
            .map(|spec| {
                let now = NodeNow {
                    installed: spec.version,
                    running: spec.version,
                    unschedulable: spec.unschedulable,
                    control_plane: (spec.role == Role::ControlPlane).then_some(spec.version),
                    drained: false,
                    spec,
                };
                (now.spec.name.clone(), now)
            })
            .collect();
        let eff_path = dir.join("effects.jsonl");
        for e in read_effects(&eff_path)? {
            if let Some(n) = nodes.get_mut(&e.node) {
                apply(n, &e);
            }
        }
        let effects = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&eff_path)
            .map_err(io(&eff_path))?;
        Ok(FakeWorld {
            dir: dir.to_path_buf(),
            nodes: Mutex::new(nodes),
            effects: Mutex::new(effects),
            delay,
            probes: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, NodeNow>> {
        // A panic while holding the lock cannot leave the map half-updated (apply is total).
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn effect(
        &self,
        node: &str,
        op: &str,
        version: Option<Version>,
    ) -> Result<(), PortError> {
        tokio::time::sleep(self.delay).await;
        let e = Effect {
            node: node.to_string(),
            op: op.to_string(),
            version,
            pid: std::process::id(),
        };
        let mut nodes = self.lock();
        let n = nodes
            .get_mut(node)
            .ok_or_else(|| PortError::fatal(format!("node {node:?} does not exist")))?;
        let mut line = serde_json::to_vec(&e).map_err(|err| PortError::fatal(err.to_string()))?;
        line.push(b'\n');
        {
            let mut f = self.effects.lock().unwrap_or_else(|p| p.into_inner());
            f.write_all(&line)
                .map_err(|err| PortError::retryable(format!("effects log: {err}")))?;
        }
        apply(n, &e);
        Ok(())
    }

    fn status(&self, node: &str) -> Result<NodeNow, PortError> {
        self.lock()
            .get(node)
            .cloned()
            .ok_or_else(|| PortError::fatal(format!("node {node:?} does not exist")))
    }
}

fn apply(n: &mut NodeNow, e: &Effect) {
    match (e.op.as_str(), e.version) {
        ("cordon", _) => n.unschedulable = true,
        ("uncordon", _) => {
            n.unschedulable = false;
            n.drained = false;
        }
        ("drain", _) => n.drained = true,
        ("install", Some(v)) => n.installed = v,
        ("restart-kubelet", _) => n.running = n.installed,
        ("kubeadm-upgrade-apply" | "kubeadm-upgrade-node", Some(v))
            if n.control_plane.is_some() =>
        {
            n.control_plane = Some(v);
        }
        _ => {}
    }
}

fn fake_control_plane(v: Version) -> ControlPlane {
    ControlPlane {
        apiserver: v,
        controller_manager: v,
        scheduler: v,
        etcd: Some("3.5.21-0".into()),
        observed: true,
    }
}

/// A node's stand-in pods: `pods` replicas of one Deployment, until it is drained.
fn fake_pods(n: &NodeNow) -> Vec<PodInv> {
    if n.drained {
        return Vec::new();
    }
    (0..n.spec.pods)
        .map(|i| PodInv {
            namespace: "default".into(),
            name: format!("{}-app-{i}", n.spec.name),
            node: Some(n.spec.name.clone()),
            labels: Default::default(),
            owner: Some(Owner {
                kind: "ReplicaSet".into(),
                name: "app".into(),
            }),
            requests: Resources::ZERO,
            node_selector: Default::default(),
            tolerations: Vec::new(),
            empty_dir: false,
            local_storage: false,
            mirror: false,
            phase: "Running".into(),
            ready: true,
            crash_looping: false,
            uid: format!("{}-{i}", n.spec.name),
        })
        .collect()
}

/// Reads `effects.jsonl`; a torn last line (a kill mid-write) is ignored.
pub fn read_effects(path: &Path) -> Result<Vec<Effect>, FakeError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(FakeError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

impl ClusterApi for FakeWorld {
    /// The fake world has no authorization: it lets anyone do anything.
    fn set_kube_proxy<'a>(&'a self, _version: Version) -> BoxFut<'a, Result<Facts, PortError>> {
        // The fake world runs no DaemonSets.
        Box::pin(async { Ok([("kube_proxy".to_string(), "absent".to_string())].into()) })
    }

    /// The fake world runs no Helm releases.
    fn helm_releases(&self) -> BoxFut<'_, Result<Value, PortError>> {
        Box::pin(async { Ok(serde_json::json!({"kind": "List", "items": []})) })
    }

    /// The fake world's kubelets serve no config.
    fn kubelet_config<'a>(&'a self, node: &'a Host) -> BoxFut<'a, Result<Value, PortError>> {
        let node = node.as_str().to_string();
        Box::pin(async move {
            Err(PortError::fatal(format!(
                "node {node}: the fake world's kubelet serves no /configz"
            )))
        })
    }

    /// The fake world's nodes carry no annotations.
    fn node_annotation<'a>(
        &'a self,
        _node: &'a Host,
        _key: &'a str,
    ) -> BoxFut<'a, Result<Option<String>, PortError>> {
        Box::pin(async { Ok(None) })
    }

    fn annotate_node<'a>(
        &'a self,
        node: &'a Host,
        _key: &'a str,
        _value: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>> {
        let node = node.as_str().to_string();
        Box::pin(async move {
            Err(PortError::fatal(format!(
                "node {node}: the fake world keeps no annotations"
            )))
        })
    }

    fn ensure_namespace<'a>(&'a self, _name: &'a str) -> BoxFut<'a, Result<(), PortError>> {
        Box::pin(async { Ok(()) })
    }

    fn create_probe<'a>(&'a self, manifest: &'a Value) -> BoxFut<'a, Result<(), PortError>> {
        Box::pin(async move {
            let key = format!(
                "{}/{}",
                manifest["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default(),
                manifest["metadata"]["name"].as_str().unwrap_or_default()
            );
            self.probes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, manifest["metadata"]["labels"].clone());
            Ok(())
        })
    }

    fn probe<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<ProbePod>, PortError>> {
        Box::pin(async move {
            let known = self
                .probes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(&format!("{namespace}/{name}"));
            Ok(known.then(|| ProbePod {
                ip: Some("10.0.0.2".into()),
                running: true,
                end: Some(ProbeEnd {
                    exit_code: Some(0),
                    message: Some(r#"{"ok":true,"detail":"the fake world answers"}"#.into()),
                    disruption: None,
                }),
            }))
        })
    }

    /// The fake world has no kube-proxy: a Service without an address (the DNS probe then
    /// only resolves names).
    fn create_service<'a>(
        &'a self,
        _manifest: &'a Value,
    ) -> BoxFut<'a, Result<Option<String>, PortError>> {
        Box::pin(async { Ok(None) })
    }

    fn delete_service<'a>(
        &'a self,
        _namespace: &'a str,
        _name: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>> {
        Box::pin(async { Ok(()) })
    }

    fn create_claim<'a>(&'a self, _manifest: &'a Value) -> BoxFut<'a, Result<(), PortError>> {
        Box::pin(async { Ok(()) })
    }

    fn delete_claim<'a>(
        &'a self,
        _namespace: &'a str,
        _name: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>> {
        Box::pin(async { Ok(()) })
    }

    /// A check's Job is a probe too: it completes at once.
    fn create_job<'a>(&'a self, manifest: &'a Value) -> BoxFut<'a, Result<(), PortError>> {
        self.create_probe(manifest)
    }

    fn job<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<crate::ports::JobSeen>, PortError>> {
        Box::pin(async move {
            Ok(self
                .probe(namespace, name)
                .await?
                .map(|p| crate::ports::JobSeen {
                    complete: true,
                    pod: p.end,
                    node: Some("fake".into()),
                    ..crate::ports::JobSeen::default()
                }))
        })
    }

    fn delete_job<'a>(
        &'a self,
        _namespace: &'a str,
        _name: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>> {
        Box::pin(async { Ok(()) })
    }

    fn addon_images(&self) -> BoxFut<'_, Result<crate::ports::AddonImages, PortError>> {
        Box::pin(async { Ok(crate::ports::AddonImages::default()) })
    }

    fn delete_probe<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>> {
        Box::pin(async move {
            self.probes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&format!("{namespace}/{name}"));
            Ok(())
        })
    }

    fn delete_probes<'a>(
        &'a self,
        namespace: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> BoxFut<'a, Result<usize, PortError>> {
        Box::pin(async move {
            let mut probes = self.probes.lock().unwrap_or_else(|e| e.into_inner());
            let before = probes.len();
            probes.retain(|key, l| {
                !(key.starts_with(&format!("{namespace}/"))
                    && labels.iter().all(|(k, v)| l[*k] == *v))
            });
            Ok(before - probes.len())
        })
    }

    fn can_i<'a>(&'a self, perms: &'a [Permission]) -> BoxFut<'a, Result<Vec<bool>, PortError>> {
        Box::pin(async move { Ok(vec![true; perms.len()]) })
    }

    fn observe(&self) -> BoxFut<'_, Result<Observed, PortError>> {
        Box::pin(async move {
            let nodes = self.lock();
            let inventory = Inventory {
                nodes: nodes
                    .values()
                    .map(|n| {
                        let mut labels: upgraded_events::inventory::Labels = [(
                            "node.kubernetes.io/instance-type".to_string(),
                            "fake".to_string(),
                        )]
                        .into();
                        if n.spec.role == Role::ControlPlane {
                            labels.insert(
                                "node-role.kubernetes.io/control-plane".into(),
                                String::new(),
                            );
                        }
                        NodeInv {
                            name: n.spec.name.clone(),
                            role: n.spec.role,
                            labels,
                            created: None,
                            kubelet: n.running,
                            kube_proxy: None,
                            kernel: "6.1.0".into(),
                            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
                            runtime: "containerd://1.7.24".into(),
                            arch: "amd64".into(),
                            cgroup: Some(2),
                            allocatable: Resources {
                                cpu_millis: 64_000,
                                memory_bytes: 256 << 30,
                            },
                            extended: Default::default(),
                            taints: Vec::new(),
                            unschedulable: n.unschedulable,
                            ready: true,
                            control_plane: n.control_plane.map(fake_control_plane),
                        }
                    })
                    .collect(),
                ..Default::default()
            };
            let apiserver = nodes
                .values()
                .filter_map(|n| n.control_plane)
                .max()
                .unwrap_or(Version::new(1, 32, 4));
            Ok(Observed {
                apiserver,
                inventory,
            })
        })
    }

    fn node_status<'a>(&'a self, host: &'a Host) -> BoxFut<'a, Result<NodeStatus, PortError>> {
        let node = host.as_str();
        Box::pin(async move {
            let n = self.status(node)?;
            Ok(NodeStatus {
                ready: true,
                unschedulable: n.unschedulable,
                kubelet_version: n.running,
                control_plane: n.control_plane.map(fake_control_plane),
                control_plane_ready: true,
                extended: Default::default(),
            })
        })
    }

    fn cordon<'a>(&'a self, host: &'a Host) -> BoxFut<'a, Result<(), PortError>> {
        let node = host.as_str();
        Box::pin(self.effect(node, "cordon", None))
    }

    fn uncordon<'a>(&'a self, host: &'a Host) -> BoxFut<'a, Result<(), PortError>> {
        let node = host.as_str();
        Box::pin(self.effect(node, "uncordon", None))
    }

    fn pods_on<'a>(&'a self, host: &'a Host) -> BoxFut<'a, Result<Vec<PodInv>, PortError>> {
        let node = host.as_str();
        Box::pin(async move { Ok(fake_pods(&self.status(node)?)) })
    }

    fn pod_health(&self) -> BoxFut<'_, Result<Vec<PodHealth>, PortError>> {
        Box::pin(async move {
            Ok(self
                .lock()
                .values()
                .flat_map(fake_pods)
                .map(|p| PodHealth::of(&p))
                .collect())
        })
    }

    /// The first eviction on a node drains all of its stand-in pods (one effect line).
    fn evict<'a>(
        &'a self,
        _namespace: &'a str,
        name: &'a str,
        _uid: &'a str,
    ) -> BoxFut<'a, Result<Eviction, PortError>> {
        Box::pin(async move {
            let node = name.rsplit_once("-app-").map(|(n, _)| n.to_string());
            let Some(node) = node.filter(|n| self.status(n).is_ok_and(|s| !s.drained)) else {
                return Ok(Eviction::Gone);
            };
            self.effect(&node, "drain", None).await?;
            Ok(Eviction::Evicted)
        })
    }

    fn pdb<'a>(
        &'a self,
        _namespace: &'a str,
        _name: &'a str,
    ) -> BoxFut<'a, Result<Option<PdbInv>, PortError>> {
        Box::pin(async move { Ok(None) })
    }

    /// Stand-in pods have no budgets, so no drain here ever needs a scale-up.
    fn workload_of<'a>(
        &'a self,
        _namespace: &'a str,
        _owner: &'a Owner,
    ) -> BoxFut<'a, Result<Option<Workload>, PortError>> {
        Box::pin(async move { Ok(None) })
    }

    fn replicas<'a>(&'a self, workload: &'a Workload) -> BoxFut<'a, Result<u32, PortError>> {
        Box::pin(async move { Err(no_workloads(workload)) })
    }

    fn change_replicas<'a>(
        &'a self,
        workload: &'a Workload,
        _from: u32,
        _to: u32,
    ) -> BoxFut<'a, Result<ScaleChange, PortError>> {
        Box::pin(async move { Err(no_workloads(workload)) })
    }
}

fn no_workloads(w: &Workload) -> PortError {
    PortError::fatal(format!("{w}: the fake world has no workloads"))
}

impl NodeExecutor for FakeWorld {
    fn run<'a>(
        &'a self,
        host: &'a Host,
        cmd: &'a RemoteCommand,
        _timeout: Duration,
    ) -> BoxFut<'a, Result<CommandOutput, PortError>> {
        let node = host.as_str();
        Box::pin(async move {
            let mut facts = Facts::new();
            match cmd {
                RemoteCommand::Preflight { .. } => {
                    tokio::time::sleep(self.delay).await;
                    facts.insert("cgroup".into(), "v2".into());
                    let installed = self.status(node)?.installed.to_string();
                    for p in ["kubeadm", "kubelet", "kubectl"] {
                        facts.insert(format!("pkg_{p}"), installed.clone());
                    }
                    facts.insert("held".into(), "kubeadm,kubectl,kubelet".into());
                    facts.insert(
                        "kubelet_config_backup".into(),
                        format!("/var/lib/upgraded/kubelet-config/{installed}.yaml"),
                    );
                    facts.insert("kubelet_installed".into(), installed);
                }
                // Like the node script: installed already (a re-run after a crash), nothing.
                RemoteCommand::Fingerprint => {
                    facts.insert("kernel".into(), "6.1.0-28-amd64".into());
                    facts.insert("cgroup".into(), "cgroup2fs".into());
                }
                RemoteCommand::RestoreKubeletFiles { dir, .. } => {
                    facts.insert("kubelet_files_restored".into(), dir.clone());
                }
                RemoteCommand::DowngradePackages { version, .. } => {
                    if self.status(node)?.installed == *version {
                        facts.insert("already_installed".into(), "true".into());
                    } else {
                        self.effect(node, "install", Some(*version)).await?;
                    }
                    facts.insert("installed".into(), version.to_string());
                }
                RemoteCommand::InstallPackages { version } => {
                    self.effect(node, "install", Some(*version)).await?;
                    facts.insert("installed".into(), version.to_string());
                }
                RemoteCommand::InstalledKubelet => {
                    facts.insert("installed".into(), self.status(node)?.installed.to_string());
                }
                RemoteCommand::RestartKubelet => {
                    self.effect(node, "restart-kubelet", None).await?;
                }
                // One member per control-plane node, all answering (the fake has no outages).
                RemoteCommand::EtcdHealth => {
                    let members = self
                        .lock()
                        .values()
                        .filter(|n| n.control_plane.is_some())
                        .count();
                    facts.insert("members".into(), members.to_string());
                    facts.insert("healthy".into(), members.to_string());
                }
                RemoteCommand::ApiserverReadyz => {
                    let up = self.status(node)?.control_plane.is_some();
                    facts.insert("readyz_status".into(), if up { "200" } else { "0" }.into());
                }
                // The fake world's apiservers have served nothing deprecated, for a week.
                RemoteCommand::ApiserverMetrics => {
                    let text = "apiserver_request_total{code=\"200\",group=\"\",resource=\"pods\",verb=\"LIST\",version=\"v1\"} 1\nprocess_start_time_seconds 0\n";
                    facts.insert(
                        "metrics_b64".into(),
                        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, text),
                    );
                    facts.insert("read_at".into(), (7 * 86_400).to_string());
                }
                RemoteCommand::KubeadmDowngrade { version, apply }
                | RemoteCommand::KubeadmUpgrade { version, apply } => {
                    let op = if *apply {
                        "kubeadm-upgrade-apply"
                    } else {
                        "kubeadm-upgrade-node"
                    };
                    self.effect(node, op, Some(*version)).await?;
                }
                // The fake world has no clock of its own: a snapshot it holds is fresh.
                RemoteCommand::EtcdSnapshot {
                    reuse_younger_than_secs: Some(_),
                } => {
                    facts.insert("reused".into(), "true".into());
                }
                RemoteCommand::EtcdSnapshot {
                    reuse_younger_than_secs: None,
                } => {
                    self.effect(node, "etcd-snapshot", None).await?;
                    facts.insert("snapshot".into(), format!("{node}.db"));
                }
                RemoteCommand::EtcdRestore(_) => {
                    return Err(PortError::fatal(format!(
                        "node {node}: the fake world has no etcd to restore"
                    )));
                }
            }
            Ok(CommandOutput { facts })
        })
    }
}
