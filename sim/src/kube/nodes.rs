//! Nodes as the API shows them, and the fields a patch of one may change.

use super::*;

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
    let mut capacity = allocatable.clone();
    for (resource, count) in &n.extended {
        capacity.insert(resource.clone(), Quantity(count.to_string()));
        let usable = if n.devices_lost { 0 } else { *count };
        allocatable.insert(resource.clone(), Quantity(usable.to_string()));
    }
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
            allocatable: Some(allocatable),
            capacity: Some(capacity),
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
