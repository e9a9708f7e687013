//! What a drain may evict: one rule, used by the planner for its findings and by the drain
//! itself, so that what the plan calls fine is what the drain does.
//!
//! Like `kubectl drain` without `--force`: DaemonSet pods and static (mirror) pods stay;
//! finished pods go; a pod without a controller is refused (it would not come back) unless
//! the policy consents; a pod with emptyDir data is refused unless the policy lets that data
//! go (`drain.deleteEmptyDirData`, on by default, as `--delete-emptydir-data`); a pod covered
//! by more than one PodDisruptionBudget is refused (the API server answers such an eviction
//! with an error, never with a yes). Every reason for every pod is given at once, so one
//! fix-and-resume round clears them all.

use crate::inventory::{PdbInv, PodInv};
use crate::policy::Policy;

/// The policy's consents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainRules {
    /// Evict pods without a controller (`kubectl drain --force`): they are gone for good.
    pub evict_unmanaged: bool,
    /// Evict pods with emptyDir volumes, losing that data (`--delete-emptydir-data`).
    pub delete_empty_dir_data: bool,
}

impl DrainRules {
    pub fn of(policy: &Policy) -> Self {
        DrainRules {
            evict_unmanaged: policy.evict_unmanaged_pods,
            delete_empty_dir_data: policy.delete_empty_dir_data,
        }
    }
}

/// Why a drain will not evict a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No controller: evicted, it is not recreated anywhere.
    Unmanaged,
    /// emptyDir data the policy does not let go.
    EmptyDirData,
    /// Covered by these budgets (`namespace/name`, more than one).
    SeveralBudgets(Vec<String>),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unmanaged => f.write_str(
                "has no controller and would not come back (recreate it under a controller, \
                 delete it, or set drain.evictUnmanagedPods)",
            ),
            Refusal::EmptyDirData => f.write_str(
                "keeps emptyDir data that eviction deletes (set drain.deleteEmptyDirData once \
                 that data may go)",
            ),
            Refusal::SeveralBudgets(b) => write!(
                f,
                "is covered by {} PodDisruptionBudgets ({}), which the API server never evicts \
                 (leave one budget per pod)",
                b.len(),
                b.join(", ")
            ),
        }
    }
}

/// A drain's pods, sorted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Triage {
    /// What the drain evicts (when nothing is refused).
    pub evict: Vec<PodInv>,
    pub daemonsets: usize,
    pub mirrors: usize,
    /// Every refused pod (`namespace/name`) with every reason.
    pub refused: Vec<(String, Vec<Refusal>)>,
    /// Evicted pods whose data on the node (emptyDir, hostPath, local volumes) is lost.
    pub losing_local_data: Vec<String>,
}

impl Triage {
    /// The pods refused for `reason`'s kind (`namespace/name`).
    pub fn refused_for(&self, kind: fn(&Refusal) -> bool) -> Vec<String> {
        self.refused
            .iter()
            .filter(|(_, why)| why.iter().any(kind))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// One sentence naming every refused pod and every reason.
    pub fn refusal_message(&self) -> Option<String> {
        if self.refused.is_empty() {
            return None;
        }
        let each: Vec<String> = self
            .refused
            .iter()
            .map(|(pod, why)| {
                let reasons: Vec<String> = why.iter().map(ToString::to_string).collect();
                format!("{pod} {}", reasons.join("; and "))
            })
            .collect();
        Some(format!(
            "refusing to drain: {} pod(s) cannot be evicted: {}",
            self.refused.len(),
            each.join(". ")
        ))
    }
}

/// A budget refusing a pod this many rounds in a row is considered for a scale-up (one
/// refusal is often a replacement pod still starting).
pub const SCALE_AFTER_REFUSALS: u32 = 2;

/// What became of a scale-up an earlier drain attempt recorded (`original` → `scaled`
/// replicas), now that the workload has `found`. The record is written before the change,
/// so a crash may fall between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordedScaleUp {
    /// The change took: the extra replica is there (or on its way).
    Applied,
    /// The daemon stopped between the record and the change: make the change now, so the
    /// drain gets the replica its intent promised.
    NotApplied,
    /// Someone else has set the replicas since: not ours to touch; the restore reports it.
    ChangedElsewhere,
}

pub fn recorded_scale_up(original: u32, scaled: u32, found: u32) -> RecordedScaleUp {
    if found == scaled {
        RecordedScaleUp::Applied
    } else if found == original {
        RecordedScaleUp::NotApplied
    } else {
        RecordedScaleUp::ChangedElsewhere
    }
}

/// Is one more replica what `budget` lacks? Every pod it covers is healthy and it still
/// allows no eviction. (Pods starting or failing: waiting is the remedy, not more replicas.)
pub fn budget_lacks_a_replica(budget: &PdbInv) -> bool {
    budget.disruptions_allowed == 0 && budget.current_healthy >= budget.expected_pods
}

/// Whether a workload of `kind` (`Deployment`, `StatefulSet`) behind `budget` may be scaled
/// up by one to unblock a drain: `Err` says why not.
pub fn may_scale_up(kind: &str, budget: &PdbInv) -> Result<(), String> {
    if kind != "Deployment" {
        return Err(format!(
            "a {kind}'s new replica may bring a volume or a quorum member: not scaled"
        ));
    }
    if !budget.allows_at(budget.expected_pods.saturating_add(1)) {
        return Err(format!(
            "pdb/{}/{} allows no eviction at any size: not scaled",
            budget.namespace, budget.name
        ));
    }
    Ok(())
}

/// Sorts a node's pods for a drain under `rules`; `budgets` are the cluster's (only the
/// pods' namespaces matter).
pub fn triage(
    pods: impl IntoIterator<Item = PodInv>,
    budgets: &[PdbInv],
    rules: DrainRules,
) -> Triage {
    let mut t = Triage::default();
    for p in pods {
        if p.mirror {
            t.mirrors += 1;
            continue;
        }
        if p.is_daemonset() && !p.is_finished() {
            t.daemonsets += 1;
            continue;
        }
        // The daemon's own probe pods: their checks delete them, a drain never waits on them.
        if p.namespace == crate::check::probe::NAMESPACE
            && p.labels.contains_key(crate::check::probe::LABEL_RUN)
        {
            continue;
        }
        let key = format!("{}/{}", p.namespace, p.name);
        let mut why = Vec::new();
        if !p.is_finished() {
            if p.is_unmanaged() && !rules.evict_unmanaged {
                why.push(Refusal::Unmanaged);
            }
            if p.empty_dir && !rules.delete_empty_dir_data {
                why.push(Refusal::EmptyDirData);
            }
            let covering: Vec<String> = budgets
                .iter()
                .filter(|b| b.namespace == p.namespace && b.selector.matches(&p.labels))
                .map(|b| format!("{}/{}", b.namespace, b.name))
                .collect();
            if covering.len() > 1 {
                why.push(Refusal::SeveralBudgets(covering));
            }
        }
        if why.is_empty() {
            if !p.is_finished() && (p.empty_dir || p.local_storage) {
                t.losing_local_data.push(key);
            }
            t.evict.push(p);
        } else {
            t.refused.push((key, why));
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_scale_up_is_completed_only_when_it_never_took() {
        // Given a scale-up of 2 → 3 recorded by a drain attempt that then died,
        // when the next attempt finds 3 replicas, then the change took;
        assert_eq!(recorded_scale_up(2, 3, 3), RecordedScaleUp::Applied);
        // when it finds 2, then the daemon died before the change: make it now;
        assert_eq!(recorded_scale_up(2, 3, 2), RecordedScaleUp::NotApplied);
        // when it finds anything else, someone else scaled it: leave it alone.
        assert_eq!(
            recorded_scale_up(2, 3, 5),
            RecordedScaleUp::ChangedElsewhere
        );
        assert_eq!(
            recorded_scale_up(2, 3, 1),
            RecordedScaleUp::ChangedElsewhere
        );
    }
    use crate::inventory::{IntOrPercent, LabelSelector, Labels, Owner};

    fn pod(name: &str, owner: Option<&str>, empty_dir: bool) -> PodInv {
        PodInv {
            namespace: "shop".into(),
            name: name.into(),
            node: Some("w-1".into()),
            labels: Labels::from([("app".to_string(), "web".to_string())]),
            owner: owner.map(|k| Owner {
                kind: k.into(),
                name: "web".into(),
            }),
            empty_dir,
            phase: "Running".into(),
            ..PodInv::default()
        }
    }

    fn budget(name: &str) -> PdbInv {
        PdbInv {
            namespace: "shop".into(),
            name: name.into(),
            selector: LabelSelector {
                match_labels: Labels::from([("app".to_string(), "web".to_string())]),
                ..LabelSelector::default()
            },
            max_unavailable: Some(IntOrPercent::Int(1)),
            ..PdbInv::default()
        }
    }

    const STRICT: DrainRules = DrainRules {
        evict_unmanaged: false,
        delete_empty_dir_data: false,
    };

    #[test]
    fn every_reason_for_every_pod_is_given_at_once() {
        // Given a bare pod with emptyDir data, covered by two budgets,
        let pods = vec![
            pod("bare", None, true),
            pod("web-1", Some("ReplicaSet"), false),
        ];
        // when a strict drain sorts them,
        let t = triage(pods, &[budget("a"), budget("b")], STRICT);
        // then the bare pod is refused for all three reasons, and web-1 for its budgets.
        assert_eq!(t.refused.len(), 2);
        assert_eq!(
            t.refused[0].1,
            vec![
                Refusal::Unmanaged,
                Refusal::EmptyDirData,
                Refusal::SeveralBudgets(vec!["shop/a".into(), "shop/b".into()])
            ]
        );
        let msg = t.refusal_message().expect("refused");
        assert!(
            msg.contains("shop/bare has no controller")
                && msg.contains("emptyDir")
                && msg.contains("shop/web-1 is covered by 2 PodDisruptionBudgets"),
            "{msg}"
        );
        assert!(t.evict.is_empty());
    }

    #[test]
    fn consents_and_one_budget_let_pods_go_and_name_the_data_lost() {
        let rules = DrainRules {
            evict_unmanaged: true,
            delete_empty_dir_data: true,
        };
        let t = triage(vec![pod("bare", None, true)], &[budget("a")], rules);
        assert!(t.refused.is_empty());
        assert_eq!(t.evict.len(), 1);
        assert_eq!(t.losing_local_data, vec!["shop/bare".to_string()]);
    }

    #[test]
    fn a_replica_is_added_only_where_a_replica_is_what_is_missing() {
        // Given a budget that allows nothing while all its pods are healthy,
        let tight = PdbInv {
            min_available: Some(IntOrPercent::Int(2)),
            max_unavailable: None,
            disruptions_allowed: 0,
            current_healthy: 2,
            desired_healthy: 2,
            expected_pods: 2,
            ..budget("redis")
        };
        // then one more replica is what it lacks, and a Deployment may get it;
        assert!(budget_lacks_a_replica(&tight));
        assert_eq!(may_scale_up("Deployment", &tight), Ok(()));
        // a StatefulSet is never scaled;
        assert!(may_scale_up("StatefulSet", &tight).is_err());
        // a budget still starting pods is waited for, not scaled;
        let starting = PdbInv {
            current_healthy: 1,
            ..tight.clone()
        };
        assert!(!budget_lacks_a_replica(&starting));
        // and a budget no size unblocks (maxUnavailable 0) is not scaled either.
        let never = PdbInv {
            min_available: None,
            max_unavailable: Some(IntOrPercent::Int(0)),
            ..tight
        };
        let why = may_scale_up("Deployment", &never).expect_err("never");
        assert!(why.contains("at any size"), "{why}");
    }

    #[test]
    fn daemonset_mirror_and_finished_pods() {
        let mut ds = pod("ds", Some("DaemonSet"), true);
        ds.owner = Some(Owner {
            kind: "DaemonSet".into(),
            name: "ds".into(),
        });
        let mut mirror = pod("kube-apiserver-cp-1", None, false);
        mirror.mirror = true;
        let mut done = pod("job-x", None, true);
        done.phase = "Succeeded".into();
        let t = triage(vec![ds, mirror, done], &[budget("a"), budget("b")], STRICT);
        assert_eq!((t.daemonsets, t.mirrors), (1, 1));
        assert!(
            t.refused.is_empty(),
            "finished pods are deleted whatever covers them"
        );
        assert_eq!(t.evict.len(), 1);
        assert!(t.losing_local_data.is_empty());
    }
}
