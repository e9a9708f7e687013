//! The model as Kubernetes objects (k8s-openapi types, so the JSON has the real shape), and
//! back from a patched Node.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1 as apps;
use k8s_openapi::api::autoscaling::v1 as autoscaling;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::policy::v1 as policy;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use upgraded_events::inventory::{IntOrPercent, LabelSelector, Labels, Taint, Toleration};

use crate::clock::Millis;
use crate::model::{CachedPod, Kind, OwnerRef, PodPhase, SimNode, SimPod, Workload, World};

pub fn time(ms: Millis) -> meta::Time {
    let t = k8s_openapi::jiff::Timestamp::from_millisecond(ms as i64)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
    meta::Time(t)
}

fn opt_map(m: &Labels) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then(|| m.clone())
}

/// `1500m`, `16`, `4Gi`, `70Mi`: the forms Kubernetes prints.
pub fn cpu_quantity(millis: u64) -> Quantity {
    if millis.is_multiple_of(1000) {
        Quantity((millis / 1000).to_string())
    } else {
        Quantity(format!("{millis}m"))
    }
}

pub fn memory_quantity(bytes: u64) -> Quantity {
    const UNITS: [(&str, u64); 3] = [("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    for (suffix, size) in UNITS {
        if bytes >= size && bytes.is_multiple_of(size) {
            return Quantity(format!("{}{suffix}", bytes / size));
        }
    }
    Quantity(bytes.to_string())
}

fn owner_reference(o: &OwnerRef) -> meta::OwnerReference {
    let api_version = match o.kind.as_str() {
        "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Deployment" => "apps/v1",
        _ => "v1",
    };
    meta::OwnerReference {
        api_version: api_version.into(),
        kind: o.kind.clone(),
        name: o.name.clone(),
        uid: o.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn taint(t: &Taint) -> core::Taint {
    core::Taint {
        key: t.key.clone(),
        value: (!t.value.is_empty()).then(|| t.value.clone()),
        effect: t.effect.clone(),
        time_added: None,
    }
}

fn toleration(t: &Toleration) -> core::Toleration {
    let some = |s: &String| (!s.is_empty()).then(|| s.clone());
    core::Toleration {
        key: some(&t.key),
        operator: some(&t.operator),
        value: some(&t.value),
        effect: some(&t.effect),
        toleration_seconds: None,
    }
}

pub fn label_selector(s: &LabelSelector) -> meta::LabelSelector {
    meta::LabelSelector {
        match_labels: opt_map(&s.match_labels),
        match_expressions: (!s.match_expressions.is_empty()).then(|| {
            s.match_expressions
                .iter()
                .map(|r| meta::LabelSelectorRequirement {
                    key: r.key.clone(),
                    operator: r.operator.clone(),
                    values: Some(r.values.clone()),
                })
                .collect()
        }),
    }
}

fn int_or_string(v: &IntOrPercent) -> IntOrString {
    match v {
        IntOrPercent::Int(n) => IntOrString::Int(*n as i32),
        IntOrPercent::Percent(p) => IntOrString::String(format!("{p}%")),
    }
}

fn condition(kind: &str, ok: bool, reason: &str, since: Millis) -> core::NodeCondition {
    core::NodeCondition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: None,
        last_heartbeat_time: Some(time(since)),
        last_transition_time: Some(time(since)),
    }
}

pub fn node(n: &SimNode, now: Millis) -> core::Node {
    let mut allocatable = BTreeMap::new();
    allocatable.insert("cpu".to_string(), cpu_quantity(n.cpu_millis));
    allocatable.insert("memory".to_string(), memory_quantity(n.memory_bytes));
    allocatable.insert("pods".to_string(), Quantity(n.max_pods.to_string()));
    let (ready, reason) = if n.down {
        (false, "NodeStatusUnknown")
    } else if n.ready {
        (true, "KubeletReady")
    } else {
        (false, "KubeletNotReady")
    };
    let mut taints: Vec<core::Taint> = n.taints.iter().map(taint).collect();
    if n.unschedulable {
        taints.push(core::Taint {
            key: crate::model::UNSCHEDULABLE_TAINT.into(),
            value: None,
            effect: "NoSchedule".into(),
            time_added: None,
        });
    }
    core::Node {
        metadata: meta::ObjectMeta {
            name: Some(n.name.clone()),
            uid: Some(n.uid.clone()),
            resource_version: Some(n.resource_version.to_string()),
            creation_timestamp: Some(time(n.created)),
            labels: opt_map(&n.labels),
            annotations: opt_map(&n.annotations),
            ..Default::default()
        },
        spec: Some(core::NodeSpec {
            unschedulable: n.unschedulable.then_some(true),
            taints: (!taints.is_empty()).then_some(taints),
            pod_cidr: None,
            ..Default::default()
        }),
        status: Some(core::NodeStatus {
            addresses: Some(vec![
                core::NodeAddress {
                    type_: "InternalIP".into(),
                    address: n.address.clone(),
                },
                core::NodeAddress {
                    type_: "Hostname".into(),
                    address: n.name.clone(),
                },
            ]),
            allocatable: Some(allocatable.clone()),
            capacity: Some(allocatable),
            conditions: Some(vec![
                condition(
                    "MemoryPressure",
                    false,
                    "KubeletHasSufficientMemory",
                    n.created,
                ),
                condition("DiskPressure", false, "KubeletHasNoDiskPressure", n.created),
                condition("PIDPressure", false, "KubeletHasSufficientPID", n.created),
                condition("Ready", ready, reason, now),
            ]),
            node_info: Some(core::NodeSystemInfo {
                architecture: "amd64".into(),
                boot_id: String::new(),
                container_runtime_version: n.runtime.clone(),
                kernel_version: n.kernel.clone(),
                kube_proxy_version: String::new(),
                kubelet_version: n.kubelet.to_string(),
                machine_id: String::new(),
                operating_system: "linux".into(),
                os_image: n.os_image.clone(),
                swap: None,
                system_uuid: String::new(),
            }),
            ..Default::default()
        }),
    }
}

/// The model's node fields a patch may change, read back from the patched object.
#[derive(Debug)]
pub struct NodeEdits {
    pub unschedulable: bool,
    pub labels: Labels,
    pub annotations: Labels,
    pub taints: Vec<Taint>,
}

pub fn node_edits(n: &core::Node) -> NodeEdits {
    let spec = n.spec.clone().unwrap_or_default();
    NodeEdits {
        unschedulable: spec.unschedulable.unwrap_or(false),
        labels: n.metadata.labels.clone().unwrap_or_default(),
        annotations: n.metadata.annotations.clone().unwrap_or_default(),
        // The unschedulable taint follows `spec.unschedulable`; it is not stored.
        taints: spec
            .taints
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.key != crate::model::UNSCHEDULABLE_TAINT)
            .map(|t| Taint {
                key: t.key,
                value: t.value.unwrap_or_default(),
                effect: t.effect,
            })
            .collect(),
    }
}

/// What `kubectl get pods` prints in STATUS.
pub fn pod_status_word(p: &SimPod) -> &'static str {
    if p.deleting_at.is_some() {
        "Terminating"
    } else if p.crash_looping_since.is_some() {
        "CrashLoopBackOff"
    } else if p.phase == PodPhase::Succeeded {
        "Completed"
    } else {
        p.phase.as_str()
    }
}

pub fn pod(p: &SimPod, w: &World) -> core::Pod {
    let now = w.now();
    let ready = p.is_ready(now, &w.nodes);
    let mut requests = BTreeMap::new();
    requests.insert("cpu".to_string(), cpu_quantity(p.spec.cpu_millis));
    requests.insert("memory".to_string(), memory_quantity(p.spec.memory_bytes));
    let container_name = p
        .spec
        .labels
        .get("app")
        .or_else(|| p.spec.labels.get("component"))
        .or_else(|| p.spec.labels.get("k8s-app"))
        .cloned()
        .unwrap_or_else(|| "main".into());
    let state = if p.crash_looping_since.is_some() {
        core::ContainerState {
            waiting: Some(core::ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                message: Some(format!(
                    "back-off restarting failed container {container_name}"
                )),
            }),
            ..Default::default()
        }
    } else if p.phase == PodPhase::Running {
        core::ContainerState {
            running: Some(core::ContainerStateRunning {
                started_at: Some(time(p.created)),
            }),
            ..Default::default()
        }
    } else {
        core::ContainerState {
            waiting: Some(core::ContainerStateWaiting {
                reason: Some("ContainerCreating".into()),
                message: None,
            }),
            ..Default::default()
        }
    };
    let host_ip = p
        .node
        .as_ref()
        .and_then(|n| w.nodes.get(n))
        .map(|n| n.address.clone());
    let mut conditions = vec![core::PodCondition {
        type_: "PodScheduled".into(),
        status: if p.node.is_some() { "True" } else { "False" }.into(),
        reason: p.node.is_none().then(|| "Unschedulable".into()),
        message: p
            .node
            .is_none()
            .then(|| "0/N nodes are available: insufficient resources or not schedulable.".into()),
        ..Default::default()
    }];
    if p.node.is_some() {
        for t in ["Initialized", "ContainersReady", "Ready"] {
            let ok = t == "Initialized" || ready;
            conditions.push(core::PodCondition {
                type_: t.into(),
                status: if ok { "True" } else { "False" }.into(),
                ..Default::default()
            });
        }
    }
    core::Pod {
        metadata: meta::ObjectMeta {
            name: Some(p.name.clone()),
            namespace: Some(p.namespace.clone()),
            uid: Some(p.uid.clone()),
            resource_version: Some(p.resource_version.to_string()),
            creation_timestamp: Some(time(p.created)),
            deletion_timestamp: p.deleting_at.map(time),
            deletion_grace_period_seconds: p
                .deleting_at
                .map(|t| (t.saturating_sub(now) / 1000) as i64),
            labels: opt_map(&p.spec.labels),
            annotations: opt_map(&p.annotations),
            owner_references: p.owner.as_ref().map(|o| vec![owner_reference(o)]),
            generate_name: p
                .owner
                .as_ref()
                .filter(|o| o.kind == "ReplicaSet" || o.kind == "DaemonSet")
                .map(|o| format!("{}-", o.name)),
            ..Default::default()
        },
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: container_name.clone(),
                image: Some(p.spec.image.clone()),
                resources: Some(core::ResourceRequirements {
                    requests: Some(requests),
                    ..Default::default()
                }),
                volume_mounts: p.spec.empty_dir.then(|| {
                    vec![core::VolumeMount {
                        name: "scratch".into(),
                        mount_path: "/scratch".into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }],
            node_name: p.node.clone(),
            node_selector: opt_map(&p.spec.node_selector),
            tolerations: (!p.spec.tolerations.is_empty())
                .then(|| p.spec.tolerations.iter().map(toleration).collect()),
            volumes: p.spec.empty_dir.then(|| {
                vec![core::Volume {
                    name: "scratch".into(),
                    empty_dir: Some(core::EmptyDirVolumeSource::default()),
                    ..Default::default()
                }]
            }),
            termination_grace_period_seconds: Some((p.spec.termination_ms / 1000) as i64),
            ..Default::default()
        }),
        status: Some(core::PodStatus {
            phase: Some(p.phase.as_str().into()),
            conditions: Some(conditions),
            host_ip,
            pod_ip: (!p.ip.is_empty()).then(|| p.ip.clone()),
            start_time: p.node.is_some().then(|| time(p.created)),
            container_statuses: p.node.is_some().then(|| {
                vec![core::ContainerStatus {
                    name: container_name,
                    image: p.spec.image.clone(),
                    image_id: String::new(),
                    ready,
                    restart_count: p.restarts as i32,
                    started: Some(p.phase == PodPhase::Running),
                    state: Some(state),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
    }
}

pub fn pdb(b: &crate::model::Pdb, w: &World) -> policy::PodDisruptionBudget {
    let s = w.pdb_status(b);
    policy::PodDisruptionBudget {
        metadata: meta::ObjectMeta {
            name: Some(b.name.clone()),
            namespace: Some(b.namespace.clone()),
            uid: Some(b.uid.clone()),
            resource_version: Some(b.resource_version.to_string()),
            creation_timestamp: Some(time(b.created)),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(policy::PodDisruptionBudgetSpec {
            selector: Some(label_selector(&b.selector)),
            min_available: b.min_available.as_ref().map(int_or_string),
            max_unavailable: b.max_unavailable.as_ref().map(int_or_string),
            ..Default::default()
        }),
        status: Some(policy::PodDisruptionBudgetStatus {
            current_healthy: s.current_healthy as i32,
            desired_healthy: s.desired_healthy as i32,
            disruptions_allowed: s.disruptions_allowed as i32,
            expected_pods: s.expected_pods as i32,
            observed_generation: Some(1),
            ..Default::default()
        }),
    }
}

fn workload_meta(w: &Workload) -> meta::ObjectMeta {
    meta::ObjectMeta {
        name: Some(w.name.clone()),
        namespace: Some(w.namespace.clone()),
        uid: Some(w.uid.clone()),
        resource_version: Some(w.resource_version.to_string()),
        creation_timestamp: Some(time(w.created)),
        generation: Some(w.generation as i64),
        labels: opt_map(&w.template.labels),
        ..Default::default()
    }
}

fn pod_template(w: &Workload) -> core::PodTemplateSpec {
    let mut requests = BTreeMap::new();
    requests.insert("cpu".to_string(), cpu_quantity(w.template.cpu_millis));
    requests.insert(
        "memory".to_string(),
        memory_quantity(w.template.memory_bytes),
    );
    core::PodTemplateSpec {
        metadata: Some(meta::ObjectMeta {
            labels: opt_map(&w.template.labels),
            ..Default::default()
        }),
        spec: Some(core::PodSpec {
            containers: vec![core::Container {
                name: w.name.clone(),
                image: Some(w.template.image.clone()),
                resources: Some(core::ResourceRequirements {
                    requests: Some(requests),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            node_selector: opt_map(&w.template.node_selector),
            tolerations: (!w.template.tolerations.is_empty())
                .then(|| w.template.tolerations.iter().map(toleration).collect()),
            ..Default::default()
        }),
    }
}

pub fn deployment(d: &Workload, w: &World) -> apps::Deployment {
    let ready = w.ready_replicas(d) as i32;
    let current = w.current_replicas(d) as i32;
    apps::Deployment {
        metadata: workload_meta(d),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(d.replicas as i32),
            selector: label_selector(&d.selector()),
            template: pod_template(d),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus {
            observed_generation: Some(d.generation as i64),
            replicas: Some(current),
            updated_replicas: Some(current),
            ready_replicas: Some(ready),
            available_replicas: Some(ready),
            unavailable_replicas: Some((d.replicas as i32 - ready).max(0)),
            ..Default::default()
        }),
    }
}

/// The one ReplicaSet a Deployment has in the sim (its current revision).
pub fn replica_set(d: &Workload, w: &World) -> Option<apps::ReplicaSet> {
    let (name, uid) = d.replica_set.clone()?;
    let ready = w.ready_replicas(d) as i32;
    let mut meta = workload_meta(d);
    meta.name = Some(name);
    meta.uid = Some(uid);
    meta.owner_references = Some(vec![owner_reference(&OwnerRef {
        kind: "Deployment".into(),
        name: d.name.clone(),
        uid: d.uid.clone(),
    })]);
    Some(apps::ReplicaSet {
        metadata: meta,
        spec: Some(apps::ReplicaSetSpec {
            replicas: Some(d.replicas as i32),
            selector: label_selector(&d.selector()),
            template: Some(pod_template(d)),
            ..Default::default()
        }),
        status: Some(apps::ReplicaSetStatus {
            replicas: w.current_replicas(d) as i32,
            ready_replicas: Some(ready),
            available_replicas: Some(ready),
            observed_generation: Some(d.generation as i64),
            ..Default::default()
        }),
    })
}

pub fn stateful_set(s: &Workload, w: &World) -> apps::StatefulSet {
    let ready = w.ready_replicas(s) as i32;
    apps::StatefulSet {
        metadata: workload_meta(s),
        spec: Some(apps::StatefulSetSpec {
            replicas: Some(s.replicas as i32),
            selector: label_selector(&s.selector()),
            template: pod_template(s),
            service_name: Some(s.name.clone()),
            ..Default::default()
        }),
        status: Some(apps::StatefulSetStatus {
            replicas: w.current_replicas(s) as i32,
            ready_replicas: Some(ready),
            available_replicas: Some(ready),
            current_replicas: Some(w.current_replicas(s) as i32),
            observed_generation: Some(s.generation as i64),
            ..Default::default()
        }),
    }
}

pub fn daemon_set(d: &Workload, w: &World) -> apps::DaemonSet {
    let scheduled = w.current_replicas(d) as i32;
    let ready = w.ready_replicas(d) as i32;
    apps::DaemonSet {
        metadata: workload_meta(d),
        spec: Some(apps::DaemonSetSpec {
            selector: label_selector(&d.selector()),
            template: pod_template(d),
            ..Default::default()
        }),
        status: Some(apps::DaemonSetStatus {
            current_number_scheduled: scheduled,
            desired_number_scheduled: scheduled,
            number_misscheduled: 0,
            number_ready: ready,
            number_available: Some(ready),
            updated_number_scheduled: Some(scheduled),
            observed_generation: Some(d.generation as i64),
            ..Default::default()
        }),
    }
}

pub fn scale(d: &Workload, w: &World) -> autoscaling::Scale {
    autoscaling::Scale {
        metadata: meta::ObjectMeta {
            name: Some(d.name.clone()),
            namespace: Some(d.namespace.clone()),
            uid: Some(d.uid.clone()),
            resource_version: Some(d.resource_version.to_string()),
            creation_timestamp: Some(time(d.created)),
            ..Default::default()
        },
        spec: Some(autoscaling::ScaleSpec {
            replicas: Some(d.replicas as i32),
        }),
        status: Some(autoscaling::ScaleStatus {
            replicas: w.current_replicas(d) as i32,
            selector: Some(
                d.template
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        }),
    }
}

/// The kind's object as JSON (Deployments, StatefulSets, DaemonSets).
pub fn workload_json(d: &Workload, w: &World) -> serde_json::Result<serde_json::Value> {
    match d.kind {
        Kind::Deployment => serde_json::to_value(deployment(d, w)),
        Kind::StatefulSet => serde_json::to_value(stateful_set(d, w)),
        Kind::DaemonSet => serde_json::to_value(daemon_set(d, w)),
    }
}

/// The whole cluster as `kubectl get nodes,pods,pdb,deploy,sts,ds -A -o json` prints it: the
/// snapshot `upgradectl plan` and `rehearse` read.
pub fn list_json(w: &World) -> serde_json::Value {
    let mut items = Vec::new();
    let mut push = |v: serde_json::Result<serde_json::Value>| {
        if let Ok(v) = v {
            items.push(v);
        }
    };
    for n in w.nodes.values() {
        push(serde_json::to_value(node(n, w.now())));
    }
    for p in w.pods.values() {
        push(serde_json::to_value(pod(p, w)));
    }
    for b in w.pdbs.values() {
        push(serde_json::to_value(pdb(b, w)));
    }
    for d in w.workloads.values() {
        push(workload_json(d, w));
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "List",
        "metadata": { "resourceVersion": "" },
        "items": items,
    })
}

/// A `PodList` of the pods `keys` names, as JSON bytes. Each pod's JSON is kept between lists
/// and made again only when the pod changed (its resource version or its readiness, the
/// only inputs that move; a terminating pod's grace period counts down, so it is never
/// kept): the health gate lists every pod of a large cluster at every verify.
pub fn pods_json(w: &mut World, keys: &[(String, String)]) -> Vec<u8> {
    let now = w.now();
    let some_down = w.some_node_down();
    let mut fresh: Vec<((String, String), CachedPod)> = Vec::new();
    for k in keys {
        let Some(p) = w.pods.get(k) else { continue };
        let ready = p.is_ready_where(now, &w.nodes, some_down);
        let kept = w.pod_json.get(k).is_some_and(|c| {
            c.uid == p.uid && c.resource_version == p.resource_version && c.ready == ready
        });
        if kept {
            continue;
        }
        let json = serde_json::to_vec(&pod(p, w)).unwrap_or_default();
        fresh.push((
            k.clone(),
            CachedPod {
                uid: p.uid.clone(),
                resource_version: p.resource_version,
                ready,
                json,
            },
        ));
    }
    let mut out = Vec::with_capacity(keys.len() * 2048 + 128);
    out.extend_from_slice(
        format!(
            r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"{}"}},"items":["#,
            w.resource_version()
        )
        .as_bytes(),
    );
    let mut first = true;
    let mut put = |json: &[u8]| {
        if !first {
            out.push(b',');
        }
        first = false;
        out.extend_from_slice(json);
    };
    let mut uncached: BTreeMap<(String, String), CachedPod> = BTreeMap::new();
    for (k, c) in fresh {
        if w.pods.get(&k).is_some_and(|p| p.deleting_at.is_none()) {
            w.pod_json.insert(k, c);
        } else {
            uncached.insert(k, c);
        }
    }
    for k in keys {
        if let Some(c) = uncached.get(k) {
            put(&c.json);
        } else if let Some(c) = w.pod_json.get(k) {
            put(&c.json);
        }
    }
    out.extend_from_slice(b"]}");
    if w.pod_json.len() > 2 * w.pods.len() + 64 {
        let pods = &w.pods;
        w.pod_json.retain(|k, _| pods.contains_key(k));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list made from kept JSON equals one made fresh, through evictions, terminations,
    /// pods becoming Ready and a kubelet restart.
    #[test]
    fn kept_pod_json_is_what_a_fresh_list_would_say() {
        let clock = crate::Clock::virtual_at(crate::clock::VIRTUAL_EPOCH);
        let mut w = crate::scenario::build("seed", clock, 3).expect("seed");
        let node = "r740-02";
        let check = |w: &mut World| {
            let keys: Vec<(String, String)> = w.pods.keys().cloned().collect();
            let kept: serde_json::Value =
                serde_json::from_slice(&pods_json(w, &keys)).expect("JSON");
            let fresh: Vec<serde_json::Value> = keys
                .iter()
                .filter_map(|k| w.pods.get(k))
                .map(|p| serde_json::to_value(pod(p, w)).expect("pod"))
                .collect();
            assert_eq!(kept["items"], serde_json::Value::Array(fresh));
            assert_eq!(kept["kind"], "PodList");
        };
        check(&mut w);
        let on: Vec<(String, String)> = w
            .pods_on(node)
            .filter(|p| !p.is_daemonset() && !p.is_mirror())
            .map(|p| p.key())
            .collect();
        for (ns, name) in on {
            let _ = w.evict(&ns, &name);
            check(&mut w);
        }
        w.advance(3_000);
        check(&mut w);
        w.restart_kubelet(node, upgraded_events::version::Version::new(1, 33, 7))
            .expect("node");
        check(&mut w);
        w.advance(60_000);
        check(&mut w);
    }
}
