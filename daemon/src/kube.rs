//! The Kubernetes port through kube-rs: inventory, cordon/uncordon, pods by node, evictions,
//! budgets, node status.
//!
//! Two clients share one configuration: the general one keeps kube's retry of 429/503/504;
//! the eviction client has it off, because a PodDisruptionBudget refusal *is* a 429 and must
//! reach the drain, which records it and backs off on its own schedule. Evictions are POSTed
//! with `create_subresource` (kube 5's `Api::evict` sends a misspelled `delete_options`).

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::policy::v1::{Eviction as EvictionBody, PodDisruptionBudget};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta, Preconditions};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use upgraded_events::Version;
use upgraded_events::check;
use upgraded_events::inventory::{Inventory, Owner, PdbInv, PodInv};
use upgraded_events::state::PodHealth;
use upgraded_events::{Facts, Host};
use upgraded_planner::permissions::Permission;

use crate::podwatch::{HealthPod, PodWatch};
use crate::ports::{
    AddonImages, BoxFut, ClusterApi, Eviction, JobSeen, NodeStatus, Observed, PortError, ProbePod,
    ScaleChange, Workload,
};

#[derive(Debug, thiserror::Error)]
pub enum KubeSetupError {
    #[error("reading kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error(
        "no Kubernetes configuration (no --kubeconfig, $KUBECONFIG, ~/.kube/config or in-cluster service account): {0}"
    )]
    Infer(#[from] kube::config::InferConfigError),
    #[error("building the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// The cluster, through its API server.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    /// Same configuration, without kube's automatic retry of 429s: for evictions.
    no_retry: Client,
    /// Every pod's health, kept by a watch for the health gate.
    health: PodWatch,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeCluster").finish_non_exhaustive()
    }
}

/// What the daemon calls itself in its requests to the apiserver (its audit log shows it).
pub const USER_AGENT: &str = concat!("upgraded/", env!("CARGO_PKG_VERSION"));

/// Page size of list calls (an apiserver serves large lists in pages).
const PAGE: u32 = 500;

impl KubeCluster {
    /// Creates a check's object from its manifest; one that already exists under its name is
    /// adopted (its deterministic name says it is ours: made before a restart).
    async fn create_adopting<K>(&self, manifest: &Value, kind: &str) -> Result<(), PortError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let obj: K = serde_json::from_value(manifest.clone())
            .map_err(|e| PortError::fatal(format!("a check's manifest is not a {kind}: {e}")))?;
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client.clone(), &ns);
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(api_error(e)),
        }
    }

    /// Deletes a check's object; one already gone is fine.
    async fn delete_if_there<K>(
        &self,
        namespace: &str,
        name: &str,
        params: DeleteParams,
    ) -> Result<(), PortError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        match api.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(api_error(e)),
        }
    }

    /// From a kubeconfig file (and optional context), or else inferred: `$KUBECONFIG`,
    /// `~/.kube/config`, or the in-cluster service account.
    pub async fn connect(
        kubeconfig: Option<&Path>,
        context: Option<&str>,
    ) -> Result<Self, KubeSetupError> {
        let mut config = match kubeconfig {
            Some(path) => {
                let kc =
                    Kubeconfig::read_from(path).map_err(|source| KubeSetupError::Kubeconfig {
                        path: path.display().to_string(),
                        source,
                    })?;
                let options = KubeConfigOptions {
                    context: context.map(str::to_string),
                    ..KubeConfigOptions::default()
                };
                Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|source| KubeSetupError::Kubeconfig {
                        path: path.display().to_string(),
                        source,
                    })?
            }
            None => Config::infer().await?,
        };
        // kube's rustls needs a process-wide provider; a second call finds it installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        config.connect_timeout = Some(Duration::from_secs(10));
        config.read_timeout = Some(READ_TIMEOUT);
        config.write_timeout = Some(Duration::from_secs(60));
        // Named in the apiserver's audit log, not anonymous.
        config.headers.push((
            hyper::header::USER_AGENT,
            hyper::header::HeaderValue::from_static(USER_AGENT),
        ));
        let client = Client::try_from(config.clone())?;
        config.default_retry = false;
        let no_retry = Client::try_from(config)?;
        Ok(KubeCluster {
            client,
            no_retry,
            health: PodWatch::default(),
        })
    }

    /// Over an existing client (e.g. one built on an in-process service for benchmarks).
    /// Such a client has no retry layer, so evictions and the rest behave alike.
    pub fn from_client(client: Client) -> Self {
        KubeCluster {
            client: client.clone(),
            no_retry: client,
            health: PodWatch::default(),
        }
    }

    async fn list_all<K>(&self, params: ListParams) -> Result<Vec<K>, PortError>
    where
        K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let api: Api<K> = Api::all(self.client.clone());
        let mut out = Vec::new();
        let mut params = params.limit(PAGE);
        loop {
            let page = api.list(&params).await.map_err(api_error)?;
            out.extend(page.items);
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(out),
            }
        }
    }

    /// Objects as the `List` JSON the planner's inventory reader takes.
    async fn list_values<K>(&self) -> Result<Vec<Value>, PortError>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + DeserializeOwned
            + Serialize
            + std::fmt::Debug,
    {
        self.list_all::<K>(ListParams::default())
            .await?
            .iter()
            .map(|o| {
                let mut v = serde_json::to_value(o).map_err(|e| PortError::fatal(e.to_string()))?;
                v["kind"] = json!(K::kind(&()));
                v["apiVersion"] = json!(K::api_version(&()));
                Ok(v)
            })
            .collect()
    }

    /// Pods read straight from the list's JSON into what the core needs: decoding them as
    /// typed `Pod`s first and serialising them back cost most of a step's time on a large
    /// cluster (the health gate reads every pod at every verify).
    async fn pods(&self, params: ListParams) -> Result<Vec<PodInv>, PortError> {
        let mut out = Vec::new();
        self.pod_pages(params, |v: Value| {
            out.push(PodInv::from_value(&v).map_err(|e| {
                PortError::fatal(format!(
                    "pod {}: {e}",
                    v["metadata"]["name"].as_str().unwrap_or("?")
                ))
            })?);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Every page of a pod list (`limit` [`PAGE`], following `continue`), each item decoded
    /// as `I` (only the fields `I` names are kept while parsing) and handed to `each`.
    async fn pod_pages<I: DeserializeOwned>(
        &self,
        params: ListParams,
        mut each: impl FnMut(I) -> Result<(), PortError>,
    ) -> Result<(), PortError> {
        let mut params = params.limit(PAGE);
        loop {
            let req = kube::core::Request::new("/api/v1/pods")
                .list(&params)
                .map_err(|e| PortError::fatal(e.to_string()))?;
            let page: Page<I> = self.client.request(req).await.map_err(api_error)?;
            for item in page.items {
                each(item)?;
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => return Ok(()),
            }
        }
    }

    async fn set_unschedulable(&self, node: &str, value: bool) -> Result<(), PortError> {
        let api: Api<Node> = Api::all(self.client.clone());
        api.patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "unschedulable": value } })),
        )
        .await
        .map_err(api_error)?;
        Ok(())
    }
}

/// A page of a list, its items as `I`.
#[derive(serde::Deserialize)]
#[serde(bound = "I: DeserializeOwned")]
struct Page<I> {
    #[serde(default)]
    metadata: PageMeta,
    #[serde(default = "Vec::new")]
    items: Vec<I>,
}

#[derive(serde::Deserialize, Default)]
struct PageMeta {
    #[serde(default, rename = "continue")]
    continue_: Option<String>,
}

/// Reads or replaces the `scale` of a Deployment or StatefulSet.
async fn scale_of(
    client: &Client,
    w: &Workload,
    replace: Option<&Scale>,
) -> Result<Scale, kube::Error> {
    macro_rules! on {
        ($k:ty) => {{
            let api: Api<$k> = Api::namespaced(client.clone(), &w.namespace);
            match replace {
                None => api.get_scale(&w.name).await,
                Some(s) => api.replace_scale(&w.name, &PostParams::default(), s).await,
            }
        }};
    }
    match w.kind.as_str() {
        "Deployment" => on!(Deployment),
        _ => on!(StatefulSet),
    }
}

fn replicas_in(s: &Scale) -> u32 {
    s.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .map_or(0, |r| u32::try_from(r).unwrap_or(0))
}

fn scalable(w: &Workload) -> Result<(), PortError> {
    match w.kind.as_str() {
        "Deployment" | "StatefulSet" => Ok(()),
        other => Err(PortError::fatal(format!(
            "{w}: a {other} has no scale the daemon may change"
        ))),
    }
}

/// Maps a kube error to a port error: 5xx, 429 and transport errors are worth retrying.
/// What a probe pod's status says: its IP, whether it runs, and how it ended or what keeps
/// it from answering (`events::check::disruption_of` reads the reasons).
fn probe_pod(pod: &Pod) -> ProbePod {
    let status = pod.status.clone().unwrap_or_default();
    let container = status
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.first())
        .and_then(|c| c.state.clone())
        .unwrap_or_default();
    let waiting = container.waiting.as_ref().and_then(|w| w.reason.as_deref());
    let disruption = check::disruption_of(status.reason.as_deref(), waiting);
    let terminated = container.terminated.as_ref();
    let finished = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
    let end = if disruption.is_some() || (finished && terminated.is_some()) {
        Some(check::ProbeEnd {
            exit_code: terminated.map(|t| t.exit_code),
            message: terminated.and_then(|t| t.message.clone()),
            disruption,
        })
    } else {
        None
    };
    ProbePod {
        ip: status.pod_ip.filter(|ip| !ip.is_empty()),
        running: status.phase.as_deref() == Some("Running") && container.running.is_some(),
        end,
    }
}

/// A check's Job and its (last) pod, as the checks step judges them.
fn job_seen(job: &Job, pod: Option<&Pod>) -> JobSeen {
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let holds = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t && c.status == "True")
    };
    let pod_status = pod.and_then(|p| p.status.clone()).unwrap_or_default();
    let unschedulable = pod_status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")
        .map(|c| {
            format!(
                "{}: {}",
                c.reason.unwrap_or_default(),
                c.message.unwrap_or_default()
            )
        });
    JobSeen {
        complete: holds("Complete").is_some(),
        failed: holds("Failed").map(|c| {
            format!(
                "the Job failed ({}): {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )
        }),
        pod: pod.map(probe_pod).and_then(|p| p.end),
        node: pod.and_then(|p| p.spec.as_ref().and_then(|s| s.node_name.clone())),
        unschedulable,
    }
}

/// Whether a 429 to an eviction is a PodDisruptionBudget's refusal (the apiserver adds the
/// cause `DisruptionBudget`; its message says so in every version) rather than throttling.
fn refused_by_budget(s: &kube::core::Status) -> bool {
    s.details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "DisruptionBudget"))
        || s.message.contains("disruption budget")
}

/// How long the client waits for an answer from the API server before it gives up on the
/// request (a hung apiserver is an outage, not a wait without end).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// An API error as the core's fault rules see it: a 5xx, a 429 or no answer is the API
/// server unavailable (an outage around the step); another 4xx is a refusal.
fn api_error(e: kube::Error) -> PortError {
    use upgraded_events::fault::FailureKind;
    match &e {
        kube::Error::Api(s) if s.code >= 500 || s.code == 429 => {
            PortError::retryable(format!("API server: {} ({})", s.message, s.code))
                .with_kind(FailureKind::Unavailable)
        }
        kube::Error::Api(s) => PortError::fatal(format!("API server: {} ({})", s.message, s.code)),
        other => PortError::retryable(format!("Kubernetes API unreachable: {other}"))
            .with_kind(FailureKind::Unavailable),
    }
}

/// `The disruption budget web needs 9 healthy pods…` → `web`: the apiserver names the budget
/// only in its message.
fn budget_in(message: &str) -> Option<String> {
    let rest = message.split("disruption budget ").nth(1)?;
    let name = rest.split_whitespace().next()?;
    (!name.is_empty()).then(|| name.trim_end_matches(['.', ',']).to_string())
}

fn version_of(s: &str, what: &str) -> Result<Version, PortError> {
    // `v1.33.5+k3s1`, `v1.33.5-eks-…`: the release is what counts.
    let core = s.split(['+', '-']).next().unwrap_or(s);
    core.parse()
        .map_err(|e| PortError::fatal(format!("{what} reports version {s:?}: {e}")))
}

impl ClusterApi for KubeCluster {
    fn can_i<'a>(&'a self, perms: &'a [Permission]) -> BoxFut<'a, Result<Vec<bool>, PortError>> {
        Box::pin(async move {
            let api: Api<SelfSubjectAccessReview> = Api::all(self.client.clone());
            let mut out = Vec::with_capacity(perms.len());
            for p in perms {
                let review = SelfSubjectAccessReview {
                    spec: SelfSubjectAccessReviewSpec {
                        resource_attributes: Some(ResourceAttributes {
                            verb: Some(p.verb.clone()),
                            group: Some(p.group.clone()),
                            resource: Some(p.resource.clone()),
                            subresource: Some(p.subresource.clone()).filter(|s| !s.is_empty()),
                            ..ResourceAttributes::default()
                        }),
                        ..SelfSubjectAccessReviewSpec::default()
                    },
                    ..SelfSubjectAccessReview::default()
                };
                let answer = api
                    .create(&PostParams::default(), &review)
                    .await
                    .map_err(api_error)?;
                out.push(answer.status.is_some_and(|s| s.allowed));
            }
            Ok(out)
        })
    }

    fn observe(&self) -> BoxFut<'_, Result<Observed, PortError>> {
        Box::pin(async move {
            let info = self.client.apiserver_version().await.map_err(api_error)?;
            let apiserver = version_of(&info.git_version, "the API server")?;
            let mut items = Vec::new();
            items.extend(self.list_values::<Node>().await?);
            items.extend(self.list_values::<Pod>().await?);
            items.extend(self.list_values::<PodDisruptionBudget>().await?);
            items.extend(self.list_values::<Deployment>().await?);
            items.extend(self.list_values::<StatefulSet>().await?);
            items.extend(self.list_values::<DaemonSet>().await?);
            items.extend(self.list_values::<ReplicaSet>().await?);
            // What storage checks may prove; an identity that may not list them has none.
            match self.list_values::<StorageClass>().await {
                Ok(classes) => items.extend(classes),
                Err(e) if !e.is_retryable() => {
                    tracing::warn!(error = %e, "StorageClasses not listed: no storage checks");
                }
                Err(e) => return Err(e),
            }
            // kube-proxy's mode and kubeadm's stored configuration, when this identity may
            // read them (a refusal only leaves them unjudged).
            let system: Api<k8s_openapi::api::core::v1::ConfigMap> =
                Api::namespaced(self.client.clone(), "kube-system");
            for name in ["kube-proxy", "kubeadm-config"] {
                match system.get_opt(name).await.map_err(api_error) {
                    Ok(Some(cm)) => {
                        let mut v = serde_json::to_value(&cm)
                            .map_err(|e| PortError::fatal(e.to_string()))?;
                        v["kind"] = json!("ConfigMap");
                        items.push(v);
                    }
                    Ok(None) => {}
                    Err(e) if !e.is_retryable() => {
                        tracing::warn!(error = %e, configmap = name, "not read: left unjudged");
                    }
                    Err(e) => return Err(e),
                }
            }
            let list = json!({ "kind": "List", "apiVersion": "v1", "items": items });
            let inventory = Inventory::from_kubectl_value(&list)
                .map_err(|e| PortError::fatal(format!("reading the cluster: {e}")))?;
            Ok(Observed {
                apiserver,
                inventory,
            })
        })
    }

    fn node_status<'a>(&'a self, host: &'a Host) -> BoxFut<'a, Result<NodeStatus, PortError>> {
        let node = host.as_str();
        Box::pin(async move {
            let api: Api<Node> = Api::all(self.client.clone());
            let n = api.get(node).await.map_err(api_error)?;
            let mut v = serde_json::to_value(&n).map_err(|e| PortError::fatal(e.to_string()))?;
            v["kind"] = json!("Node");
            // The node's static pods tell its control-plane versions.
            let mut items = vec![v];
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), "kube-system");
            let statics = pods
                .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
                .await
                .map_err(api_error)?;
            for p in statics.items {
                let mut pv =
                    serde_json::to_value(&p).map_err(|e| PortError::fatal(e.to_string()))?;
                pv["kind"] = json!("Pod");
                items.push(pv);
            }
            let inv = Inventory::from_kubectl_value(&json!({"kind": "List", "items": items}))
                .map_err(|e| PortError::fatal(format!("node {node}: {e}")))?;
            let n = inv
                .nodes
                .into_iter()
                .next()
                .ok_or_else(|| PortError::fatal(format!("node {node}: not in the answer")))?;
            let control_plane_ready = inv
                .pods
                .iter()
                .filter(|p| {
                    p.labels.get("component").is_some_and(|c| {
                        matches!(
                            c.as_str(),
                            "kube-apiserver" | "kube-controller-manager" | "kube-scheduler"
                        )
                    })
                })
                .all(|p| p.ready);
            Ok(NodeStatus {
                ready: n.ready,
                unschedulable: n.unschedulable,
                kubelet_version: n.kubelet,
                control_plane: n.control_plane.filter(|c| c.observed),
                control_plane_ready,
                extended: n.extended,
            })
        })
    }

    fn cordon<'a>(&'a self, host: &'a Host) -> BoxFut<'a, Result<(), PortError>> {
        let node = host.as_str();
        Box::pin(self.set_unschedulable(node, true))
    }

    fn uncordon<'a>(&'a self, host: &'a Host) -> BoxFut<'a, Result<(), PortError>> {
        let node = host.as_str();
        Box::pin(self.set_unschedulable(node, false))
    }

    fn pods_on<'a>(&'a self, host: &'a Host) -> BoxFut<'a, Result<Vec<PodInv>, PortError>> {
        let node = host.as_str();
        Box::pin(self.pods(ListParams::default().fields(&format!("spec.nodeName={node}"))))
    }

    fn pod_health(&self) -> BoxFut<'_, Result<Vec<PodHealth>, PortError>> {
        Box::pin(async move {
            if let Some(pods) = self.health.read(&self.client) {
                return Ok(pods);
            }
            let mut out = Vec::new();
            let params = ListParams::default().fields(&crate::podwatch::health_fields());
            self.pod_pages(params, |p: HealthPod| {
                out.push(p.health());
                Ok(())
            })
            .await?;
            Ok(out)
        })
    }

    fn evict<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        uid: &'a str,
    ) -> BoxFut<'a, Result<Eviction, PortError>> {
        Box::pin(async move {
            let api: Api<Pod> = Api::namespaced(self.no_retry.clone(), namespace);
            let body = EvictionBody {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    namespace: Some(namespace.to_string()),
                    ..ObjectMeta::default()
                },
                delete_options: Some(DeleteOptions {
                    preconditions: (!uid.is_empty()).then(|| Preconditions {
                        uid: Some(uid.to_string()),
                        resource_version: None,
                    }),
                    ..DeleteOptions::default()
                }),
            };
            let answer: Result<Value, kube::Error> = api
                .create_subresource("eviction", name, &PostParams::default(), &body)
                .await;
            match answer {
                Ok(_) => Ok(Eviction::Evicted),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(Eviction::Gone),
                // A uid precondition that no longer holds: a new pod of the same name.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Eviction::Gone),
                // The apiserver's answer for a pod under several budgets: it never says yes,
                // so retrying until the drain timeout only hides the cause.
                Err(kube::Error::Api(s))
                    if s.code == 500 && s.message.contains("more than one PodDisruptionBudget") =>
                {
                    Err(PortError::fatal(format!(
                        "refusing to drain: pod {namespace}/{name} is covered by more than one \
                         PodDisruptionBudget, which the API server never evicts (leave one \
                         budget per pod): {}",
                        s.message
                    ))
                    .with_fact("refused_several_budgets", format!("{namespace}/{name}")))
                }
                // A budget's refusal: a 429 whose cause is `DisruptionBudget` (its message
                // names the budget). A 429 without it is the API server shedding load (API
                // Priority and Fairness): an outage around the drain, not a budget.
                Err(kube::Error::Api(s)) if s.code == 429 && refused_by_budget(&s) => {
                    let cause = s
                        .details
                        .as_ref()
                        .and_then(|d| d.causes.iter().find(|c| c.reason == "DisruptionBudget"))
                        .map(|c| c.message.clone());
                    let message = cause.unwrap_or_else(|| s.message.clone());
                    Ok(Eviction::Blocked {
                        pdb: budget_in(&message),
                        message,
                    })
                }
                Err(e) => Err(api_error(e)),
            }
        })
    }

    fn pdb<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<PdbInv>, PortError>> {
        Box::pin(async move {
            let api: Api<PodDisruptionBudget> = Api::namespaced(self.client.clone(), namespace);
            let Some(b) = api.get_opt(name).await.map_err(api_error)? else {
                return Ok(None);
            };
            let v = serde_json::to_value(&b).map_err(|e| PortError::fatal(e.to_string()))?;
            Ok(Some(PdbInv::from_value(&v)))
        })
    }

    fn workload_of<'a>(
        &'a self,
        namespace: &'a str,
        owner: &'a Owner,
    ) -> BoxFut<'a, Result<Option<Workload>, PortError>> {
        Box::pin(async move {
            let named = |kind: &str, name: &str| Workload {
                kind: kind.to_string(),
                namespace: namespace.to_string(),
                name: name.to_string(),
            };
            match owner.kind.as_str() {
                "StatefulSet" | "Deployment" => Ok(Some(named(&owner.kind, &owner.name))),
                "ReplicaSet" => {
                    let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), namespace);
                    let Some(rs) = api.get_opt(&owner.name).await.map_err(api_error)? else {
                        return Ok(None);
                    };
                    Ok(rs
                        .metadata
                        .owner_references
                        .unwrap_or_default()
                        .iter()
                        .find(|o| o.controller == Some(true) && o.kind == "Deployment")
                        .map(|o| named("Deployment", &o.name)))
                }
                _ => Ok(None),
            }
        })
    }

    fn replicas<'a>(&'a self, workload: &'a Workload) -> BoxFut<'a, Result<u32, PortError>> {
        Box::pin(async move {
            scalable(workload)?;
            let s = scale_of(&self.client, workload, None)
                .await
                .map_err(api_error)?;
            Ok(replicas_in(&s))
        })
    }

    fn ensure_namespace<'a>(&'a self, name: &'a str) -> BoxFut<'a, Result<(), PortError>> {
        Box::pin(async move {
            let api: Api<Namespace> = Api::all(self.client.clone());
            if api.get_opt(name).await.map_err(api_error)?.is_some() {
                return Ok(());
            }
            let ns = Namespace {
                metadata: ObjectMeta {
                    name: Some(name.to_string()),
                    labels: Some(
                        [(
                            "app.kubernetes.io/managed-by".to_string(),
                            "upgraded".to_string(),
                        )]
                        .into(),
                    ),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            };
            match api.create(&PostParams::default(), &ns).await {
                Ok(_) => Ok(()),
                // Made meanwhile (another daemon, an operator): it is there, which is the point.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                Err(e) => Err(api_error(e)),
            }
        })
    }

    fn create_probe<'a>(&'a self, manifest: &'a Value) -> BoxFut<'a, Result<(), PortError>> {
        Box::pin(self.create_adopting::<Pod>(manifest, "Pod"))
    }

    fn probe<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<ProbePod>, PortError>> {
        Box::pin(async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let Some(pod) = api.get_opt(name).await.map_err(api_error)? else {
                return Ok(None);
            };
            Ok(Some(probe_pod(&pod)))
        })
    }

    fn create_service<'a>(
        &'a self,
        manifest: &'a Value,
    ) -> BoxFut<'a, Result<Option<String>, PortError>> {
        Box::pin(async move {
            self.create_adopting::<Service>(manifest, "Service").await?;
            let ns = manifest["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default();
            let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
            let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
            Ok(api
                .get_opt(name)
                .await
                .map_err(api_error)?
                .and_then(|s| s.spec)
                .and_then(|s| s.cluster_ip))
        })
    }

    fn delete_service<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>> {
        Box::pin(self.delete_if_there::<Service>(namespace, name, DeleteParams::default()))
    }

    fn create_claim<'a>(&'a self, manifest: &'a Value) -> BoxFut<'a, Result<(), PortError>> {
        Box::pin(self.create_adopting::<PersistentVolumeClaim>(manifest, "PersistentVolumeClaim"))
    }

    fn delete_claim<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>> {
        Box::pin(self.delete_if_there::<PersistentVolumeClaim>(
            namespace,
            name,
            DeleteParams::default(),
        ))
    }

    fn delete_probe<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>> {
        Box::pin(self.delete_if_there::<Pod>(namespace, name, DeleteParams::default()))
    }

    fn delete_probes<'a>(
        &'a self,
        namespace: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> BoxFut<'a, Result<usize, PortError>> {
        Box::pin(async move {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let selector: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let pods = api
                .list(&ListParams::default().labels(&selector.join(",")))
                .await
                .map_err(api_error)?;
            for p in &pods.items {
                if let Some(name) = &p.metadata.name {
                    self.delete_if_there::<Pod>(namespace, name, DeleteParams::default())
                        .await?;
                }
            }
            Ok(pods.items.len())
        })
    }

    fn create_job<'a>(&'a self, manifest: &'a Value) -> BoxFut<'a, Result<(), PortError>> {
        Box::pin(self.create_adopting::<Job>(manifest, "Job"))
    }

    fn job<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<JobSeen>, PortError>> {
        Box::pin(async move {
            let api: Api<Job> = Api::namespaced(self.client.clone(), namespace);
            let Some(job) = api.get_opt(name).await.map_err(api_error)? else {
                return Ok(None);
            };
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
            let list = pods
                .list(
                    &ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}")),
                )
                .await
                .map_err(api_error)?;
            Ok(Some(job_seen(&job, list.items.last())))
        })
    }

    fn delete_job<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>> {
        // Its pods go with it (a Job's default is to orphan them).
        Box::pin(self.delete_if_there::<Job>(namespace, name, DeleteParams::background()))
    }

    fn addon_images(&self) -> BoxFut<'_, Result<AddonImages, PortError>> {
        Box::pin(async move {
            let first_image = |spec: Option<k8s_openapi::api::core::v1::PodSpec>| {
                spec.and_then(|s| s.containers.first().and_then(|c| c.image.clone()))
            };
            let ds: Api<DaemonSet> = Api::namespaced(self.client.clone(), "kube-system");
            let dep: Api<Deployment> = Api::namespaced(self.client.clone(), "kube-system");
            let kube_proxy = ds
                .get_opt("kube-proxy")
                .await
                .map_err(api_error)?
                .and_then(|d| first_image(d.spec.and_then(|s| s.template.spec)));
            let coredns = dep
                .get_opt("coredns")
                .await
                .map_err(api_error)?
                .and_then(|d| first_image(d.spec.and_then(|s| s.template.spec)));
            Ok(AddonImages {
                kube_proxy,
                coredns,
            })
        })
    }

    fn helm_releases(&self) -> BoxFut<'_, Result<Value, PortError>> {
        Box::pin(async move {
            let api: Api<k8s_openapi::api::core::v1::Secret> = Api::all(self.client.clone());
            let list = api
                .list(&ListParams::default().labels("owner=helm,status=deployed"))
                .await
                .map_err(api_error)?;
            let mut items = Vec::new();
            for s in list.items {
                let mut v =
                    serde_json::to_value(&s).map_err(|e| PortError::fatal(e.to_string()))?;
                v["kind"] = json!("Secret");
                items.push(v);
            }
            Ok(json!({"kind": "List", "apiVersion": "v1", "items": items}))
        })
    }

    fn kubelet_config<'a>(&'a self, host: &'a Host) -> BoxFut<'a, Result<Value, PortError>> {
        Box::pin(async move {
            let path = format!(
                "/api/v1/nodes/{}/proxy/configz",
                percent_encoding::utf8_percent_encode(
                    host.as_str(),
                    percent_encoding::NON_ALPHANUMERIC
                )
            );
            let req = hyper::Request::get(path)
                .body(Vec::new())
                .map_err(|e| PortError::fatal(e.to_string()))?;
            let v: Value = self.client.request(req).await.map_err(api_error)?;
            Ok(v["kubeletconfig"].clone())
        })
    }

    fn node_annotation<'a>(
        &'a self,
        host: &'a Host,
        key: &'a str,
    ) -> BoxFut<'a, Result<Option<String>, PortError>> {
        Box::pin(async move {
            let api: Api<Node> = Api::all(self.client.clone());
            let n = api.get(host.as_str()).await.map_err(api_error)?;
            Ok(n.metadata.annotations.and_then(|mut a| a.remove(key)))
        })
    }

    fn annotate_node<'a>(
        &'a self,
        host: &'a Host,
        key: &'a str,
        value: &'a str,
    ) -> BoxFut<'a, Result<(), PortError>> {
        Box::pin(async move {
            let api: Api<Node> = Api::all(self.client.clone());
            let patch = json!({"metadata": {"annotations": {key: value}}});
            api.patch(host.as_str(), &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(api_error)?;
            Ok(())
        })
    }

    fn set_kube_proxy<'a>(&'a self, version: Version) -> BoxFut<'a, Result<Facts, PortError>> {
        Box::pin(async move {
            let api: Api<DaemonSet> = Api::namespaced(self.client.clone(), "kube-system");
            let mut facts = Facts::new();
            let Some(ds) = api.get_opt("kube-proxy").await.map_err(api_error)? else {
                facts.insert("kube_proxy".into(), "absent".into());
                return Ok(facts);
            };
            let containers = ds
                .spec
                .and_then(|s| s.template.spec)
                .map(|s| s.containers)
                .unwrap_or_default();
            let Some(image) = containers
                .iter()
                .find(|c| c.name == "kube-proxy")
                .and_then(|c| c.image.clone())
            else {
                return Err(PortError::fatal(
                    "daemonset kube-system/kube-proxy has no kube-proxy container image",
                ));
            };
            // The registry and repository stay; only the tag changes.
            let repo = match image.rsplit_once(':') {
                Some((r, tag)) if !tag.contains('/') => r.to_string(),
                _ => image.clone(),
            };
            let want = format!("{repo}:{version}");
            facts.insert("image_before".into(), image.clone());
            facts.insert("image".into(), want.clone());
            if image != want {
                // Strategic merge: the container is matched by name, the others are kept.
                let patch = json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "kube-proxy", "image": want}
                ]}}}});
                api.patch(
                    "kube-proxy",
                    &PatchParams::default(),
                    &Patch::Strategic(patch),
                )
                .await
                .map_err(api_error)?;
            }
            Ok(facts)
        })
    }

    fn change_replicas<'a>(
        &'a self,
        workload: &'a Workload,
        from: u32,
        to: u32,
    ) -> BoxFut<'a, Result<ScaleChange, PortError>> {
        Box::pin(async move {
            scalable(workload)?;
            let want = i32::try_from(to)
                .map_err(|_| PortError::fatal(format!("{workload}: {to} replicas")))?;
            // A conflict means the object changed between read and write: read again.
            for _ in 0..5 {
                let mut s = scale_of(&self.client, workload, None)
                    .await
                    .map_err(api_error)?;
                let have = replicas_in(&s);
                if have != from {
                    return Ok(ScaleChange::Found(have));
                }
                s.spec = Some(ScaleSpec {
                    replicas: Some(want),
                });
                s.status = None;
                match scale_of(&self.client, workload, Some(&s)).await {
                    Ok(_) => return Ok(ScaleChange::Changed),
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    Err(e) => return Err(api_error(e)),
                }
            }
            Err(PortError::retryable(format!(
                "{workload}: the scale kept changing under us (5 conflicts)"
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_read_from_the_apiservers_message() {
        assert_eq!(
            budget_in("The disruption budget web needs 9 healthy pods and has 9 currently")
                .as_deref(),
            Some("web")
        );
        assert_eq!(
            budget_in("Cannot evict pod as it would violate the pod's disruption budget."),
            None
        );
    }
}
