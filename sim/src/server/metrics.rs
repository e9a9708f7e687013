//! `metrics.k8s.io/v1beta1`, what metrics-server gives `kubectl top nodes` and `kubectl top
//! pods`, from a usage model: a running container uses between 35% and 85% of its CPU request
//! and 50% to 80% of its memory request (a few millicores and mebibytes without one), the
//! fraction changing each minute; a node uses what its pods use plus what its kubelet, container
//! runtime and system take. Deterministic: the same pod at the same minute uses the same.
//! A node that is down, and pods not running, have no metrics, as metrics-server has none.

#![allow(clippy::result_large_err)]

use super::*;
use crate::model::{PodPhase, SimNode, SimPod};

/// metrics-server's scrape window.
const WINDOW: &str = "20.05s";

/// A number in [0, 1) from a pod's uid and the minute: its usage moves, but not at random.
fn fraction(uid: &str, minute: u64, salt: u64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for b in uid.bytes().chain(minute.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// A pod's usage: (nanocores, bytes).
pub(super) fn pod_usage(p: &SimPod, now: Millis) -> (u64, u64) {
    let minute = now / 60_000;
    let cpu = if p.spec.cpu_millis == 0 {
        (1.0 + 4.0 * fraction(&p.uid, minute, 1)) * 1e6
    } else {
        p.spec.cpu_millis as f64 * (0.35 + 0.5 * fraction(&p.uid, minute, 1)) * 1e6
    };
    let memory = if p.spec.memory_bytes == 0 {
        (4.0 + 16.0 * fraction(&p.uid, minute, 2)) * 1024.0 * 1024.0
    } else {
        p.spec.memory_bytes as f64 * (0.5 + 0.3 * fraction(&p.uid, minute, 2))
    };
    (cpu as u64, memory as u64)
}

fn running(p: &SimPod) -> bool {
    p.phase == PodPhase::Running && p.deleting_at.is_none()
}

fn node_usage(w: &World, n: &SimNode) -> (u64, u64) {
    let now = w.now();
    // The kubelet, the container runtime and the system.
    let (mut cpu, mut memory) = (
        (150 + n.cpu_millis / 100) * 1_000_000,
        (600 << 20) + n.memory_bytes / 100,
    );
    for p in w.pods_on(&n.name).filter(|p| running(p)) {
        let (c, m) = pod_usage(p, now);
        cpu += c;
        memory += m;
    }
    (cpu, memory)
}

fn node_metrics(w: &World, n: &SimNode) -> Value {
    let (cpu, memory) = node_usage(w, n);
    let t = kube::time(w.now().saturating_sub(10_000));
    json!({
        "kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": n.name, "creationTimestamp": kube::time(w.now()), "labels": n.labels},
        "timestamp": t, "window": WINDOW,
        "usage": {"cpu": format!("{cpu}n"), "memory": format!("{}Ki", memory / 1024)},
    })
}

fn pod_metrics(w: &World, p: &SimPod) -> Value {
    let now = w.now();
    let (cpu, memory) = pod_usage(p, now);
    let names = crate::model::container_names(p);
    let n = names.len().max(1) as u64;
    let containers: Vec<Value> = names
        .iter()
        .map(|c| json!({"name": c, "usage": {"cpu": format!("{}n", cpu / n), "memory": format!("{}Ki", memory / n / 1024)}}))
        .collect();
    json!({
        "kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": p.name, "namespace": p.namespace, "creationTimestamp": kube::time(now), "labels": p.spec.labels},
        "timestamp": kube::time(now.saturating_sub(10_000)), "window": WINDOW,
        "containers": containers,
    })
}

fn list(kind: &str, items: Vec<Value>) -> Response {
    ok(
        &json!({"kind": kind, "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}),
    )
}

pub(super) fn serve(w: &World, t: &Target, ask: &Ask) -> Response {
    if t.version != "v1beta1" {
        return refused(&ApiError::NotFound {
            resource: String::new(),
            name: "the server could not find the requested resource".into(),
        });
    }
    if ask.method != Method::GET {
        return refused(&ApiError::MethodNotAllowed);
    }
    let filter = match Filter::parse(&ask.query, Res::Node) {
        Ok(f) => f,
        Err(e) => return refused(&e),
    };
    let missing = |what: &str, name: &str| {
        refused(&ApiError::NotFound {
            resource: format!("{what}.metrics.k8s.io"),
            name: name.to_string(),
        })
    };
    match (t.resource.as_str(), t.name.as_deref()) {
        ("nodes", None) => list(
            "NodeMetricsList",
            w.nodes
                .values()
                .filter(|n| {
                    !n.down
                        && filter.keep(&n.labels, |k| {
                            (k == "metadata.name").then(|| n.name.clone())
                        })
                })
                .map(|n| node_metrics(w, n))
                .collect(),
        ),
        ("nodes", Some(name)) => match w.nodes.get(name).filter(|n| !n.down) {
            Some(n) => ok(&node_metrics(w, n)),
            None => missing("nodes", name),
        },
        ("pods", None) => list(
            "PodMetricsList",
            w.pods
                .values()
                .filter(|p| running(p) && t.namespace.as_ref().is_none_or(|ns| &p.namespace == ns))
                .filter(|p| {
                    p.node
                        .as_ref()
                        .and_then(|n| w.nodes.get(n))
                        .is_some_and(|n| !n.down)
                })
                .filter(|p| {
                    filter.keep(&p.spec.labels, |k| {
                        (k == "metadata.name").then(|| p.name.clone())
                    })
                })
                .map(|p| pod_metrics(w, p))
                .collect(),
        ),
        ("pods", Some(name)) => {
            let key = (t.namespace.clone().unwrap_or_default(), name.to_string());
            match w.pods.get(&key).filter(|p| running(p)) {
                Some(p) => ok(&pod_metrics(w, p)),
                None => missing("pods", name),
            }
        }
        _ => refused(&ApiError::NotFound {
            resource: String::new(),
            name: "the server could not find the requested resource".into(),
        }),
    }
}
