//! `decide`: given a run's state, its policy and the time, which commands should run now.
//!
//! Pure and total. The engine records each command's intent durably before executing it, and
//! calls `decide` again after every applied record or when `wake_at` comes.

use serde::Serialize;

use crate::event::{Event, InDoubt, Step, Timestamp};
use crate::node::{NodeState, Phase, StepStatus};
use crate::policy::{OnDrainBlocked, Policy};
use crate::run::RunPhase;
use crate::state::RunState;

/// What the engine should do. Imperative names: these are orders, not facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Command {
    /// Record `StepStarted`, execute the step, record its outcome.
    RunStep {
        node: String,
        step: Step,
        attempt: u32,
        /// Uncordon only: someone else had cordoned the node, so it stays cordoned.
        leave_cordoned: bool,
    },
    /// Look at the node to learn whether an in-doubt step took effect; record `StepProbed`.
    Probe {
        node: String,
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
        node: String,
        reason: String,
        uncordon: bool,
    },
    Complete,
    FinishAbort,
}

impl Command {
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
            Command::Probe { .. } => None,
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
}

impl Decision {
    fn wake(&mut self, at: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }
}

pub fn decide(state: &RunState, policy: &Policy, now: Timestamp) -> Decision {
    let mut d = Decision::default();
    match state.phase() {
        RunPhase::Running => decide_running(state, policy, now, &mut d),
        RunPhase::Aborting => decide_aborting(state, policy, now, &mut d),
        RunPhase::Planned
        | RunPhase::Paused
        | RunPhase::Halted
        | RunPhase::Completed
        | RunPhase::Aborted => {}
    }
    d
}

fn decide_running(state: &RunState, policy: &Policy, now: Timestamp, d: &mut Decision) {
    // The current batch is the first one with an unfinished node (parked ones wait for a
    // resume and do not hold up the others).
    let Some(current) =
        (0..state.plan.batches.len()).find(|&b| state.batch(b).any(|n| !n.phase().is_settled()))
    else {
        let parked: Vec<String> = state
            .nodes
            .iter()
            .filter_map(|n| {
                n.node()
                    .parked
                    .as_ref()
                    .map(|why| format!("{} ({why})", n.node().name))
            })
            .collect();
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
    // The wait between batches counts from the moment the previous batch's last node finished.
    let batch_open_at = current
        .checked_sub(1)
        .and_then(|prev| state.batch(prev).map(|n| n.node().since).max())
        .map(|t| t.plus_secs(policy.wait_between_batches_secs));
    for node in state.batch(current) {
        if let Some(open) = batch_open_at.filter(|&t| node.phase() == Phase::Pending && now < t) {
            d.wake(open);
            continue;
        }
        match next_for_node(node, policy, now, true, d) {
            Some(Stop::Halt(reason)) => {
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
        StepStatus::InDoubt => d.commands.push(match step.in_doubt() {
            InDoubt::Rerun => run(cursor.attempt + 1),
            InDoubt::Probe => Command::Probe {
                node: n.name.clone(),
                step: step.clone(),
                attempt: cursor.attempt,
            },
        }),
        StepStatus::Ready => {
            let soak_until = n.since.plus_secs(policy.soak_secs);
            if *step == Step::Soak && now < soak_until {
                d.wake(soak_until);
            } else {
                d.commands.push(run(cursor.attempt + 1));
            }
        }
        StepStatus::Failed => {
            // A drain that a budget still refused at its timeout has already retried for
            // that long: park the node or pause the run, as the policy says.
            if may_give_up
                && *step == Step::Drain
                && let Some(what) = n.failure_facts.get("eviction_blocked")
            {
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
            if may_give_up && n.failures >= policy.max_attempts.max(1) {
                return Some(Stop::Halt(format!(
                    "node {}: {} failed {} time(s): {}",
                    n.name,
                    step,
                    n.failures,
                    n.last_error.as_deref().unwrap_or("no error recorded")
                )));
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
