//! The plan's findings: what would block or endanger the run, found in the inventory before
//! anything is batched (versions, skew, cgroup, control-plane pods, what drains would refuse,
//! budgets, capacity), and in the batched plan (skew batch by batch, time and windows, the
//! drains the model refused).

use std::collections::{BTreeMap, BTreeSet};

use upgraded_events::Version;
use upgraded_events::drain::{self, DrainRules, Refusal as DrainRefusal};
use upgraded_events::inventory;

use crate::skew::ClusterVersions;
use crate::{Ctx, PhaseReport, Severity, finding, schedule, simulate_skew};

impl Ctx<'_> {
    /// The cluster is outside the skew policy before anything is done.
    pub(crate) fn skew_now(&mut self, versions: &ClusterVersions) {
        for v in versions.violations() {
            self.findings.insert(finding(
                Severity::Blocker,
                "skew-now",
                vec![],
                format!("the cluster is already outside the version-skew policy: {v}"),
                "bring the component named into the supported window by hand first (kubelets: upgrade them to the control plane's minor)".into(),
            ));
        }
    }

    /// Every intermediate state checked against the skew policy, independently of how the
    /// stages were built.
    pub(crate) fn skew_during(&mut self, versions: &ClusterVersions, phases: &[PhaseReport]) {
        for (batch, v) in simulate_skew(versions, phases) {
            self.findings.insert(finding(
                Severity::Blocker,
                "skew-during-plan",
                vec![],
                format!("batch {batch} would break the version-skew policy: {v}"),
                "report this plan: the planner should never produce it".into(),
            ));
        }
    }

    /// What the placement in time says: a Friday-afternoon start, a batch longer than any
    /// maintenance window.
    pub(crate) fn time_findings(&mut self, phases: &[PhaseReport]) {
        if let Some(first) = phases.first().and_then(|p| p.batches.first())
            && schedule::is_friday_afternoon(&first.start, self.policy)
        {
            self.findings.insert(finding(
                Severity::Warning,
                "friday-afternoon",
                vec![],
                format!("the plan starts on a Friday afternoon ({})", first.start),
                "start on Monday to Thursday morning, when people are around for the next hours"
                    .into(),
            ));
        }
        for p in phases {
            if !p.fits_windows {
                self.findings.insert(finding(
                    Severity::Warning,
                    "window-overrun",
                    vec![format!("phase/{}", p.name)],
                    format!("a batch of phase {} is longer than any maintenance window", p.name),
                    "widen the maintenance windows or make batches shorter (fewer pods per node, a lower drain estimate)".into(),
                ));
            }
        }
    }

    /// The units whose drain the model refused: one finding per reason, naming every node it
    /// stops.
    pub(crate) fn drain_findings(&mut self, phases: &[PhaseReport]) {
        let mut blocked: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for u in phases
            .iter()
            .flat_map(|p| &p.batches)
            .flat_map(|b| &b.units)
        {
            if let Some(why) = &u.blocked {
                let nodes = blocked.entry(why.clone()).or_default();
                let subject = format!("node/{}", u.node);
                if !nodes.contains(&subject) {
                    nodes.push(subject);
                }
            }
        }
        for (why, nodes) in blocked {
            let (code, fix) = if why.contains("without a controller") {
                (
                    "drain-refused",
                    "see pod-unmanaged: recreate those pods under a controller or delete them",
                )
            } else if why.contains("PodDisruptionBudget") {
                (
                    "pdb-blocks-drain",
                    "scale the workload up (kubectl scale) or wait until its replicas are healthy, so the budget allows an eviction",
                )
            } else {
                (
                    "capacity",
                    "free capacity where the message says (scale down, move workloads, add a node), or relax the pods' node selectors",
                )
            };
            self.findings.insert(finding(
                Severity::Blocker,
                code,
                nodes.clone(),
                format!(
                    "{} cannot be drained: {why}",
                    nodes
                        .iter()
                        .map(|n| n.trim_start_matches("node/"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                fix.into(),
            ));
        }
    }
    /// Drift within each generation: a node that differs from its siblings in a field that
    /// must match is not proven by their canary (it blocks); one that differs in a field
    /// that should match is named (a warning).
    pub(crate) fn drift_findings(&mut self) {
        use upgraded_events::drift::{self, Match};
        let mut by_gen = drift::Generations::new();
        for n in &self.inv.nodes {
            if let Some(g) = self.gen_of.get(&n.name) {
                by_gen.entry(g.clone()).or_default().push((
                    n.name.clone(),
                    drift::fingerprint(Some(n), self.inv.hosts.get(&n.name)),
                ));
            }
        }
        self.drift = drift::drift(&by_gen);
        let mut found = Vec::new();
        // A machine waiting for its reboot, and machines whose agent could not be read.
        let mut unread = Vec::new();
        for (node, host) in &self.inv.hosts {
            if let Some(why) = host.get("unread") {
                unread.push(format!("{node} ({why})"));
                continue;
            }
            let Some(why) = drift::pending_reboot(host) else {
                continue;
            };
            let severity = if self.policy.pending_reboot_warns {
                Severity::Warning
            } else {
                Severity::Blocker
            };
            found.push(finding(
                severity,
                "pending-reboot",
                vec![format!("node/{node}")],
                format!(
                    "node {node} waits for a reboot ({why}): the kubelet restart would come with whatever the reboot brings, and a canary that rebooted proves nothing about it"
                ),
                format!(
                    "drain and reboot {node} before the upgrade (or set pendingReboot: warn to go on)"
                ),
            ));
        }
        if !unread.is_empty() {
            found.push(finding(
                Severity::Warning,
                "host-facts-unread",
                unread.iter().map(|u| format!("node/{}", u.split(' ').next().unwrap_or_default())).collect(),
                format!(
                    "the agent could not read {} machine(s): {}; their drift and pending reboots were not judged",
                    unread.len(),
                    unread.join(", ")
                ),
                "make the nodes reachable (ssh, sudo) and plan again".into(),
            ));
        }
        for r in &self.drift {
            for f in &r.fields {
                for (node, value) in &f.outliers {
                    let (severity, code, then) = match f.level {
                        Match::Must if self.policy.drift_subgroups => (
                            Severity::Warning,
                            "drift-subgroup",
                            "it is upgraded after a canary of the nodes like it (drift: subgroup)",
                        ),
                        Match::Must => (
                            Severity::Blocker,
                            "drift-must-match",
                            "its generation's canary proves nothing about it",
                        ),
                        Match::Should => (
                            Severity::Warning,
                            "drift-should-match",
                            "the canary proves it less than its siblings",
                        ),
                    };
                    found.push(finding(
                        severity,
                        code,
                        vec![format!("node/{node}")],
                        format!(
                            "node {node} differs from generation {} in {}: {value} where {} of {} run {}; {then}",
                            r.generation,
                            f.field,
                            r.nodes - f.outliers.len(),
                            r.nodes,
                            f.majority
                        ),
                        format!(
                            "make {node} like its siblings ({} {}) before the upgrade, or give it its own generation label so it gets its own canary",
                            f.field, f.majority
                        ),
                    ));
                }
            }
        }
        for f in found {
            self.findings.insert(f);
        }
    }

    /// Findings that depend on the inventory alone.
    pub(crate) fn static_findings(&mut self, target: Version) {
        let inv = self.inv;
        if target.minor >= upgraded_events::rules::IPVS_DEPRECATED_FROM
            && inv.kube_proxy_mode.as_deref() == Some("ipvs")
        {
            self.findings.insert(finding(
                Severity::Warning,
                "kube-proxy-ipvs",
                vec!["configmap/kube-system/kube-proxy".into()],
                format!(
                    "kube-proxy runs in ipvs mode, which 1.{} deprecates: it still works after this upgrade, but its removal is announced",
                    upgraded_events::rules::IPVS_DEPRECATED_FROM
                ),
                "plan kube-proxy's move to nftables (mode: nftables in kube-system/kube-proxy's config.conf, then restart its pods) on its own, not inside this upgrade".into(),
            ));
        }
        // kubeadm's stored configuration, by the same rule the nodes' files are judged by.
        if let Some(api) = &inv.kubeadm_config_api {
            let facts: upgraded_events::Facts =
                [("kubeadm_config_api".to_string(), api.clone())].into();
            for f in upgraded_events::rules::node_findings(target, &facts) {
                self.findings.insert(finding(
                    Severity::Blocker,
                    f.rule,
                    vec!["configmap/kube-system/kubeadm-config".into()],
                    format!("kube-system/kubeadm-config: {}", f.what),
                    f.fix.to_string(),
                ));
            }
        }
        for v in inv
            .in_tree_volumes
            .iter()
            .filter(|v| target.minor >= v.removed_in)
        {
            self.findings.insert(finding(
                Severity::Blocker,
                "in-tree-volume-removed",
                vec![format!("pod/{}/{}", v.namespace, v.pod)],
                format!(
                    "pod {}/{} mounts a {} volume through the in-tree plugin, which 1.{} removed: once its node runs that kubelet it cannot start",
                    v.namespace, v.pod, v.plugin, v.removed_in
                ),
                format!(
                    "move the volume to the Ceph CSI driver ({}.csi.ceph.com) before the hop to 1.{}",
                    v.plugin, v.removed_in
                ),
            ));
        }
        for n in &inv.nodes {
            let subj = vec![format!("node/{}", n.name)];
            if target.needs_cgroup_v2() && n.cgroup == Some(1) {
                self.findings.insert(finding(
                    Severity::Blocker,
                    "cgroup-v1",
                    subj.clone(),
                    format!("node {} runs cgroup v1: the kubelet {target} refuses to start on cgroup v1", n.name),
                    "move the node to cgroup v2 (systemd.unified_cgroup_hierarchy=1 on the kernel command line, or a newer OS image) and reboot it before the upgrade".into(),
                ));
            }
            if target.needs_cgroup_v2() && n.cgroup.is_none() {
                self.findings.insert(finding(
                    Severity::Warning,
                    "cgroup-unknown",
                    subj.clone(),
                    format!("node {}'s cgroup version is unknown; {target} needs cgroup v2 (preflight checks it on the node)", n.name),
                    format!("annotate the node: kubectl annotate node {} {}=v2", n.name, inventory::CGROUP_KEY),
                ));
            }
            if n.unschedulable {
                self.findings.insert(finding(
                    Severity::Warning,
                    "node-cordoned",
                    subj.clone(),
                    format!("node {} is already cordoned: it is upgraded and left cordoned", n.name),
                    "nothing, unless it should take workloads again (then uncordon it yourself afterwards)".into(),
                ));
            }
            if !n.ready {
                self.findings.insert(finding(
                    Severity::Warning,
                    "node-not-ready",
                    subj.clone(),
                    format!(
                        "node {} is NotReady: its upgrade will fail verification",
                        n.name
                    ),
                    "repair the node first, or drain it and remove it from the cluster".into(),
                ));
            }
            if n.runtime.starts_with("docker://") {
                self.findings.insert(finding(
                    Severity::Blocker,
                    "runtime-docker",
                    subj.clone(),
                    format!(
                        "node {} uses {} (dockershim was removed in 1.24)",
                        n.name, n.runtime
                    ),
                    "switch the node to containerd or CRI-O (or cri-dockerd) first".into(),
                ));
            }
            if n.control_plane.as_ref().is_some_and(|c| !c.observed) {
                self.findings.insert(finding(
                    Severity::Warning,
                    "control-plane-versions-unknown",
                    subj.clone(),
                    format!("no static control-plane pods found for {}; its components are assumed at the kubelet's {}", n.name, n.kubelet),
                    "include kube-system pods in the snapshot (kubectl get … -A)".into(),
                ));
            }
        }
        // What the drain of each node refuses, and whose local data it loses: the same rule
        // the drain applies (`events::drain::triage`), under this policy's consents.
        let rules = DrainRules {
            evict_unmanaged: self.policy.evict_unmanaged_pods,
            delete_empty_dir_data: self.policy.delete_empty_dir_data,
        };
        let mut by_node: BTreeMap<String, Vec<inventory::PodInv>> = BTreeMap::new();
        for p in &inv.pods {
            if let Some(node) = &p.node {
                by_node.entry(node.clone()).or_default().push(p.clone());
            }
        }
        let pod = |k: &String| format!("pod/{k}");
        for (node, pods) in by_node {
            let t = drain::triage(pods, &inv.pdbs, rules);
            let unmanaged = t.refused_for(|r| matches!(r, DrainRefusal::Unmanaged));
            if !unmanaged.is_empty() {
                self.findings.insert(finding(
                    Severity::Blocker,
                    "pod-unmanaged",
                    unmanaged.iter().map(pod).collect(),
                    format!("node {node} runs {} pod(s) without a controller: a drain without --force refuses them, and --force would delete them for good", unmanaged.len()),
                    "recreate them under a Deployment or StatefulSet, or delete them deliberately".into(),
                ));
            }
            let empty_dir = t.refused_for(|r| matches!(r, DrainRefusal::EmptyDirData));
            if !empty_dir.is_empty() {
                self.findings.insert(finding(
                    Severity::Blocker,
                    "pod-local-data",
                    empty_dir.iter().map(pod).collect(),
                    format!("node {node} runs {} pod(s) with emptyDir data, which the drain refuses to delete (drain.deleteEmptyDirData: false)", empty_dir.len()),
                    "set drain.deleteEmptyDirData: true once that data may go, or move it off the node".into(),
                ));
            }
            let several = t.refused_for(|r| matches!(r, DrainRefusal::SeveralBudgets(_)));
            if !several.is_empty() {
                let budgets: BTreeSet<String> = t
                    .refused
                    .iter()
                    .flat_map(|(_, why)| why.iter())
                    .filter_map(|r| match r {
                        DrainRefusal::SeveralBudgets(b) => Some(b.clone()),
                        _ => None,
                    })
                    .flatten()
                    .collect();
                self.findings.insert(finding(
                    Severity::Blocker,
                    "pod-several-budgets",
                    several.iter().map(pod).collect(),
                    format!("node {node} runs {} pod(s) covered by more than one PodDisruptionBudget ({}): the API server refuses every eviction of such a pod", several.len(), budgets.into_iter().collect::<Vec<_>>().join(", ")),
                    "leave one budget per pod: merge or narrow the budgets' selectors".into(),
                ));
            }
            if !t.losing_local_data.is_empty() {
                self.findings.insert(finding(
                    Severity::Warning,
                    "pod-local-data",
                    t.losing_local_data.iter().map(pod).collect(),
                    format!("node {node} runs {} pod(s) with emptyDir or local volumes: their data on the node is lost by the drain", t.losing_local_data.len()),
                    "make sure they keep nothing they need there (the drain uses --delete-emptydir-data)".into(),
                ));
            }
        }
        let controllers: BTreeMap<(String, String), u32> = inv
            .controllers
            .iter()
            .map(|c| ((c.namespace.clone(), c.name.clone()), c.replicas))
            .collect();
        for pdb in &inv.pdbs {
            let subj = vec![format!("pdb/{}/{}", pdb.namespace, pdb.name)];
            // The workload behind the budget, for the fix.
            let owner = inv
                .pods
                .iter()
                .find(|p| p.namespace == pdb.namespace && pdb.selector.matches(&p.labels))
                .and_then(|p| p.owner.clone());
            let scale = match &owner {
                Some(o) if o.kind == "Deployment" || o.kind == "StatefulSet" => {
                    let now = controllers
                        .get(&(pdb.namespace.clone(), o.name.clone()))
                        .copied()
                        .unwrap_or(pdb.expected_pods);
                    format!(
                        "kubectl scale {} {} -n {} --replicas={}",
                        o.kind.to_ascii_lowercase(),
                        o.name,
                        pdb.namespace,
                        now + 1
                    )
                }
                _ => "scale the workload up by one replica".into(),
            };
            if self.scale_unblocks(pdb).is_some() {
                self.findings.insert(finding(
                    Severity::Warning,
                    "pdb-scaled-to-unblock",
                    subj,
                    format!(
                        "PodDisruptionBudget {}/{} allows no eviction with its {} healthy pod(s): each drain of a node running its pods will scale its Deployment up by one and back (drain.scaleUpToUnblock)",
                        pdb.namespace, pdb.name, pdb.current_healthy
                    ),
                    format!("make sure one more replica fits and is harmless; or give the workload a spare replica for good ({scale})"),
                ));
            } else if pdb.never_allows() {
                self.findings.insert(finding(
                    Severity::Blocker,
                    "pdb-never-allows",
                    subj,
                    format!(
                        "PodDisruptionBudget {}/{} can never allow an eviction ({} with {} pod(s)): every drain of a node running its pods hangs until the timeout",
                        pdb.namespace,
                        pdb.name,
                        pdb.max_unavailable
                            .as_ref()
                            .map(|m| format!("maxUnavailable {m}"))
                            .or_else(|| pdb.min_available.as_ref().map(|m| format!("minAvailable {m}")))
                            .unwrap_or_default(),
                        pdb.expected_pods
                    ),
                    format!("give the workload a spare replica ({scale}) or relax the budget (maxUnavailable: 1)"),
                ));
            } else if pdb.disruptions_allowed == 0 && pdb.expected_pods > 0 {
                self.findings.insert(finding(
                    Severity::Blocker,
                    "pdb-zero-disruptions",
                    subj,
                    format!(
                        "PodDisruptionBudget {}/{} allows 0 disruptions now ({} healthy, {} needed): drains of its nodes would hang",
                        pdb.namespace, pdb.name, pdb.current_healthy, pdb.desired_healthy
                    ),
                    format!("wait until its replicas are healthy, or scale up temporarily: {scale}"),
                ));
            }
        }
    }

    /// With `drain.scaleUpToUnblock`: the Deployment a drain will scale up by one because
    /// `pdb` allows no eviction although all its pods are healthy (and one more pod helps).
    pub(crate) fn scale_unblocks(&self, pdb: &inventory::PdbInv) -> Option<inventory::Owner> {
        if !self.policy.scale_up_to_unblock
            || pdb.disruptions_allowed > 0
            || pdb.expected_pods == 0
            || pdb.current_healthy < pdb.expected_pods
            || !pdb.allows_at(pdb.expected_pods.saturating_add(1))
        {
            return None;
        }
        self.inv
            .pods
            .iter()
            .find(|p| p.namespace == pdb.namespace && pdb.selector.matches(&p.labels))
            .and_then(|p| p.owner.clone())
            .filter(|o| o.kind == "Deployment")
    }
}
