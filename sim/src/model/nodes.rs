//! Nodes and machines: what the API changes on a node (cordon, labels, taints) and what the
//! node agents (the lab's stub tools) do: packages, kubelet restarts, control-plane upgrades,
//! machines going down and coming back.

use super::*;

impl World {
    /// Changes one node: a new resourceVersion, then the controllers run.
    pub(super) fn edit_node(
        &mut self,
        node: &str,
        f: impl FnOnce(&mut SimNode, Millis) -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        let now = self.now;
        let n = self
            .nodes
            .get_mut(node)
            .ok_or_else(|| not_found("nodes", node))?;
        f(n, now)?;
        self.touch_node(node);
        self.tick();
        Ok(())
    }

    /// A node changed: a new resourceVersion, and the journal is told.
    pub(crate) fn touch_node(&mut self, node: &str) {
        let rv = self.bump();
        self.node_epoch += 1;
        if let Some(n) = self.nodes.get_mut(node) {
            n.resource_version = rv;
            let shape = shape_of(n);
            if self.node_shapes.insert(node.to_string(), shape) != Some(shape) {
                self.shape_epoch += 1;
            }
        }
        self.noted(Res::Node, "", node, false);
    }

    /// The package manager installs `package` at `version` on `node` (no restart).
    pub fn install_package(
        &mut self,
        node: &str,
        package: &str,
        version: Version,
    ) -> Result<(), ModelError> {
        if !PACKAGES.contains(&package) {
            return Err(ModelError::Invalid(format!(
                "unknown package {package:?}; the sim's machines have {PACKAGES:?}"
            )));
        }
        let changes = self
            .nodes
            .get(node)
            .is_some_and(|n| n.packages.get(package) != Some(&version));
        self.edit_node(node, |n, _| {
            n.packages.insert(package.to_string(), version);
            Ok(())
        })?;
        if changes {
            self.effect(format!("{node} install {package} {version}"));
        }
        Ok(())
    }

    fn effect(&mut self, what: String) {
        *self.effects.entry(what).or_default() += 1;
    }

    /// The apiserver version `/version` reports: the newest control plane's (what a load
    /// balancer in front of a half-upgraded control plane answers with, eventually).
    pub fn apiserver_version(&self) -> Option<Version> {
        self.nodes
            .values()
            .filter_map(|n| n.control_plane.as_ref().map(|c| c.apiserver))
            .max()
    }

    /// `spec.unschedulable` (cordon / uncordon); its kubelet records the change as an event.
    pub fn set_unschedulable(&mut self, node: &str, value: bool) -> Result<(), ModelError> {
        let was = self.nodes.get(node).map(|n| n.unschedulable);
        self.edit_node(node, |n, _| {
            n.unschedulable = value;
            Ok(())
        })?;
        if was != Some(value)
            && let Some(n) = self.nodes.get(node)
        {
            let word = if value {
                "NodeNotSchedulable"
            } else {
                "NodeSchedulable"
            };
            let about = record::about_node(n);
            self.event(
                about,
                record::kubelet(node),
                word,
                format!("Node {node} status is now: {word}"),
            );
        }
        Ok(())
    }

    /// Replaces a node's labels, annotations and taints (after a patch).
    pub fn set_node_meta(
        &mut self,
        node: &str,
        labels: Labels,
        annotations: Labels,
        taints: Vec<Taint>,
    ) -> Result<(), ModelError> {
        self.edit_node(node, |n, _| {
            n.labels = labels;
            n.annotations = annotations;
            n.taints = taints;
            Ok(())
        })
    }

    /// `systemctl restart kubelet` with `version` installed: NotReady for a while, then Ready
    /// reporting the new version (unless the node is set never to come back).
    pub fn restart_kubelet(&mut self, node: &str, version: Version) -> Result<(), ModelError> {
        let never = self.faults.never_ready.contains(node)
            || self
                .faults
                .kubelet_fails_from
                .get(node)
                .is_some_and(|from| version >= *from);
        let devices_lost = self
            .faults
            .devices_lost_from
            .get(node)
            .is_some_and(|from| version >= *from);
        self.effect(format!("{node} restart-kubelet {version}"));
        self.edit_node(node, |n, now| {
            n.kubelet = version;
            n.devices_lost = devices_lost;
            n.ready = false;
            n.ready_at = (!never).then_some(now + KUBELET_RESTART_MS);
            n.restarted_at = Some(now);
            Ok(())
        })?;
        if let Some(n) = self.nodes.get(node) {
            let about = record::about_node(n);
            self.event(
                about,
                record::kubelet(node),
                "Starting",
                "Starting kubelet.".into(),
            );
        }
        Ok(())
    }

    /// `kubeadm upgrade apply|node` on a control-plane node: its static pods move to `version`
    /// (etcd's image tag to `etcd` when given).
    pub fn upgrade_control_plane(
        &mut self,
        node: &str,
        version: Version,
        etcd: Option<String>,
    ) -> Result<(), ModelError> {
        let mut upgraded = None;
        if self
            .nodes
            .get(node)
            .and_then(|n| n.control_plane.as_ref())
            .is_some_and(|cp| cp.apiserver != version)
        {
            self.effect(format!("{node} kubeadm-upgrade {version}"));
        }
        self.edit_node(node, |n, _| {
            let cp = n.control_plane.as_mut().ok_or_else(|| {
                ModelError::Invalid(format!("node {node:?} runs no control plane"))
            })?;
            cp.apiserver = version;
            cp.controller_manager = version;
            cp.scheduler = version;
            if let Some(e) = etcd {
                cp.etcd = e;
            }
            upgraded = Some(cp.clone());
            Ok(())
        })?;
        if let Some(cp) = upgraded {
            self.write_static_pods(node, &cp);
        }
        self.kubeadm_kubelet_phase(node, version)?;
        self.upgrade_addons(version)
    }

    /// kubeadm's addon phase: once every control-plane node runs `version`, kube-proxy's
    /// image and CoreDNS's move to that release's (kubeadm defers them until the last
    /// node). `Faults::addons_skipped` stands for a kubeadm that skipped the phase.
    fn upgrade_addons(&mut self, version: Version) -> Result<(), ModelError> {
        let all_there = self
            .nodes
            .values()
            .filter_map(|n| n.control_plane.as_ref())
            .all(|cp| cp.apiserver == version);
        if !all_there || self.faults.addons_skipped {
            return Ok(());
        }
        let has = |w: &World, kind: Kind, name: &str| {
            w.workloads
                .contains_key(&(kind, "kube-system".to_string(), name.to_string()))
        };
        if has(self, Kind::DaemonSet, "kube-proxy") {
            let image = format!("registry.k8s.io/kube-proxy:{version}");
            self.set_image(Kind::DaemonSet, "kube-system", "kube-proxy", &image)?;
        }
        if has(self, Kind::Deployment, "coredns")
            && let Some(tag) = upgraded_events::check::run::coredns_for(version)
        {
            let image = format!("registry.k8s.io/coredns/coredns:{tag}");
            self.set_image(Kind::Deployment, "kube-system", "coredns", &image)?;
        }
        Ok(())
    }

    /// The machine dies (`down`) or comes back (the installed kubelet starts, Ready after a
    /// restart).
    /// Its pods' readiness follows, and the node controller records a dead machine's
    /// `NodeNotReady` on it and on each of its pods.
    pub fn set_node_down(&mut self, node: &str, down: bool) -> Result<(), ModelError> {
        let never = self.faults.never_ready.contains(node);
        let was = self.nodes.get(node).map(|n| n.down);
        // Known down before any controller looks (edit_node runs them).
        if was.is_some() {
            if down {
                self.down_nodes.insert(node.to_string());
            } else {
                self.down_nodes.remove(node);
            }
        }
        let booted = self.nodes.get(node).and_then(|n| {
            let v = n.packages.get("kubelet")?;
            (n.down && !down && *v != n.kubelet).then_some(*v)
        });
        if let Some(v) = booted {
            *self
                .boot_restarts
                .entry(format!("{node} restart-kubelet {v}"))
                .or_default() += 1;
        }
        self.edit_node(node, |n, now| {
            // A machine that comes back starts the kubelet that is installed (a reboot in
            // the middle of an upgrade may have left a newer one than was running).
            if n.down
                && !down
                && let Some(v) = n.packages.get("kubelet")
            {
                n.kubelet = *v;
            }
            n.down = down;
            n.ready = false;
            n.ready_at = (!down && !never).then_some(now + KUBELET_RESTART_MS);
            Ok(())
        })?;
        if was == Some(down) {
            return Ok(());
        }
        let on: Vec<(String, String)> = self.pods_on(node).map(SimPod::key).collect();
        for k in &on {
            self.touch_pod(k);
        }
        if down && let Some(n) = self.nodes.get(node) {
            let about = record::about_node(n);
            let source = record::controller("node-controller");
            self.event(
                about,
                source,
                "NodeNotReady",
                format!("Node {node} status is now: NodeNotReady"),
            );
            for k in on {
                if let Some(p) = self.pods.get(&k) {
                    let about = record::about_pod(p, None);
                    self.warning(about, source, "NodeNotReady", "Node is not ready".into());
                }
            }
        }
        Ok(())
    }
}

/// What decides which DaemonSets run on a node (its labels and taints; a DaemonSet's pods
/// tolerate a cordon), as a fingerprint: a node's readiness or cordon does not move it.
pub(super) fn shape_of(n: &SimNode) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    n.labels.hash(&mut h);
    for t in &n.taints {
        (&t.key, &t.value, &t.effect).hash(&mut h);
    }
    h.finish()
}
