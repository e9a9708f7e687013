//! Gate verdicts, from observed facts: is a node Ready at the versions its steps put there,
//! has CrashLoopBackOff risen over the pre-upgrade baseline. The
//! daemon observes and waits; what an observation means is decided here.

use crate::event::Step;
use crate::inventory::ControlPlane;
use crate::names::Host;
use crate::state::Baseline;
use crate::version::Version;

/// What the engine reads about a node from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub ready: bool,
    pub unschedulable: bool,
    /// What the running kubelet reports.
    pub kubelet_version: Version,
    /// Versions of the static control-plane pods on the node (from their images).
    pub control_plane: Option<ControlPlane>,
    /// Every control-plane static pod on the node (apiserver, controller-manager,
    /// scheduler) is Ready; true on a node that runs none.
    pub control_plane_ready: bool,
    /// Allocatable extended resources (the devices check's measure).
    pub extended: std::collections::BTreeMap<String, u64>,
}

pub use crate::plan::{control_plane_version, final_version};

/// What is still wrong with `host` for its verify gate after `steps`; `None`: nothing.
pub fn node_unmet(host: &Host, steps: &[Step], status: &NodeStatus) -> Option<String> {
    if !status.ready {
        return Some(format!("node {host} is not Ready"));
    }
    if let Some(want) = final_version(steps).filter(|w| *w != status.kubelet_version) {
        return Some(format!(
            "node {host} runs kubelet {}, expected {want}",
            status.kubelet_version
        ));
    }
    if let (Some(want), Some(cp)) = (control_plane_version(steps), &status.control_plane) {
        for (what, have) in [
            ("kube-apiserver", cp.apiserver),
            ("kube-controller-manager", cp.controller_manager),
            ("kube-scheduler", cp.scheduler),
        ] {
            // Not `<`: a rollback's kubeadm takes them to an older version.
            if have != want {
                return Some(format!("node {host}: {what} runs {have}, expected {want}"));
            }
        }
        if !status.control_plane_ready {
            return Some(format!(
                "node {host}: its control-plane pods are not Ready yet"
            ));
        }
    }
    None
}

/// The health gate: CrashLoopBackOff may rise at most `points` percentage points over the
/// share before the upgrade.
pub fn crash_loop(before: &Baseline, now: &Baseline, points: u32) -> Result<(), String> {
    if before.exceeded_by(now, points) {
        Err(format!(
            "health gate: {} of {} pods in CrashLoopBackOff ({:.1}%), more than {points} points over the {:.1}% before the upgrade",
            now.crash_looping,
            now.pods,
            f64::from(now.crash_loop_bp()) / 100.0,
            f64::from(before.crash_loop_bp()) / 100.0,
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().expect("version")
    }

    fn status(ready: bool, kubelet: &str, cp: Option<&str>) -> NodeStatus {
        NodeStatus {
            ready,
            unschedulable: false,
            kubelet_version: v(kubelet),
            control_plane: cp.map(|c| ControlPlane {
                apiserver: v(c),
                controller_manager: v(c),
                scheduler: v(c),
                etcd: None,
                observed: true,
            }),
            control_plane_ready: true,
            extended: Default::default(),
        }
    }

    #[test]
    fn a_node_passes_when_ready_at_the_versions_its_steps_installed() {
        let worker = [
            Step::UpgradePackages {
                version: v("v1.34.6"),
            },
            Step::UpgradePackages {
                version: v("v1.35.3"),
            },
        ];
        // Given the last hop's version, when the kubelet reports it and the node is Ready,
        assert_eq!(
            node_unmet(&Host::new("w-1"), &worker, &status(true, "v1.35.3", None)),
            None
        );
        // then it passes; an older kubelet, or NotReady, does not, and says why.
        let why =
            node_unmet(&Host::new("w-1"), &worker, &status(true, "v1.34.6", None)).expect("unmet");
        assert!(
            why.contains("runs kubelet v1.34.6, expected v1.35.3"),
            "{why}"
        );
        let why =
            node_unmet(&Host::new("w-1"), &worker, &status(false, "v1.35.3", None)).expect("unmet");
        assert!(why.contains("not Ready"), "{why}");
        // A control-plane entry also needs its static pods at the kubeadm hop.
        let cp = [Step::KubeadmUpgrade {
            version: v("v1.35.3"),
            apply: true,
        }];
        assert_eq!(
            node_unmet(
                &Host::new("cp-1"),
                &cp,
                &status(true, "v1.34.6", Some("v1.35.3"))
            ),
            None
        );
        let why = node_unmet(
            &Host::new("cp-1"),
            &cp,
            &status(true, "v1.34.6", Some("v1.34.6")),
        )
        .expect("unmet");
        assert!(why.contains("kube-apiserver runs v1.34.6"), "{why}");
        // At the version but still starting: not yet. Newer than wanted (a rollback's
        // target): not yet either.
        let starting = NodeStatus {
            control_plane_ready: false,
            ..status(true, "v1.34.6", Some("v1.35.3"))
        };
        let why = node_unmet(&Host::new("cp-1"), &cp, &starting).expect("unmet");
        assert!(
            why.contains("control-plane pods are not Ready yet"),
            "{why}"
        );
        let back = [Step::KubeadmDowngrade {
            version: v("v1.34.6"),
            apply: true,
        }];
        let why = node_unmet(
            &Host::new("cp-1"),
            &back,
            &status(true, "v1.34.6", Some("v1.35.3")),
        )
        .expect("unmet");
        assert!(
            why.contains("kube-apiserver runs v1.35.3, expected v1.34.6"),
            "{why}"
        );
    }

    #[test]
    fn crash_loops_may_rise_by_the_policy_points_and_no_more() {
        let before = Baseline {
            pods: 1000,
            crash_looping: 10,
        };
        // 1.0% before; +4.9 points passes, +5.1 points fails the 5-point gate.
        let at = |n| Baseline {
            pods: 1000,
            crash_looping: n,
        };
        assert!(crash_loop(&before, &at(59), 5).is_ok());
        let why = crash_loop(&before, &at(61), 5).expect_err("over");
        assert!(
            why.contains("61 of 1000 pods") && why.contains("more than 5 points"),
            "{why}"
        );
    }
}
