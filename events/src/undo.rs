//! What an automatic rollback of one node does (policy `gates.onFailure: rollback-node`):
//! the steps that take a worker whose new kubelet failed its gate back to what its preflight
//! recorded. Never a guess: without the recorded versions and config, there is no rollback,
//! only a halt that says what is missing.

use crate::event::Step;
use crate::node::Node;
use crate::version::Version;

/// The step that puts back the kubelet files a preflight kept (`kubelet_files_backup`, with
/// kubelet.conf's `kubelet_conf_server` and the node's `cri_socket_annotation`), for the
/// kubelet version they were kept at (`kubelet_installed`); none when it kept none (an older
/// agent, or a node without them).
pub fn restore_files(facts: &crate::Facts) -> Option<(Version, Step)> {
    let version: Version = facts.get("kubelet_installed")?.parse().ok()?;
    let dir = facts
        .get("kubelet_files_backup")
        .filter(|d| !d.is_empty())?;
    let non_empty = |k: &str| facts.get(k).filter(|v| !v.is_empty()).cloned();
    Some((
        version,
        Step::RestoreKubeletFiles {
            version,
            dir: dir.clone(),
            server: non_empty("kubelet_conf_server"),
            cri_socket: non_empty("cri_socket_annotation"),
        },
    ))
}

/// The steps that take `node` back after `failed` (its `Verify`, inside the cordon, or its
/// `Soak`, after the uncordon) failed; `Err` names the recorded input that is missing.
pub fn node_rollback_steps(node: &Node, failed: &Step) -> Result<Vec<Step>, String> {
    let f = &node.facts;
    let missing = |what: &str| {
        format!(
            "its preflight recorded no {what}, so it cannot be rolled back automatically (see the runbook's rollback section)"
        )
    };
    let version: Version = f
        .get("kubelet_before")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| missing("kubelet version (kubelet_before)"))?;
    if f.get("pkg_kubelet").is_none_or(String::is_empty) {
        return Err(missing("installed kubelet package (pkg_kubelet)"));
    }
    // The config copy is the one made while the node ran `version`.
    let config = f
        .get("kubelet_config_backup")
        .filter(|_| f.get("kubelet_installed").map(String::as_str) == Some(&version.to_string()))
        .cloned()
        .ok_or_else(|| missing("kubelet config backup of that version (kubelet_config_backup)"))?;
    let kubeadm = node
        .steps
        .iter()
        .any(|s| matches!(s, Step::KubeadmUpgrade { .. }));
    let mut steps = Vec::new();
    if *failed == Step::Soak {
        // Already uncordoned: take it out of service again first.
        steps.extend([Step::Cordon, Step::Drain]);
    }
    steps.push(Step::DowngradePackages {
        version,
        kubelet_config: Some(config),
        kubeadm,
    });
    // The files kubeadm rewrote, as they were at `version`.
    if let Some((v, restore)) = restore_files(f)
        && v == version
    {
        steps.push(restore);
    }
    steps.extend([Step::RestartKubelet, Step::Verify, Step::Uncordon]);
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::NodeState;
    use crate::plan::{NodePlan, Role};
    use crate::{Entry, Timestamp};

    fn worker(facts: &[(&str, &str)]) -> Node {
        let plan = NodePlan {
            name: Entry::new("w-1"),
            host: None,
            role: Role::Worker,
            from: Version::new(1, 34, 6),
            steps: vec![
                Step::Preflight,
                Step::Cordon,
                Step::Drain,
                Step::UpgradePackages {
                    version: Version::new(1, 35, 3),
                },
                Step::RestartKubelet,
                Step::Verify,
                Step::Uncordon,
                Step::Soak,
            ],
            estimate_secs: 0,
        };
        let mut n = NodeState::new(&plan, Timestamp(0)).node().clone();
        for (k, v) in facts {
            n.facts.insert((*k).into(), (*v).into());
        }
        n
    }

    const RECORDED: [(&str, &str); 4] = [
        ("kubelet_before", "v1.34.6"),
        ("kubelet_installed", "v1.34.6"),
        ("pkg_kubelet", "1.34.6-1.1"),
        (
            "kubelet_config_backup",
            "/var/lib/upgraded/kubelet-config/v1.34.6.yaml",
        ),
    ];

    #[test]
    fn a_failed_verify_goes_back_inside_the_cordon_and_a_failed_soak_cordons_again() {
        // Given a worker whose preflight recorded v1.34.6 and its config,
        let n = worker(&RECORDED);
        let back = Step::DowngradePackages {
            version: Version::new(1, 34, 6),
            kubelet_config: Some("/var/lib/upgraded/kubelet-config/v1.34.6.yaml".into()),
            kubeadm: false,
        };
        // when its verify fails, then it goes back while still cordoned and drained;
        assert_eq!(
            node_rollback_steps(&n, &Step::Verify),
            Ok(vec![
                back.clone(),
                Step::RestartKubelet,
                Step::Verify,
                Step::Uncordon
            ])
        );
        // when its soak fails (uncordoned by then), it is cordoned and drained first.
        assert_eq!(
            node_rollback_steps(&n, &Step::Soak),
            Ok(vec![
                Step::Cordon,
                Step::Drain,
                back,
                Step::RestartKubelet,
                Step::Verify,
                Step::Uncordon
            ])
        );
    }

    /// The kept kubelet files go back after the packages, before the kubelet restarts;
    /// an empty server or annotation is not restored.
    #[test]
    fn the_kept_kubelet_files_go_back_before_the_restart() {
        let mut facts = RECORDED.to_vec();
        facts.extend([
            (
                "kubelet_files_backup",
                "/var/lib/upgraded/kubelet-files/v1.34.6",
            ),
            ("kubelet_conf_server", "https://10.0.0.10:6443"),
            ("cri_socket_annotation", ""),
        ]);
        let steps = node_rollback_steps(&worker(&facts), &Step::Verify).expect("steps");
        assert_eq!(
            steps[1],
            Step::RestoreKubeletFiles {
                version: Version::new(1, 34, 6),
                dir: "/var/lib/upgraded/kubelet-files/v1.34.6".into(),
                server: Some("https://10.0.0.10:6443".into()),
                cri_socket: None,
            }
        );
        assert_eq!(steps[2], Step::RestartKubelet);
        assert!(matches!(steps[0], Step::DowngradePackages { .. }));
    }

    #[test]
    fn without_what_the_preflight_recorded_there_is_no_rollback() {
        let e = node_rollback_steps(&worker(&RECORDED[..2]), &Step::Verify).expect_err("no pkg");
        assert!(e.contains("pkg_kubelet"), "{e}");
        // A config copy of another version is not the one to put back.
        let mut other = RECORDED;
        other[1] = ("kubelet_installed", "v1.33.5");
        let e = node_rollback_steps(&worker(&other), &Step::Verify).expect_err("config");
        assert!(e.contains("kubelet_config_backup"), "{e}");
    }
}
