//! Self-fencing at the ports (`upgraded --ha`, issue 28): the cluster API and the node
//! executor wrapped so that every node command and every API change first asks the lease's
//! window (`lease::Leading::may_act`, monotonic time). Outside it, nothing is sent: the call
//! fails as `unavailable` (the engine's append of that failure is refused too, as the log
//! asks the same window), and the instance that leads next probes the step before redoing it.
//! Reads go through: they change nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;
use upgraded_events::fault::FailureKind;
use upgraded_events::inventory::{Owner, PdbInv, PodInv};
use upgraded_events::state::PodHealth;
use upgraded_events::{Facts, Host, Version};
use upgraded_planner::permissions::Permission;

use crate::lease::Leading;
use crate::ports::{
    AddonImages, BoxFut, ClusterApi, CommandOutput, Eviction, JobSeen, NodeExecutor, NodeStatus,
    Observed, PortError, ProbePod, RemoteCommand, ScaleChange, Workload,
};

/// The lease's window, asked before each act.
#[derive(Debug, Clone)]
pub struct Fence(pub watch::Receiver<Leading>);

impl Fence {
    /// `Ok` while this instance may act; else the refusal the step reports.
    pub fn check(&self, what: &str) -> Result<(), PortError> {
        if self.0.borrow().may_act(Instant::now()) {
            return Ok(());
        }
        Err(PortError::retryable(format!(
            "not sent ({what}): this instance may not act now (it is not the leader, or its \
             lease renewals failed and it fenced itself)"
        ))
        .with_kind(FailureKind::Unavailable))
    }
}

/// The cluster API behind the fence.
pub struct FencedCluster {
    pub inner: Arc<dyn ClusterApi>,
    pub fence: Fence,
}

/// The node executor behind the fence.
pub struct FencedNodes {
    pub inner: Arc<dyn NodeExecutor>,
    pub fence: Fence,
}

impl std::fmt::Debug for FencedCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FencedCluster").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for FencedNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FencedNodes").finish_non_exhaustive()
    }
}

impl NodeExecutor for FencedNodes {
    fn run<'a>(
        &'a self,
        node: &'a Host,
        cmd: &'a RemoteCommand,
        timeout: Duration,
    ) -> BoxFut<'a, Result<CommandOutput, PortError>> {
        Box::pin(async move {
            self.fence.check(cmd.name())?;
            self.inner.run(node, cmd, timeout).await
        })
    }
}

/// A change: asks the fence first.
macro_rules! fenced {
    ($self:ident, $what:expr, $call:expr) => {
        Box::pin(async move {
            $self.fence.check($what)?;
            $call.await
        })
    };
}

impl ClusterApi for FencedCluster {
    fn observe(&self) -> BoxFut<'_, Result<Observed, PortError>> {
        self.inner.observe()
    }
    fn node_status<'a>(&'a self, node: &'a Host) -> BoxFut<'a, Result<NodeStatus, PortError>> {
        self.inner.node_status(node)
    }
    fn cordon<'a>(&'a self, node: &'a Host) -> BoxFut<'a, Result<(), PortError>> {
        fenced!(self, "cordon", self.inner.cordon(node))
    }
    fn uncordon<'a>(&'a self, node: &'a Host) -> BoxFut<'a, Result<(), PortError>> {
        fenced!(self, "uncordon", self.inner.uncordon(node))
    }
    fn pods_on<'a>(&'a self, node: &'a Host) -> BoxFut<'a, Result<Vec<PodInv>, PortError>> {
        self.inner.pods_on(node)
    }
    fn pod_health(&self) -> BoxFut<'_, Result<Vec<PodHealth>, PortError>> {
        self.inner.pod_health()
    }
    fn evict<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        uid: &'a str,
    ) -> BoxFut<'a, Result<Eviction, PortError>> {
        fenced!(self, "eviction", self.inner.evict(namespace, name, uid))
    }
    fn pdb<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<PdbInv>, PortError>> {
        self.inner.pdb(namespace, name)
    }
    fn workload_of<'a>(
        &'a self,
        namespace: &'a str,
        owner: &'a Owner,
    ) -> BoxFut<'a, Result<Option<Workload>, PortError>> {
        self.inner.workload_of(namespace, owner)
    }
    fn replicas<'a>(&'a self, workload: &'a Workload) -> BoxFut<'a, Result<u32, PortError>> {
        self.inner.replicas(workload)
    }
    fn change_replicas<'a>(
        &'a self,
        workload: &'a Workload,
        from: u32,
        to: u32,
    ) -> BoxFut<'a, Result<ScaleChange, PortError>> {
        fenced!(
            self,
            "scale",
            self.inner.change_replicas(workload, from, to)
        )
    }
    fn can_i<'a>(&'a self, perms: &'a [Permission]) -> BoxFut<'a, Result<Vec<bool>, PortError>> {
        self.inner.can_i(perms)
    }
    fn set_kube_proxy<'a>(&'a self, version: Version) -> BoxFut<'a, Result<Facts, PortError>> {
        fenced!(self, "kube-proxy image", self.inner.set_kube_proxy(version))
    }
    fn helm_releases(&self) -> BoxFut<'_, Result<Value, PortError>> {
        self.inner.helm_releases()
    }
    fn kubelet_config<'a>(&'a self, node: &'a Host) -> BoxFut<'a, Result<Value, PortError>> {
        self.inner.kubelet_config(node)
    }
    fn node_annotation<'a>(
        &'a self,
        node: &'a Host,
        key: &'a str,
    ) -> BoxFut<'a, Result<Option<String>, PortError>> {
        self.inner.node_annotation(node, key)
    }
    fn annotate_node<'a>(
        &'a self,
        node: &'a Host,
        key: &'a str,
        value: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>> {
        fenced!(
            self,
            "annotation",
            self.inner.annotate_node(node, key, value)
        )
    }
    fn ensure_namespace<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<(), PortError>> {
        fenced!(self, "namespace", self.inner.ensure_namespace(name))
    }
    fn create_probe<'a>(&'a self, manifest: &'a Value) -> BoxFut<'a, Result<(), PortError>> {
        fenced!(self, "probe pod", self.inner.create_probe(manifest))
    }
    fn probe<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<ProbePod>, PortError>> {
        self.inner.probe(namespace, name)
    }
    fn create_service<'a>(
        &'a self,
        manifest: &'a Value,
    ) -> BoxFut<'a, Result<Option<String>, PortError>> {
        fenced!(self, "probe service", self.inner.create_service(manifest))
    }
    fn delete_service<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>> {
        fenced!(
            self,
            "probe service",
            self.inner.delete_service(namespace, name)
        )
    }
    fn create_claim<'a>(&'a self, manifest: &'a Value) -> BoxFut<'a, Result<(), PortError>> {
        fenced!(self, "probe claim", self.inner.create_claim(manifest))
    }
    fn delete_claim<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>> {
        fenced!(
            self,
            "probe claim",
            self.inner.delete_claim(namespace, name)
        )
    }
    fn delete_probe<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>> {
        fenced!(self, "probe pod", self.inner.delete_probe(namespace, name))
    }
    fn delete_probes<'a>(
        &'a self,
        namespace: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> BoxFut<'a, Result<usize, PortError>> {
        fenced!(
            self,
            "probe pods",
            self.inner.delete_probes(namespace, labels)
        )
    }
    fn create_job<'a>(&'a self, manifest: &'a Value) -> BoxFut<'a, Result<(), PortError>> {
        fenced!(self, "check job", self.inner.create_job(manifest))
    }
    fn job<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<JobSeen>, PortError>> {
        self.inner.job(namespace, name)
    }
    fn delete_job<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>> {
        fenced!(self, "check job", self.inner.delete_job(namespace, name))
    }
    fn addon_images(&self) -> BoxFut<'_, Result<AddonImages, PortError>> {
        self.inner.addon_images()
    }
}
