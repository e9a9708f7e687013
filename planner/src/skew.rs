//! Kubernetes' version-skew policy, checked against a whole cluster state.
//!
//! - HA apiservers within one minor of each other.
//! - controller-manager and scheduler: not newer than the apiserver they talk to, and at
//!   most one minor older than any apiserver. kubeadm points each of them at its own node's
//!   apiserver (its local endpoint), so "the apiserver they talk to" is the local one; that is
//!   what makes kubeadm's own HA procedure (apply on one node, then the others) legal.
//! - kubelet and kube-proxy: not newer than the oldest apiserver, at most three minors older
//!   than the newest (two before 1.28); kube-proxy within three minors of its kubelet.
//! - kubectl (installed on control-plane nodes): within one minor of every apiserver.

use std::collections::BTreeMap;

use upgraded_events::{Step, Version};

/// The versions the skew rules talk about, per node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterVersions {
    /// Control-plane nodes: (apiserver, controller-manager, scheduler, kubectl).
    pub control_plane: BTreeMap<String, [Version; 4]>,
    /// Every node: (kubelet, kube-proxy).
    pub nodes: BTreeMap<String, (Version, Version)>,
}

/// How many minors a kubelet may trail an apiserver of minor `api_minor`.
pub fn kubelet_skew(api_minor: u16) -> u16 {
    if api_minor >= 28 { 3 } else { 2 }
}

fn minor(v: Version) -> i32 {
    i32::from(v.minor) + 1000 * i32::from(v.major)
}

impl ClusterVersions {
    /// The versions after `step` has run on `host` (steps that change no version leave them).
    pub fn apply(&mut self, host: &str, step: &Step) {
        match step {
            Step::KubeadmUpgrade { version, .. } => {
                if let Some(c) = self.control_plane.get_mut(host) {
                    c[0] = *version;
                    c[1] = *version;
                    c[2] = *version;
                }
                // Since 1.28 kubeadm upgrades the kube-proxy DaemonSet once the last
                // control-plane node of the hop is done (apply or node).
                if self.control_plane.values().all(|c| c[0] >= *version) {
                    for (_, proxy) in self.nodes.values_mut() {
                        *proxy = (*proxy).max(*version);
                    }
                }
            }
            Step::KubeadmDowngrade { version, .. } => {
                if let Some(c) = self.control_plane.get_mut(host) {
                    c[0] = *version;
                    c[1] = *version;
                    c[2] = *version;
                }
            }
            Step::KubeProxy { version } => {
                for (_, proxy) in self.nodes.values_mut() {
                    *proxy = *version;
                }
            }
            Step::UpgradePackages { version } | Step::DowngradePackages { version, .. } => {
                if let Some((kubelet, _)) = self.nodes.get_mut(host) {
                    *kubelet = *version;
                }
                if let Some(c) = self.control_plane.get_mut(host) {
                    c[3] = *version;
                }
            }
            _ => {}
        }
    }

    /// Whether `step` can change a version.
    pub fn changes_versions(step: &Step) -> bool {
        matches!(
            step,
            Step::KubeadmUpgrade { .. }
                | Step::UpgradePackages { .. }
                | Step::DowngradePackages { .. }
                | Step::KubeProxy { .. }
                | Step::KubeadmDowngrade { .. }
        )
    }

    pub fn oldest_apiserver(&self) -> Option<Version> {
        self.control_plane.values().map(|c| c[0]).min()
    }

    pub fn newest_apiserver(&self) -> Option<Version> {
        self.control_plane.values().map(|c| c[0]).max()
    }

    /// Every rule broken in this state, as sentences.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let (Some(lo), Some(hi)) = (self.oldest_apiserver(), self.newest_apiserver()) else {
            return out;
        };
        if minor(hi) - minor(lo) > 1 {
            out.push(format!(
                "apiservers {lo} and {hi} are more than one minor apart"
            ));
        }
        for (node, [api, cm, sched, kubectl]) in &self.control_plane {
            for (what, v) in [("kube-controller-manager", cm), ("kube-scheduler", sched)] {
                if v > api {
                    out.push(format!(
                        "{node}: {what} {v} is newer than its apiserver {api}"
                    ));
                }
                if minor(hi) - minor(*v) > 1 {
                    out.push(format!(
                        "{node}: {what} {v} is more than one minor older than apiserver {hi}"
                    ));
                }
            }
            if (minor(*kubectl) - minor(hi)).abs() > 1 || (minor(*kubectl) - minor(lo)).abs() > 1 {
                out.push(format!(
                    "{node}: kubectl {kubectl} is not within one minor of the apiservers ({lo}..{hi})"
                ));
            }
        }
        let skew = i32::from(kubelet_skew(hi.minor));
        for (node, (kubelet, proxy)) in &self.nodes {
            for (what, v) in [("kubelet", kubelet), ("kube-proxy", proxy)] {
                if minor(*v) > minor(lo) {
                    out.push(format!("{node}: {what} {v} is newer than apiserver {lo}"));
                }
                if minor(hi) - minor(*v) > skew {
                    out.push(format!(
                        "{node}: {what} {v} is more than {skew} minors older than apiserver {hi}"
                    ));
                }
            }
            if (minor(*proxy) - minor(*kubelet)).abs() > 3 {
                out.push(format!(
                    "{node}: kube-proxy {proxy} is more than three minors from kubelet {kubelet}"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().expect("version")
    }

    #[test]
    fn kubeadm_ha_hop_is_legal_and_a_four_minor_kubelet_is_not() {
        let mut c = ClusterVersions::default();
        c.control_plane.insert("cp1".into(), [v("v1.34.6"); 4]);
        c.control_plane.insert("cp2".into(), [v("v1.33.7"); 4]);
        c.nodes.insert("w1".into(), (v("v1.31.0"), v("v1.33.7")));
        assert_eq!(c.violations(), Vec::<String>::new());
        c.nodes.insert("w2".into(), (v("v1.30.0"), v("v1.33.7")));
        c.nodes.insert("w3".into(), (v("v1.33.7"), v("v1.34.6")));
        let v = c.violations();
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("w2: kubelet v1.30.0 is more than 3 minors older"));
        // kube-proxy may not run ahead of the old apiserver mid-hop.
        assert!(v[1].contains("w3: kube-proxy v1.34.6 is newer than apiserver v1.33.7"));
    }

    #[test]
    fn newer_kubelet_and_split_apiservers_are_caught() {
        let mut c = ClusterVersions::default();
        c.control_plane.insert("cp1".into(), [v("v1.35.0"); 4]);
        c.control_plane.insert("cp2".into(), [v("v1.33.0"); 4]);
        c.nodes.insert("w1".into(), (v("v1.35.0"), v("v1.35.0")));
        let v = c.violations().join("\n");
        assert!(v.contains("more than one minor apart"), "{v}");
        assert!(
            v.contains("w1: kubelet v1.35.0 is newer than apiserver v1.33.0"),
            "{v}"
        );
        assert!(v.contains("cp2: kubectl"), "{v}");
    }
}
