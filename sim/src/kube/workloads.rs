//! Deployments, ReplicaSets, StatefulSets, DaemonSets and Jobs as the API shows them: the spec
//! as it was given (or, for the scenarios' workloads, made from the model's fields) and the
//! status their controllers last wrote (`model::status`), with a Deployment's `Available` and
//! `Progressing` conditions and a Job's `Complete` or `Failed`.

use serde_json::{Value, json};

use super::*;
use crate::model::{JobEnd, SimJob};

/// A number the apiserver leaves out when it is zero (Go's `omitempty` on an `int32`).
fn nonzero(n: u32) -> Option<i32> {
    (n > 0).then_some(n as i32)
}

fn workload_meta(w: &Workload) -> meta::ObjectMeta {
    let mut annotations = w.annotations.clone();
    if w.kind == Kind::Deployment {
        annotations.insert(
            "deployment.kubernetes.io/revision".into(),
            w.revision.to_string(),
        );
    }
    meta::ObjectMeta {
        name: Some(w.name.clone()),
        namespace: Some(w.namespace.clone()),
        uid: Some(w.uid.clone()),
        resource_version: Some(w.resource_version.to_string()),
        creation_timestamp: Some(time(w.created)),
        generation: Some(w.generation as i64),
        labels: opt_map(&w.labels),
        annotations: opt_map(&annotations),
        ..Default::default()
    }
}

/// The pod template: as given, or made from the model's fields.
fn pod_template(w: &Workload) -> core::PodTemplateSpec {
    if let Some(t) = w
        .given
        .as_ref()
        .and_then(|g| serde_json::from_value::<core::PodTemplateSpec>(g["template"].clone()).ok())
    {
        return t;
    }
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

fn deployment_conditions(d: &Workload, rs: &str) -> Vec<apps::DeploymentCondition> {
    let s = &d.status;
    let unavailable = d
        .given
        .as_ref()
        .and_then(|g| g["strategy"]["rollingUpdate"]["maxUnavailable"].as_u64())
        .map(|n| n as u32)
        .unwrap_or(d.replicas / 4);
    let available = s.available + unavailable >= d.replicas;
    let complete = s.updated == d.replicas && s.replicas == d.replicas && s.available == d.replicas;
    let at = time(s.changed_at.max(d.created));
    vec![
        apps::DeploymentCondition {
            type_: "Available".into(),
            status: if available { "True" } else { "False" }.into(),
            reason: Some(
                if available {
                    "MinimumReplicasAvailable"
                } else {
                    "MinimumReplicasUnavailable"
                }
                .into(),
            ),
            message: Some(
                if available {
                    "Deployment has minimum availability."
                } else {
                    "Deployment does not have minimum availability."
                }
                .into(),
            ),
            last_transition_time: Some(at.clone()),
            last_update_time: Some(at.clone()),
        },
        apps::DeploymentCondition {
            type_: "Progressing".into(),
            status: "True".into(),
            reason: Some(
                if complete {
                    "NewReplicaSetAvailable"
                } else {
                    "ReplicaSetUpdated"
                }
                .into(),
            ),
            message: Some(if complete {
                format!("ReplicaSet \"{rs}\" has successfully progressed.")
            } else {
                format!("ReplicaSet \"{rs}\" is progressing.")
            }),
            last_transition_time: Some(time(d.created)),
            last_update_time: Some(at),
        },
    ]
}

pub fn deployment(d: &Workload, _w: &World) -> apps::Deployment {
    let s = &d.status;
    let rs = d
        .replica_set
        .as_ref()
        .map(|(n, _)| n.clone())
        .unwrap_or_default();
    apps::Deployment {
        metadata: workload_meta(d),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(d.replicas as i32),
            selector: label_selector(&d.selector()),
            template: pod_template(d),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus {
            observed_generation: Some(s.observed_generation as i64),
            replicas: nonzero(s.replicas),
            updated_replicas: nonzero(s.updated),
            ready_replicas: nonzero(s.ready),
            available_replicas: nonzero(s.available),
            unavailable_replicas: nonzero(d.replicas.saturating_sub(s.available)),
            conditions: Some(deployment_conditions(d, &rs)),
            ..Default::default()
        }),
    }
}

/// A ReplicaSet's status, counted from its own pods.
fn replica_set_status(owner_uid: &str, generation: u64, w: &World) -> apps::ReplicaSetStatus {
    let (mut replicas, mut ready) = (0, 0);
    for p in w.owned_by(owner_uid) {
        if p.deleting_at.is_some() || p.is_finished() {
            continue;
        }
        replicas += 1;
        if p.is_ready(w.now(), &w.nodes) {
            ready += 1;
        }
    }
    apps::ReplicaSetStatus {
        replicas,
        fully_labeled_replicas: nonzero(replicas as u32),
        ready_replicas: nonzero(ready),
        available_replicas: nonzero(ready),
        observed_generation: Some(generation as i64),
        ..Default::default()
    }
}

fn owned_replica_set(
    d: &Workload,
    name: &str,
    uid: &str,
    replicas: u32,
    w: &World,
) -> apps::ReplicaSet {
    let mut meta = workload_meta(d);
    meta.name = Some(name.to_string());
    meta.uid = Some(uid.to_string());
    meta.generation = Some(1);
    meta.owner_references = Some(vec![owner_reference(&OwnerRef {
        kind: "Deployment".into(),
        name: d.name.clone(),
        uid: d.uid.clone(),
    })]);
    let mut template = pod_template(d);
    let hash = name.rsplit('-').next().unwrap_or_default().to_string();
    if d.given.is_some()
        && let Some(m) = template.metadata.as_mut()
    {
        m.labels
            .get_or_insert_with(Default::default)
            .insert("pod-template-hash".into(), hash);
    }
    apps::ReplicaSet {
        metadata: meta,
        spec: Some(apps::ReplicaSetSpec {
            replicas: Some(replicas as i32),
            selector: label_selector(&d.selector()),
            template: Some(template),
            ..Default::default()
        }),
        status: Some(replica_set_status(uid, 1, w)),
    }
}

/// A Deployment's current ReplicaSet, or a bare ReplicaSet itself.
pub fn replica_set(d: &Workload, w: &World) -> Option<apps::ReplicaSet> {
    match d.kind {
        Kind::Deployment => {
            let (name, uid) = d.replica_set.clone()?;
            Some(owned_replica_set(d, &name, &uid, d.replicas, w))
        }
        Kind::ReplicaSet => Some(apps::ReplicaSet {
            metadata: workload_meta(d),
            spec: Some(apps::ReplicaSetSpec {
                replicas: Some(d.replicas as i32),
                selector: label_selector(&d.selector()),
                template: Some(pod_template(d)),
                ..Default::default()
            }),
            status: Some(replica_set_status(&d.uid, d.generation, w)),
        }),
        _ => None,
    }
}

/// A Deployment's ReplicaSet of an earlier template (scaled down as the rollout goes).
pub fn old_replica_set(d: &Workload, name: &str) -> apps::ReplicaSet {
    let uid = d
        .old_sets
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, u)| u.clone())
        .unwrap_or_default();
    let mut meta = workload_meta(d);
    meta.name = Some(name.to_string());
    meta.uid = Some(uid);
    apps::ReplicaSet {
        metadata: meta,
        spec: Some(apps::ReplicaSetSpec {
            replicas: Some(0),
            selector: label_selector(&d.selector()),
            template: Some(pod_template(d)),
            ..Default::default()
        }),
        status: Some(apps::ReplicaSetStatus::default()),
    }
}

/// Every ReplicaSet of a Deployment: the current one and those still scaling down.
pub fn replica_sets(d: &Workload, w: &World) -> Vec<apps::ReplicaSet> {
    let mut out: Vec<apps::ReplicaSet> = replica_set(d, w).into_iter().collect();
    for (name, uid) in &d.old_sets {
        let live = w
            .owned_by(uid)
            .filter(|p| p.deleting_at.is_none() && !p.is_finished())
            .count() as u32;
        out.push(owned_replica_set(d, name, uid, live, w));
    }
    out
}

pub fn stateful_set(s: &Workload, _w: &World) -> apps::StatefulSet {
    let st = &s.status;
    let revision = format!("{}-{:08x}", s.name, s.revision);
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
            replicas: st.replicas as i32,
            ready_replicas: nonzero(st.ready),
            available_replicas: Some(st.available as i32),
            current_replicas: nonzero(st.updated),
            updated_replicas: nonzero(st.updated),
            current_revision: Some(revision.clone()),
            update_revision: Some(revision),
            observed_generation: Some(st.observed_generation as i64),
            collision_count: Some(0),
            ..Default::default()
        }),
    }
}

pub fn daemon_set(d: &Workload, _w: &World) -> apps::DaemonSet {
    let s = &d.status;
    apps::DaemonSet {
        metadata: workload_meta(d),
        spec: Some(apps::DaemonSetSpec {
            selector: label_selector(&d.selector()),
            template: pod_template(d),
            ..Default::default()
        }),
        status: Some(apps::DaemonSetStatus {
            current_number_scheduled: s.replicas as i32,
            desired_number_scheduled: s.desired as i32,
            number_misscheduled: 0,
            number_ready: s.ready as i32,
            number_available: nonzero(s.available),
            number_unavailable: nonzero(s.desired.saturating_sub(s.available)),
            updated_number_scheduled: nonzero(s.updated),
            observed_generation: Some(s.observed_generation as i64),
            ..Default::default()
        }),
    }
}

pub fn scale(d: &Workload, _w: &World) -> autoscaling::Scale {
    let selector = d
        .selector
        .match_labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
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
            replicas: d.status.replicas as i32,
            selector: Some(selector),
        }),
    }
}

/// The workload's object as JSON, its spec as given when it was given through the API.
pub fn workload_json(d: &Workload, w: &World) -> serde_json::Result<Value> {
    let mut v = match d.kind {
        Kind::Deployment => serde_json::to_value(deployment(d, w))?,
        Kind::StatefulSet => serde_json::to_value(stateful_set(d, w))?,
        Kind::DaemonSet => serde_json::to_value(daemon_set(d, w))?,
        Kind::ReplicaSet => serde_json::to_value(replica_set(d, w))?,
    };
    if let Some(given) = &d.given {
        let mut spec = (**given).clone();
        if d.kind != Kind::DaemonSet {
            spec["replicas"] = json!(d.replicas);
        }
        v["spec"] = spec;
    }
    Ok(v)
}

/// A Job as JSON: its spec as given, and the Job controller's status.
pub fn job(j: &SimJob) -> Value {
    let s = &j.status;
    let mut status = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        status.insert(k.to_string(), v);
    };
    for (k, n) in [
        ("active", s.active),
        ("succeeded", s.succeeded),
        ("failed", s.failed),
    ] {
        if n > 0 {
            put(k, json!(n));
        }
    }
    put("ready", json!(s.ready));
    put("terminating", json!(s.terminating));
    if let Some(t) = s.started {
        put("startTime", json!(time(t)));
    }
    put("uncountedTerminatedPods", json!({}));
    if let Some((end, at)) = &s.ended {
        let t = json!(time(*at));
        let (first, last, reason, message) = match end {
            JobEnd::Complete => (
                "SuccessCriteriaMet",
                "Complete",
                "CompletionsReached".to_string(),
                "Reached expected number of succeeded pods".to_string(),
            ),
            JobEnd::Failed { reason, message } => {
                ("FailureTarget", "Failed", reason.clone(), message.clone())
            }
        };
        let cond = |kind: &str| {
            json!({"type": kind, "status": "True", "lastProbeTime": t, "lastTransitionTime": t,
                   "reason": reason, "message": message})
        };
        put("conditions", json!([cond(first), cond(last)]));
        if matches!(end, JobEnd::Complete) {
            put("completionTime", t.clone());
        }
    }
    let mut metadata = json!({
        "name": j.name, "namespace": j.namespace, "uid": j.uid,
        "resourceVersion": j.resource_version.to_string(),
        "creationTimestamp": time(j.created), "generation": j.generation,
    });
    if !j.labels.is_empty() {
        metadata["labels"] = json!(j.labels);
    }
    if !j.annotations.is_empty() {
        metadata["annotations"] = json!(j.annotations);
    }
    let mut spec = (*j.spec).clone();
    spec["suspend"] = json!(j.suspend);
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": metadata, "spec": spec, "status": Value::Object(status),
    })
}
