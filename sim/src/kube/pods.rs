//! Pods as the API shows them: the spec as it was given (or, for the scenarios' pods, made from
//! the model's fields), and a status the kubelet would write: phase, conditions (`PodScheduled`
//! with the scheduler's reason, `Ready`, `DisruptionTarget` after an eviction), one container
//! status per container (running, waiting, or terminated with its exit code), IPs, QoS class.
//!
//! What it depends on is the pod's resourceVersion and its readiness (and, while it terminates,
//! the time left), so `pods_json` may keep a pod's JSON between lists.

use super::*;

/// The container name of a scenario pod (its app label, or `main`).
pub fn container_name(p: &SimPod) -> String {
    p.spec
        .labels
        .get("app")
        .or_else(|| p.spec.labels.get("component"))
        .or_else(|| p.spec.labels.get("k8s-app"))
        .cloned()
        .unwrap_or_else(|| "main".into())
}

/// What `kubectl get pods` prints in STATUS.
pub fn pod_status_word(p: &SimPod) -> String {
    if p.deleting_at.is_some() && !p.is_finished() {
        return "Terminating".into();
    }
    if p.crash_looping_since.is_some() {
        return "CrashLoopBackOff".into();
    }
    match p.phase {
        PodPhase::Succeeded => "Completed".into(),
        PodPhase::Failed => match (&p.reason, p.exited) {
            (Some((r, _)), _) if r != "Unschedulable" => r.clone(),
            (_, Some((code, _))) => {
                if code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                }
            }
            _ => "Failed".into(),
        },
        PodPhase::Pending if p.node.is_some() => "ContainerCreating".into(),
        phase => phase.as_str().into(),
    }
}

fn condition(
    kind: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<&str>,
    at: Millis,
) -> core::PodCondition {
    core::PodCondition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.map(str::to_string),
        message: message.map(str::to_string),
        last_transition_time: Some(time(at)),
        last_probe_time: None,
        observed_generation: None,
    }
}

/// Guaranteed when every container's requests equal its limits (the scenarios' pods have no
/// limits), BestEffort without any, Burstable otherwise.
fn qos_class(spec: &core::PodSpec) -> &'static str {
    let mut any = false;
    let mut guaranteed = !spec.containers.is_empty();
    for c in &spec.containers {
        let r = c.resources.clone().unwrap_or_default();
        let (req, lim) = (r.requests.unwrap_or_default(), r.limits.unwrap_or_default());
        any |= !req.is_empty() || !lim.is_empty();
        let full = ["cpu", "memory"]
            .iter()
            .all(|k| lim.contains_key(*k) && req.get(*k).is_none_or(|q| Some(q) == lim.get(*k)));
        guaranteed &= full;
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// The spec of a scenario pod, made from the model's fields.
fn built_spec(p: &SimPod) -> core::PodSpec {
    let mut requests = BTreeMap::new();
    requests.insert("cpu".to_string(), cpu_quantity(p.spec.cpu_millis));
    requests.insert("memory".to_string(), memory_quantity(p.spec.memory_bytes));
    core::PodSpec {
        containers: vec![core::Container {
            name: container_name(p),
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
    }
}

fn container_state(
    p: &SimPod,
    name: &str,
    started: Millis,
) -> (core::ContainerState, Option<core::ContainerState>) {
    let terminated = |(code, at): (i32, Millis)| core::ContainerState {
        terminated: Some(core::ContainerStateTerminated {
            exit_code: code,
            reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
            started_at: Some(time(started)),
            finished_at: Some(time(at)),
            ..Default::default()
        }),
        ..Default::default()
    };
    let last = match p.crash_looping_since {
        // A crash loop's last exit: its latest restart.
        Some(since) if p.restarts > 0 => Some(terminated((
            1,
            since + crate::model::CRASHLOOP_PERIOD_MS * u64::from(p.restarts - 1),
        ))),
        _ => p.exited.filter(|_| p.restarts > 0).map(terminated),
    };
    let state = if p.is_finished() {
        let mut state = p
            .exited
            .map_or_else(|| terminated((1, started)), terminated);
        if let Some(t) = state.terminated.as_mut() {
            t.message = p.termination_message.clone();
        }
        state
    } else if p.crash_looping_since.is_some() {
        core::ContainerState {
            waiting: Some(core::ContainerStateWaiting {
                reason: Some("CrashLoopBackOff".into()),
                message: Some(format!("back-off restarting failed container {name}")),
            }),
            ..Default::default()
        }
    } else if p.phase == PodPhase::Running {
        core::ContainerState {
            running: Some(core::ContainerStateRunning {
                started_at: Some(time(started)),
            }),
            ..Default::default()
        }
    } else if let Some(reason) = &p.pull_failed {
        core::ContainerState {
            waiting: Some(core::ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: Some(format!(
                    "failed to pull image {:?}: not found",
                    p.spec.image
                )),
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
    (state, last)
}

pub fn pod(p: &SimPod, w: &World) -> core::Pod {
    let now = w.now();
    let ready = p.is_ready(now, &w.nodes);
    let mut spec = match p.spec.given.as_deref() {
        // A controller's pod went through pod admission too: a service account, the
        // not-ready/unreachable tolerations, a priority (idempotent for a bare pod's spec).
        Some(given) => {
            let mut s = given.clone();
            crate::defaults::default_spec(&mut s, true);
            s
        }
        None => built_spec(p),
    };
    spec.node_name = p.node.clone();
    let scheduled_at = p.scheduled_at.unwrap_or(p.created);
    let started = p
        .ready_at
        .map(|r| r.saturating_sub(p.spec.startup_ms))
        .unwrap_or(scheduled_at)
        .max(p.created);
    let host_ip = p
        .node
        .as_ref()
        .and_then(|n| w.nodes.get(n))
        .map(|n| n.address.clone());
    let unschedulable = p
        .reason
        .as_ref()
        .filter(|(r, _)| r == "Unschedulable" && p.node.is_none());
    let mut conditions = Vec::new();
    if let Some(at) = p.evicted_at {
        conditions.push(condition(
            "DisruptionTarget",
            true,
            Some("EvictionByEvictionAPI"),
            Some("Eviction API: evicting"),
            at,
        ));
    }
    if p.node.is_some() {
        let done = p.is_finished();
        let not_ready = (!ready).then_some(if done {
            "PodCompleted"
        } else {
            "ContainersNotReady"
        });
        conditions.push(condition(
            "PodReadyToStartContainers",
            p.phase != PodPhase::Pending,
            None,
            None,
            started,
        ));
        conditions.push(condition(
            "Initialized",
            true,
            done.then_some("PodCompleted"),
            None,
            scheduled_at,
        ));
        conditions.push(condition(
            "Ready",
            ready,
            not_ready,
            None,
            p.ready_at.unwrap_or(started),
        ));
        conditions.push(condition(
            "ContainersReady",
            ready,
            not_ready,
            None,
            p.ready_at.unwrap_or(started),
        ));
    }
    conditions.push(condition(
        "PodScheduled",
        p.node.is_some(),
        unschedulable.map(|_| "Unschedulable"),
        unschedulable.map(|(_, m)| m.as_str()),
        scheduled_at,
    ));
    let statuses: Option<Vec<core::ContainerStatus>> = p.node.is_some().then(|| {
        spec.containers
            .iter()
            .map(|c| {
                let (state, last) = container_state(p, &c.name, started);
                core::ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    image_id: String::new(),
                    ready,
                    restart_count: p.restarts as i32,
                    started: Some(p.phase == PodPhase::Running),
                    state: Some(state),
                    last_state: last,
                    container_id: (p.phase != PodPhase::Pending)
                        .then(|| format!("containerd://{}", p.uid.replace('-', ""))),
                    ..Default::default()
                }
            })
            .collect()
    });
    let failed_reason = p
        .reason
        .as_ref()
        .filter(|(r, _)| r != "Unschedulable" && p.phase == PodPhase::Failed);
    let qos = qos_class(&spec);
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
                .filter(|o| matches!(o.kind.as_str(), "ReplicaSet" | "DaemonSet" | "Job"))
                .map(|o| format!("{}-", o.name)),
            ..Default::default()
        },
        spec: Some(spec),
        status: Some(core::PodStatus {
            phase: Some(p.phase.as_str().into()),
            conditions: Some(conditions),
            host_ip: host_ip.clone(),
            host_ips: host_ip.map(|ip| vec![core::HostIP { ip }]),
            pod_ip: (!p.ip.is_empty()).then(|| p.ip.clone()),
            pod_ips: (!p.ip.is_empty()).then(|| vec![core::PodIP { ip: p.ip.clone() }]),
            start_time: p.node.is_some().then(|| time(scheduled_at)),
            container_statuses: statuses,
            qos_class: Some(qos.into()),
            reason: failed_reason.map(|(r, _)| r.clone()),
            message: failed_reason.map(|(_, m)| m.clone()),
            ..Default::default()
        }),
    }
}
