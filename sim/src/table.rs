//! Server-side printing: the `meta.k8s.io/v1` `Table` kubectl asks for (`Accept: ...;as=Table`),
//! with the columns the apiserver's printers give nodes and pods (wide ones at priority 1).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::{Value, json};

use crate::clock::Millis;
use crate::kube::pod_status_word;
use crate::model::{SimPod, World};

/// `5m10s`, or `5m` when the smaller unit is zero.
fn two_units(big: u64, big_unit: &str, small: u64, small_unit: &str) -> String {
    if small == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit}{small}{small_unit}")
    }
}

/// kubectl's `HumanDuration`: `45s`, `5m10s`, `3h`, `6d2h`, `2y67d`.
pub fn human_duration(ms: Millis) -> String {
    let s = ms / 1000;
    let (m, h) = (s / 60, s / 3600);
    let (d, y) = (h / 24, h / 24 / 365);
    match () {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => two_units(m, "m", s % 60, "s"),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => two_units(h, "h", m % 60, "m"),
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 => two_units(d, "d", h % 24, "h"),
        _ if d < 365 * 2 => format!("{d}d"),
        _ if d < 365 * 8 => two_units(y, "y", d % 365, "d"),
        _ => format!("{y}y"),
    }
}

fn column(name: &str, kind: &str, format: &str, priority: i32, description: &str) -> Value {
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": priority})
}

fn name_column() -> Value {
    column(
        "Name",
        "string",
        "name",
        0,
        "Name must be unique within a namespace.",
    )
}

fn age_column() -> Value {
    column(
        "Age",
        "string",
        "",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    )
}

/// The row's object: partial metadata by default, the object itself with `includeObject=Object`,
/// nothing with `None`.
fn row_object(full: Value, q: &BTreeMap<String, String>) -> Option<Value> {
    match q.get("includeObject").map(String::as_str) {
        Some("None") => None,
        Some("Object") => Some(full),
        _ => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": full["metadata"],
        })),
    }
}

fn table(columns: Vec<Value>, rows: Vec<Value>, rv: u64) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn age(
    created: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    now: Millis,
) -> String {
    created
        .map(|t| {
            let ms = t.0.as_millisecond().max(0) as u64;
            human_duration(now.saturating_sub(ms))
        })
        .unwrap_or_else(|| "<unknown>".into())
}

pub fn nodes(nodes: &[Node], now: Millis, rv: u64, q: &BTreeMap<String, String>) -> Value {
    let columns = vec![
        name_column(),
        column("Status", "string", "", 0, "The status of the node"),
        column("Roles", "string", "", 0, "The roles of the node"),
        age_column(),
        column(
            "Version",
            "string",
            "",
            0,
            "Kubelet Version reported by the node.",
        ),
        column(
            "Internal-IP",
            "string",
            "",
            1,
            "List of internal IPs for the node.",
        ),
        column(
            "External-IP",
            "string",
            "",
            1,
            "List of external IPs for the node.",
        ),
        column(
            "OS-Image",
            "string",
            "",
            1,
            "OS image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
        ),
        column(
            "Kernel-Version",
            "string",
            "",
            1,
            "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
        ),
        column(
            "Container-Runtime",
            "string",
            "",
            1,
            "Container runtime version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
        ),
    ];
    let rows = nodes
        .iter()
        .map(|n| {
            let status = n.status.clone().unwrap_or_default();
            let ready = status
                .conditions
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let mut word = if ready { "Ready" } else { "NotReady" }.to_string();
            if n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
            {
                word.push_str(",SchedulingDisabled");
            }
            let mut roles: Vec<&str> = n
                .metadata
                .labels
                .iter()
                .flatten()
                .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
                .collect();
            roles.sort();
            let roles = if roles.is_empty() {
                "<none>".to_string()
            } else {
                roles.join(",")
            };
            let addr = |kind: &str| {
                status
                    .addresses
                    .iter()
                    .flatten()
                    .find(|a| a.type_ == kind)
                    .map(|a| a.address.clone())
                    .unwrap_or_else(|| "<none>".into())
            };
            let info = status.node_info.clone().unwrap_or_default();
            let full = serde_json::to_value(n).unwrap_or(Value::Null);
            let mut row = json!({
                "cells": [
                    n.metadata.name, word, roles, age(n.metadata.creation_timestamp.as_ref(), now),
                    info.kubelet_version, addr("InternalIP"), addr("ExternalIP"), info.os_image,
                    info.kernel_version, info.container_runtime_version,
                ],
            });
            if let Some(o) = row_object(full, q) {
                row["object"] = o;
            }
            row
        })
        .collect();
    table(columns, rows, rv)
}

pub fn pods(pods: &[Pod], sims: &[&SimPod], w: &World, q: &BTreeMap<String, String>) -> Value {
    let now = w.now();
    let columns = vec![
        name_column(),
        column(
            "Ready",
            "string",
            "",
            0,
            "The aggregate readiness state of this pod for accepting traffic.",
        ),
        column(
            "Status",
            "string",
            "",
            0,
            "The aggregate status of the containers in this pod.",
        ),
        column(
            "Restarts",
            "string",
            "",
            0,
            "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
        ),
        age_column(),
        column(
            "IP",
            "string",
            "",
            1,
            "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
        ),
        column(
            "Node",
            "string",
            "",
            1,
            "Name of the node where the pod is scheduled.",
        ),
        column(
            "Nominated Node",
            "string",
            "",
            1,
            "nominatedNodeName is set when this pod preempts other pods on the node.",
        ),
        column(
            "Readiness Gates",
            "string",
            "",
            1,
            "If specified, all readiness gates will be evaluated for pod readiness.",
        ),
    ];
    let rows = pods
        .iter()
        .zip(sims)
        .map(|(p, s)| {
            let ready = s.is_ready(now, &w.nodes);
            let restarts = match s.crash_looping_since {
                Some(since) if s.restarts > 0 => {
                    format!(
                        "{} ({} ago)",
                        s.restarts,
                        human_duration(now.saturating_sub(since))
                    )
                }
                _ => s.restarts.to_string(),
            };
            let full = serde_json::to_value(p).unwrap_or(Value::Null);
            let mut row = json!({
                "cells": [
                    s.name, format!("{}/1", u8::from(ready)), pod_status_word(s), restarts,
                    age(p.metadata.creation_timestamp.as_ref(), now),
                    if s.ip.is_empty() { "<none>".to_string() } else { s.ip.clone() },
                    s.node.clone().unwrap_or_else(|| "<none>".into()), "<none>", "<none>",
                ],
            });
            if let Some(o) = row_object(full, q) {
                row["object"] = o;
            }
            row
        })
        .collect();
    table(columns, rows, w.resource_version())
}

#[cfg(test)]
mod tests {
    use super::human_duration;

    #[test]
    fn durations_read_like_kubectl() {
        let s = 1000;
        for (ms, want) in [
            (45 * s, "45s"),
            (310 * s, "5m10s"),
            (3 * 3600 * s, "3h"),
            (146 * 3600 * s, "6d2h"),
            (30 * 86400 * s, "30d"),
            (797 * 86400 * s, "2y67d"),
        ] {
            assert_eq!(human_duration(ms), want);
        }
    }
}
