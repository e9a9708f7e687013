//! Rollback, derived from a run's log. What the run changed is read from its records, never
//! guessed: the versions and files each node had before it was touched come from the facts
//! its preflight recorded, and what changed from the steps that were started. A rollback
//! plan takes back exactly that, in an order whose every intermediate state keeps the skew
//! rules (checked with the planner's own simulator), and names any input it lacks.
//!
//! This module plans rollbacks of nodes (`--node`): each node's kubelet and kubectl go back
//! to the versions recorded before the run, with the kubelet config the node had then. A
//! kubelet may be older than the apiserver, so this is legal whenever the skew rules hold
//! for the result, which the plan checks.

use std::collections::BTreeMap;

use upgraded_events::inventory::Inventory;
use upgraded_events::plan::{Batch, NodePlan, Plan, Role};
use upgraded_events::{Entry, Event, Facts, Host, Record, RunId, RunState, Step, Version};

use crate::skew::ClusterVersions;
use crate::stages::versions_now;

/// What an operator asks to roll back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RollbackRequest {
    /// Nodes (hosts) to take back to the versions recorded before the run.
    pub nodes: Vec<Host>,
}

/// What a rollback will do, in order, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPlan {
    /// The run it undoes.
    pub undoes: RunId,
    /// The plan the engine executes (linked to `undoes`).
    pub plan: Plan,
    /// One sentence per node, in the plan's order: from what, to what, and why.
    pub why: Vec<String>,
    /// What happens to etcd.
    pub etcd: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    #[error("the log holds no run to roll back")]
    NoRun,
    #[error(
        "run {run} is still {phase}: abort it first (`upgradectl abort`; nodes it cordoned are \
         uncordoned), then roll back"
    )]
    NotFinished { run: RunId, phase: &'static str },
    #[error("name the nodes to roll back (--node NAME)")]
    NothingAsked,
    #[error(
        "run {run} is itself the rollback of run {undoes}: a rollback is not rolled back (start \
         an upgrade to go forward again)"
    )]
    IsRollback { run: RunId, undoes: RunId },
    #[error("node {node:?} is not in run {run}'s plan")]
    UnknownNode { node: String, run: RunId },
    #[error("run {run} never changed node {node}'s packages: there is nothing to roll back on it")]
    Untouched { node: String, run: RunId },
    #[error(
        "node {node}'s control plane was upgraded by run {run}: rolling it back takes the whole \
         control plane back one minor, which a rollback of single nodes does not do"
    )]
    ControlPlane { node: String, run: RunId },
    #[error(
        "run {run} recorded no {what} for node {node} before touching it, so a rollback cannot \
         know what to put back (runs recorded by an older upgraded lack it; roll that node back \
         by hand: see the runbook)"
    )]
    MissingInput {
        node: String,
        run: RunId,
        what: &'static str,
    },
    #[error("after rolling back {node}, the cluster would break the version-skew policy: {why}")]
    Skew { node: String, why: String },
}

/// What the log says about one host.
#[derive(Debug, Default)]
struct HostHistory {
    role: Option<Role>,
    /// Facts of the first successful preflight: the host before the run touched it.
    before: Option<Facts>,
    /// Kubelet config backups the preflights recorded, by the kubelet version they belong to.
    configs: BTreeMap<String, String>,
    /// Packages changed (an install was started, whatever its outcome).
    packages_changed: bool,
    /// kubeadm installed at another version (`kubeadm upgrade node` on a worker too).
    kubeadm_changed: bool,
    /// kubeadm upgrade started on its control plane.
    control_plane_changed: bool,
}

/// The forward run in `records`: its state, each host's history, and the versions the
/// cluster is at after it (from `ClusterObserved`, moved by every version step started).
struct Forward {
    state: RunState,
    hosts: BTreeMap<Host, HostHistory>,
    versions: ClusterVersions,
    /// Hosts in the order the run first touched them.
    order: Vec<Host>,
}

impl Forward {
    fn read(records: &[Record]) -> Result<Forward, RollbackError> {
        let state = RunState::replay(records);
        let run = state.id.ok_or(RollbackError::NoRun)?;
        if let Some(undoes) = state.plan.undoes {
            return Err(RollbackError::IsRollback { run, undoes });
        }
        if !state.phase().is_terminal() {
            return Err(RollbackError::NotFinished {
                run,
                phase: state.phase().as_str(),
            });
        }
        let host_of: BTreeMap<&Entry, (Host, Role)> = state
            .plan
            .nodes()
            .map(|(_, n)| (&n.name, (n.host(), n.role)))
            .collect();
        let mut inventory = Inventory::default();
        let mut hosts: BTreeMap<Host, HostHistory> = BTreeMap::new();
        let mut order = Vec::new();
        let mut changes: Vec<(Host, Step)> = Vec::new();
        for r in records {
            match &r.event {
                Event::ClusterObserved { inventory: i, .. } => inventory = i.0.clone(),
                Event::StepStarted { node, step, .. } => {
                    let Some((host, role)) = host_of.get(node) else {
                        continue;
                    };
                    let h = hosts.entry(host.clone()).or_default();
                    h.role = Some(*role);
                    if !order.contains(host) {
                        order.push(host.clone());
                    }
                    match step {
                        Step::UpgradePackages { .. } | Step::DowngradePackages { .. } => {
                            h.packages_changed = true;
                        }
                        Step::KubeadmUpgrade { .. } => {
                            h.kubeadm_changed = true;
                            h.control_plane_changed |= *role == Role::ControlPlane;
                        }
                        _ => {}
                    }
                    if ClusterVersions::changes_versions(step) {
                        changes.push((host.clone(), step.clone()));
                    }
                }
                Event::StepSucceeded {
                    node,
                    step: Step::Preflight,
                    facts,
                    ..
                } => {
                    let Some((host, role)) = host_of.get(node) else {
                        continue;
                    };
                    let h = hosts.entry(host.clone()).or_default();
                    h.role = Some(*role);
                    if h.before.is_none() {
                        h.before = Some(facts.clone());
                    }
                    if let (Some(v), Some(path)) = (
                        facts.get("kubelet_installed"),
                        facts.get("kubelet_config_backup"),
                    ) {
                        h.configs.entry(v.clone()).or_insert_with(|| path.clone());
                    }
                }
                _ => {}
            }
        }
        let mut versions = versions_now(&inventory);
        for (host, step) in &changes {
            versions.apply(host.as_str(), step);
        }
        Ok(Forward {
            state,
            hosts,
            versions,
            order,
        })
    }

    fn run(&self) -> RunId {
        self.state.id.unwrap_or_default()
    }
}

/// The steps that take a node back to `version` (kubeadm too when the run changed it), with
/// the kubelet config recorded for it.
fn node_steps(version: Version, kubelet_config: String, kubeadm: bool) -> Vec<Step> {
    vec![
        Step::Preflight,
        Step::Cordon,
        Step::Drain,
        Step::DowngradePackages {
            version,
            kubelet_config: Some(kubelet_config),
            kubeadm,
        },
        Step::RestartKubelet,
        Step::Verify,
        Step::Uncordon,
    ]
}

/// Plans the rollback `req` asks for of the (finished) run in `records`.
pub fn plan(records: &[Record], req: &RollbackRequest) -> Result<RollbackPlan, RollbackError> {
    let fwd = Forward::read(records)?;
    let run = fwd.run();
    if req.nodes.is_empty() {
        return Err(RollbackError::NothingAsked);
    }
    // Workers first, then control-plane nodes; each group in the order the run took them.
    let mut chosen: Vec<(&Host, &HostHistory)> = Vec::new();
    for host in &req.nodes {
        let Some(h) = fwd.hosts.get(host) else {
            let in_plan = fwd.state.plan.nodes().any(|(_, n)| n.host() == *host);
            return Err(if in_plan {
                RollbackError::Untouched {
                    node: host.to_string(),
                    run,
                }
            } else {
                RollbackError::UnknownNode {
                    node: host.to_string(),
                    run,
                }
            });
        };
        if h.control_plane_changed {
            return Err(RollbackError::ControlPlane {
                node: host.to_string(),
                run,
            });
        }
        if !h.packages_changed {
            return Err(RollbackError::Untouched {
                node: host.to_string(),
                run,
            });
        }
        chosen.push((host, h));
    }
    chosen.sort_by_key(|(host, h)| {
        (
            h.role == Some(Role::ControlPlane),
            fwd.order.iter().position(|o| o == *host),
        )
    });
    chosen.dedup_by_key(|(host, _)| (*host).clone());

    let mut versions = fwd.versions.clone();
    let mut batches = Vec::new();
    let mut why = Vec::new();
    for (host, h) in chosen {
        let missing = |what| RollbackError::MissingInput {
            node: host.to_string(),
            run,
            what,
        };
        let before = h.before.as_ref().ok_or(missing("preflight facts"))?;
        let version: Version = before
            .get("kubelet_before")
            .and_then(|v| v.parse().ok())
            .ok_or(missing("kubelet version (kubelet_before)"))?;
        if before.get("pkg_kubelet").is_none_or(String::is_empty) {
            return Err(missing("installed kubelet package (pkg_kubelet)"));
        }
        let config = h
            .configs
            .get(&version.to_string())
            .cloned()
            .ok_or(missing("kubelet config backup (kubelet_config_backup)"))?;
        let now = versions
            .nodes
            .get(host.as_str())
            .map(|(k, _)| *k)
            .unwrap_or(version);
        if h.kubeadm_changed && before.get("pkg_kubeadm").is_none_or(String::is_empty) {
            return Err(missing("installed kubeadm package (pkg_kubeadm)"));
        }
        let steps = node_steps(version, config, h.kubeadm_changed);
        for s in &steps {
            versions.apply(host.as_str(), s);
        }
        if let Some(v) = versions.violations().into_iter().next() {
            return Err(RollbackError::Skew {
                node: host.to_string(),
                why: v,
            });
        }
        why.push(format!(
            "{host}: kubelet and kubectl {now} → {version} (recorded before run {run}, package {}), its kubelet config from then put back; cordoned and drained first{}",
            before.get("pkg_kubelet").map_or("?", String::as_str),
            if before.get("unschedulable").map(String::as_str) == Some("true") {
                ", left cordoned (it was cordoned before the run)"
            } else {
                ", uncordoned after"
            }
        ));
        batches.push(Batch {
            label: format!("rollback {host} to {version}"),
            nodes: vec![NodePlan {
                name: Entry::new(host.as_str()),
                host: None,
                role: h.role.unwrap_or(Role::Worker),
                from: now,
                steps,
                estimate_secs: 0,
            }],
        });
    }
    Ok(RollbackPlan {
        undoes: run,
        plan: Plan {
            target: versions.newest_apiserver(),
            batches,
            undoes: Some(run),
        },
        why,
        etcd: "etcd is not touched: a rollback of nodes leaves the control plane and its data as they are".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PlanPolicy;
    use crate::{PlanInput, plan as forward_plan};
    use upgraded_events::event::Json;
    use upgraded_events::{Actor, Timestamp};

    fn seed() -> (Inventory, PlanPolicy) {
        let inv = Inventory::from_kubectl_json(include_str!("../tests/fixtures/seed-cluster.json"))
            .expect("seed inventory");
        let policy = PlanPolicy::from_yaml(include_str!("../tests/fixtures/seed-policy.yaml"))
            .expect("seed policy");
        (inv, policy)
    }

    /// A forward run of the seed cluster to v1.35.3, as its log would hold it when every
    /// step succeeds; the node agents' preflight facts are what a node reports.
    fn forward(legacy: bool) -> Vec<Record> {
        let (inv, policy) = seed();
        let target = Version::new(1, 35, 3);
        let report = forward_plan(PlanInput {
            inventory: &inv,
            policy: &policy,
            target: Some(target),
            start: Timestamp(0),
        })
        .expect("plan");
        let plan = report.execution_plan();
        let run = RunId::from_u128(42);
        let mut events = vec![
            Event::ClusterObserved {
                apiserver: inv
                    .nodes
                    .iter()
                    .filter_map(|n| n.control_plane.as_ref().map(|c| c.apiserver))
                    .max()
                    .expect("apiserver"),
                inventory: Json(inv.clone()),
            },
            Event::RunPlanned {
                target,
                plan: Json(plan.clone()),
                policy: Json(Default::default()),
                by: Actor::daemon(),
            },
            Event::RunStarted {
                by: Actor::daemon(),
            },
        ];
        let mut kubelet: BTreeMap<String, Version> = inv
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.kubelet))
            .collect();
        for (_, n) in plan.nodes() {
            let host = n.host().to_string();
            for step in &n.steps {
                events.push(Event::StepStarted {
                    node: n.name.clone(),
                    step: step.clone(),
                    attempt: 1,
                });
                let mut facts = Facts::new();
                if *step == Step::Preflight {
                    let k = kubelet[&host].to_string();
                    facts.insert("kubelet_before".into(), k.clone());
                    facts.insert("unschedulable".into(), "false".into());
                    if !legacy {
                        facts.insert("kubelet_installed".into(), k.clone());
                        facts.insert("pkg_kubelet".into(), format!("{}-1.1", &k[1..]));
                        facts.insert("pkg_kubeadm".into(), format!("{}-1.1", &k[1..]));
                        facts.insert(
                            "kubelet_config_backup".into(),
                            format!("/var/lib/upgraded/kubelet-config/{k}.yaml"),
                        );
                    }
                }
                if let Step::UpgradePackages { version } = step {
                    kubelet.insert(host.clone(), *version);
                }
                events.push(Event::StepSucceeded {
                    node: n.name.clone(),
                    step: step.clone(),
                    attempt: 1,
                    facts,
                });
            }
        }
        events.push(Event::RunCompleted);
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Record {
                run,
                seq: i as u64,
                at: Timestamp(i as i64 * 1000),
                event,
            })
            .collect()
    }

    /// The first `n` records of `records`, then an abort (what an operator does before a
    /// rollback of a run that stopped there).
    fn stopped_at(records: &[Record], n: usize) -> Vec<Record> {
        let mut out: Vec<Record> = records[..n].to_vec();
        let last = out.last().map_or(0, |r| r.seq + 1);
        for (i, event) in [
            Event::AbortRequested {
                by: Actor::daemon(),
                reason: "stop".into(),
            },
            Event::RunAborted,
        ]
        .into_iter()
        .enumerate()
        {
            out.push(Record {
                run: records[0].run,
                seq: last + i as u64,
                at: Timestamp((last + i as u64) as i64 * 1000),
                event,
            });
        }
        out
    }

    fn hosts(names: &[&str]) -> RollbackRequest {
        RollbackRequest {
            nodes: names.iter().map(|n| Host::new(*n)).collect(),
        }
    }

    #[test]
    fn a_worker_goes_back_to_what_its_preflight_recorded_with_its_config() {
        let records = forward(false);
        let r = plan(&records, &hosts(&["r640-01"])).expect("rollback");
        assert_eq!(r.undoes, RunId::from_u128(42));
        assert_eq!(r.plan.undoes, Some(RunId::from_u128(42)));
        assert_eq!(r.plan.batches.len(), 1);
        let n = &r.plan.batches[0].nodes[0];
        assert_eq!(n.host(), "r640-01");
        assert_eq!(n.from, Version::new(1, 35, 3));
        assert!(
            n.steps.contains(&Step::DowngradePackages {
                version: Version::new(1, 32, 4),
                kubelet_config: Some("/var/lib/upgraded/kubelet-config/v1.32.4.yaml".into()),
                kubeadm: true,
            }),
            "{:?}",
            n.steps
        );
        assert_eq!(
            n.steps.iter().position(|s| *s == Step::Drain),
            Some(2),
            "cordoned and drained before the downgrade"
        );
        assert!(r.why[0].contains("v1.35.3 → v1.32.4"), "{:?}", r.why);
        assert!(r.etcd.contains("not touched"));
    }

    #[test]
    fn what_a_rollback_cannot_do_is_refused_by_name() {
        let records = forward(false);
        let run = RunId::from_u128(42);
        // Still running: abort first.
        let running: Vec<Record> = records[..records.len() - 1].to_vec();
        assert!(matches!(
            plan(&running, &hosts(&["r640-01"])),
            Err(RollbackError::NotFinished {
                phase: "running",
                ..
            })
        ));
        assert_eq!(
            plan(&records, &hosts(&["nope"])),
            Err(RollbackError::UnknownNode {
                node: "nope".into(),
                run
            })
        );
        assert_eq!(
            plan(&records, &RollbackRequest::default()),
            Err(RollbackError::NothingAsked)
        );
        let cp = plan(&records, &hosts(&["cp-1"])).expect_err("control plane");
        assert!(matches!(cp, RollbackError::ControlPlane { .. }), "{cp}");
        // A run stopped before it reached a worker: nothing changed there.
        let early = stopped_at(&records, 10);
        assert!(matches!(
            plan(&early, &hosts(&["r640-01"])),
            Err(RollbackError::Untouched { .. })
        ));
        // A run recorded before the preflight recorded packages: never a guess.
        let legacy = forward(true);
        let e = plan(&legacy, &hosts(&["r640-01"])).expect_err("legacy");
        assert_eq!(
            e,
            RollbackError::MissingInput {
                node: "r640-01".into(),
                run,
                what: "installed kubelet package (pkg_kubelet)"
            }
        );
        assert!(
            e.to_string()
                .contains("recorded no installed kubelet package"),
            "{e}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// Stopped anywhere, the derived rollback of every worker the run changed keeps the
        /// skew rules in every state and touches nothing the log does not show changed.
        #[test]
        fn a_rollback_of_a_run_stopped_anywhere_keeps_skew_and_touches_only_what_changed(
            cut in 3usize..2000,
        ) {
            let records = forward(false);
            let cut = cut % records.len();
            let stopped = stopped_at(&records, cut.max(3));
            let fwd = Forward::read(&stopped).expect("a finished run");
            let changed: Vec<Host> = fwd
                .hosts
                .iter()
                .filter(|(_, h)| h.packages_changed && !h.control_plane_changed)
                .map(|(host, _)| host.clone())
                .collect();
            if changed.is_empty() {
                return Ok(());
            }
            let r = plan(&stopped, &RollbackRequest { nodes: changed.clone() })
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let mut v = fwd.versions.clone();
            let mut seen = Vec::new();
            for (_, n) in r.plan.nodes() {
                proptest::prop_assert!(changed.contains(&n.host()), "{} was not changed", n.host());
                seen.push(n.host());
                for s in &n.steps {
                    v.apply(n.host().as_str(), s);
                    proptest::prop_assert_eq!(v.violations(), Vec::<String>::new());
                }
            }
            seen.sort();
            let mut want = changed.clone();
            want.sort();
            proptest::prop_assert_eq!(seen, want);
        }
    }
}
