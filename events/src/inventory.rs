//! The cluster as the planner sees it, and how to read it from what an operator can produce
//! today: `kubectl get nodes,pods,pdb,deploy,sts,ds -A -o json` (one `List`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::quantity;
use crate::time::Timestamp;
use crate::version::Version;

/// Labels, annotations and node selectors.
pub type Labels = BTreeMap<String, String>;

/// Where a node's cgroup version comes from: the node object does not say, so the operator
/// (or a preflight run) records it as this annotation or label (`v1` or `v2`).
pub const CGROUP_KEY: &str = "upgraded.dev/cgroup-version";
/// The node annotation where kubeadm kept the node's CRI socket until 1.34's upgrade moved
/// it into `/var/lib/kubelet/instance-config.yaml` (a rollback below 1.34 puts it back).
pub const CRI_SOCKET_KEY: &str = "kubeadm.alpha.kubernetes.io/cri-socket";

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

impl Resources {
    pub const ZERO: Resources = Resources {
        cpu_millis: 0,
        memory_bytes: 0,
    };
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Taint {
    pub key: String,
    pub value: String,
    /// NoSchedule, PreferNoSchedule or NoExecute.
    pub effect: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Toleration {
    /// Empty with `Exists` tolerates every taint.
    pub key: String,
    /// `Equal` (default) or `Exists`.
    pub operator: String,
    pub value: String,
    /// Empty matches every effect.
    pub effect: String,
}

impl Toleration {
    pub fn tolerates(&self, t: &Taint) -> bool {
        let effect = self.effect.is_empty() || self.effect == t.effect;
        let key = self.key.is_empty() || self.key == t.key;
        let value = self.operator == "Exists" || self.value == t.value;
        effect && key && value
    }
}

/// Versions of the control-plane components running on a control-plane node (from its static
/// pods' images).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ControlPlane {
    pub apiserver: Version,
    pub controller_manager: Version,
    pub scheduler: Version,
    /// Image tag of the stacked etcd member on this node; `None`: no etcd pod here.
    pub etcd: Option<String>,
    /// False when no static pods were found and the kubelet's version was assumed.
    pub observed: bool,
}

/// What a node is to an upgrade: a control-plane node (kubeadm upgrades its static pods) or
/// a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeInv {
    pub name: String,
    pub role: Role,
    pub labels: Labels,
    /// `metadata.creationTimestamp`: when the machine joined.
    pub created: Option<Timestamp>,
    pub kubelet: Version,
    pub kube_proxy: Option<Version>,
    pub kernel: String,
    pub os_image: String,
    /// `containerd://1.7.24`.
    pub runtime: String,
    pub arch: String,
    /// 1 or 2 when known.
    pub cgroup: Option<u8>,
    pub allocatable: Resources,
    /// Allocatable extended resources (`nvidia.com/gpu`, SR-IOV VFs: a `domain/name` key),
    /// as their device plugins registered them: the devices check's baseline.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extended: BTreeMap<String, u64>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub ready: bool,
    pub control_plane: Option<ControlPlane>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Owner {
    pub kind: String,
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PodInv {
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub labels: Labels,
    /// The controlling owner, resolved through ReplicaSets to their Deployment.
    pub owner: Option<Owner>,
    pub requests: Resources,
    pub node_selector: Labels,
    pub tolerations: Vec<Toleration>,
    pub empty_dir: bool,
    /// hostPath or local volumes: data that stays on the node.
    pub local_storage: bool,
    /// Static pod mirror (kubelet-managed; a drain leaves it alone).
    pub mirror: bool,
    pub phase: String,
    pub ready: bool,
    /// A container is waiting in CrashLoopBackOff (the health gate's measure).
    #[serde(default)]
    pub crash_looping: bool,
    /// `metadata.uid`: tells a replacement pod of the same name from the evicted one.
    #[serde(default)]
    pub uid: String,
}

impl PodInv {
    /// One Pod object as the API returns it. Its owner is the direct controller (a
    /// ReplicaSet is not resolved to its Deployment: that needs the ReplicaSets).
    pub fn from_value(v: &Value) -> Result<PodInv, String> {
        parse_pod(v, &BTreeMap::new(), &std::collections::BTreeSet::new())
    }

    pub fn is_daemonset(&self) -> bool {
        self.owner.as_ref().is_some_and(|o| o.kind == "DaemonSet")
    }

    /// Succeeded or Failed pods hold no resources and are deleted by a drain.
    pub fn is_finished(&self) -> bool {
        self.phase == "Succeeded" || self.phase == "Failed"
    }

    /// A drain evicts it, and its controller must place it again elsewhere.
    pub fn is_evicted_and_replaced(&self) -> bool {
        !self.mirror && !self.is_daemonset() && !self.is_finished() && self.owner.is_some()
    }

    /// A drain without `--force` refuses it.
    pub fn is_unmanaged(&self) -> bool {
        !self.mirror && !self.is_finished() && self.owner.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum IntOrPercent {
    Int(u32),
    Percent(u32),
}

impl IntOrPercent {
    fn parse(v: &Value) -> Option<IntOrPercent> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .map(|n| IntOrPercent::Int(n.min(u32::MAX as u64) as u32)),
            Value::String(s) => match s.strip_suffix('%') {
                Some(p) => p.trim().parse().ok().map(IntOrPercent::Percent),
                None => s.trim().parse().ok().map(IntOrPercent::Int),
            },
            _ => None,
        }
    }

    /// The absolute number against `total`, rounding up like the disruption controller.
    pub fn of(&self, total: u32) -> u32 {
        match self {
            IntOrPercent::Int(n) => *n,
            IntOrPercent::Percent(p) => (u64::from(*p) * u64::from(total)).div_ceil(100) as u32,
        }
    }
}

impl std::fmt::Display for IntOrPercent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IntOrPercent::Int(n) => write!(f, "{n}"),
            IntOrPercent::Percent(p) => write!(f, "{p}%"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SelectorRequirement {
    pub key: String,
    /// In, NotIn, Exists, DoesNotExist.
    pub operator: String,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<SelectorRequirement>,
}

impl LabelSelector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| {
                let have = labels.get(&r.key);
                match r.operator.as_str() {
                    "In" => have.is_some_and(|v| r.values.contains(v)),
                    "NotIn" => !have.is_some_and(|v| r.values.contains(v)),
                    "Exists" => have.is_some(),
                    "DoesNotExist" => have.is_none(),
                    _ => false,
                }
            })
    }

    fn parse(v: &Value) -> LabelSelector {
        let match_labels = string_map(&v["matchLabels"]);
        let match_expressions = v["matchExpressions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| SelectorRequirement {
                        key: str_of(&r["key"]),
                        operator: str_of(&r["operator"]),
                        values: r["values"]
                            .as_array()
                            .map(|v| {
                                v.iter()
                                    .filter_map(|s| s.as_str().map(str::to_string))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        LabelSelector {
            match_labels,
            match_expressions,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PdbInv {
    pub namespace: String,
    pub name: String,
    pub selector: LabelSelector,
    pub min_available: Option<IntOrPercent>,
    pub max_unavailable: Option<IntOrPercent>,
    /// `status.disruptionsAllowed`: evictions allowed right now.
    pub disruptions_allowed: u32,
    pub current_healthy: u32,
    pub desired_healthy: u32,
    pub expected_pods: u32,
}

impl PdbInv {
    /// One PodDisruptionBudget object as the API returns it.
    pub fn from_value(v: &Value) -> PdbInv {
        parse_pdb(v)
    }

    /// The budget can never allow an eviction at the workload's full size (not only now).
    pub fn never_allows(&self) -> bool {
        !self.allows_at(self.expected_pods)
    }

    /// Whether the budget allows an eviction when `pods` pods are expected and all healthy
    /// (what scaling the workload to `pods` would give).
    pub fn allows_at(&self, pods: u32) -> bool {
        match (&self.max_unavailable, &self.min_available) {
            (Some(mu), _) => mu.of(pods) > 0,
            (None, Some(ma)) => ma.of(pods) < pods,
            (None, None) => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ControllerInv {
    /// Deployment, StatefulSet or DaemonSet.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub replicas: u32,
    pub ready: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Inventory {
    pub nodes: Vec<NodeInv>,
    pub pods: Vec<PodInv>,
    pub pdbs: Vec<PdbInv>,
    pub controllers: Vec<ControllerInv>,
    /// The StorageClasses' names (what storage checks may prove).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub storage_classes: Vec<String>,
    /// Pods mounting a volume through an in-tree plugin a release removed (cephfs, rbd).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_tree_volumes: Vec<InTreeVolume>,
    /// What the cluster was seen using of APIs that releases remove (the removed-API gate).
    #[serde(default, skip_serializing_if = "crate::apis::ApiUsage::is_empty")]
    pub api_usage: crate::apis::ApiUsage,
    /// What each node's agent read on the machine at the start (`drift::fingerprint`'s
    /// host facts), by node; `unread` says why a node could not be read.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosts: BTreeMap<String, crate::Facts>,
    /// kube-proxy's `mode` (kube-system/kube-proxy ConfigMap's `config.conf`; empty: the
    /// default, iptables), when the ConfigMap was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_proxy_mode: Option<String>,
    /// The `apiVersion` of kubeadm's stored ClusterConfiguration (kube-system/kubeadm-config),
    /// when it was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeadm_config_api: Option<String>,
}

/// A top-level `key: value` of a YAML document, by line (the documents kubeadm writes
/// keep these keys unindented); quotes removed.
fn yaml_top_level(doc: &str, key: &str) -> Option<String> {
    doc.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let v = rest.split('#').next().unwrap_or_default().trim();
        Some(v.trim_matches(|c| c == '"' || c == '\'').to_string())
    })
}

/// A pod that mounts a volume through an in-tree plugin some release removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InTreeVolume {
    pub namespace: String,
    pub pod: String,
    pub plugin: String,
    /// The minor release (1.x) that removed the plugin.
    pub removed_in: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("the snapshot is not JSON: {0}")]
    Json(String),
    #[error(
        "the snapshot is not a Kubernetes List (`kubectl get nodes,pods,pdb,deploy,sts,ds -A -o json`): {0}"
    )]
    NotAList(String),
    #[error("{kind} item {index} ({}): {what}", printable(.name))]
    Item {
        kind: String,
        index: usize,
        name: String,
        what: String,
    },
    #[error("node {0:?} appears twice")]
    DuplicateNode(String),
    #[error("the snapshot has no nodes: include `nodes` in the kubectl get")]
    NoNodes,
}

/// The annotation `kubectl apply` keeps the object as last applied in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A listed object whose last-applied configuration names an API version some release
/// removes (the next `kubectl apply` of the same manifest would fail once it is gone).
fn applied_removed(it: &Value) -> Option<crate::apis::ManifestObject> {
    let text = it["metadata"]["annotations"][LAST_APPLIED].as_str()?;
    let applied: Value = serde_json::from_str(text).ok()?;
    let api_version = applied["apiVersion"].as_str()?;
    let kind = applied["kind"].as_str()?;
    crate::apis::removed_kind(api_version, kind)?;
    let namespace = str_of(&it["metadata"]["namespace"]);
    let name = str_of(&it["metadata"]["name"]);
    let listed = it["kind"].as_str().unwrap_or(kind).to_lowercase();
    Some(crate::apis::ManifestObject {
        source: if namespace.is_empty() {
            format!("{listed}/{name}")
        } else {
            format!("{listed}/{namespace}/{name}")
        },
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        namespace,
        name,
    })
}

/// A name for a message: as it is when it is plain, quoted and escaped when it holds control
/// characters (a forged snapshot's name must not break the message's line).
fn printable(name: &str) -> String {
    if name.chars().any(|c| c.is_control() || c == '"') {
        format!("{name:?}")
    } else {
        name.to_string()
    }
}

/// The annotation of a static pod's mirror in the API.
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// Kubernetes object names of nodes are DNS-1123 subdomains: lowercase letters, digits, `-`
/// and `.`, at most 253 characters, alphanumeric at both ends. A name that is not (a hostile
/// or corrupted API answer) is refused before it goes anywhere near a selector or a shell.
pub fn check_node_name(name: &str) -> Result<(), String> {
    check_name("node name", name, 253, true)
}

/// The apiserver's rule for object names (`subdomain`: DNS-1123 subdomain, ≤ 253) and
/// namespaces (DNS-1123 label, ≤ 63, no dots). Every name the planner reads is checked, so
/// nothing that reaches a rendered command or a selector is other than the apiserver allows.
fn check_name(what: &str, name: &str, max: usize, subdomain: bool) -> Result<(), String> {
    let ok_char = |c: char| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (subdomain && c == '.')
    };
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() || name.len() > max {
        return Err(format!("{what} {name:?} must be 1 to {max} characters"));
    }
    if !name.chars().all(ok_char) || !alnum(name.chars().next()) || !alnum(name.chars().last()) {
        let kind = if subdomain {
            "a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')"
        } else {
            "a DNS-1123 label (lowercase letters, digits and '-')"
        };
        return Err(format!("{what} {name:?} is not {kind}"));
    }
    Ok(())
}

/// A label value as the apiserver allows it: at most 63 characters of `[A-Za-z0-9_.-]`,
/// alphanumeric at both ends, or empty.
fn check_label_value(key: &str, value: &str) -> Result<(), String> {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let ok = value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && alnum(value.chars().next())
            && alnum(value.chars().last()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "label {key:?} has the value {value:?}, which the apiserver would refuse \
             (at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends)"
        ))
    }
}

/// The names of one List item: its own, its namespace, its owner's, and a node's label values.
fn check_item_names(it: &Value) -> Result<(), String> {
    let name = str_of(&it["metadata"]["name"]);
    if !name.is_empty() {
        check_name("name", &name, 253, true)?;
    }
    let ns = str_of(&it["metadata"]["namespace"]);
    if !ns.is_empty() {
        check_name("namespace", &ns, 63, false)?;
    }
    if let Some(o) = controller_ref(it)
        && !o.name.is_empty()
    {
        check_name("owner name", &o.name, 253, true)?;
    }
    if it["kind"] == "Node" {
        for (k, v) in string_map(&it["metadata"]["labels"]) {
            check_label_value(&k, &v)?;
        }
    }
    Ok(())
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn string_map(v: &Value) -> Labels {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn condition_true(v: &Value, kind: &str) -> bool {
    v["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}

/// `registry.k8s.io/kube-apiserver:v1.32.4@sha256:…` → `v1.32.4`.
fn image_tag(image: &str) -> Option<&str> {
    let image = image.split('@').next()?;
    let (_, tag) = image.rsplit_once(':')?;
    (!tag.contains('/')).then_some(tag)
}

fn parse_time(s: &str) -> Option<Timestamp> {
    s.parse::<jiff::Timestamp>()
        .ok()
        .map(|t| Timestamp(t.as_millisecond()))
}

impl Inventory {
    /// Reads a `kubectl get … -o json` List. Kinds other than Node, Pod, PodDisruptionBudget,
    /// Deployment, StatefulSet, DaemonSet and ReplicaSet are ignored.
    pub fn from_kubectl_json(text: &str) -> Result<Inventory, InventoryError> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| InventoryError::Json(e.to_string()))?;
        Inventory::from_kubectl_value(&v)
    }

    pub fn from_kubectl_value(v: &Value) -> Result<Inventory, InventoryError> {
        let items = match (v["kind"].as_str(), v["items"].as_array()) {
            (Some(k), Some(items)) if k.ends_with("List") => items,
            (Some(k), _) => return Err(InventoryError::NotAList(format!("kind is {k:?}"))),
            _ => return Err(InventoryError::NotAList("no kind and items".into())),
        };
        let mut inv = Inventory::default();
        // ReplicaSet name → its Deployment, when the List has ReplicaSets.
        let mut rs_owner: BTreeMap<(String, String), String> = BTreeMap::new();
        for it in items {
            if it["kind"] == "ReplicaSet"
                && let Some(o) = controller_ref(it)
                && o.kind == "Deployment"
            {
                rs_owner.insert(
                    (
                        str_of(&it["metadata"]["namespace"]),
                        str_of(&it["metadata"]["name"]),
                    ),
                    o.name,
                );
            }
        }
        for (index, it) in items.iter().enumerate() {
            let kind = it["kind"].as_str().unwrap_or_default();
            let name = str_of(&it["metadata"]["name"]);
            let err = |what: String| InventoryError::Item {
                kind: kind.to_string(),
                index,
                name: name.clone(),
                what,
            };
            if name.is_empty() && matches!(kind, "Node" | "Pod" | "PodDisruptionBudget") {
                return Err(err("metadata.name is missing".into()));
            }
            check_item_names(it).map_err(err)?;
            if let Some(o) = applied_removed(it) {
                inv.api_usage.applied.push(o);
            }
            match kind {
                "Node" => inv.nodes.push(parse_node(it).map_err(err)?),
                "Pod" => {}
                "PodDisruptionBudget" => inv.pdbs.push(parse_pdb(it)),
                "StorageClass" if !name.is_empty() => inv.storage_classes.push(name),
                "Deployment" | "StatefulSet" => {
                    let replicas = it["spec"]["replicas"].as_u64().unwrap_or(1) as u32;
                    inv.controllers.push(ControllerInv {
                        kind: kind.into(),
                        namespace: str_of(&it["metadata"]["namespace"]),
                        name,
                        replicas,
                        ready: it["status"]["readyReplicas"].as_u64().unwrap_or(0) as u32,
                    });
                }
                "DaemonSet" => inv.controllers.push(ControllerInv {
                    kind: kind.into(),
                    namespace: str_of(&it["metadata"]["namespace"]),
                    name,
                    replicas: it["status"]["desiredNumberScheduled"].as_u64().unwrap_or(0) as u32,
                    ready: it["status"]["numberReady"].as_u64().unwrap_or(0) as u32,
                }),
                _ => {}
            }
        }
        let deployments: std::collections::BTreeSet<(String, String)> = inv
            .controllers
            .iter()
            .filter(|c| c.kind == "Deployment")
            .map(|c| (c.namespace.clone(), c.name.clone()))
            .collect();
        for (index, it) in items.iter().enumerate() {
            if it["kind"] != "Pod" {
                continue;
            }
            for (plugin, removed_in) in crate::rules::removed_volumes(&it["spec"]["volumes"]) {
                inv.in_tree_volumes.push(InTreeVolume {
                    namespace: str_of(&it["metadata"]["namespace"]),
                    pod: str_of(&it["metadata"]["name"]),
                    plugin: plugin.to_string(),
                    removed_in,
                });
            }
            let pod =
                parse_pod(it, &rs_owner, &deployments).map_err(|what| InventoryError::Item {
                    kind: "Pod".into(),
                    index,
                    name: str_of(&it["metadata"]["name"]),
                    what,
                })?;
            inv.pods.push(pod);
        }
        if inv.nodes.is_empty() {
            return Err(InventoryError::NoNodes);
        }
        let mut seen = std::collections::BTreeSet::new();
        for n in &inv.nodes {
            if !seen.insert(n.name.as_str()) {
                return Err(InventoryError::DuplicateNode(n.name.clone()));
            }
        }
        inv.attach_control_plane(items);
        for it in items
            .iter()
            .filter(|i| i["kind"] == "ConfigMap" && i["metadata"]["namespace"] == "kube-system")
        {
            match it["metadata"]["name"].as_str() {
                Some("kube-proxy") => {
                    let conf = it["data"]["config.conf"].as_str().unwrap_or_default();
                    inv.kube_proxy_mode = Some(yaml_top_level(conf, "mode").unwrap_or_default());
                }
                Some("kubeadm-config") => {
                    let conf = it["data"]["ClusterConfiguration"]
                        .as_str()
                        .unwrap_or_default();
                    inv.kubeadm_config_api = yaml_top_level(conf, "apiVersion");
                }
                _ => {}
            }
        }
        Ok(inv)
    }

    /// Control-plane component versions from the static pods' images; kube-proxy per node
    /// from the kube-proxy pod on it, else from the kube-proxy DaemonSet's image.
    fn attach_control_plane(&mut self, items: &[Value]) {
        let daemon_set_proxy = items
            .iter()
            .find(|i| {
                i["kind"] == "DaemonSet"
                    && i["metadata"]["namespace"] == "kube-system"
                    && i["metadata"]["name"] == "kube-proxy"
            })
            .and_then(|ds| ds["spec"]["template"]["spec"]["containers"][0]["image"].as_str())
            .and_then(image_tag)
            .and_then(|t| t.parse::<Version>().ok());
        for n in &mut self.nodes {
            n.kube_proxy = daemon_set_proxy;
        }
        let mut comp: BTreeMap<(String, String), String> = BTreeMap::new();
        for it in items.iter().filter(|i| i["kind"] == "Pod") {
            let node = str_of(&it["spec"]["nodeName"]);
            let labels = string_map(&it["metadata"]["labels"]);
            let which = labels.get("component").cloned().or_else(|| {
                labels
                    .get("k8s-app")
                    .filter(|a| *a == "kube-proxy")
                    .cloned()
            });
            let Some(which) = which else { continue };
            let image = it["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap_or_default();
            if let Some(tag) = image_tag(image) {
                comp.insert((node, which), tag.to_string());
            }
        }
        for n in &mut self.nodes {
            let get = |c: &str| comp.get(&(n.name.clone(), c.to_string()));
            let ver = |c: &str| get(c).and_then(|t| t.parse::<Version>().ok());
            if let Some(kp) = ver("kube-proxy") {
                n.kube_proxy = Some(kp);
            }
            if n.role != Role::ControlPlane {
                continue;
            }
            let api = ver("kube-apiserver");
            n.control_plane = Some(ControlPlane {
                apiserver: api.unwrap_or(n.kubelet),
                controller_manager: ver("kube-controller-manager").or(api).unwrap_or(n.kubelet),
                scheduler: ver("kube-scheduler").or(api).unwrap_or(n.kubelet),
                etcd: get("etcd").cloned(),
                observed: api.is_some(),
            });
        }
    }
}

fn controller_ref(it: &Value) -> Option<Owner> {
    let refs = it["metadata"]["ownerReferences"].as_array()?;
    refs.iter()
        .find(|r| r["controller"] == true)
        .or_else(|| refs.first())
        .map(|r| Owner {
            kind: str_of(&r["kind"]),
            name: str_of(&r["name"]),
        })
}

fn parse_node(it: &Value) -> Result<NodeInv, String> {
    let labels = string_map(&it["metadata"]["labels"]);
    let annotations = string_map(&it["metadata"]["annotations"]);
    let info = &it["status"]["nodeInfo"];
    let kubelet: Version = info["kubeletVersion"]
        .as_str()
        .ok_or("status.nodeInfo.kubeletVersion is missing")?
        .parse()
        .map_err(|e| format!("status.nodeInfo.kubeletVersion: {e}"))?;
    // Not status.nodeInfo.kubeProxyVersion: deprecated, often empty or "v0.0.0", gone in
    // 1.33. kube-proxy's version is its image's (`attach_control_plane`).
    let kube_proxy = None;
    let alloc = &it["status"]["allocatable"];
    let allocatable = Resources {
        cpu_millis: match alloc["cpu"].as_str() {
            Some(q) => {
                quantity::cpu_millis(q).map_err(|e| format!("status.allocatable.cpu: {e}"))?
            }
            None => 0,
        },
        memory_bytes: match alloc["memory"].as_str() {
            Some(q) => quantity::bytes(q).map_err(|e| format!("status.allocatable.memory: {e}"))?,
            None => 0,
        },
    };
    let extended = extended_resources(alloc)?;
    let role = if labels.contains_key("node-role.kubernetes.io/control-plane")
        || labels.contains_key("node-role.kubernetes.io/master")
    {
        Role::ControlPlane
    } else {
        Role::Worker
    };
    let cgroup = annotations
        .get(CGROUP_KEY)
        .or_else(|| labels.get(CGROUP_KEY))
        .and_then(|v| match v.trim_start_matches('v') {
            "1" => Some(1),
            "2" => Some(2),
            _ => None,
        });
    let taints = it["spec"]["taints"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| Taint {
                    key: str_of(&t["key"]),
                    value: str_of(&t["value"]),
                    effect: str_of(&t["effect"]),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(NodeInv {
        name: str_of(&it["metadata"]["name"]),
        role,
        created: it["metadata"]["creationTimestamp"]
            .as_str()
            .and_then(parse_time),
        labels,
        kubelet,
        kube_proxy,
        kernel: str_of(&info["kernelVersion"]),
        os_image: str_of(&info["osImage"]),
        runtime: str_of(&info["containerRuntimeVersion"]),
        arch: str_of(&info["architecture"]),
        cgroup,
        allocatable,
        extended,
        taints,
        unschedulable: it["spec"]["unschedulable"].as_bool().unwrap_or(false),
        ready: condition_true(it, "Ready"),
        control_plane: None,
    })
}

/// The extended resources among a node's allocatable: names with a domain
/// (`vendor.com/device`), whole numbers (the API allows no fractions of them).
fn extended_resources(alloc: &Value) -> Result<BTreeMap<String, u64>, String> {
    let mut out = BTreeMap::new();
    let Some(map) = alloc.as_object() else {
        return Ok(out);
    };
    for (name, q) in map {
        if !name.contains('/') || name.starts_with("hugepages-") {
            continue;
        }
        let q = q.as_str().unwrap_or_default();
        let n = quantity::bytes(q).map_err(|e| format!("status.allocatable[{name:?}]: {e}"))?;
        out.insert(name.clone(), n);
    }
    Ok(out)
}

fn requests_of(c: &Value) -> Result<Resources, String> {
    let r = &c["resources"]["requests"];
    Ok(Resources {
        cpu_millis: match r["cpu"].as_str() {
            Some(q) => quantity::cpu_millis(q).map_err(|e| format!("requests.cpu: {e}"))?,
            None => 0,
        },
        memory_bytes: match r["memory"].as_str() {
            Some(q) => quantity::bytes(q).map_err(|e| format!("requests.memory: {e}"))?,
            None => 0,
        },
    })
}

fn parse_pod(
    it: &Value,
    rs_owner: &BTreeMap<(String, String), String>,
    deployments: &std::collections::BTreeSet<(String, String)>,
) -> Result<PodInv, String> {
    let namespace = str_of(&it["metadata"]["namespace"]);
    let spec = &it["spec"];
    // The scheduler's effective request: the sum of the containers, or the largest init
    // container if that is larger.
    let mut sum = Resources::ZERO;
    for c in spec["containers"].as_array().into_iter().flatten() {
        let r = requests_of(c)?;
        sum.cpu_millis += r.cpu_millis;
        sum.memory_bytes += r.memory_bytes;
    }
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        let r = requests_of(c)?;
        sum.cpu_millis = sum.cpu_millis.max(r.cpu_millis);
        sum.memory_bytes = sum.memory_bytes.max(r.memory_bytes);
    }
    let owner = controller_ref(it).map(|o| {
        if o.kind != "ReplicaSet" {
            return o;
        }
        if let Some(d) = rs_owner.get(&(namespace.clone(), o.name.clone())) {
            return Owner {
                kind: "Deployment".into(),
                name: d.clone(),
            };
        }
        // Without the ReplicaSet objects: `NAME-HASH` belongs to Deployment `NAME`.
        match o.name.rsplit_once('-') {
            Some((d, _)) if deployments.contains(&(namespace.clone(), d.to_string())) => Owner {
                kind: "Deployment".into(),
                name: d.to_string(),
            },
            _ => o,
        }
    });
    let volumes = spec["volumes"].as_array();
    let has = |k: &str| volumes.is_some_and(|vs| vs.iter().any(|v| v.get(k).is_some()));
    let annotations = string_map(&it["metadata"]["annotations"]);
    Ok(PodInv {
        name: str_of(&it["metadata"]["name"]),
        node: spec["nodeName"].as_str().map(str::to_string),
        labels: string_map(&it["metadata"]["labels"]),
        owner,
        requests: sum,
        node_selector: string_map(&spec["nodeSelector"]),
        tolerations: spec["tolerations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| Toleration {
                        key: str_of(&t["key"]),
                        operator: t["operator"].as_str().unwrap_or("Equal").to_string(),
                        value: str_of(&t["value"]),
                        effect: str_of(&t["effect"]),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        empty_dir: has("emptyDir"),
        local_storage: has("hostPath") || has("local"),
        mirror: annotations.contains_key(MIRROR_ANNOTATION),
        phase: it["status"]["phase"]
            .as_str()
            .unwrap_or("Pending")
            .to_string(),
        ready: condition_true(it, "Ready"),
        crash_looping: it["status"]["containerStatuses"]
            .as_array()
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["state"]["waiting"]["reason"] == "CrashLoopBackOff")
            }),
        uid: str_of(&it["metadata"]["uid"]),
        namespace,
    })
}

fn parse_pdb(it: &Value) -> PdbInv {
    let st = &it["status"];
    let n = |v: &Value| v.as_u64().unwrap_or(0) as u32;
    PdbInv {
        namespace: str_of(&it["metadata"]["namespace"]),
        name: str_of(&it["metadata"]["name"]),
        selector: LabelSelector::parse(&it["spec"]["selector"]),
        min_available: IntOrPercent::parse(&it["spec"]["minAvailable"]),
        max_unavailable: IntOrPercent::parse(&it["spec"]["maxUnavailable"]),
        disruptions_allowed: n(&st["disruptionsAllowed"]),
        current_healthy: n(&st["currentHealthy"]),
        desired_healthy: n(&st["desiredHealthy"]),
        expected_pods: n(&st["expectedPods"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_dns_subdomains() {
        for ok in ["w-1", "r640-01.dc1.example", "a"] {
            assert!(check_node_name(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(254);
        for bad in [
            "",
            "W1",
            "w;rm -rf /",
            "-w",
            "w-",
            "a b",
            "n$(id)",
            "ü",
            long.as_str(),
        ] {
            assert!(check_node_name(bad).is_err(), "{bad}");
        }
    }

    fn node(name: &str) -> Value {
        serde_json::json!({"kind": "Node", "metadata": {"name": name, "labels": {}},
            "status": {"nodeInfo": {"kubeletVersion": "v1.32.4", "kubeProxyVersion": "v1.29.0"},
                       "allocatable": {"cpu": "4", "memory": "8Gi"}}})
    }

    /// kube-proxy's version is its image's, never `status.nodeInfo.kubeProxyVersion` (gone in
    /// kube-proxy's mode and kubeadm's stored API version, from their ConfigMaps.
    #[test]
    fn kube_proxy_mode_and_kubeadm_config_come_from_their_config_maps() {
        let mut items = serde_json::json!([
            {"kind": "ConfigMap", "metadata": {"namespace": "kube-system", "name": "kube-proxy"},
             "data": {"config.conf": "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nipvs:\n  scheduler: rr\nmode: \"ipvs\" # chosen\n"}},
            {"kind": "ConfigMap", "metadata": {"namespace": "kube-system", "name": "kubeadm-config"},
             "data": {"ClusterConfiguration": "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\n"}},
            {"kind": "ConfigMap", "metadata": {"namespace": "default", "name": "kube-proxy"},
             "data": {"config.conf": "mode: nftables\n"}}
        ]);
        if let Some(a) = items.as_array_mut() {
            a.push(serde_json::json!({
                "kind": "Node", "metadata": {"name": "w-1", "labels": {}},
                "status": {"nodeInfo": {"kubeletVersion": "v1.34.2"}}
            }));
        }
        let inv =
            Inventory::from_kubectl_value(&serde_json::json!({"kind": "List", "items": items}))
                .expect("inventory");
        assert_eq!(inv.kube_proxy_mode.as_deref(), Some("ipvs"));
        assert_eq!(
            inv.kubeadm_config_api.as_deref(),
            Some("kubeadm.k8s.io/v1beta3")
        );
        // Not read: not known (never guessed as the default).
        let bare = Inventory::from_kubectl_value(&serde_json::json!({"kind": "List", "items": [
            {"kind": "Node", "metadata": {"name": "w-1"}, "status": {"nodeInfo": {"kubeletVersion": "v1.34.2"}}}
        ]}))
        .expect("inventory");
        assert_eq!(bare.kube_proxy_mode, None);
        assert_eq!(bare.kubeadm_config_api, None);
    }

    /// 1.33, stale before): the pod on the node, else the DaemonSet.
    #[test]
    fn kube_proxy_comes_from_its_image_not_the_node_status() {
        let ds = serde_json::json!({"kind": "DaemonSet",
            "metadata": {"namespace": "kube-system", "name": "kube-proxy"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "kube-proxy", "image": "registry.k8s.io/kube-proxy:v1.32.4"}]}}},
            "status": {"desiredNumberScheduled": 2, "numberReady": 2}});
        let pod = serde_json::json!({"kind": "Pod",
            "metadata": {"namespace": "kube-system", "name": "kube-proxy-abcde",
                         "labels": {"k8s-app": "kube-proxy"}},
            "spec": {"nodeName": "w-2", "containers": [
                {"name": "kube-proxy", "image": "registry.k8s.io/kube-proxy:v1.31.6"}]},
            "status": {"phase": "Running"}});
        let list = |items: Vec<Value>| serde_json::json!({"kind": "List", "items": items});
        let inv = Inventory::from_kubectl_value(&list(vec![node("w-1"), node("w-2"), ds, pod]))
            .expect("inventory");
        let proxy: Vec<Option<String>> = inv
            .nodes
            .iter()
            .map(|n| n.kube_proxy.map(|v| v.to_string()))
            .collect();
        assert_eq!(
            proxy,
            [Some("v1.32.4".to_string()), Some("v1.31.6".to_string())]
        );
        let inv = Inventory::from_kubectl_value(&list(vec![node("w-1")])).expect("inventory");
        assert_eq!(inv.nodes[0].kube_proxy, None, "no image seen: unknown");
    }
}
