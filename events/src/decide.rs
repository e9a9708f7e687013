//! `decide`: given a run's state, its policy and the time, which commands should run now.
//!
//! Pure and total. The engine records each command's intent durably before executing it, and
//! calls `decide` again after every applied record or when `wake_at` comes.

use serde::Serialize;

use crate::check::Boundary;
use crate::event::{Event, Facts, InDoubt, Step, Timestamp};
use crate::fault::FailureKind;
use crate::names::Entry;
use crate::node::{NodeState, Phase, StepStatus};
use crate::plan::Role;
use crate::policy::{OnDrainBlocked, OnGateFailure, Policy};
use crate::run::RunPhase;
use crate::state::RunState;
use crate::undo::node_rollback_steps;
use crate::window::{earliest_start, rfc3339};

/// What the engine should do. Imperative names: these are orders, not facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Command {
    /// Record `StepStarted`, execute the step, record its outcome.
    RunStep {
        node: Entry,
        step: Step,
        attempt: u32,
        /// Uncordon only: someone else had cordoned the node, so it stays cordoned.
        leave_cordoned: bool,
    },
    /// Look at the node to learn whether an in-doubt step took effect; record `StepProbed`,
    /// or, when it could not look, `StepFailed` with the `probe=failed` fact (still in doubt).
    Probe {
        node: Entry,
        step: Step,
        attempt: u32,
    },
    Halt {
        reason: String,
    },
    /// Pause the run on the daemon's own account (a blocked drain under policy `pause`).
    Pause {
        reason: String,
    },
    /// Set a node aside after its drain stayed blocked (policy `park`).
    Park {
        node: Entry,
        reason: String,
        uncordon: bool,
    },
    Complete,
    FinishAbort,
    /// Take a node back after its gate failed (policy `rollback-node`): its remaining steps
    /// become `steps`, then it parks and the run halts with `reason`.
    RollBackNode {
        node: Entry,
        reason: String,
        steps: Vec<Step>,
    },
    /// Abort the run and roll the whole of it back afterwards (policy `rollback-run`).
    RollBackRun {
        reason: String,
    },
    /// Read the machines of the generations batch `after` touched (`members`: node,
    /// generation) and record their drift (`DriftObserved`). Read-only: nothing is recorded
    /// before it, and a lost reading is simply read again.
    ObserveDrift {
        after: u32,
        members: Vec<(String, String)>,
    },
    /// Ask what did not answer (the API server about `node`, and `node`'s agent) whether
    /// it answers again; record `RunResumed` by the daemon once both do (`outage.resume:
    /// auto`). Read-only: an unanswered asking records nothing and is tried again later.
    AwaitAnswer {
        node: Entry,
    },
}

/// What executing a `RunStep` or a `Probe` observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The step did what it should; the facts it saw.
    Succeeded(Facts),
    /// It did not; `kind` says why, as the fault rules match on it.
    Failed {
        error: String,
        kind: FailureKind,
        facts: Facts,
    },
    /// A probe looked: whether the in-doubt step took effect.
    Probed { done: bool, facts: Facts },
    /// What did not answer still does not (`AwaitAnswer`): nothing is recorded.
    Unknown,
    /// What the machines' agents read (`ObserveDrift`), by node.
    Hosts(std::collections::BTreeMap<String, Facts>),
    /// What did not answer answers again (`AwaitAnswer`).
    Answered,
}

impl Command {
    /// The event that records what executing this command observed; `None` when nothing
    /// is to be recorded (an unknown probe, or a command whose intent is its record).
    pub fn outcome(&self, seen: Observation) -> Option<Event> {
        match (self, seen) {
            (
                Command::RunStep {
                    node,
                    step,
                    attempt,
                    ..
                },
                seen,
            ) => Some(match seen {
                Observation::Succeeded(facts) | Observation::Probed { facts, .. } => {
                    Event::StepSucceeded {
                        node: node.clone(),
                        step: step.clone(),
                        attempt: *attempt,
                        facts,
                    }
                }
                Observation::Failed {
                    error,
                    kind,
                    mut facts,
                } => {
                    kind.record(&mut facts);
                    Event::StepFailed {
                        node: node.clone(),
                        step: step.clone(),
                        attempt: *attempt,
                        error,
                        facts,
                    }
                }
                Observation::Unknown | Observation::Hosts(_) | Observation::Answered => {
                    return None;
                }
            }),
            (
                Command::Probe {
                    node,
                    step,
                    attempt,
                },
                Observation::Probed { done, facts },
            ) => Some(Event::StepProbed {
                node: node.clone(),
                step: step.clone(),
                attempt: *attempt,
                done,
                facts,
            }),
            // A probe that could not look: recorded as a failure of the step it looked
            // for (the step stays in doubt), so the outage rules count it and bound it.
            (
                Command::Probe {
                    node,
                    step,
                    attempt,
                },
                Observation::Failed {
                    error,
                    kind,
                    mut facts,
                },
            ) => {
                kind.record(&mut facts);
                facts.insert("probe".to_string(), "failed".to_string());
                Some(Event::StepFailed {
                    node: node.clone(),
                    step: step.clone(),
                    attempt: *attempt,
                    error,
                    facts,
                })
            }
            (Command::AwaitAnswer { .. }, Observation::Answered) => Some(Event::RunResumed {
                by: crate::event::Actor::daemon(),
            }),
            (Command::ObserveDrift { after, members }, Observation::Hosts(hosts)) => {
                let mut generations: Vec<String> = members.iter().map(|(_, g)| g.clone()).collect();
                generations.sort();
                generations.dedup();
                Some(Event::DriftObserved {
                    after: Some(*after),
                    generations,
                    reports: crate::Json(crate::drift::after_batch(members, &hosts)),
                })
            }
            _ => None,
        }
    }

    /// The event to make durable before executing the command (for `Probe`, which only
    /// reads, the outcome is the first record).
    pub fn intent(&self) -> Option<Event> {
        match self {
            Command::RunStep {
                node,
                step,
                attempt,
                ..
            } => Some(Event::StepStarted {
                node: node.clone(),
                step: step.clone(),
                attempt: *attempt,
            }),
            Command::Probe { .. } | Command::ObserveDrift { .. } | Command::AwaitAnswer { .. } => {
                None
            }
            Command::Halt { reason } => Some(Event::RunHalted {
                reason: reason.clone(),
            }),
            Command::Pause { reason } => Some(Event::RunPaused {
                by: crate::event::Actor::daemon(),
                reason: reason.clone(),
            }),
            Command::Park {
                node,
                reason,
                uncordon,
            } => Some(Event::NodeParked {
                node: node.clone(),
                reason: reason.clone(),
                uncordon: *uncordon,
            }),
            Command::RollBackNode {
                node,
                reason,
                steps,
            } => Some(Event::NodeRollingBack {
                node: node.clone(),
                reason: reason.clone(),
                steps: steps.clone(),
            }),
            Command::RollBackRun { reason } => Some(Event::RollbackRequested {
                reason: reason.clone(),
            }),
            Command::Complete => Some(Event::RunCompleted),
            Command::FinishAbort => Some(Event::RunAborted),
        }
    }
}

/// The commands to run now, and when to ask again if nothing else happens first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Decision {
    pub commands: Vec<Command>,
    pub wake_at: Option<Timestamp>,
    /// Why nothing starts now although work remains (a maintenance window), for status.
    pub waiting: Option<String>,
    /// The node that waits for a maintenance window, when that is why (for timelines).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_wait: Option<Entry>,
}

impl Decision {
    fn wake(&mut self, at: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

/// When a paused run asks what did not answer again (`AwaitAnswer`) after `failed`
/// askings in a row went unanswered: the policy's backoff. It only reads, and the run is
/// paused meanwhile (a person may resume or abort it at any time).
pub fn probe_retry_at(policy: &Policy, failed: u32, now: Timestamp) -> Timestamp {
    now.plus_secs(policy.backoff_secs(failed.max(1)))
}

/// What an outage around a node's step comes to now.
enum Wait {
    /// Ask again then.
    Until(Timestamp),
    /// What the run needs has not answered for `outage.pauseAfter`: pause the run.
    Pause(String),
    /// The node itself has not answered for `gates.nodeReadyTimeout`: park it.
    Park(String),
}

/// The fault rules for an outage around a node's step (`Node::unavailable`: what it needs
/// did not answer, or its answers were lost): try again after `backoff_ms` spread by
/// `jitter_ms`; once the node itself (its agent, its connection) has not answered for
/// `gates.nodeReadyTimeout`, park it with the reason; once anything else (the API server)
/// has not answered for `outage.pauseAfter`, pause the run with the reason. While the run
/// is aborting (`!may_give_up`) neither: it asks again at the backoff's pace. `None`: no
/// outage.
fn outage_wait(
    n: &crate::node::Node,
    step: &Step,
    attempt: u32,
    policy: &Policy,
    now: Timestamp,
    may_give_up: bool,
) -> Option<Wait> {
    let o = n.unavailable?;
    let lasted = u64::try_from(now.0.saturating_sub(o.since.0)).unwrap_or(0) / 1000;
    let error = n.last_error.as_deref().unwrap_or("no error recorded");
    if may_give_up && o.kind.is_node_outage() && lasted >= policy.node_ready_timeout_secs {
        return Some(Wait::Park(format!(
            "node {} has not answered for {lasted}s ({} tries at {step}; \
             gates.nodeReadyTimeout is {}s): {error}. Parked as it is; bring the machine \
             back, then `upgradectl resume` starts it again from its preflight",
            n.host, o.tries, policy.node_ready_timeout_secs
        )));
    }
    if may_give_up && !o.kind.is_node_outage() && lasted >= policy.outage_pause_secs {
        return Some(Wait::Pause(format!(
            "node {}: {step} could not reach what it needs for {lasted}s ({} tries; \
             outage.pauseAfter is {}s): {error}. `upgradectl resume` once it answers again",
            n.name, o.tries, policy.outage_pause_secs
        )));
    }
    let delay = crate::fault::jitter_ms(
        crate::fault::backoff_ms(
            policy.retry_backoff_secs.saturating_mul(1000),
            policy.retry_backoff_max_secs.saturating_mul(1000),
            o.tries.saturating_sub(1),
        ),
        &format!("{}:{attempt}", n.name),
    );
    Some(Wait::Until(n.since.plus_millis(delay)))
}

/// A worker that stopped answering parks as it is: still cordoned when it was (it may be
/// half-upgraded, and nothing can be asked of it), and the run goes on with the others. A
/// control-plane node is never left behind (the workers may not pass its version): the run
/// halts instead.
fn park_unreachable(n: &crate::node::Node, reason: String, d: &mut Decision) -> Option<Stop> {
    if n.role != Role::Worker {
        return Some(Stop::Halt(format!(
            "{reason}. It runs the control plane, so nothing else goes on without it: halted"
        )));
    }
    d.commands.push(Command::Park {
        node: n.name.clone(),
        reason,
        uncordon: false,
    });
    None
}

/// The fault rule for the end of an outage: a run the daemon itself paused because
/// something did not answer (a node's step found it `unavailable`) asks it again, with
/// backoff, and resumes once it answers (`outage.resume: auto`). A pause by a person, or
/// under `outage.resume: manual`, waits for `upgradectl resume`; so does the daemon's pause
/// for a drain a budget blocked (`drain.onBlocked: pause` asks a person to act), even while
/// another node's outage is on.
fn decide_paused(state: &RunState, policy: &Policy, d: &mut Decision) {
    let by_daemon = state.run.data().paused_by == Some(crate::event::Actor::daemon());
    let blocked = state
        .nodes
        .iter()
        .any(|n| n.node().failure == Some(FailureKind::EvictionBlocked));
    if !(policy.outage_resume && by_daemon) || blocked {
        return;
    }
    if let Some(n) = state.nodes.iter().find(|n| n.node().unavailable.is_some()) {
        d.commands.push(Command::AwaitAnswer {
            node: n.node().name.clone(),
        });
    }
}

pub fn decide(state: &RunState, policy: &Policy, now: Timestamp) -> Decision {
    let mut d = Decision::default();
    match state.phase() {
        RunPhase::Running => decide_running(state, policy, now, &mut d),
        RunPhase::Aborting => decide_aborting(state, policy, now, &mut d),
        RunPhase::Paused => decide_paused(state, policy, &mut d),
        RunPhase::Planned | RunPhase::Halted | RunPhase::Completed | RunPhase::Aborted => {}
    }
    d
}

fn decide_running(state: &RunState, policy: &Policy, now: Timestamp, d: &mut Decision) {
    // A node rolled back after its gate failed: nothing more starts; the operator decides.
    if let Some(n) = state
        .nodes
        .iter()
        .find(|n| n.phase() == Phase::Parked && n.node().rolling_back)
        .map(NodeState::node)
    {
        let to = n.steps.iter().rev().find_map(|s| match s {
            Step::DowngradePackages { version, .. } => Some(version.to_string()),
            _ => None,
        });
        d.commands.push(Command::Halt {
            reason: format!(
                "{}; {} was rolled back to {} and parked. Fix the cause on that machine (its kernel, OS or container runtime), then `upgradectl resume` upgrades it again, or `upgradectl abort`",
                n.parked.as_deref().unwrap_or("its gate failed"),
                n.host,
                to.as_deref().unwrap_or("its recorded versions")
            ),
        });
        return;
    }
    // The current batch is the first one with an unfinished node (parked ones wait for a
    // resume and do not hold up the others).
    let Some(current) =
        (0..state.plan.batches.len()).find(|&b| state.batch(b).any(|n| !n.phase().is_settled()))
    else {
        // The last batch's drift is read before the run ends.
        if let Some(cmd) = state
            .plan
            .batches
            .len()
            .checked_sub(1)
            .and_then(|last| observe_drift(state, last))
        {
            d.commands.push(cmd);
            return;
        }
        let parked = parked(state, None);
        if parked.is_empty() {
            d.commands.push(Command::Complete);
        } else {
            d.commands.push(Command::Halt {
                reason: format!(
                    "every other node is done; {} node(s) parked: {}. Fix what blocks them, then `upgradectl resume` retries them",
                    parked.len(),
                    parked.join("; ")
                ),
            });
        }
        return;
    };
    // What the previous batch left the machines like, read while the next one goes on.
    if let Some(cmd) = current
        .checked_sub(1)
        .and_then(|prev| observe_drift(state, prev))
    {
        d.commands.push(cmd);
    }
    // The wait between batches counts from the moment the previous batch's last node finished.
    let batch_open_at = current
        .checked_sub(1)
        .and_then(|prev| state.batch(prev).map(|n| n.node().since).max())
        .map(|t| t.plus_secs(policy.wait_between_batches_secs));
    let estimates: std::collections::BTreeMap<&str, u64> = state.plan.batches[current]
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.estimate_secs))
        .collect();
    for node in state.batch(current) {
        if let Some(open) = batch_open_at.filter(|&t| node.phase() == Phase::Pending && now < t) {
            d.wake(open);
            continue;
        }
        // Maintenance windows gate only the start of a node: one already under way is
        // finished (leaving it half-done and cordoned is worse).
        if node.phase() == Phase::Pending && !policy.windows.is_empty() {
            let name = node.node().name.as_str();
            let est = estimates.get(name).copied().unwrap_or(0);
            match earliest_start(&policy.windows, now, est) {
                Some(t) if t <= now => {}
                Some(t) => {
                    d.wake(t);
                    d.window_wait
                        .get_or_insert_with(|| node.node().name.clone());
                    d.waiting.get_or_insert_with(|| {
                        format!(
                            "outside the maintenance windows: {name} (about {}) starts at {}",
                            human(est),
                            rfc3339(t)
                        )
                    });
                    continue;
                }
                None => {
                    d.commands.push(Command::Halt {
                        reason: format!(
                            "no maintenance window in the coming weeks is long enough for {name} (about {} of work): widen the windows in the policy, then `upgradectl resume`",
                            human(est)
                        ),
                    });
                    return;
                }
            }
        }
        // The final smoke tests run once every other node is done: "after the final batch".
        if node.current_step()
            == Some(&Step::Checks {
                boundary: Boundary::Final,
            })
            && node.cursor().is_some_and(|c| c.status == StepStatus::Ready)
            && state
                .nodes
                .iter()
                .any(|m| m.node().name != node.node().name && !m.phase().is_settled())
        {
            continue;
        }
        match next_for_node(node, policy, now, true, d) {
            Some(Stop::Halt(reason)) => {
                // Nodes parked before may be why this one failed (a machine that never
                // came back took its capacity with it): the halt names them too.
                let before = parked(state, Some(node.node().name.as_str()));
                let reason = if before.is_empty() {
                    reason
                } else {
                    format!("{reason}; parked before it: {}", before.join("; "))
                };
                d.commands.push(Command::Halt { reason });
                return;
            }
            Some(Stop::Pause(reason)) => {
                d.commands.push(Command::Pause { reason });
                return;
            }
            None => {}
        }
    }
}

/// The parked nodes, each with why (`name (why)`), but `except`.
fn parked(state: &RunState, except: Option<&str>) -> Vec<String> {
    state
        .nodes
        .iter()
        .map(NodeState::node)
        .filter(|n| Some(n.name.as_str()) != except)
        .filter_map(|n| n.parked.as_ref().map(|why| format!("{} ({why})", n.name)))
        .collect()
}

/// The reading of drift after batch `b`, when it is owed (`RunState::drift_members`).
fn observe_drift(state: &RunState, b: usize) -> Option<Command> {
    let members = state.drift_members(b)?;
    Some(Command::ObserveDrift {
        after: u32::try_from(b).ok()?,
        members,
    })
}

fn human(secs: u64) -> String {
    match secs {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m", s.div_ceil(60)),
        s => format!("{s}s"),
    }
}

fn decide_aborting(state: &RunState, policy: &Policy, now: Timestamp, d: &mut Decision) {
    let mut busy = false;
    for node in &state.nodes {
        if node.phase().is_terminal() || node.phase() == Phase::Pending {
            continue;
        }
        busy = true;
        let unwinding = node.phase() == Phase::Uncordoning;
        let in_doubt = node.cursor().map(|c| c.status) == Some(StepStatus::InDoubt);
        if unwinding || in_doubt {
            // Failures while unwinding are retried with backoff, never given up on.
            let _ = next_for_node(node, policy, now, false, d);
        }
    }
    if !busy {
        d.commands.push(Command::FinishAbort);
    }
}

/// Why the whole run must stop.
enum Stop {
    Halt(String),
    Pause(String),
}

/// Pushes the node's next command, if any; returns why the run must stop when the node has
/// failed beyond its attempts (or its drain is blocked) and `may_give_up`.
fn next_for_node(
    node: &NodeState,
    policy: &Policy,
    now: Timestamp,
    may_give_up: bool,
    d: &mut Decision,
) -> Option<Stop> {
    let (Some(cursor), Some(step)) = (node.cursor(), node.current_step()) else {
        return None;
    };
    let n = node.node();
    let run = |attempt| Command::RunStep {
        node: n.name.clone(),
        step: step.clone(),
        attempt,
        leave_cordoned: *step == Step::Uncordon && n.cordoned_before,
    };
    match cursor.status {
        StepStatus::InFlight => {}
        StepStatus::InDoubt => {
            // In doubt because answers were lost, or probes could not look (not because
            // the daemon stopped): wait as for an outage before asking again.
            match outage_wait(n, step, cursor.attempt, policy, now, may_give_up) {
                Some(Wait::Pause(reason)) => return Some(Stop::Pause(reason)),
                Some(Wait::Park(reason)) => return park_unreachable(n, reason, d),
                Some(Wait::Until(at)) if now < at => {
                    d.wake(at);
                    return None;
                }
                Some(Wait::Until(_)) | None => {}
            }
            d.commands.push(match step.in_doubt() {
                InDoubt::Rerun => run(cursor.attempt + 1),
                InDoubt::Probe => Command::Probe {
                    node: n.name.clone(),
                    step: step.clone(),
                    attempt: cursor.attempt,
                },
            })
        }
        StepStatus::Ready => {
            let soak_until = n.since.plus_secs(policy.soak_secs);
            if *step == Step::Soak && now < soak_until {
                d.wake(soak_until);
            } else {
                d.commands.push(run(cursor.attempt + 1));
            }
        }
        StepStatus::Failed => {
            // An outage around the step (the API server or the node not answering):
            // retried with backoff and jitter without using the step's attempts, until it
            // has lasted its limit; then the run pauses, or the node parks, saying what did
            // not answer.
            if n.failure.is_some_and(FailureKind::is_outage)
                && let Some(wait) = outage_wait(n, step, cursor.attempt, policy, now, may_give_up)
            {
                match wait {
                    Wait::Pause(reason) => return Some(Stop::Pause(reason)),
                    Wait::Park(reason) => return park_unreachable(n, reason, d),
                    Wait::Until(at) if now < at => d.wake(at),
                    Wait::Until(_) => d.commands.push(run(cursor.attempt + 1)),
                }
                return None;
            }
            // A drain that a budget still refused at its timeout has already retried for
            // that long: park the node or pause the run, as the policy says.
            if may_give_up
                && *step == Step::Drain
                && n.failure == Some(FailureKind::EvictionBlocked)
            {
                let what = n
                    .failure_facts
                    .get("eviction_blocked")
                    .map_or("a PodDisruptionBudget", String::as_str);
                let reason = format!(
                    "drain of {} blocked for {}s: {what}",
                    n.host, policy.drain_timeout_secs
                );
                match policy.on_drain_blocked {
                    OnDrainBlocked::Park => d.commands.push(Command::Park {
                        node: n.name.clone(),
                        reason,
                        uncordon: policy.uncordon_parked,
                    }),
                    OnDrainBlocked::Pause => {
                        return Some(Stop::Pause(format!(
                            "{reason}. Scale the workload up or fix its budget, then `upgradectl resume`"
                        )));
                    }
                }
                return None;
            }
            // A permanent failure (a refusal, a missing right, a name that is not allowed)
            // would only fail the same way again.
            let permanent = n.failure == Some(FailureKind::Permanent);
            if may_give_up && (permanent || n.failures >= policy.max_attempts.max(1)) {
                let why = format!(
                    "node {}: {} failed {} time(s){}: {}",
                    n.name,
                    step,
                    n.failures,
                    if permanent { ", not retried" } else { "" },
                    n.last_error.as_deref().unwrap_or("no error recorded")
                );
                if n.rolling_back {
                    // Never a rollback of a rollback: a person looks at the node.
                    return Some(Stop::Halt(format!(
                        "the automatic rollback of {} failed: {why}. Halted, nothing else is tried: look at the node, then `upgradectl resume` retries that step",
                        n.name
                    )));
                }
                // A checks step whose checks gave no answer, or whose failed check halts
                // (generation or cluster scope, `gates.onFailure: halt`), rolls nothing back.
                let checks_halt = matches!(step, Step::Checks { .. })
                    && n.failure.is_some_and(FailureKind::halts_without_rollback);
                let gate =
                    matches!(step, Step::Verify | Step::Soak | Step::Checks { .. }) && !checks_halt;
                if gate && policy.on_gate_failure == OnGateFailure::RollbackRun {
                    d.commands.push(Command::RollBackRun {
                        reason: format!("{why}; rolling the whole run back (policy rollback-run)"),
                    });
                    return None;
                }
                if gate
                    && n.role == Role::Worker
                    && policy.on_gate_failure == OnGateFailure::RollbackNode
                {
                    return match node_rollback_steps(n, step) {
                        Ok(steps) => {
                            d.commands.push(Command::RollBackNode {
                                node: n.name.clone(),
                                reason: why,
                                steps,
                            });
                            None
                        }
                        Err(missing) => Some(Stop::Halt(format!("{why}. {} {missing}", n.name))),
                    };
                }
                return Some(Stop::Halt(why));
            }
            let retry_at = n.since.plus_secs(policy.backoff_secs(n.failures));
            if now < retry_at {
                d.wake(retry_at);
            } else {
                d.commands.push(run(cursor.attempt + 1));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_probe_is_retried_with_the_policys_backoff() {
        // Given retries backing off from 10 s to at most 60 s,
        let policy = Policy {
            retry_backoff_secs: 10,
            retry_backoff_max_secs: 60,
            ..Policy::default()
        };
        let now = Timestamp(1_000_000);
        // when the first probe fails, then the next one is 10 s later;
        assert_eq!(probe_retry_at(&policy, 1, now), now.plus_secs(10));
        // when more fail in a row, the wait doubles, up to the cap.
        assert_eq!(probe_retry_at(&policy, 2, now), now.plus_secs(20));
        assert_eq!(probe_retry_at(&policy, 3, now), now.plus_secs(40));
        assert_eq!(probe_retry_at(&policy, 9, now), now.plus_secs(60));
    }
    use crate::event::{Actor, Json, Record, RunId};
    use crate::plan::{Batch, NodePlan, Plan, Role};
    use crate::version::Version;
    use crate::window::Window;

    /// 2026-11-24 (a Tuesday) at `h`:`m` UTC.
    fn at(day: i64, h: i64, m: i64) -> Timestamp {
        Timestamp(1_795_478_400_000 + ((day * 24 + h) * 60 + m) * 60_000)
    }

    fn state(policy: &Policy) -> RunState {
        workers(policy, &["w-1"])
    }

    /// Two workers in one batch.
    fn state2(policy: &Policy) -> RunState {
        workers(policy, &["w-1", "w-2"])
    }

    /// A started run of one batch of `names`.
    fn workers(policy: &Policy, names: &[&str]) -> RunState {
        workers_with(
            policy,
            names,
            &[Step::Preflight, Step::Cordon, Step::Uncordon],
            Role::Worker,
        )
    }

    /// A started run of one batch of `names`, each with `steps` and `role`.
    fn workers_with(policy: &Policy, names: &[&str], steps: &[Step], role: Role) -> RunState {
        let run = RunId::nil();
        let nodes = names
            .iter()
            .map(|name| NodePlan {
                name: (*name).into(),
                host: None,
                role,
                from: Version::new(1, 34, 6),
                steps: steps.to_vec(),
                estimate_secs: 3600,
            })
            .collect();
        let plan = Plan {
            undoes: None,
            target: Some(Version::new(1, 35, 3)),
            batches: vec![Batch {
                label: "workers".into(),
                phase: String::new(),
                nodes,
            }],
        };
        let events = [
            Event::RunPlanned {
                target: Version::new(1, 35, 3),
                plan: Json(plan),
                policy: Json(policy.clone()),
                by: Actor::daemon(),
            },
            Event::RunStarted {
                by: Actor::daemon(),
            },
        ];
        let log: Vec<Record> = events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Record {
                run,
                seq: i as u64,
                at: at(0, 12, 0),
                epoch: 0,
                event,
            })
            .collect();
        RunState::replay(&log)
    }

    #[test]
    fn scale_ups_stay_outstanding_until_restored_and_keep_the_first_original() {
        let mut s = state(&Policy::default());
        let scaled = |from, to, restore| Event::WorkloadScaled {
            node: "w-1".into(),
            kind: "Deployment".into(),
            namespace: "prod".into(),
            name: "redis".into(),
            from,
            to,
            restore,
        };
        let push = |s: &mut RunState, e| {
            let r = Record {
                run: RunId::nil(),
                seq: s.next_seq,
                at: at(0, 12, 1),
                epoch: 0,
                event: e,
            };
            s.apply(&r);
        };
        push(&mut s, scaled(3, 4, false));
        // A re-run drain that found it at 4 and scaled once more: 3 is still what goes back.
        push(&mut s, scaled(4, 5, false));
        let out = s.scaled_by("w-1");
        assert_eq!((out.len(), out[0].original, out[0].scaled), (1, 3, 5));
        assert_eq!(s.summary().scaled.len(), 1);
        assert!(s.scaled_by("w-2").is_empty());
        push(&mut s, scaled(5, 3, true));
        assert!(s.scaled_by("w-1").is_empty());
        assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
    }

    /// The run of `state` after `events` on w-1 (recorded at noon).
    fn after(mut s: RunState, events: Vec<Event>) -> RunState {
        for event in events {
            let r = Record {
                run: RunId::nil(),
                seq: s.next_seq,
                at: at(0, 12, 0),
                epoch: 0,
                event,
            };
            s.apply(&r);
        }
        s
    }

    fn failed(attempt: u32, retryable: bool) -> Vec<Event> {
        vec![
            Event::StepStarted {
                node: "w-1".into(),
                step: Step::Preflight,
                attempt,
            },
            Event::StepFailed {
                node: "w-1".into(),
                step: Step::Preflight,
                attempt,
                error: "refused".into(),
                facts: crate::event::Facts::from([(
                    "retryable".to_string(),
                    retryable.to_string(),
                )]),
            },
        ]
    }

    #[test]
    fn what_a_command_observed_is_recorded_as_its_outcome() {
        let step = Command::RunStep {
            node: "w-1".into(),
            step: Step::Drain,
            attempt: 2,
            leave_cordoned: false,
        };
        // Given a refused drain, when it is recorded, then the failure says it is permanent.
        let refused = step.outcome(Observation::Failed {
            error: "refusing to drain".into(),
            kind: FailureKind::Permanent,
            facts: Facts::from([("refused_unmanaged".to_string(), "a/b".to_string())]),
        });
        match refused {
            Some(Event::StepFailed {
                attempt: 2, facts, ..
            }) => {
                assert_eq!(facts["failure"], "permanent");
                assert_eq!(facts["refused_unmanaged"], "a/b");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            step.outcome(Observation::Succeeded(Facts::new())),
            Some(Event::StepSucceeded { attempt: 2, .. })
        ));
        // A probe that could not look records a failure of the step it looked for (so the
        // outage rules bound it); one that looked records what it saw.
        let probe = Command::Probe {
            node: "w-1".into(),
            step: Step::RestartKubelet,
            attempt: 1,
        };
        match probe.outcome(Observation::Failed {
            error: "connection refused".into(),
            kind: FailureKind::Unreachable,
            facts: Facts::new(),
        }) {
            Some(Event::StepFailed {
                attempt: 1,
                step: Step::RestartKubelet,
                facts,
                ..
            }) => {
                assert_eq!(facts["failure"], "unreachable");
                assert_eq!(facts["probe"], "failed");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(probe.outcome(Observation::Unknown), None);
        assert!(matches!(
            probe.outcome(Observation::Probed {
                done: true,
                facts: Facts::new()
            }),
            Some(Event::StepProbed { done: true, .. })
        ));
        assert_eq!(Command::Complete.outcome(Observation::Unknown), None);
    }

    #[test]
    fn a_permanent_failure_halts_at_once_a_passing_one_is_retried() {
        let policy = Policy::default();
        // Given a failure the executor calls permanent, when deciding, then halt now.
        let s = after(state(&policy), failed(1, false));
        let d = decide(&s, &policy, at(0, 13, 0));
        match d.commands.as_slice() {
            [Command::Halt { reason }] => {
                assert!(
                    reason.contains("not retried") && reason.contains("refused"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        // Given a passing failure, the step is tried again after its backoff.
        let s = after(state(&policy), failed(1, true));
        let d = decide(&s, &policy, at(0, 13, 0));
        assert!(
            matches!(d.commands.as_slice(), [Command::RunStep { attempt: 2, .. }]),
            "{d:?}"
        );
    }

    #[test]
    fn a_halt_names_the_nodes_parked_before_it() {
        let policy = Policy::default();
        // w-2 never came back and was parked; then w-1 fails for good: the halt says
        // both, since the first may be why the second failed.
        let mut gone = failed_attempt(
            "w-2",
            Step::Preflight,
            1,
            FailureKind::Unreachable,
            "no route to host",
        );
        gone.push(Event::NodeParked {
            node: "w-2".into(),
            reason: "w-2 did not come back within 600 s".into(),
            uncordon: false,
        });
        let s = after(state2(&policy), gone);
        assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
        let s = after(s, failed(1, false));
        let d = decide(&s, &policy, at(0, 13, 0));
        match d.commands.as_slice() {
            [Command::Halt { reason }] => assert!(
                reason.contains("refused")
                    && reason.contains("parked before it: w-2 (w-2 did not come back"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        // Nothing parked: the halt is the failure's alone.
        let s = after(state2(&policy), failed(1, false));
        match decide(&s, &policy, at(0, 13, 0)).commands.as_slice() {
            [Command::Halt { reason }] => assert!(!reason.contains("parked"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    /// Attempt `n` of `step` on `node` started and failed with `kind` and `error`.
    fn failed_attempt(
        node: &str,
        step: Step,
        n: u32,
        kind: FailureKind,
        error: &str,
    ) -> Vec<Event> {
        let mut facts = Facts::new();
        kind.record(&mut facts);
        vec![
            Event::StepStarted {
                node: node.into(),
                step: step.clone(),
                attempt: n,
            },
            Event::StepFailed {
                node: node.into(),
                step,
                attempt: n,
                error: error.into(),
                facts,
            },
        ]
    }

    /// The fault rules' rows for an outage (`unavailable`) and a lost answer (`in-doubt`).
    #[test]
    fn an_outage_is_retried_past_the_attempts_and_pauses_after_its_time() {
        let policy = Policy {
            outage_pause_secs: 600,
            ..Policy::default()
        };
        let attempt = |n: u32, kind: FailureKind| {
            failed_attempt(
                "w-1",
                Step::Preflight,
                n,
                kind,
                "API server: etcdserver: leader changed (503)",
            )
        };
        // Five unavailable failures, more than max_attempts (3): no halt, a wait of the
        // fifth backoff (160 s) spread over its upper half.
        let five: Vec<Event> = (1..=5)
            .flat_map(|n| attempt(n, FailureKind::Unavailable))
            .collect();
        let s = after(state(&policy), five);
        let d = decide(&s, &policy, at(0, 12, 0));
        assert!(d.commands.is_empty(), "{d:?}");
        let wake = d.wake_at.expect("a wake");
        assert!(
            (at(0, 12, 0).plus_secs(80)..=at(0, 12, 0).plus_secs(160)).contains(&wake),
            "{wake}"
        );
        // Once the wait is over, the step runs again.
        let d = decide(&s, &policy, at(0, 12, 3));
        assert!(
            matches!(d.commands.as_slice(), [Command::RunStep { attempt: 6, .. }]),
            "{d:?}"
        );
        // After outage.pauseAfter, the run pauses, saying what did not answer.
        let d = decide(&s, &policy, at(0, 12, 10));
        match d.commands.as_slice() {
            [Command::Pause { reason }] => {
                assert!(
                    reason.contains("600s") && reason.contains("leader changed"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        // A lost answer: in doubt, asked again after the same wait (preflight re-runs).
        let s = after(state(&policy), attempt(1, FailureKind::InDoubt));
        let d = decide(&s, &policy, at(0, 12, 0));
        assert!(d.commands.is_empty() && d.wake_at.is_some(), "{d:?}");
        let d = decide(&s, &policy, at(0, 12, 1));
        assert!(
            matches!(d.commands.as_slice(), [Command::RunStep { attempt: 2, .. }]),
            "{d:?}"
        );
    }

    /// A probe of `step` (attempt `n`) on w-1 that could not look: `kind`, `error`.
    fn probe_failed(step: Step, n: u32, kind: FailureKind, error: &str) -> Event {
        match (Command::Probe {
            node: "w-1".into(),
            step,
            attempt: n,
        })
        .outcome(Observation::Failed {
            error: error.into(),
            kind,
            facts: Facts::new(),
        }) {
            Some(e) => e,
            None => panic!("a failed probe is recorded"),
        }
    }

    /// The fault rules' rows for a node that stops answering (`unreachable`, and a lost
    /// answer whose probes cannot look): retried without using attempts, parked as it is
    /// after `gates.nodeReadyTimeout` (the run is not paused for it, and goes on with the
    /// others); the API server's outage pauses the run instead; an abort never parks.
    #[test]
    fn a_node_that_does_not_come_back_parks_after_its_timeout_with_the_reason() {
        let policy = Policy {
            node_ready_timeout_secs: 600,
            outage_pause_secs: 300,
            ..Policy::default()
        };
        let down = "node w-1: cannot connect over SSH: Connection refused";
        let steps = [
            Step::Preflight,
            Step::Cordon,
            Step::RestartKubelet,
            Step::Uncordon,
        ];
        let state = |policy: &Policy| workers_with(policy, &["w-1"], &steps, Role::Worker);
        // Cordoned; the kubelet restart's answer lost (the machine went down mid-step), and
        // three probes that could not look.
        let mut lost = vec![
            Event::StepStarted {
                node: "w-1".into(),
                step: Step::Cordon,
                attempt: 1,
            },
            Event::StepSucceeded {
                node: "w-1".into(),
                step: Step::Cordon,
                attempt: 1,
                facts: Facts::new(),
            },
        ];
        lost.extend(failed_attempt(
            "w-1",
            Step::RestartKubelet,
            1,
            FailureKind::InDoubt,
            "node w-1: the SSH connection was lost",
        ));
        for _ in 0..3 {
            lost.push(probe_failed(
                Step::RestartKubelet,
                1,
                FailureKind::Unreachable,
                down,
            ));
        }
        let s = after(state(&policy), preflight_done_then(lost.clone()));
        let n = s.nodes[0].node();
        assert_eq!(
            s.nodes[0].cursor().map(|c| c.status),
            Some(StepStatus::InDoubt)
        );
        assert_eq!(n.failures, 0, "an outage uses no attempts");
        let o = n.unavailable.expect("an outage");
        assert_eq!((o.tries, o.kind), (4, FailureKind::Unreachable));
        assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
        // Within the timeout: probed again after the backoff (past the pause's 300 s: the
        // node's outage is not the run's).
        let d = decide(&s, &policy, at(0, 12, 7));
        assert!(
            matches!(d.commands.as_slice(), [Command::Probe { attempt: 1, .. }]),
            "{d:?}"
        );
        // At the timeout: parked as it is (cordoned), saying why.
        let d = decide(&s, &policy, at(0, 12, 10));
        let reason = match d.commands.as_slice() {
            [
                Command::Park {
                    reason,
                    uncordon: false,
                    ..
                },
            ] => reason.clone(),
            other => panic!("{other:?}"),
        };
        for part in [
            "w-1",
            "600s",
            "gates.nodeReadyTimeout",
            "Connection refused",
        ] {
            assert!(reason.contains(part), "{part}: {reason}");
        }
        // Parked: the run ends halted, naming the node and the reason.
        let parked = |mut events: Vec<Event>| {
            events.push(Event::NodeParked {
                node: "w-1".into(),
                reason: reason.clone(),
                uncordon: false,
            });
            after(state(&policy), events)
        };
        let s = parked(preflight_done_then(lost.clone()));
        assert_eq!(s.nodes[0].phase(), Phase::Parked);
        assert!(s.nodes[0].node().parked_cordoned, "still cordoned");
        assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
        match decide(&s, &policy, at(0, 12, 11)).commands.as_slice() {
            [Command::Halt { reason: why }] => {
                assert!(why.contains("parked") && why.contains(&reason), "{why}")
            }
            other => panic!("{other:?}"),
        }
        // Outside the cordon (unreachable in its preflight, five times): no attempts used,
        // then parked the same way, with nothing to undo.
        let five: Vec<Event> = (1..=5)
            .flat_map(|n| failed_attempt("w-1", Step::Preflight, n, FailureKind::Unreachable, down))
            .collect();
        let s = after(state(&policy), five.clone());
        assert!(
            decide(&s, &policy, at(0, 12, 9))
                .commands
                .iter()
                .all(|c| matches!(c, Command::RunStep { attempt: 6, .. }))
        );
        assert!(matches!(
            decide(&s, &policy, at(0, 12, 10)).commands.as_slice(),
            [Command::Park {
                uncordon: false,
                ..
            }]
        ));
        let s = parked(five);
        assert_eq!(s.nodes[0].phase(), Phase::Parked);
        assert!(!s.nodes[0].node().parked_cordoned);
        assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
        // The probes could not reach the API server instead: the run's outage, paused
        // after outage.pauseAfter, never a park.
        let mut api = lost[..4].to_vec();
        api.push(probe_failed(
            Step::RestartKubelet,
            1,
            FailureKind::Unavailable,
            "API server: 503",
        ));
        let s = after(state(&policy), preflight_done_then(api));
        assert!(matches!(
            decide(&s, &policy, at(0, 12, 5)).commands.as_slice(),
            [Command::Pause { .. }]
        ));
        // A control-plane node is never left behind: the run halts, saying why.
        let s = after(
            workers_with(&policy, &["w-1"], &steps, Role::ControlPlane),
            preflight_done_then(lost.clone()),
        );
        match decide(&s, &policy, at(0, 12, 10)).commands.as_slice() {
            [Command::Halt { reason }] => {
                assert!(
                    reason.contains("control plane") && reason.contains("600s"),
                    "{reason}"
                )
            }
            other => panic!("{other:?}"),
        }
        // Aborting: asked again at the backoff's pace, never parked, never stuck.
        let mut aborting = lost;
        aborting.push(abort());
        let s = after(state(&policy), preflight_done_then(aborting));
        let d = decide(&s, &policy, at(0, 13, 0));
        assert!(
            matches!(d.commands.as_slice(), [Command::Probe { .. }]),
            "{d:?}"
        );
    }

    /// The end of an outage's rows: a run the daemon paused for an outage asks again
    /// (under `outage.resume: auto`) and resumes on the answer; not under `manual`, nor
    /// after a person's pause; and the daemon's resume leaves parked nodes parked.
    #[test]
    fn a_run_paused_for_an_outage_asks_again_and_resumes_only_if_the_policy_says() {
        let auto = Policy {
            outage_pause_secs: 600,
            outage_resume: true,
            ..Policy::default()
        };
        let manual = Policy {
            outage_resume: false,
            ..auto.clone()
        };
        let failed = |policy: &Policy, by: Actor| {
            let mut events = failed_attempt(
                "w-1",
                Step::Preflight,
                1,
                FailureKind::Unavailable,
                "API server: connection refused",
            );
            events.push(Event::RunPaused {
                by,
                reason: "outage".into(),
            });
            after(state(policy), events)
        };
        let s = failed(&auto, Actor::daemon());
        let d = decide(&s, &auto, at(0, 13, 0));
        let [cmd @ Command::AwaitAnswer { node }] = d.commands.as_slice() else {
            panic!("{d:?}")
        };
        assert_eq!(node.as_str(), "w-1");
        assert_eq!(
            cmd.outcome(Observation::Answered),
            Some(Event::RunResumed {
                by: Actor::daemon()
            })
        );
        assert_eq!(cmd.outcome(Observation::Unknown), None, "nothing recorded");
        assert_eq!(cmd.intent(), None, "read-only");
        let s = failed(&manual, Actor::daemon());
        assert!(decide(&s, &manual, at(0, 13, 0)).commands.is_empty());
        let person = Actor {
            uid: Some(1000),
            name: "ops".into(),
        };
        let s = failed(&auto, person);
        assert!(decide(&s, &auto, at(0, 13, 0)).commands.is_empty());
        // A drain a budget blocked, paused for by the daemon, waits for a person even while
        // another node's outage is on.
        let mut events = failed_attempt(
            "w-1",
            Step::Preflight,
            1,
            FailureKind::Unavailable,
            "API server: connection refused",
        );
        events.extend(failed_attempt(
            "w-2",
            Step::Preflight,
            1,
            FailureKind::EvictionBlocked,
            "drain blocked",
        ));
        events.push(Event::RunPaused {
            by: Actor::daemon(),
            reason: "drain of w-2 blocked".into(),
        });
        let two = after(state2(&auto), events);
        assert_eq!(two.phase(), RunPhase::Paused);
        assert!(decide(&two, &auto, at(0, 13, 0)).commands.is_empty());
        // The daemon's resume leaves a parked node parked (only a person's resume says its
        // cause is fixed).
        let ok = |step: Step| {
            vec![
                Event::StepStarted {
                    node: "w-1".into(),
                    step: step.clone(),
                    attempt: 1,
                },
                Event::StepSucceeded {
                    node: "w-1".into(),
                    step,
                    attempt: 1,
                    facts: Facts::new(),
                },
            ]
        };
        let mut events = ok(Step::Preflight);
        events.extend(ok(Step::Cordon));
        events.extend([
            Event::StepStarted {
                node: "w-1".into(),
                step: Step::Drain,
                attempt: 1,
            },
            Event::StepFailed {
                node: "w-1".into(),
                step: Step::Drain,
                attempt: 1,
                error: "blocked".into(),
                facts: Facts::new(),
            },
            Event::NodeParked {
                node: "w-1".into(),
                reason: "drain blocked".into(),
                uncordon: false,
            },
            Event::RunPaused {
                by: Actor::daemon(),
                reason: "outage".into(),
            },
            Event::RunResumed {
                by: Actor::daemon(),
            },
        ]);
        let s = after(state(&auto), events);
        assert_eq!(s.phase(), RunPhase::Running);
        assert!(s.node("w-1").expect("w-1").node().parked.is_some());
        let s = after(
            s,
            vec![Event::RunResumed {
                by: Actor {
                    uid: Some(0),
                    name: "root".into(),
                },
            }],
        );
        assert!(s.node("w-1").expect("w-1").node().parked.is_none());
    }

    /// A one-node run of `role` whose verify failed `policy.max_attempts` times, after a
    /// preflight that recorded what a rollback needs.
    fn verify_failed(policy: &Policy, role: Role) -> RunState {
        gate_failed(policy, role, Step::Verify, Facts::new())
    }

    /// A run whose node w-1 passed everything up to `gate` (inclusive of a `Verify` before a
    /// `Checks` gate), then failed `gate` `max_attempts` times with `facts`.
    fn gate_failed(policy: &Policy, role: Role, gate: Step, facts: Facts) -> RunState {
        let mut steps = vec![
            Step::Preflight,
            Step::Cordon,
            Step::UpgradePackages {
                version: Version::new(1, 35, 3),
            },
            Step::RestartKubelet,
            Step::Verify,
        ];
        if gate != Step::Verify {
            steps.push(gate.clone());
        }
        steps.push(Step::Uncordon);
        let passed = steps.len() - 2;
        let s = {
            // The run of `state`, with this node's steps and role.
            let plan = Plan {
                undoes: None,
                target: Some(Version::new(1, 35, 3)),
                batches: vec![Batch {
                    label: "canary".into(),
                    phase: String::new(),
                    nodes: vec![NodePlan {
                        name: "w-1".into(),
                        host: None,
                        role,
                        from: Version::new(1, 34, 6),
                        steps: steps.clone(),
                        estimate_secs: 0,
                    }],
                }],
            };
            let mut fresh = RunState::default();
            for (i, event) in [
                Event::RunPlanned {
                    target: Version::new(1, 35, 3),
                    plan: Json(plan),
                    policy: Json(policy.clone()),
                    by: Actor::daemon(),
                },
                Event::RunStarted {
                    by: Actor::daemon(),
                },
            ]
            .into_iter()
            .enumerate()
            {
                fresh.apply(&Record {
                    run: RunId::nil(),
                    seq: i as u64,
                    at: at(0, 12, 0),
                    epoch: 0,
                    event,
                });
            }
            fresh
        };
        let recorded = Facts::from([
            ("kubelet_before".to_string(), "v1.34.6".to_string()),
            ("kubelet_installed".to_string(), "v1.34.6".to_string()),
            ("pkg_kubelet".to_string(), "1.34.6-1.1".to_string()),
            (
                "kubelet_config_backup".to_string(),
                "/var/lib/upgraded/kubelet-config/v1.34.6.yaml".to_string(),
            ),
        ]);
        let mut events = Vec::new();
        for step in &steps[..passed] {
            events.push(Event::StepStarted {
                node: "w-1".into(),
                step: step.clone(),
                attempt: 1,
            });
            events.push(Event::StepSucceeded {
                node: "w-1".into(),
                step: step.clone(),
                attempt: 1,
                facts: if *step == Step::Preflight {
                    recorded.clone()
                } else {
                    Facts::new()
                },
            });
        }
        for attempt in 1..=policy.max_attempts {
            events.push(Event::StepStarted {
                node: "w-1".into(),
                step: gate.clone(),
                attempt,
            });
            events.push(Event::StepFailed {
                node: "w-1".into(),
                step: gate.clone(),
                attempt,
                error: "node w-1 is not Ready".into(),
                facts: facts.clone(),
            });
        }
        after(s, events)
    }

    #[test]
    fn a_failed_check_rolls_the_worker_back_an_inconclusive_or_halting_one_halts() {
        let policy = Policy {
            on_gate_failure: OnGateFailure::RollbackNode,
            ..Policy::default()
        };
        let checks = Step::Checks {
            boundary: crate::check::Boundary::AfterCanary,
        };
        let facts = |pairs: &[(&str, &str)]| -> Facts {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let failed = gate_failed(
            &policy,
            Role::Worker,
            checks.clone(),
            facts(&[
                ("gate", "checks"),
                ("verdict", "failed"),
                ("severity", "rollback-node"),
            ]),
        );
        let d = decide(&failed, &policy, at(0, 13, 0));
        assert!(
            matches!(d.commands.as_slice(), [Command::RollBackNode { steps, .. }] if steps.len() == 4),
            "{d:?}"
        );
        for why in [
            facts(&[("gate", "checks"), ("verdict", "inconclusive")]),
            facts(&[
                ("gate", "checks"),
                ("verdict", "failed"),
                ("severity", "halt"),
            ]),
        ] {
            let s = gate_failed(&policy, Role::Worker, checks.clone(), why.clone());
            let d = decide(&s, &policy, at(0, 13, 0));
            assert!(
                matches!(d.commands.as_slice(), [Command::Halt { reason }] if reason.contains("checks after-canary failed 3 time(s)")),
                "{why:?}: {d:?}"
            );
        }
    }

    #[test]
    fn a_worker_failing_its_gate_is_rolled_back_parked_and_the_run_halts() {
        let policy = Policy {
            on_gate_failure: OnGateFailure::RollbackNode,
            ..Policy::default()
        };
        // Given a worker whose verify failed three times, when deciding, then roll it back.
        let s = verify_failed(&policy, Role::Worker);
        let d = decide(&s, &policy, at(0, 13, 0));
        let [
            Command::RollBackNode {
                node,
                reason,
                steps,
            },
        ] = d.commands.as_slice()
        else {
            panic!("{d:?}");
        };
        assert_eq!(node.as_str(), "w-1");
        assert!(
            reason.contains("verify failed 3 time(s): node w-1 is not Ready"),
            "{reason}"
        );
        assert_eq!(
            steps.len(),
            4,
            "downgrade, restart, verify, uncordon: {steps:?}"
        );
        let intent = d.commands[0].intent().expect("recorded first");
        // When its rollback runs, then the next step is the downgrade, and a failure of it
        // halts instead of rolling back again.
        let s = after(s, vec![intent]);
        let d = decide(&s, &policy, at(0, 13, 1));
        assert!(
            matches!(
                d.commands.as_slice(),
                [Command::RunStep {
                    step: Step::DowngradePackages { .. },
                    ..
                }]
            ),
            "{d:?}"
        );
        let mut failing = Vec::new();
        for attempt in 1..=policy.max_attempts {
            failing.push(Event::StepStarted {
                node: "w-1".into(),
                step: steps[0].clone(),
                attempt,
            });
            failing.push(Event::StepFailed {
                node: "w-1".into(),
                step: steps[0].clone(),
                attempt,
                error: "apt refused".into(),
                facts: Facts::new(),
            });
        }
        let broken = after(s.clone(), failing);
        match decide(&broken, &policy, at(0, 14, 0)).commands.as_slice() {
            [Command::Halt { reason }] => assert!(
                reason.starts_with("the automatic rollback of w-1 failed")
                    && reason.contains("apt refused"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        // When the rollback's steps succeed, then the node parks and the run halts saying so.
        let mut done = Vec::new();
        for step in steps {
            done.push(Event::StepStarted {
                node: "w-1".into(),
                step: step.clone(),
                attempt: 1,
            });
            done.push(Event::StepSucceeded {
                node: "w-1".into(),
                step: step.clone(),
                attempt: 1,
                facts: Facts::new(),
            });
        }
        let parked = after(s, done);
        assert_eq!(parked.nodes[0].phase(), Phase::Parked);
        match decide(&parked, &policy, at(0, 14, 0)).commands.as_slice() {
            [Command::Halt { reason }] => assert!(
                reason.contains("w-1 was rolled back to v1.34.6 and parked"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rollback_run_aborts_the_run_and_asks_for_the_whole_run_back_once() {
        use crate::request::{FollowUp, follow_up};
        let policy = Policy {
            on_gate_failure: OnGateFailure::RollbackRun,
            ..Policy::default()
        };
        for role in [Role::Worker, Role::ControlPlane] {
            // Given a node whose gate failed three times, when deciding, then roll the run back.
            let s = verify_failed(&policy, role);
            let d = decide(&s, &policy, at(0, 13, 0));
            let [Command::RollBackRun { reason }] = d.commands.as_slice() else {
                panic!("{role:?}: {d:?}");
            };
            assert!(reason.contains("verify failed 3 time(s)") && reason.contains("rollback-run"));
            // When that is recorded, the run aborts as for an operator (the node unwinds first),
            let s = after(s, vec![d.commands[0].intent().expect("intent")]);
            assert_eq!(s.phase(), RunPhase::Aborting);
            assert_eq!(follow_up(&s, false), None, "not before the run has ended");
            let d = decide(&s, &policy, at(0, 13, 1));
            assert!(
                matches!(
                    d.commands.as_slice(),
                    [Command::RunStep {
                        step: Step::Uncordon,
                        ..
                    }]
                ),
                "{d:?}"
            );
            // and once aborted, the whole run is rolled back, once.
            let s = after(
                s,
                vec![
                    Event::StepStarted {
                        node: "w-1".into(),
                        step: Step::Uncordon,
                        attempt: 1,
                    },
                    Event::StepSucceeded {
                        node: "w-1".into(),
                        step: Step::Uncordon,
                        attempt: 1,
                        facts: Facts::new(),
                    },
                    Event::RunAborted,
                ],
            );
            assert_eq!(s.phase(), RunPhase::Aborted);
            assert!(matches!(
                follow_up(&s, false),
                Some(FollowUp::RollbackWholeRun { .. })
            ));
            assert_eq!(
                follow_up(&s, true),
                None,
                "a rollback run of it exists already"
            );
        }
    }

    #[test]
    fn a_control_plane_node_or_policy_halt_only_halts() {
        for (policy, role) in [
            (
                Policy {
                    on_gate_failure: OnGateFailure::Halt,
                    ..Policy::default()
                },
                Role::Worker,
            ),
            (
                Policy {
                    on_gate_failure: OnGateFailure::RollbackNode,
                    ..Policy::default()
                },
                Role::ControlPlane,
            ),
        ] {
            let s = verify_failed(&policy, role);
            match decide(&s, &policy, at(0, 13, 0)).commands.as_slice() {
                [Command::Halt { reason }] => {
                    assert!(
                        reason.starts_with("node w-1: verify failed 3 time(s)"),
                        "{reason}"
                    )
                }
                other => panic!("{role:?}: {other:?}"),
            }
        }
    }

    fn cordon_failed(attempt: u32, retryable: bool) -> Vec<Event> {
        vec![
            Event::StepStarted {
                node: "w-1".into(),
                step: Step::Cordon,
                attempt,
            },
            Event::StepFailed {
                node: "w-1".into(),
                step: Step::Cordon,
                attempt,
                error: "nodes \"w-1\" is forbidden (403)".into(),
                facts: crate::event::Facts::from([(
                    "retryable".to_string(),
                    retryable.to_string(),
                )]),
            },
        ]
    }

    fn preflight_done_then(mut more: Vec<Event>) -> Vec<Event> {
        let mut events = vec![
            Event::StepStarted {
                node: "w-1".into(),
                step: Step::Preflight,
                attempt: 1,
            },
            Event::StepSucceeded {
                node: "w-1".into(),
                step: Step::Preflight,
                attempt: 1,
                facts: crate::event::Facts::new(),
            },
        ];
        events.append(&mut more);
        events
    }

    fn abort() -> Event {
        Event::AbortRequested {
            by: Actor::daemon(),
            reason: "giving up".into(),
        }
    }

    #[test]
    fn an_abort_undoes_only_a_cordon_that_may_have_taken_effect() {
        let policy = Policy::default();
        // Given a cordon the API server refused outright (403), and the run halted,
        let mut refused = cordon_failed(1, false);
        refused.push(Event::RunHalted {
            reason: "cordon refused".into(),
        });
        refused.push(abort());
        let s = after(state(&policy), preflight_done_then(refused));
        // when the abort is decided, then nothing is uncordoned and the abort finishes.
        let d = decide(&s, &policy, at(0, 13, 0));
        assert!(
            matches!(d.commands.as_slice(), [Command::FinishAbort]),
            "{d:?}"
        );
        // Given a cordon whose failure leaves its effect unknown (a timeout), the abort
        // uncordons: the node may be cordoned.
        let mut unknown = cordon_failed(1, true);
        unknown.push(abort());
        let s = after(state(&policy), preflight_done_then(unknown));
        let d = decide(&s, &policy, at(0, 13, 0));
        assert!(
            matches!(
                d.commands.as_slice(),
                [Command::RunStep {
                    step: Step::Uncordon,
                    ..
                }]
            ),
            "{d:?}"
        );
    }

    #[test]
    fn nodes_start_only_when_their_estimate_fits_in_a_window() {
        let policy = Policy {
            windows: vec![Window {
                days: (0..7).collect(),
                start_minute: 22 * 60,
                end_minute: 4 * 60,
                timezone: "UTC".into(),
            }],
            ..Policy::default()
        };
        let s = state(&policy);
        // Noon: wait for 22:00, and say so.
        let d = decide(&s, &policy, at(0, 12, 0));
        assert!(d.commands.is_empty(), "{d:?}");
        assert_eq!(d.wake_at, Some(at(0, 22, 0)));
        let why = d.waiting.expect("a reason");
        assert!(
            why.contains("w-1") && why.contains("2026-11-24T22:00:00Z"),
            "{why}"
        );
        // Inside, with room: start.
        let d = decide(&s, &policy, at(0, 23, 0));
        assert!(
            matches!(d.commands.as_slice(), [Command::RunStep { .. }]),
            "{d:?}"
        );
        // 03:30: an hour of work does not fit before 04:00; the next window.
        let d = decide(&s, &policy, at(1, 3, 30));
        assert!(d.commands.is_empty());
        assert_eq!(d.wake_at, Some(at(1, 22, 0)));
        // Without windows: at once.
        let none = Policy::default();
        let d = decide(&state(&none), &none, at(0, 12, 0));
        assert!(matches!(d.commands.as_slice(), [Command::RunStep { .. }]));
    }

    #[test]
    fn a_window_too_short_for_the_node_halts_with_what_to_change() {
        let policy = Policy {
            windows: vec![Window {
                days: vec![1],
                start_minute: 22 * 60,
                end_minute: 22 * 60 + 30,
                timezone: "Europe/Berlin".into(),
            }],
            ..Policy::default()
        };
        let d = decide(&state(&policy), &policy, at(0, 12, 0));
        match d.commands.as_slice() {
            [Command::Halt { reason }] => {
                assert!(reason.contains("widen the windows"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }
}
