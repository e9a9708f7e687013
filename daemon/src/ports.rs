//! The ports the engine acts through: a clock, the cluster API and a node executor.
//!
//! Adapters: [`SystemClock`] here; the file-backed fake world in `fake`; kube-rs and SSH come
//! with the end-to-end work. Remote commands are typed ([`RemoteCommand`]), never shell
//! strings: an adapter renders them to argv with every value quoted.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use upgraded_events::{Facts, NodeInfo, Timestamp, Version};

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A failure talking to the cluster or a node. `retryable` says whether the same call may
/// work later (timeouts, 5xx, connection loss) or needs a person (refused, not found).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}")]
pub struct PortError {
    pub what: String,
    pub retryable: bool,
}

impl PortError {
    pub fn retryable(what: impl Into<String>) -> Self {
        PortError {
            what: what.into(),
            retryable: true,
        }
    }
    pub fn fatal(what: impl Into<String>) -> Self {
        PortError {
            what: what.into(),
            retryable: false,
        }
    }
}

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
    fn sleep_until(&self, at: Timestamp) -> BoxFut<'_, ()>;
}

/// Wall-clock time, optionally accelerated (`scale` virtual seconds per real second) for
/// demos. Never earlier than `not_before` (the last recorded time), so a restarted
/// accelerated daemon does not travel back.
#[derive(Debug, Clone)]
pub struct SystemClock {
    origin_real: Instant,
    origin: Timestamp,
    scale: f64,
}

impl SystemClock {
    pub fn new(scale: f64, not_before: Timestamp) -> Self {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        SystemClock {
            origin_real: Instant::now(),
            origin: Timestamp(wall.max(not_before.0)),
            scale: if scale.is_finite() && scale > 0.0 {
                scale
            } else {
                1.0
            },
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

/// What the engine needs to know about a node from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub ready: bool,
    pub unschedulable: bool,
    /// What the running kubelet reports.
    pub kubelet_version: Version,
}

pub trait ClusterApi: Send + Sync + 'static {
    /// The nodes as the planner needs them (name, role, running kubelet version).
    fn list_nodes(&self) -> BoxFut<'_, Result<Vec<NodeInfo>, PortError>>;
    fn node_status<'a>(&'a self, node: &'a str) -> BoxFut<'a, Result<NodeStatus, PortError>>;
    fn cordon<'a>(&'a self, node: &'a str) -> BoxFut<'a, Result<(), PortError>>;
    fn uncordon<'a>(&'a self, node: &'a str) -> BoxFut<'a, Result<(), PortError>>;
    /// Evicts the node's pods; returns what it observed (`evicted`, `skipped_daemonset`, …).
    fn drain<'a>(&'a self, node: &'a str) -> BoxFut<'a, Result<Facts, PortError>>;
}

/// A command to run on a node. Typed so that no value is ever pasted into a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteCommand {
    /// cgroup v2, free disk, container runtime answering.
    Preflight,
    /// unhold → install kubelet/kubectl at `version` → hold.
    InstallPackages { version: Version },
    /// unhold → install kubeadm at `version` → hold; then `kubeadm upgrade apply VERSION`
    /// (`apply`) or `kubeadm upgrade node`.
    KubeadmUpgrade { version: Version, apply: bool },
    /// `etcdctl snapshot save`, then a trial restore to prove the file is usable.
    EtcdSnapshot,
    /// The kubelet version installed on disk (not necessarily running).
    InstalledKubelet,
    /// daemon-reload and restart kubelet.
    RestartKubelet,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandOutput {
    pub facts: Facts,
}

pub trait NodeExecutor: Send + Sync + 'static {
    fn run<'a>(
        &'a self,
        node: &'a str,
        cmd: &'a RemoteCommand,
        timeout: Duration,
    ) -> BoxFut<'a, Result<CommandOutput, PortError>>;
}
