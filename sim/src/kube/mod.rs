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
use crate::resource::Res;

mod budgets;
mod nodes;
mod pods;
mod workloads;

pub use budgets::pdb;
pub use nodes::{NodeEdits, node, node_edits};
pub use pods::{container_name, pod, pod_status_word};
pub use workloads::{
    daemon_set, deployment, job, old_replica_set, replica_set, replica_sets, scale, stateful_set,
    workload_json,
};

/// Any object the sim serves, by resource and name, as JSON (what GET and the journal give).
pub fn object(w: &World, res: Res, namespace: &str, name: &str) -> Option<serde_json::Value> {
    let key = (namespace.to_string(), name.to_string());
    let kind = |k: Kind| {
        w.workloads
            .get(&(k, namespace.to_string(), name.to_string()))
    };
    match res {
        Res::Namespace => serde_json::to_value(w.namespaces.get(name)?).ok(),
        Res::Node => serde_json::to_value(node(w.nodes.get(name)?, w.now())).ok(),
        Res::Pod => serde_json::to_value(pod(w.pods.get(&key)?, w)).ok(),
        Res::Service => serde_json::to_value(w.services.get(&key)?).ok(),
        Res::ConfigMap => serde_json::to_value(w.config_maps.get(&key)?).ok(),
        Res::Secret => serde_json::to_value(w.secrets.get(&key)?).ok(),
        Res::Claim => serde_json::to_value(w.claims.get(&key)?).ok(),
        Res::Volume => serde_json::to_value(w.volumes.get(name)?).ok(),
        Res::StorageClass => serde_json::to_value(w.storage_classes.get(name)?).ok(),
        Res::Event => serde_json::to_value(w.events.items.get(&key)?).ok(),
        Res::EventV1 => Some(event_v1(w.events.items.get(&key)?)),
        Res::Deployment => workload_json(kind(Kind::Deployment)?, w).ok(),
        Res::StatefulSet => workload_json(kind(Kind::StatefulSet)?, w).ok(),
        Res::DaemonSet => workload_json(kind(Kind::DaemonSet)?, w).ok(),
        Res::ReplicaSet => {
            if let Some(rs) = kind(Kind::ReplicaSet) {
                return workload_json(rs, w).ok();
            }
            // The Deployment whose current or earlier ReplicaSet it is; only its sets built.
            w.workloads
                .values()
                .filter(|d| d.kind == Kind::Deployment && d.namespace == namespace)
                .find(|d| {
                    d.replica_set.as_ref().is_some_and(|(n, _)| n == name)
                        || d.old_sets.iter().any(|(n, _)| n == name)
                })
                .into_iter()
                .flat_map(|d| replica_sets(d, w))
                .find(|r| r.metadata.name.as_deref() == Some(name))
                .and_then(|r| serde_json::to_value(r).ok())
        }
        Res::Job => Some(job(w.jobs.get(&key)?)),
        Res::Budget => serde_json::to_value(pdb(w.pdbs.get(&key)?, w)).ok(),
    }
}

/// A core/v1 event in the `events.k8s.io/v1` shape.
pub fn event_v1(e: &core::Event) -> serde_json::Value {
    let o = &e.involved_object;
    let mut regarding = serde_json::Map::new();
    for (k, v) in [
        ("kind", &o.kind),
        ("namespace", &o.namespace),
        ("name", &o.name),
        ("uid", &o.uid),
        ("apiVersion", &o.api_version),
        ("fieldPath", &o.field_path),
    ] {
        if let Some(v) = v {
            regarding.insert(k.into(), serde_json::Value::String(v.clone()));
        }
    }
    let source = e.source.clone().unwrap_or_default();
    serde_json::json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": e.metadata,
        "eventTime": null,
        "reportingController": e.reporting_component.clone().unwrap_or_default(),
        "reportingInstance": e.reporting_instance.clone().unwrap_or_default(),
        "action": e.reason,
        "reason": e.reason,
        "regarding": regarding,
        "note": e.message,
        "type": e.type_,
        "deprecatedSource": source,
        "deprecatedFirstTimestamp": e.first_timestamp,
        "deprecatedLastTimestamp": e.last_timestamp,
        "deprecatedCount": e.count,
    })
}

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
            let _ = w.evict(&ns, &name, None);
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
