//! Server-side printing: the `meta.k8s.io/v1` `Table` kubectl asks for (`Accept: ...;as=Table`),
//! with the columns and cells the apiserver's printers give each kind (`-o wide` columns at
//! priority 1; the server always fills them, kubectl chooses). Cells are computed from the
//! objects' JSON, as the printers compute them from the objects, so a list, a get and each
//! event of a watch print alike.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::clock::Millis;
use crate::resource::Res;

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

fn column(name: &str, kind: &str, priority: i32, description: &str) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": priority})
}

const NAME: &str = "Name must be unique within a namespace.";
const AGE: &str =
    "CreationTimestamp is a timestamp representing the server time when this object was created.";

/// The columns of `res`'s table: (name, type, priority, description).
fn columns(res: Res) -> Vec<(&'static str, &'static str, i32, &'static str)> {
    let age = ("Age", "string", 0, AGE);
    let name = ("Name", "string", 0, NAME);
    let containers = (
        "Containers",
        "string",
        1,
        "Names of each container in the template.",
    );
    let images = (
        "Images",
        "string",
        1,
        "Images referenced by each container in the template.",
    );
    let selector = ("Selector", "string", 1, "A label query over pods.");
    match res {
        Res::Pod => vec![
            name,
            (
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            (
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            (
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
            ),
            age,
            (
                "IP",
                "string",
                1,
                "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
            ),
            (
                "Node",
                "string",
                1,
                "Name of the node where the pod is scheduled.",
            ),
            (
                "Nominated Node",
                "string",
                1,
                "nominatedNodeName is set when this pod preempts other pods on the node.",
            ),
            (
                "Readiness Gates",
                "string",
                1,
                "If specified, all readiness gates will be evaluated for pod readiness.",
            ),
        ],
        Res::Node => vec![
            name,
            ("Status", "string", 0, "The status of the node"),
            ("Roles", "string", 0, "The roles of the node"),
            age,
            (
                "Version",
                "string",
                0,
                "Kubelet Version reported by the node.",
            ),
            (
                "Internal-IP",
                "string",
                1,
                "List of internal IPs for the node.",
            ),
            (
                "External-IP",
                "string",
                1,
                "List of external IPs for the node.",
            ),
            (
                "OS-Image",
                "string",
                1,
                "OS image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
            ),
            (
                "Kernel-Version",
                "string",
                1,
                "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
            ),
            (
                "Container-Runtime",
                "string",
                1,
                "Container runtime version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
            ),
        ],
        Res::Namespace => vec![
            name,
            ("Status", "string", 0, "The status of the namespace"),
            age,
        ],
        Res::Service => vec![
            name,
            (
                "Type",
                "string",
                0,
                "type determines how the Service is exposed.",
            ),
            (
                "Cluster-IP",
                "string",
                0,
                "clusterIP is the IP address of the service.",
            ),
            (
                "External-IP",
                "string",
                0,
                "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
            ),
            (
                "Port(s)",
                "string",
                0,
                "The list of ports that are exposed by this service.",
            ),
            age,
            (
                "Selector",
                "string",
                1,
                "Route service traffic to pods with label keys and values matching this selector.",
            ),
        ],
        Res::Secret => vec![
            name,
            ("Type", "string", 0, "The type of secret"),
            ("Data", "string", 0, "The number of keys in the secret"),
            age,
        ],
        Res::ConfigMap => vec![
            name,
            ("Data", "string", 0, "Data contains the configuration data."),
            age,
        ],
        Res::Claim => vec![
            name,
            (
                "Status",
                "string",
                0,
                "phase represents the current phase of PersistentVolumeClaim.",
            ),
            (
                "Volume",
                "string",
                0,
                "volumeName is the binding reference to the PersistentVolume backing this claim.",
            ),
            (
                "Capacity",
                "string",
                0,
                "capacity represents the actual resources of the underlying volume.",
            ),
            (
                "Access Modes",
                "string",
                0,
                "accessModes contains the actual access modes the volume backing the PVC has.",
            ),
            ("StorageClass", "string", 0, "StorageClass of the pvc"),
            (
                "VolumeAttributesClass",
                "string",
                0,
                "VolumeAttributesClass of the pvc",
            ),
            age,
            (
                "VolumeMode",
                "string",
                1,
                "volumeMode defines what type of volume is required by the claim.",
            ),
        ],
        Res::Volume => vec![
            name,
            (
                "Capacity",
                "string",
                0,
                "capacity is the description of the persistent volume's resources and capacity.",
            ),
            (
                "Access Modes",
                "string",
                0,
                "accessModes contains all ways the volume can be mounted.",
            ),
            (
                "Reclaim Policy",
                "string",
                0,
                "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim.",
            ),
            (
                "Status",
                "string",
                0,
                "phase indicates if a volume is available, bound to a claim, or released by a claim.",
            ),
            (
                "Claim",
                "string",
                0,
                "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim.",
            ),
            ("StorageClass", "string", 0, "StorageClass of the pv"),
            (
                "VolumeAttributesClass",
                "string",
                0,
                "VolumeAttributesClass of the pv",
            ),
            (
                "Reason",
                "string",
                0,
                "reason is a brief CamelCase string that describes any failure.",
            ),
            age,
            (
                "VolumeMode",
                "string",
                1,
                "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.",
            ),
        ],
        Res::Event | Res::EventV1 => vec![
            (
                "Last Seen",
                "string",
                0,
                "The time at which the most recent occurrence of this event was recorded.",
            ),
            (
                "Type",
                "string",
                0,
                "Type of this event (Normal, Warning), new types could be added in the future",
            ),
            (
                "Reason",
                "string",
                0,
                "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
            ),
            (
                "Object",
                "string",
                0,
                "The object that this event is about.",
            ),
            (
                "Subobject",
                "string",
                1,
                "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
            ),
            (
                "Source",
                "string",
                1,
                "The component reporting this event. Should be a short machine understandable string.",
            ),
            (
                "Message",
                "string",
                0,
                "A human-readable description of the status of this operation.",
            ),
            (
                "First Seen",
                "string",
                1,
                "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
            ),
            (
                "Count",
                "string",
                1,
                "The number of times this event has occurred.",
            ),
            ("Name", "string", 1, NAME),
        ],
        Res::Deployment => vec![
            name,
            ("Ready", "string", 0, "Number of the pod with ready state"),
            (
                "Up-to-date",
                "string",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            (
                "Available",
                "string",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            age,
            containers,
            images,
            selector,
        ],
        Res::ReplicaSet => vec![
            name,
            (
                "Desired",
                "integer",
                0,
                "Replicas is the number of desired replicas.",
            ),
            (
                "Current",
                "integer",
                0,
                "Replicas is the most recently observed number of replicas.",
            ),
            (
                "Ready",
                "integer",
                0,
                "The number of ready replicas for this replica set.",
            ),
            age,
            containers,
            images,
            selector,
        ],
        Res::StatefulSet => vec![
            name,
            ("Ready", "string", 0, "Number of the pod with ready state"),
            age,
            containers,
            images,
        ],
        Res::DaemonSet => vec![
            name,
            (
                "Desired",
                "integer",
                0,
                "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).",
            ),
            (
                "Current",
                "integer",
                0,
                "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
            ),
            (
                "Ready",
                "integer",
                0,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
            ),
            (
                "Up-to-date",
                "integer",
                0,
                "The total number of nodes that are running updated daemon pod",
            ),
            (
                "Available",
                "integer",
                0,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
            ),
            (
                "Node Selector",
                "string",
                0,
                "NodeSelector is a selector which must be true for the pod to fit on a node.",
            ),
            age,
            containers,
            images,
            selector,
        ],
        Res::Job => vec![
            name,
            ("Status", "string", 0, "Status of the job."),
            (
                "Completions",
                "string",
                0,
                "The number of pods which reached phase Succeeded.",
            ),
            (
                "Duration",
                "string",
                0,
                "Time required to complete the job.",
            ),
            age,
            containers,
            images,
            selector,
        ],
        Res::Budget => vec![
            name,
            (
                "Min Available",
                "string",
                0,
                "The minimum number of pods that must be available.",
            ),
            (
                "Max Unavailable",
                "string",
                0,
                "The maximum number of pods that may be unavailable.",
            ),
            (
                "Allowed Disruptions",
                "integer",
                0,
                "Calculated number of pods that may be disrupted at this time.",
            ),
            age,
        ],
        Res::StorageClass => vec![
            name,
            (
                "Provisioner",
                "string",
                0,
                "provisioner indicates the type of the provisioner.",
            ),
            (
                "ReclaimPolicy",
                "string",
                0,
                "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class.",
            ),
            (
                "VolumeBindingMode",
                "string",
                0,
                "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.",
            ),
            (
                "AllowVolumeExpansion",
                "string",
                0,
                "allowVolumeExpansion shows whether the storage class allow volume expand.",
            ),
            age,
        ],
    }
}

/// The column definitions of `res`'s table.
pub fn definitions(res: Res) -> Vec<Value> {
    columns(res)
        .into_iter()
        .map(|(n, t, p, d)| column(n, t, p, d))
        .collect()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().unwrap_or_default()
}

fn millis(s: &str) -> Option<Millis> {
    s.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond().max(0) as Millis)
}

/// How long ago an RFC 3339 time was, as kubectl prints it (`<unknown>` without one).
fn since(t: &str, now: Millis) -> String {
    millis(t).map_or_else(
        || "<unknown>".into(),
        |t| human_duration(now.saturating_sub(t)),
    )
}

fn age(v: &Value, now: Millis) -> String {
    since(str_at(v, &["metadata", "creationTimestamp"]), now)
}

/// `k=v,k2=v2`, or `<none>`.
fn format_labels(m: &Value) -> String {
    match m.as_object() {
        Some(o) if !o.is_empty() => o
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

/// A label selector as `metav1.FormatLabelSelector` prints it.
fn format_selector(s: &Value) -> String {
    let mut parts: Vec<String> = s["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for e in s["matchExpressions"].as_array().into_iter().flatten() {
        let key = str_at(e, &["key"]);
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match str_at(e, &["operator"]) {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            op => format!("{key} {op}"),
        });
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

/// `names`, `images` of a pod spec's containers, comma-separated.
fn containers_cells(spec: &Value) -> (String, String) {
    let list = spec["containers"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = list.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = list.iter().map(|c| str_at(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn int_or_string(v: &Value) -> String {
    match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => "N/A".into(),
    }
}

fn access_modes(v: &Value) -> String {
    let short = |m: &str| {
        match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        }
        .to_string()
    };
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(short)
        .collect::<Vec<_>>()
        .join(",")
}

/// A pod's cells, as `printPod` computes them.
fn pod_cells(p: &Value, now: Millis) -> (Vec<Value>, Option<Value>) {
    let status = &p["status"];
    let phase = str_at(status, &["phase"]);
    let mut reason = if status["reason"].is_string() {
        str_at(status, &["reason"]).to_string()
    } else {
        phase.to_string()
    };
    let total = p["spec"]["containers"].as_array().map_or(0, Vec::len);
    let (mut ready, mut restarts, mut last_restart, mut running) = (0, 0, None::<Millis>, false);
    for c in status["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
    {
        restarts += int(&c["restartCount"]);
        if let Some(t) = millis(str_at(c, &["lastState", "terminated", "finishedAt"])) {
            last_restart = Some(last_restart.map_or(t, |l: Millis| l.max(t)));
        }
        let state = &c["state"];
        if !str_at(state, &["waiting", "reason"]).is_empty() {
            reason = str_at(state, &["waiting", "reason"]).to_string();
        } else if !str_at(state, &["terminated", "reason"]).is_empty() {
            reason = str_at(state, &["terminated", "reason"]).to_string();
        } else if state["terminated"].is_object() {
            reason = format!("ExitCode:{}", int(&state["terminated"]["exitCode"]));
        } else if c["ready"] == true && state["running"].is_object() {
            running = true;
            ready += 1;
        }
    }
    if reason == "Completed" && running {
        reason = "Running".into();
    }
    let terminal = phase == "Succeeded" || phase == "Failed";
    if p["metadata"]["deletionTimestamp"].is_string() && !terminal {
        reason = "Terminating".into();
    }
    let restarts = match last_restart {
        Some(t) if restarts > 0 => {
            format!("{restarts} ({} ago)", human_duration(now.saturating_sub(t)))
        }
        _ => restarts.to_string(),
    };
    let none = |s: &str| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s.to_string()
        }
    };
    let cells = vec![
        json!(str_at(p, &["metadata", "name"])),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts),
        json!(age(p, now)),
        json!(none(str_at(status, &["podIP"]))),
        json!(none(str_at(p, &["spec", "nodeName"]))),
        json!(none(str_at(status, &["nominatedNodeName"]))),
        json!("<none>"),
    ];
    let conditions = match phase {
        "Succeeded" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]),
        ),
        _ => None,
    };
    (cells, conditions)
}

fn node_cells(n: &Value, now: Millis) -> Vec<Value> {
    let status = &n["status"];
    let ready = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    let mut word = match ready {
        Some(c) if c["status"] == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if n["spec"]["unschedulable"] == true {
        word.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = n["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
            Some(r) if !r.is_empty() => Some(r.to_string()),
            _ if k == "kubernetes.io/role" => v.as_str().map(str::to_string),
            _ => None,
        })
        .collect();
    roles.sort();
    roles.dedup();
    let addr = |kind: &str| {
        status["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == kind)
            .map_or("<none>".to_string(), |a| {
                str_at(a, &["address"]).to_string()
            })
    };
    let info = &status["nodeInfo"];
    let or_unknown = |s: &str| {
        if s.is_empty() {
            "<unknown>".to_string()
        } else {
            s.to_string()
        }
    };
    vec![
        json!(str_at(n, &["metadata", "name"])),
        json!(word),
        json!(if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        }),
        json!(age(n, now)),
        json!(str_at(info, &["kubeletVersion"])),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(or_unknown(str_at(info, &["osImage"]))),
        json!(or_unknown(str_at(info, &["kernelVersion"]))),
        json!(or_unknown(str_at(info, &["containerRuntimeVersion"]))),
    ]
}

fn service_cells(s: &Value, now: Millis) -> Vec<Value> {
    let spec = &s["spec"];
    let kind = str_at(spec, &["type"]);
    let ip = spec["clusterIPs"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .unwrap_or("<none>");
    let external: Vec<&str> = spec["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let external = match kind {
        "ExternalName" => str_at(spec, &["externalName"]).to_string(),
        "LoadBalancer" if external.is_empty() => {
            let lb: Vec<&str> = s["status"]["loadBalancer"]["ingress"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    let ip = str_at(i, &["ip"]);
                    if ip.is_empty() {
                        str_at(i, &["hostname"])
                    } else {
                        ip
                    }
                })
                .collect();
            if lb.is_empty() {
                "<pending>".into()
            } else {
                lb.join(",")
            }
        }
        _ if external.is_empty() => "<none>".into(),
        _ => external.join(","),
    };
    let ports: Vec<String> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = str_at(p, &["protocol"]);
            match int(&p["nodePort"]) {
                0 => format!("{}/{proto}", int(&p["port"])),
                n => format!("{}:{n}/{proto}", int(&p["port"])),
            }
        })
        .collect();
    vec![
        json!(str_at(s, &["metadata", "name"])),
        json!(kind),
        json!(ip),
        json!(external),
        json!(if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(",")
        }),
        json!(age(s, now)),
        json!(format_labels(&spec["selector"])),
    ]
}

fn event_cells(res: Res, e: &Value, now: Millis) -> Vec<Value> {
    // events.k8s.io/v1 keeps the core fields under other names.
    let (first, last, count, regarding, source, message) = if res == Res::EventV1 {
        (
            str_at(e, &["deprecatedFirstTimestamp"]),
            str_at(e, &["deprecatedLastTimestamp"]),
            &e["deprecatedCount"],
            &e["regarding"],
            str_at(e, &["reportingController"]).to_string(),
            str_at(e, &["note"]),
        )
    } else {
        let component = str_at(e, &["source", "component"]);
        let host = str_at(e, &["source", "host"]);
        let component = if component.is_empty() {
            str_at(e, &["reportingComponent"])
        } else {
            component
        };
        (
            str_at(e, &["firstTimestamp"]),
            str_at(e, &["lastTimestamp"]),
            &e["count"],
            &e["involvedObject"],
            if host.is_empty() {
                component.to_string()
            } else {
                format!("{component}, {host}")
            },
            str_at(e, &["message"]),
        )
    };
    let first_seen = since(first, now);
    let last_seen = if last.is_empty() {
        first_seen.clone()
    } else {
        since(last, now)
    };
    let kind = str_at(regarding, &["kind"]).to_lowercase();
    let name = str_at(regarding, &["name"]);
    let target = if name.is_empty() {
        kind
    } else {
        format!("{kind}/{name}")
    };
    vec![
        json!(last_seen),
        json!(str_at(e, &["type"])),
        json!(str_at(e, &["reason"])),
        json!(target),
        json!(str_at(regarding, &["fieldPath"])),
        json!(source),
        json!(message.trim()),
        json!(first_seen),
        json!(count.as_i64().unwrap_or(1).max(1)),
        json!(str_at(e, &["metadata", "name"])),
    ]
}

fn job_cells(j: &Value, now: Millis) -> Vec<Value> {
    let spec = &j["spec"];
    let status = &j["status"];
    let succeeded = int(&status["succeeded"]);
    let completions = match spec["completions"].as_i64() {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int(&spec["parallelism"]) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let start = millis(str_at(status, &["startTime"]));
    let end = millis(str_at(status, &["completionTime"]));
    let duration = match (start, end) {
        (None, _) => String::new(),
        (Some(s), None) => human_duration(now.saturating_sub(s)),
        (Some(s), Some(e)) => human_duration(e.saturating_sub(s)),
    };
    let has = |kind: &str| {
        status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == kind && c["status"] == "True")
    };
    let word = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if j["metadata"]["deletionTimestamp"].is_string() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = containers_cells(&spec["template"]["spec"]);
    vec![
        json!(str_at(j, &["metadata", "name"])),
        json!(word),
        json!(completions),
        json!(duration),
        json!(age(j, now)),
        json!(names),
        json!(images),
        json!(format_selector(&spec["selector"])),
    ]
}

/// The cells of `item`'s row, and the row's conditions (a finished pod's `Completed`).
fn cells(res: Res, v: &Value, now: Millis) -> (Vec<Value>, Option<Value>) {
    let name = json!(str_at(v, &["metadata", "name"]));
    let spec = &v["spec"];
    let status = &v["status"];
    let template = &spec["template"]["spec"];
    let out = match res {
        Res::Pod => return pod_cells(v, now),
        Res::Node => node_cells(v, now),
        Res::Namespace => vec![name, json!(str_at(status, &["phase"])), json!(age(v, now))],
        Res::Service => service_cells(v, now),
        Res::Secret => {
            let n = v["data"].as_object().map_or(0, |m| m.len());
            vec![
                name,
                json!(str_at(v, &["type"])),
                json!(n),
                json!(age(v, now)),
            ]
        }
        Res::ConfigMap => {
            let n = v["data"].as_object().map_or(0, |m| m.len())
                + v["binaryData"].as_object().map_or(0, |m| m.len());
            vec![name, json!(n), json!(age(v, now))]
        }
        Res::Claim => {
            let phase = if v["metadata"]["deletionTimestamp"].is_string() {
                "Terminating"
            } else {
                str_at(status, &["phase"])
            };
            let bound = !str_at(spec, &["volumeName"]).is_empty();
            vec![
                name,
                json!(phase),
                json!(str_at(spec, &["volumeName"])),
                json!(if bound {
                    str_at(status, &["capacity", "storage"])
                } else {
                    ""
                }),
                json!(if bound {
                    access_modes(&status["accessModes"])
                } else {
                    String::new()
                }),
                json!(str_at(spec, &["storageClassName"])),
                json!("<unset>"),
                json!(age(v, now)),
                json!(match str_at(spec, &["volumeMode"]) {
                    "" => "<unset>",
                    m => m,
                }),
            ]
        }
        Res::Volume => {
            let claim = &spec["claimRef"];
            let claim = if claim.is_object() {
                format!(
                    "{}/{}",
                    str_at(claim, &["namespace"]),
                    str_at(claim, &["name"])
                )
            } else {
                String::new()
            };
            let phase = if v["metadata"]["deletionTimestamp"].is_string() {
                "Terminating"
            } else {
                str_at(status, &["phase"])
            };
            vec![
                name,
                json!(str_at(spec, &["capacity", "storage"])),
                json!(access_modes(&spec["accessModes"])),
                json!(str_at(spec, &["persistentVolumeReclaimPolicy"])),
                json!(phase),
                json!(claim),
                json!(str_at(spec, &["storageClassName"])),
                json!("<unset>"),
                json!(str_at(status, &["reason"])),
                json!(age(v, now)),
                json!(match str_at(spec, &["volumeMode"]) {
                    "" => "<unset>",
                    m => m,
                }),
            ]
        }
        Res::Event | Res::EventV1 => event_cells(res, v, now),
        Res::Deployment => {
            let (names, images) = containers_cells(template);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(&status["readyReplicas"]),
                    int(&spec["replicas"])
                )),
                json!(int(&status["updatedReplicas"])),
                json!(int(&status["availableReplicas"])),
                json!(age(v, now)),
                json!(names),
                json!(images),
                json!(format_selector(&spec["selector"])),
            ]
        }
        Res::ReplicaSet => {
            let (names, images) = containers_cells(template);
            vec![
                name,
                json!(int(&spec["replicas"])),
                json!(int(&status["replicas"])),
                json!(int(&status["readyReplicas"])),
                json!(age(v, now)),
                json!(names),
                json!(images),
                json!(format_selector(&spec["selector"])),
            ]
        }
        Res::StatefulSet => {
            let (names, images) = containers_cells(template);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(&status["readyReplicas"]),
                    int(&spec["replicas"])
                )),
                json!(age(v, now)),
                json!(names),
                json!(images),
            ]
        }
        Res::DaemonSet => {
            let (names, images) = containers_cells(template);
            vec![
                name,
                json!(int(&status["desiredNumberScheduled"])),
                json!(int(&status["currentNumberScheduled"])),
                json!(int(&status["numberReady"])),
                json!(int(&status["updatedNumberScheduled"])),
                json!(int(&status["numberAvailable"])),
                json!(format_labels(&template["nodeSelector"])),
                json!(age(v, now)),
                json!(names),
                json!(images),
                json!(format_selector(&spec["selector"])),
            ]
        }
        Res::Job => job_cells(v, now),
        Res::Budget => vec![
            name,
            json!(int_or_string(&spec["minAvailable"])),
            json!(int_or_string(&spec["maxUnavailable"])),
            json!(int(&status["disruptionsAllowed"])),
            json!(age(v, now)),
        ],
        Res::StorageClass => {
            let default = v["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
                == "true";
            let n = str_at(v, &["metadata", "name"]);
            vec![
                json!(if default {
                    format!("{n} (default)")
                } else {
                    n.to_string()
                }),
                json!(str_at(v, &["provisioner"])),
                json!(match str_at(v, &["reclaimPolicy"]) {
                    "" => "Delete",
                    p => p,
                }),
                json!(match str_at(v, &["volumeBindingMode"]) {
                    "" => "Immediate",
                    m => m,
                }),
                json!(v["allowVolumeExpansion"] == true),
                json!(age(v, now)),
            ]
        }
    };
    (out, None)
}

/// The row's object: partial metadata by default, the object itself with `includeObject=Object`,
/// nothing with `None`.
fn row_object(full: &Value, q: &BTreeMap<String, String>) -> Option<Value> {
    match q.get("includeObject").map(String::as_str) {
        Some("None") => None,
        Some("Object") => Some(full.clone()),
        _ => Some(json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": full["metadata"],
        })),
    }
}

/// One row of `res`'s table.
pub fn row(res: Res, item: &Value, now: Millis, q: &BTreeMap<String, String>) -> Value {
    let (cells, conditions) = cells(res, item, now);
    let mut r = json!({"cells": cells});
    if let Some(c) = conditions {
        r["conditions"] = c;
    }
    if let Some(o) = row_object(item, q) {
        r["object"] = o;
    }
    r
}

/// The table of `items` (with column definitions when `headers`).
pub fn table(
    res: Res,
    items: &[Value],
    now: Millis,
    rv: u64,
    q: &BTreeMap<String, String>,
    headers: bool,
) -> Value {
    let rows: Vec<Value> = items.iter().map(|i| row(res, i, now, q)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": if headers { Value::Array(definitions(res)) } else { Value::Array(vec![]) },
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn every_kind_has_as_many_cells_as_columns() {
        for d in crate::resource::RESOURCES {
            let (c, _) = cells(d.res, &json!({"metadata": {"name": "x"}}), 0);
            assert_eq!(c.len(), columns(d.res).len(), "{:?}", d.res);
        }
    }

    #[test]
    fn a_budget_prints_its_allowed_disruptions() {
        let b = json!({"metadata": {"name": "nginx-pdb", "creationTimestamp": "2026-01-05T06:00:00Z"},
                       "spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1}});
        let (c, _) = cells(Res::Budget, &b, crate::clock::VIRTUAL_EPOCH + 90_000);
        assert_eq!(
            c,
            vec![
                json!("nginx-pdb"),
                json!("2"),
                json!("N/A"),
                json!(1),
                json!("90s")
            ]
        );
    }

    #[test]
    fn a_crash_looping_pod_prints_its_reason_and_restarts() {
        let p = json!({"metadata": {"name": "web-1", "creationTimestamp": "2026-01-05T06:00:00Z"},
            "spec": {"containers": [{"name": "web"}], "nodeName": "w-1"},
            "status": {"phase": "Running", "podIP": "10.244.0.5", "containerStatuses": [{"ready": false, "restartCount": 3,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"finishedAt": "2026-01-05T06:01:00Z"}}}]}});
        let (c, _) = pod_cells(&p, crate::clock::VIRTUAL_EPOCH + 120_000);
        assert_eq!(
            &c[..5],
            &[
                json!("web-1"),
                json!("0/1"),
                json!("CrashLoopBackOff"),
                json!("3 (60s ago)"),
                json!("2m")
            ]
        );
    }
}
