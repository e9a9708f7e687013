//! The control plane's checks (the guide's first rollback trigger, "the control plane fails
//! to rejoin"): every kube-apiserver's `/readyz` asked on its own node rather than through
//! the load balancer, which answers as long as one instance does; the static pods' mirror
//! pods Ready at the versions kubeadm put there; etcd with a quorum of healthy members. The
//! daemon asks; what the answers mean is decided here.

use super::Verdict;
use crate::facts::Facts;
use crate::inventory::ControlPlane;
use crate::version::Version;

/// The port kubeadm's kube-apiserver listens on (`--secure-port`), asked on each node's
/// loopback.
pub const APISERVER_PORT: u16 = 6443;

/// What `curl https://127.0.0.1:6443/readyz?verbose` on one node gave: the HTTP status (0
/// when nothing listened or it did not answer in time) and the failing checks it listed, or
/// why the node itself could not be asked.
pub type ReadyzAnswer = Result<(u16, String), String>;

/// Every instance ready (200). An instance that answers anything else, or does not answer
/// on a node that could be asked, fails the check; a node that could not be asked at all
/// (SSH down) makes it inconclusive, unless another instance already failed.
pub fn readyz_verdict(answers: &[(String, ReadyzAnswer)]) -> Verdict {
    let mut facts = Facts::new();
    let mut failed = Vec::new();
    let mut unknown = Vec::new();
    for (host, answer) in answers {
        match answer {
            Ok((200, _)) => {
                facts.insert(format!("readyz/{host}"), "200".into());
            }
            Ok((status, failing)) => {
                facts.insert(format!("readyz/{host}"), status.to_string());
                let what = match (*status, failing.trim()) {
                    (0, _) => "did not answer (nothing listening, or no answer in time)".into(),
                    (s, "") => format!("answered {s}"),
                    (s, f) => format!("answered {s}: {f}"),
                };
                failed.push(format!("kube-apiserver on {host} {what}"));
            }
            Err(why) => unknown.push(format!("{host} could not be asked: {why}")),
        }
    }
    if !failed.is_empty() {
        return Verdict::Failed {
            detail: failed.join("; "),
            facts,
        };
    }
    if answers.is_empty() || !unknown.is_empty() {
        return Verdict::Inconclusive {
            why: if unknown.is_empty() {
                "no control-plane node to ask".into()
            } else {
                unknown.join("; ")
            },
            facts,
        };
    }
    Verdict::Passed { facts }
}

/// One control-plane node's static pods, as their mirror pods show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlaneSeen {
    pub host: String,
    /// Their versions (from the images); `None`: no mirror pod was found.
    pub pods: Option<ControlPlane>,
    /// Every one of them Ready.
    pub ready: bool,
}

/// Every control-plane node's mirror pods Ready, and at the version the plan put there
/// where it says (`expect`: the node a kubeadm step just upgraded, or every node after the
/// hop's last one).
pub fn mirror_pods_verdict(seen: &[ControlPlaneSeen], expect: &[(String, Version)]) -> Verdict {
    let mut facts = Facts::new();
    let mut wrong = Vec::new();
    for s in seen {
        let Some(cp) = s.pods.as_ref().filter(|cp| cp.observed) else {
            wrong.push(format!("{}: no control-plane mirror pod found", s.host));
            continue;
        };
        facts.insert(format!("apiserver/{}", s.host), cp.apiserver.to_string());
        if let Some((_, want)) = expect.iter().find(|(h, _)| *h == s.host) {
            for (what, have) in [
                ("kube-apiserver", cp.apiserver),
                ("kube-controller-manager", cp.controller_manager),
                ("kube-scheduler", cp.scheduler),
            ] {
                if have != *want {
                    wrong.push(format!("{}: {what} runs {have}, expected {want}", s.host));
                }
            }
        }
        if !s.ready {
            wrong.push(format!(
                "{}: its control-plane pods are not all Ready",
                s.host
            ));
        }
    }
    if seen.is_empty() {
        return Verdict::Inconclusive {
            why: "no control-plane node to look at".into(),
            facts,
        };
    }
    super::verdict::passed_unless(wrong, facts)
}

/// etcd keeps a quorum when more than half of its members are healthy.
pub fn etcd_quorum(members: u32, healthy: u32) -> Result<(), String> {
    if members == 0 || healthy.saturating_mul(2) <= members {
        Err(format!(
            "etcd has no quorum: {healthy} of {members} member(s) healthy"
        ))
    } else {
        Ok(())
    }
}

/// `etcdctl endpoint health --cluster`'s counts (unreadable: `None`) as a verdict.
pub fn etcd_verdict(members: Option<u32>, healthy: Option<u32>) -> Verdict {
    let (Some(members), Some(healthy)) = (members, healthy) else {
        return Verdict::Inconclusive {
            why: "etcdctl's answer gave no member counts".into(),
            facts: Facts::new(),
        };
    };
    let facts: Facts = [
        ("etcd_members".to_string(), members.to_string()),
        ("etcd_healthy".to_string(), healthy.to_string()),
    ]
    .into();
    match etcd_quorum(members, healthy) {
        Ok(()) => Verdict::Passed { facts },
        Err(detail) => Verdict::Failed { detail, facts },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().expect("version")
    }

    fn cp(at: &str) -> ControlPlane {
        ControlPlane {
            apiserver: v(at),
            controller_manager: v(at),
            scheduler: v(at),
            etcd: Some("3.5.21-0".into()),
            observed: true,
        }
    }

    fn seen(host: &str, at: &str, ready: bool) -> ControlPlaneSeen {
        ControlPlaneSeen {
            host: host.into(),
            pods: Some(cp(at)),
            ready,
        }
    }

    #[test]
    fn every_apiserver_must_answer_200_on_its_own_node() {
        let ok = |h: &str| (h.to_string(), Ok((200, String::new())));
        assert!(matches!(
            readyz_verdict(&[ok("cp-1"), ok("cp-2")]),
            Verdict::Passed { .. }
        ));
        // One instance down fails the check even though the others (and so the load
        // balancer) answer.
        let down = (
            "cp-2".to_string(),
            Ok((500, "[-]etcd failed: reason withheld".to_string())),
        );
        match readyz_verdict(&[ok("cp-1"), down, ok("cp-3")]) {
            Verdict::Failed { detail, facts } => {
                assert_eq!(
                    detail,
                    "kube-apiserver on cp-2 answered 500: [-]etcd failed: reason withheld"
                );
                assert_eq!(facts["readyz/cp-2"], "500");
            }
            other => panic!("{other:?}"),
        }
        let refused = ("cp-1".to_string(), Ok((0, String::new())));
        assert!(matches!(
            readyz_verdict(&[refused]),
            Verdict::Failed { detail, .. } if detail.contains("did not answer")
        ));
    }

    #[test]
    fn a_node_that_cannot_be_asked_is_inconclusive_unless_another_failed() {
        let unreachable = (
            "cp-3".to_string(),
            Err("ssh: connection refused".to_string()),
        );
        assert!(matches!(
            readyz_verdict(&[("cp-1".into(), Ok((200, String::new()))), unreachable.clone()]),
            Verdict::Inconclusive { why, .. } if why.contains("cp-3 could not be asked")
        ));
        assert!(matches!(
            readyz_verdict(&[("cp-1".into(), Ok((503, String::new()))), unreachable]),
            Verdict::Failed { .. }
        ));
        assert!(matches!(readyz_verdict(&[]), Verdict::Inconclusive { .. }));
    }

    #[test]
    fn mirror_pods_must_be_ready_and_where_the_plan_says_at_its_version() {
        let all = [seen("cp-1", "v1.34.6", true), seen("cp-2", "v1.33.7", true)];
        // After cp-1's kubeadm step: cp-1 at the new version, cp-2 still at the old one.
        assert!(matches!(
            mirror_pods_verdict(&all, &[("cp-1".into(), v("v1.34.6"))]),
            Verdict::Passed { .. }
        ));
        // After the hop's last node: every node at the hop's version.
        let every = [
            ("cp-1".to_string(), v("v1.34.6")),
            ("cp-2".to_string(), v("v1.34.6")),
        ];
        match mirror_pods_verdict(&all, &every) {
            Verdict::Failed { detail, .. } => assert!(
                detail.starts_with("cp-2: kube-apiserver runs v1.33.7, expected v1.34.6"),
                "{detail}"
            ),
            other => panic!("{other:?}"),
        }
        let not_ready = [seen("cp-1", "v1.34.6", false)];
        assert!(matches!(
            mirror_pods_verdict(&not_ready, &[]),
            Verdict::Failed { detail, .. } if detail == "cp-1: its control-plane pods are not all Ready"
        ));
        let missing = [ControlPlaneSeen {
            host: "cp-1".into(),
            pods: None,
            ready: true,
        }];
        assert!(matches!(
            mirror_pods_verdict(&missing, &[]),
            Verdict::Failed { detail, .. } if detail.contains("no control-plane mirror pod")
        ));
        assert!(matches!(
            mirror_pods_verdict(&[], &[]),
            Verdict::Inconclusive { .. }
        ));
    }

    #[test]
    fn etcd_needs_more_than_half_of_its_members() {
        assert!(etcd_quorum(3, 2).is_ok());
        assert!(etcd_quorum(1, 1).is_ok());
        assert_eq!(
            etcd_quorum(3, 1),
            Err("etcd has no quorum: 1 of 3 member(s) healthy".into())
        );
        assert!(etcd_quorum(4, 2).is_err(), "half is not a majority");
        assert!(etcd_quorum(0, 0).is_err(), "no member at all");
        assert!(matches!(
            etcd_verdict(Some(3), Some(2)),
            Verdict::Passed { facts } if facts["etcd_healthy"] == "2"
        ));
        assert!(matches!(
            etcd_verdict(Some(3), Some(1)),
            Verdict::Failed { .. }
        ));
        assert!(matches!(
            etcd_verdict(None, Some(1)),
            Verdict::Inconclusive { .. }
        ));
    }
}
