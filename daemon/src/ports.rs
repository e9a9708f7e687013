//! The ports the engine acts through: a clock, the cluster API and a node executor.
//!
//! Adapters: [`SystemClock`] here; the Kubernetes API through kube-rs in `kube`; node agents
//! for the simulated cluster in `simagent`; the file-backed fake world in `fake`. Remote
//! commands are typed ([`RemoteCommand`]), never shell strings: an adapter renders them to
//! argv with every value quoted.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use serde_json::Value;
use upgraded_events::check::ProbeEnd;
use upgraded_events::fault::FailureKind;
use upgraded_events::inventory::{Inventory, Owner, PdbInv, PodInv};
use upgraded_events::plan::EtcdRestoreStage;
use upgraded_events::state::PodHealth;
use upgraded_events::{Event, Facts, Host, Timestamp, Version};
use upgraded_planner::permissions::Permission;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A failure talking to the cluster or a node. `kind` says what the core's fault rules make
/// of it (`upgraded_events::fault`): transient (timeouts, 5xx, connection loss), permanent
/// (refused, not found, not allowed), or one of the kinds a step reports itself.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}")]
pub struct PortError {
    pub what: String,
    pub kind: FailureKind,
    /// What was observed before the failure (recorded in the `StepFailed` event).
    pub facts: Facts,
}

impl PortError {
    /// A failure the same call may get past later.
    pub fn retryable(what: impl Into<String>) -> Self {
        PortError {
            what: what.into(),
            kind: FailureKind::Transient,
            facts: Facts::new(),
        }
    }
    /// A failure that needs a person.
    pub fn fatal(what: impl Into<String>) -> Self {
        PortError {
            what: what.into(),
            kind: FailureKind::Permanent,
            facts: Facts::new(),
        }
    }
    pub fn with_kind(mut self, kind: FailureKind) -> Self {
        self.kind = kind;
        self
    }
    /// Whether the same call may work later.
    pub fn is_retryable(&self) -> bool {
        self.kind.retryable()
    }
    pub fn with_fact(mut self, key: &str, value: impl Into<String>) -> Self {
        self.facts.insert(key.to_string(), value.into());
        self
    }
}

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
    fn sleep_until(&self, at: Timestamp) -> BoxFut<'_, ()>;
}

/// Wall-clock time, optionally accelerated (`scale` virtual seconds per real second) for
/// demos and rehearsals. Never earlier than `not_before` (the last recorded time).
///
/// An accelerated clock is anchored: virtual time is `virtual0 + (wall − wall0) × scale`
/// from an anchor kept in the data dir, so time keeps passing while the daemon is down (as
/// it does for a real cluster) instead of restarting from the last record after a crash.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin_real: Instant,
    origin: Timestamp,
    scale: f64,
}

/// Where an accelerated clock started: (wall ms, virtual ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClockAnchor {
    pub wall_ms: i64,
    pub virtual_ms: i64,
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl SystemClock {
    pub fn new(scale: f64, not_before: Timestamp) -> Self {
        Self::anchored(scale, not_before, None)
    }

    /// With an anchor, virtual time continues from it at `scale`.
    pub fn anchored(scale: f64, not_before: Timestamp, anchor: Option<ClockAnchor>) -> Self {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        let wall = wall_ms();
        let now = match anchor {
            Some(a) => {
                let elapsed = (wall.saturating_sub(a.wall_ms)).max(0) as f64 * scale;
                a.virtual_ms.saturating_add(elapsed as i64)
            }
            None => wall,
        };
        SystemClock {
            origin_real: Instant::now(),
            origin: Timestamp(now.max(not_before.0)),
            scale,
        }
    }

    /// The anchor to keep for a clock starting now at `not_before` or later.
    pub fn new_anchor(not_before: Timestamp) -> ClockAnchor {
        let wall = wall_ms();
        ClockAnchor {
            wall_ms: wall,
            virtual_ms: wall.max(not_before.0),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let elapsed = self.origin_real.elapsed().as_secs_f64() * self.scale * 1000.0;
        Timestamp(self.origin.0.saturating_add(elapsed as i64))
    }

    fn sleep_until(&self, at: Timestamp) -> BoxFut<'_, ()> {
        let virtual_ms = at.0.saturating_sub(self.now().0).max(0) as f64;
        let real = Duration::from_secs_f64(virtual_ms / 1000.0 / self.scale);
        Box::pin(tokio::time::sleep(real))
    }
}

/// What the engine reads about a node (defined with the gates that judge it).
pub use upgraded_events::gate::NodeStatus;

/// The cluster as read before a run: the planner's inventory and `/version`.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub apiserver: Version,
    pub inventory: Inventory,
}

/// The answer to one eviction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eviction {
    /// Accepted: the pod is terminating.
    Evicted,
    /// The pod (or that incarnation of it) no longer exists.
    Gone,
    /// A PodDisruptionBudget refused it (HTTP 429); `pdb` (in the pod's namespace) when the
    /// answer names it.
    Blocked {
        pdb: Option<String>,
        message: String,
    },
}

/// A Deployment or StatefulSet (what has a `scale` subresource and owns pods).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workload {
    /// `Deployment` or `StatefulSet`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// The answer to a compare-and-set of a workload's replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleChange {
    /// The replicas were `from` and are now `to`.
    Changed,
    /// The replicas were not `from` (someone else scaled it): nothing was changed.
    Found(u32),
}

pub trait ClusterApi: Send + Sync + 'static {
    /// Every node, pod, budget and controller, and the apiserver's version.
    fn observe(&self) -> BoxFut<'_, Result<Observed, PortError>>;
    fn node_status<'a>(&'a self, node: &'a Host) -> BoxFut<'a, Result<NodeStatus, PortError>>;
    fn cordon<'a>(&'a self, node: &'a Host) -> BoxFut<'a, Result<(), PortError>>;
    fn uncordon<'a>(&'a self, node: &'a Host) -> BoxFut<'a, Result<(), PortError>>;
    /// The pods bound to `node` (a `spec.nodeName` field selector).
    fn pods_on<'a>(&'a self, node: &'a Host) -> BoxFut<'a, Result<Vec<PodInv>, PortError>>;
    /// What the health gate reads of every pod of the cluster.
    fn pod_health(&self) -> BoxFut<'_, Result<Vec<PodHealth>, PortError>>;
    /// POSTs a policy/v1 Eviction for that incarnation (`uid`) of the pod. A refusal by a
    /// budget is an answer, not an error: it is never retried by the client.
    fn evict<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        uid: &'a str,
    ) -> BoxFut<'a, Result<Eviction, PortError>>;
    /// The budget's current status.
    fn pdb<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<PdbInv>, PortError>>;
    /// The Deployment (through the pod's ReplicaSet) or StatefulSet that owns a pod with
    /// controller `owner`; `None` for anything else (DaemonSet, Job, a bare ReplicaSet).
    fn workload_of<'a>(
        &'a self,
        namespace: &'a str,
        owner: &'a Owner,
    ) -> BoxFut<'a, Result<Option<Workload>, PortError>>;
    /// `spec.replicas` through the `scale` subresource.
    fn replicas<'a>(&'a self, workload: &'a Workload) -> BoxFut<'a, Result<u32, PortError>>;
    /// Sets the replicas to `to` only if they are `from` (resourceVersion-checked, so a
    /// concurrent change by someone else is never overwritten).
    fn change_replicas<'a>(
        &'a self,
        workload: &'a Workload,
        from: u32,
        to: u32,
    ) -> BoxFut<'a, Result<ScaleChange, PortError>>;
    /// For each permission, whether the API server lets this identity do it
    /// (SelfSubjectAccessReview), answered in order.
    fn can_i<'a>(&'a self, perms: &'a [Permission]) -> BoxFut<'a, Result<Vec<bool>, PortError>>;
    /// Sets the kube-proxy DaemonSet's image tag to `version` (`kubectl set image`); facts
    /// say what it was and is (`kube_proxy=absent` on a cluster without it).
    fn set_kube_proxy<'a>(&'a self, version: Version) -> BoxFut<'a, Result<Facts, PortError>>;
    /// Helm 3's deployed releases: the Secrets labelled `owner=helm,status=deployed` in every
    /// namespace, as a `List` (what `kubectl get secrets -A -l … -o json` prints).
    fn helm_releases(&self) -> BoxFut<'_, Result<Value, PortError>>;
    /// The running kubelet's config (`/configz` through the apiserver's node proxy): its
    /// `kubeletconfig` object.
    fn kubelet_config<'a>(&'a self, node: &'a Host) -> BoxFut<'a, Result<Value, PortError>>;
    /// The node's annotation `key`, when it has one.
    fn node_annotation<'a>(
        &'a self,
        node: &'a Host,
        key: &'a str,
    ) -> BoxFut<'a, Result<Option<String>, PortError>>;
    /// Sets the node's annotation `key` to `value` (a merge patch: the others are kept).
    fn annotate_node<'a>(
        &'a self,
        node: &'a Host,
        key: &'a str,
        value: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>>;
    /// Creates namespace `name` unless it exists.
    fn ensure_namespace<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<(), PortError>>;
    /// Creates a probe pod from its manifest (`events::check::probe`); one that already
    /// exists under that name (created before a restart) is adopted, not created twice.
    fn create_probe<'a>(&'a self, manifest: &'a Value) -> BoxFut<'a, Result<(), PortError>>;
    /// What probe pod `namespace/name` shows now; `None` when it does not exist.
    fn probe<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<ProbePod>, PortError>>;
    /// Creates a probe's Service (one that exists is adopted); its ClusterIP.
    fn create_service<'a>(
        &'a self,
        manifest: &'a Value,
    ) -> BoxFut<'a, Result<Option<String>, PortError>>;
    /// Deletes a probe's Service (gone already is fine).
    fn delete_service<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>>;
    /// Creates a probe's PersistentVolumeClaim (one that exists is adopted).
    fn create_claim<'a>(&'a self, manifest: &'a Value) -> BoxFut<'a, Result<(), PortError>>;
    /// Deletes a probe's claim (gone already is fine).
    fn delete_claim<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>>;
    /// Deletes a probe pod (gone already is fine).
    fn delete_probe<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>>;
    /// Deletes every probe pod in `namespace` that carries all of `labels` (what checks
    /// cut short by an error left behind); how many there were.
    fn delete_probes<'a>(
        &'a self,
        namespace: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> BoxFut<'a, Result<usize, PortError>>;
    /// Creates a check's Job (one that exists under that name is adopted).
    fn create_job<'a>(&'a self, manifest: &'a Value) -> BoxFut<'a, Result<(), PortError>>;
    /// What check Job `namespace/name` and its pod show now; `None` when it does not exist.
    fn job<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<JobSeen>, PortError>>;
    /// Deletes a check's Job and its pods (gone already is fine).
    fn delete_job<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>>;
    /// The images kube-proxy's DaemonSet and CoreDNS's Deployment run (`None`: not there).
    fn addon_images(&self) -> BoxFut<'_, Result<AddonImages, PortError>>;
}

pub use upgraded_events::check::run::JobSeen;

/// The addons' images, as their workloads' pod templates name them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddonImages {
    pub kube_proxy: Option<String>,
    pub coredns: Option<String>,
}

/// How a command on the daemon's host ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandEnd {
    /// Its exit code; `None` when a signal ended it.
    pub exit_code: Option<i32>,
    /// Its output (stdout then stderr), bounded.
    pub output: String,
    pub timed_out: bool,
}

/// What the operator's HTTP and command checks, Prometheus and the ingress check reach:
/// from the daemon's own host.
pub trait HostProbes: Send + Sync + 'static {
    /// GET `url`; its status and body (bounded).
    fn http_get<'a>(
        &'a self,
        url: &'a str,
        timeout: Duration,
    ) -> BoxFut<'a, Result<(u16, Vec<u8>), HttpTrouble>>;
    /// Runs `argv` (never through a shell) with `env` added, killed at `timeout`.
    fn command<'a>(
        &'a self,
        argv: &'a [String],
        env: &'a [(String, String)],
        timeout: Duration,
    ) -> BoxFut<'a, Result<CommandEnd, PortError>>;
}

pub use upgraded_events::check::run::HttpTrouble;

/// A probe pod as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbePod {
    /// `status.podIP`, once it has one.
    pub ip: Option<String>,
    /// Its container runs (an echo pod is ready to be dialled).
    pub running: bool,
    /// How it ended, or what keeps it from answering; `None` while it runs or starts.
    pub end: Option<ProbeEnd>,
}

/// Where a step reports what it observes while it runs (recorded as events in the log).
pub trait Recorder: Send + Sync {
    fn note(&self, event: Event) -> BoxFut<'_, Result<(), PortError>>;
}

/// A command to run on a node. Typed so that no value is ever pasted into a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteCommand {
    /// Read-only checks before a node is touched: cgroup v2 when `target` ≥ 1.35, free disk
    /// on /var/lib/kubelet, the container runtime answering, the package repository for
    /// `target`'s minor reachable, swap off.
    Preflight { target: Version },
    /// unhold → install kubelet/kubectl at `version` → hold.
    InstallPackages { version: Version },
    /// unhold → install kubeadm at `version` → hold; then `kubeadm upgrade apply VERSION`
    /// (`apply`) or `kubeadm upgrade node`.
    KubeadmUpgrade { version: Version, apply: bool },
    /// `etcdctl snapshot save`, then a trial restore to prove the file is usable, and a copy
    /// kept off the node. With `reuse_younger_than_secs`, a snapshot on the node younger than
    /// that is verified and kept instead of taking a new one.
    EtcdSnapshot {
        reuse_younger_than_secs: Option<u64>,
    },
    /// The kubelet version installed on disk (not necessarily running).
    InstalledKubelet,
    /// daemon-reload and restart kubelet.
    RestartKubelet,
    /// `etcdctl endpoint health --cluster`: how many members answer (`members`, `healthy`).
    EtcdHealth,
    /// The node's own kube-apiserver asked on its loopback (`/readyz?verbose`), not through
    /// the load balancer: `readyz_status` (0: nothing answered) and `readyz_failing` (the
    /// `[-]` lines).
    ApiserverReadyz,
    /// The node's own kube-apiserver's `/metrics`, read on its loopback with the node's
    /// admin kubeconfig (each instance keeps its own counters), cut to what the removed-API
    /// gate reads: `metrics_b64` (base64 of the text) and `read_at` (Unix seconds).
    ApiserverMetrics,
    /// A rollback of the control plane: unhold → install kubeadm at the older `version`
    /// (allowing the downgrade) → hold; `kubeadm upgrade apply VERSION` (`apply`) or
    /// `kubeadm upgrade node`, after our own backup of the manifests.
    KubeadmDowngrade { version: Version, apply: bool },
    /// A rollback: unhold → install kubelet/kubectl at the older `version` → hold, then the
    /// kubelet config backed up at `kubelet_config` put back.
    DowngradePackages {
        version: Version,
        kubelet_config: Option<String>,
        kubeadm: bool,
    },
    /// Read-only, at a run's start: what tells a machine from its generation's siblings
    /// (`drift::HOST_FACTS`: kernel running and newest installed, a pending reboot, OS,
    /// containerd's version and a hash of its config.toml, the cgroup filesystem, swap,
    /// package holds, a hash of the kubelet flag files without the flags that differ by
    /// nature between machines).
    Fingerprint,
    /// A rollback: the kubelet files the preflight kept in `dir` while the node ran
    /// `version` put back (`kubeadm-flags.env`, `instance-config.yaml` or its absence,
    /// `kubelet.conf.d/`), and kubelet.conf's `server` set to `server`.
    RestoreKubeletFiles {
        version: Version,
        dir: String,
        server: Option<String>,
    },
    /// One stage of etcd's disaster recovery on this node (see [`EtcdRestoreStage`]). For
    /// `Restore`, the executor first puts the daemon's copy of the snapshot on the node.
    EtcdRestore(EtcdRestoreStage),
}

impl RemoteCommand {
    /// What the command is, in an operator's words.
    pub fn name(&self) -> &'static str {
        match self {
            RemoteCommand::Preflight { .. } => "preflight",
            RemoteCommand::InstallPackages { .. } => "package install",
            RemoteCommand::KubeadmUpgrade { apply: true, .. } => "kubeadm upgrade apply",
            RemoteCommand::KubeadmUpgrade { apply: false, .. } => "kubeadm upgrade node",
            RemoteCommand::EtcdSnapshot { .. } => "etcd snapshot",
            RemoteCommand::InstalledKubelet => "kubelet --version",
            RemoteCommand::RestartKubelet => "kubelet restart",
            RemoteCommand::EtcdHealth => "etcd health",
            RemoteCommand::ApiserverReadyz => "kube-apiserver /readyz",
            RemoteCommand::ApiserverMetrics => "kube-apiserver /metrics",
            RemoteCommand::DowngradePackages { .. } => "package downgrade",
            RemoteCommand::RestoreKubeletFiles { .. } => "kubelet files restore",
            RemoteCommand::Fingerprint => "fingerprint",
            RemoteCommand::KubeadmDowngrade { apply: true, .. } => "kubeadm downgrade (apply)",
            RemoteCommand::KubeadmDowngrade { apply: false, .. } => "kubeadm downgrade (node)",
            RemoteCommand::EtcdRestore(EtcdRestoreStage::StopApiserver) => {
                "etcd restore: stop kube-apiserver"
            }
            RemoteCommand::EtcdRestore(EtcdRestoreStage::Restore(_)) => {
                "etcd restore: restore the member"
            }
            RemoteCommand::EtcdRestore(EtcdRestoreStage::StartEtcd) => "etcd restore: start etcd",
            RemoteCommand::EtcdRestore(EtcdRestoreStage::StartControlPlane) => {
                "etcd restore: restart the control plane"
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandOutput {
    pub facts: Facts,
}

pub trait NodeExecutor: Send + Sync + 'static {
    fn run<'a>(
        &'a self,
        node: &'a Host,
        cmd: &'a RemoteCommand,
        timeout: Duration,
    ) -> BoxFut<'a, Result<CommandOutput, PortError>>;
}
