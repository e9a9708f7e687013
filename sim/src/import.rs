//! A simulated cluster rebuilt from a snapshot: the kubectl List `upgradectl plan` reads
//! (`kubectl get nodes,pods,pdb,deploy,sts,ds -A -o json`), parsed into an [`Inventory`].
//! What `rehearse` runs the engine against.
//!
//! Kept as the snapshot shows them: every node (labels, taints, cordon, allocatable CPU and
//! memory, kubelet and control-plane versions, cgroup annotation, age, NotReady as down),
//! every pod on the node it runs on (requests, labels, selector, tolerations, emptyDir,
//! Ready or not, crash-looping), every budget, and every Deployment, StatefulSet and
//! DaemonSet with its replicas and a pod template taken from one of its pods. A pod whose
//! controller is not in the List (a Job's, a bare ReplicaSet's) keeps its owner reference,
//! so a drain evicts it and nothing recreates it; a pod with no owner stays unmanaged, so a
//! drain refuses it, as on the real cluster. Mirror pods come back from the control-plane
//! versions; finished pods are left out.
//!
//! A budget's status is computed from the pods, as the disruption controller does, not
//! copied from the snapshot (whose numbers were true at the moment it was taken).
//!
//! Not in a List, so chosen here: pods become Ready 5 s after they start and terminate at
//! once (the scenarios' defaults), every pod looks 30 days old.

use std::collections::BTreeMap;

use upgraded_events::inventory::{Inventory, Labels, NodeInv, PodInv};

use crate::clock::{Clock, Millis};
use crate::model::{ControlPlane, Kind, ModelError, OwnerRef, PodTemplate, World};
use crate::scenario::CGROUP_KEY;

/// Labels a controller adds to each pod (not part of its template).
const PER_POD_LABELS: [&str; 5] = [
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
];
const DAY: Millis = 86_400_000;
const STARTUP_MS: Millis = 5_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("the snapshot cannot be rebuilt: {0}")]
    Model(#[from] ModelError),
    #[error("the snapshot's {what} {name} cannot be rebuilt: {why}")]
    Item {
        what: &'static str,
        name: String,
        why: String,
    },
}

/// The cluster of `inv` on `clock`, its random choices (uids, new pods' names) from `seed`.
pub fn world(inv: &Inventory, clock: Clock, seed: u64) -> Result<World, ImportError> {
    let mut w = World::new(clock, seed);
    let now = w.now();
    for n in &inv.nodes {
        node(&mut w, n, now)?;
    }
    // Controllers first, each with a template from one of its pods, then the pods under them.
    let mut owners: BTreeMap<(String, String, String), OwnerRef> = BTreeMap::new();
    for c in &inv.controllers {
        let kind = match c.kind.as_str() {
            "Deployment" => Kind::Deployment,
            "StatefulSet" => Kind::StatefulSet,
            "DaemonSet" => Kind::DaemonSet,
            _ => continue,
        };
        let pods: Vec<&PodInv> = inv
            .pods
            .iter()
            .filter(|p| p.namespace == c.namespace && owned_by(p, kind, &c.name))
            .collect();
        let mut t = pods.first().map(|p| template(p)).unwrap_or_default();
        if t.labels.is_empty() {
            t.labels.insert("app".into(), c.name.clone());
        }
        if kind == Kind::DaemonSet && c.name == "kube-proxy" {
            // The planner reads kube-proxy's version from its pods' image.
            let v = inv
                .nodes
                .iter()
                .filter_map(|n| n.kube_proxy)
                .min()
                .or_else(|| inv.nodes.iter().map(|n| n.kubelet).min());
            if let Some(v) = v {
                t.image = format!("registry.k8s.io/kube-proxy:{v}");
            }
        }
        w.add_workload(kind, &c.namespace, &c.name, c.replicas, t)?;
        let key = (kind, c.namespace.clone(), c.name.clone());
        // A Deployment's pods keep the ReplicaSet name they carry.
        let rs = pods.iter().find_map(|p| {
            p.owner
                .as_ref()
                .filter(|o| o.kind == "ReplicaSet")
                .map(|o| o.name.clone())
        });
        if let (Some(rs), Some(wl)) = (rs, w.workloads.get(&key).map(|w| w.uid.clone())) {
            let uid = format!("{wl}-rs");
            if let Some(wl) = w.workloads.get_mut(&key) {
                wl.replica_set = Some((rs, uid));
            }
        }
        if let Some(wl) = w.workloads.get(&key) {
            owners.insert(
                (
                    kind.as_str().to_string(),
                    c.namespace.clone(),
                    c.name.clone(),
                ),
                wl.pod_owner(),
            );
        }
    }
    for p in inv.pods.iter().filter(|p| !p.mirror && !p.is_finished()) {
        let controller = controller_of(inv, p);
        // A controller's pod is as its template makes it (kube-proxy's image carries its
        // version), with its own labels.
        let mut spec = template(p);
        if let Some((k, name)) = &controller
            && let Some(wl) = w.workloads.values().find(|wl| {
                wl.kind.as_str() == *k && wl.namespace == p.namespace && wl.name == *name
            })
        {
            spec.image = wl.template.image.clone();
        }
        // A pod whose controller the List lacks keeps its owner (nothing recreates it).
        let owner = p.owner.as_ref().map(|o| {
            controller
                .and_then(|(k, name)| owners.get(&(k.to_string(), p.namespace.clone(), name)))
                .cloned()
                .unwrap_or_else(|| OwnerRef {
                    kind: o.kind.clone(),
                    name: o.name.clone(),
                    uid: format!("{}-{}-{}", o.kind, p.namespace, o.name).to_lowercase(),
                })
        });
        let node = p
            .node
            .as_deref()
            .filter(|n| w.nodes.contains_key(*n))
            .map(str::to_string);
        let ready = (p.ready && !p.crash_looping).then(|| now.saturating_sub(30 * DAY));
        w.place_pod(&p.namespace, &p.name, owner, spec, node.as_deref(), ready)
            .map_err(|e| ImportError::Item {
                what: "pod",
                name: format!("{}/{}", p.namespace, p.name),
                why: e.to_string(),
            })?;
        if p.crash_looping
            && let Some(sp) = w.pods.get_mut(&(p.namespace.clone(), p.name.clone()))
        {
            sp.crash_looping_since = Some(now.saturating_sub(DAY));
            sp.restarts = 10;
        }
    }
    for b in &inv.pdbs {
        w.add_pdb(
            &b.namespace,
            &b.name,
            b.selector.clone(),
            b.min_available.clone(),
            b.max_unavailable.clone(),
        )
        .map_err(|e| ImportError::Item {
            what: "PodDisruptionBudget",
            name: format!("{}/{}", b.namespace, b.name),
            why: e.to_string(),
        })?;
    }
    // Controllers catch up (a replica the List lacks is created and scheduled), then the
    // cluster is taken as long established.
    w.tick();
    for p in w.pods.values_mut() {
        p.created = p.created.min(now.saturating_sub(30 * DAY));
    }
    for wl in w.workloads.values_mut() {
        wl.created = wl.created.min(now.saturating_sub(30 * DAY));
    }
    for b in w.pdbs.values_mut() {
        b.created = b.created.min(now.saturating_sub(30 * DAY));
    }
    Ok(w)
}

fn node(w: &mut World, n: &NodeInv, now: Millis) -> Result<(), ImportError> {
    let item = |e: ModelError| ImportError::Item {
        what: "node",
        name: n.name.clone(),
        why: e.to_string(),
    };
    let mut annotations = Labels::new();
    if let Some(c) = n.cgroup {
        annotations.insert(CGROUP_KEY.into(), format!("v{c}"));
    }
    let cp = n.control_plane.as_ref().map(|cp| ControlPlane {
        apiserver: cp.apiserver,
        controller_manager: cp.controller_manager,
        scheduler: cp.scheduler,
        etcd: cp.etcd.clone().unwrap_or_else(|| "3.5.16-0".into()),
    });
    let created = n
        .created
        .and_then(|t| u64::try_from(t.0).ok())
        .unwrap_or_else(|| now.saturating_sub(365 * DAY));
    w.add_node(
        &n.name,
        n.labels.clone(),
        annotations.clone(),
        n.allocatable.cpu_millis,
        n.allocatable.memory_bytes,
        n.kubelet,
        cp,
        created,
    )
    .map_err(item)?;
    // Its devices as their plugins registered them (allocatable, as the snapshot shows).
    if let Some(node) = w.nodes.get_mut(&n.name) {
        node.extended = n.extended.clone();
    }
    w.set_node_meta(&n.name, n.labels.clone(), annotations, n.taints.clone())
        .map_err(item)?;
    if n.unschedulable {
        w.set_unschedulable(&n.name, true).map_err(item)?;
    }
    if !n.ready {
        w.set_node_down(&n.name, true).map_err(item)?;
    }
    Ok(())
}

/// Whether `p` belongs to the controller `kind`/`name` (a Deployment through its
/// ReplicaSet `<name>-<hash>`).
fn owned_by(p: &PodInv, kind: Kind, name: &str) -> bool {
    let Some(o) = &p.owner else { return false };
    match kind {
        // The inventory names a Deployment's pods' owner after the Deployment when the List
        // holds it, else by their ReplicaSet.
        Kind::Deployment if o.kind == "Deployment" => o.name == name,
        Kind::Deployment => {
            o.kind == "ReplicaSet"
                && o.name
                    .strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|hash| !hash.is_empty() && !hash.contains('-'))
        }
        _ => o.kind == kind.as_str() && o.name == name,
    }
}

/// The controller in the List that owns `p`, as (kind, name).
fn controller_of(inv: &Inventory, p: &PodInv) -> Option<(&'static str, String)> {
    inv.controllers
        .iter()
        .filter(|c| c.namespace == p.namespace)
        .find_map(|c| {
            let kind = match c.kind.as_str() {
                "Deployment" => Kind::Deployment,
                "StatefulSet" => Kind::StatefulSet,
                "DaemonSet" => Kind::DaemonSet,
                _ => return None,
            };
            owned_by(p, kind, &c.name).then(|| (kind.as_str(), c.name.clone()))
        })
}

/// A pod's template: what it asks for and where it may run.
fn template(p: &PodInv) -> PodTemplate {
    let mut labels = p.labels.clone();
    for k in PER_POD_LABELS {
        labels.remove(k);
    }
    PodTemplate {
        labels,
        cpu_millis: p.requests.cpu_millis,
        memory_bytes: p.requests.memory_bytes,
        node_selector: p.node_selector.clone(),
        tolerations: p.tolerations.clone(),
        empty_dir: p.empty_dir || p.local_storage,
        image: format!("snapshot/{}:imported", p.namespace),
        startup_ms: STARTUP_MS,
        termination_ms: 0,
        ..PodTemplate::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube;

    /// The seed scenario, listed as kubectl would, rebuilt: the same nodes, pods on the same
    /// nodes, the same budgets' numbers.
    #[test]
    fn a_listed_world_comes_back_the_same() {
        let clock = Clock::virtual_at(crate::clock::VIRTUAL_EPOCH);
        let orig = crate::scenario::build("seed", clock.clone(), 7).expect("seed");
        let list = kube::list_json(&orig);
        let inv = Inventory::from_kubectl_json(&list.to_string()).expect("inventory");
        let w = world(&inv, clock, 1).expect("import");
        assert_eq!(
            w.nodes.keys().collect::<Vec<_>>(),
            orig.nodes.keys().collect::<Vec<_>>()
        );
        for (k, p) in &orig.pods {
            let q = w.pods.get(k).unwrap_or_else(|| panic!("pod {k:?} lost"));
            assert_eq!(p.node, q.node, "{k:?}");
            assert_eq!(p.spec.cpu_millis, q.spec.cpu_millis, "{k:?}");
            // The same controller (a Deployment's pods under a ReplicaSet of a new name).
            let owner = |p: &crate::model::SimPod| {
                p.owner.as_ref().map(|o| {
                    w.workloads
                        .values()
                        .chain(orig.workloads.values())
                        .find(|wl| wl.pod_owner().uid == o.uid)
                        .map(|wl| (wl.kind, wl.name.clone()))
                })
            };
            assert_eq!(owner(p), owner(q), "{k:?}");
            assert!(
                p.is_mirror() || owner(q).is_none_or(|o| o.is_some()),
                "{k:?} has a controller"
            );
        }
        assert_eq!(w.pods.len(), orig.pods.len(), "no pod added or lost");
        for (k, b) in &orig.pdbs {
            let c = &w.pdbs[k];
            assert_eq!(orig.pdb_status(b), w.pdb_status(c), "{k:?}");
        }
        let again = Inventory::from_kubectl_json(&kube::list_json(&w).to_string()).expect("inv");
        assert_eq!(again.nodes, inv.nodes);
        assert_eq!(again.pdbs, inv.pdbs);
        assert_eq!(again.controllers, inv.controllers);
    }
}
