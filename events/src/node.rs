//! The per-node workflow as a hierarchical, synchronous statig machine.
//!
//! ```text
//! pending ─▶ working ─────────────────────────────────────────────────────────────┐
//!            │ preflight, preparing (etcd snapshot, kubeadm before the drain)      │
//!            │ disrupted: cordoning ▶ draining ▶ upgrading ▶ restarting ▶          │ ─▶ done
//!            │            verifying ▶ uncordoning                                  │
//!            │ soaking                                                              │
//!            └──────────────────────────────────────────────────────────────────── ┘ ─▶ aborted
//! ```
//! Every leaf state of `working` carries a [`Cursor`]: which step of the node's list is
//! current, its attempt and whether it is ready, in flight, in doubt or failed. `working`
//! handles the step protocol for all of them; `disrupted` (the node is cordoned by us) turns an
//! abort into "uncordon first", so no exit from it leaves a node cordoned by mistake. Its
//! entry and exit actions only flip [`Node::disrupted`]: actions never do I/O, because
//! replaying the log re-runs them.

use serde::{Deserialize, Serialize};
use statig::prelude::*;

use crate::check::Boundary;
use crate::event::{Event, Facts, Step, Timestamp};
use crate::names::{Entry, Host};
use crate::plan::{NodePlan, Role};

/// Where a node's current step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepStatus {
    /// Not started (or to be started again).
    Ready,
    /// Intent recorded, outcome not yet.
    InFlight,
    /// Intent recorded by a daemon that has since died: resolve per [`Step::in_doubt`].
    InDoubt,
    /// The last attempt failed.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Index into the node's step list.
    pub index: usize,
    /// Attempt number of the last start (0 before the first).
    pub attempt: u32,
    pub status: StepStatus,
}

impl Cursor {
    fn ready(index: usize) -> Self {
        Cursor {
            index,
            attempt: 0,
            status: StepStatus::Ready,
        }
    }
}

/// The node's phase, for people and for `decide`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Pending,
    Preflight,
    /// Work before the node is disrupted: etcd snapshot, `kubeadm upgrade` of a control plane.
    Preparing,
    Cordoning,
    Draining,
    Upgrading,
    Restarting,
    Verifying,
    Uncordoning,
    Soaking,
    Done,
    Aborted,
    /// Set aside after a blocked drain; `resume` starts it again from its first step.
    Parked,
}

impl Phase {
    /// The phase a step runs in when the node is not cordoned by us; [`Node`] moves a
    /// `kubeadm upgrade` inside the cordon window to `Upgrading`.
    pub fn of_step(step: &Step) -> Phase {
        match step {
            Step::EtcdSnapshot
            | Step::KubeadmUpgrade { .. }
            | Step::KubeProxy { .. }
            | Step::KubeadmDowngrade { .. }
            | Step::EtcdRestore(_) => Phase::Preparing,
            // The baseline: the node is not cordoned yet.
            Step::Preflight
            | Step::Checks {
                boundary: Boundary::Preflight,
            } => Phase::Preflight,
            Step::Cordon => Phase::Cordoning,
            Step::Drain => Phase::Draining,
            Step::UpgradePackages { .. }
            | Step::DowngradePackages { .. }
            | Step::RestoreKubeletFiles { .. } => Phase::Upgrading,
            Step::RestartKubelet => Phase::Restarting,
            Step::Verify | Step::Checks { .. } => Phase::Verifying,
            Step::Uncordon => Phase::Uncordoning,
            Step::Soak => Phase::Soaking,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Done | Phase::Aborted)
    }

    /// The name people and the API see (the serde spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Preflight => "preflight",
            Phase::Preparing => "preparing",
            Phase::Cordoning => "cordoning",
            Phase::Draining => "draining",
            Phase::Upgrading => "upgrading",
            Phase::Restarting => "restarting",
            Phase::Verifying => "verifying",
            Phase::Uncordoning => "uncordoning",
            Phase::Soaking => "soaking",
            Phase::Done => "done",
            Phase::Aborted => "aborted",
            Phase::Parked => "parked",
        }
    }

    /// Nothing more happens to the node in this pass (done, or parked until a resume).
    pub fn is_settled(self) -> bool {
        matches!(self, Phase::Done | Phase::Aborted | Phase::Parked)
    }
}

/// Shared storage of the node machine: what the log has told us about this node.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The plan entry's name (what events say).
    pub name: Entry,
    /// The Kubernetes node the entry works on.
    pub host: Host,
    pub steps: Vec<Step>,
    /// When the current status began (start of backoff, of a soak, of a batch wait).
    pub since: Timestamp,
    /// The sequence number of the record that began the current step's execution: its
    /// first start after the previous step's outcome (a re-run after a daemon stop goes on
    /// with the same execution; a retry after a failure begins a new one).
    pub step_began: u64,
    /// Consecutive failures of the current step since the last operator resume.
    pub failures: u32,
    pub last_error: Option<String>,
    /// Someone else had cordoned the node before the run (seen by preflight): leave it so.
    pub cordoned_before: bool,
    /// Cordoned by us and not yet uncordoned (maintained by the `disrupted` superstate).
    pub disrupted: bool,
    /// An abort arrived while a step was in flight: unwind once it has an outcome.
    pub abort_requested: bool,
    /// Facts observed by the steps so far, later ones overriding earlier ones.
    pub facts: Facts,
    /// Facts of the last failed attempt (`eviction_blocked`, …), until the step advances.
    pub failure_facts: Facts,
    /// Why the last attempt failed (from its facts), until the step advances.
    pub failure: Option<crate::fault::FailureKind>,
    /// The current step has found what it needs unavailable (an outage, not counted in
    /// `failures`): since when, how often, and what the last failure was; cleared by any
    /// other outcome.
    pub unavailable: Option<Outage>,
    /// The eviction a budget is refusing right now, for `status` and `watch`.
    pub blocked: Option<Blocked>,
    /// Why the node was parked; set until a resume restarts it.
    pub parked: Option<String>,
    /// Parked without an uncordon: still cordoned by us (an abort uncordons it).
    pub parked_cordoned: bool,
    /// Our cordon may have taken effect: it succeeded, or an attempt's outcome is unknown (in
    /// doubt, or a failure that was not a definite refusal). An abort undoes only what may
    /// have taken effect: a cordon the API server refused outright is not "uncordoned".
    pub cordon_may_have_applied: bool,
    /// The last attempt number of each step, so a node started again after a park keeps
    /// counting instead of repeating attempt numbers.
    pub attempts: Vec<u32>,
    /// The entry's role in the plan.
    pub role: Role,
    /// The plan's steps, kept while `steps` holds a rollback's (a resume starts them again).
    pub planned_steps: Vec<Step>,
    /// Its steps are an automatic rollback's (`NodeRollingBack`): a failure now halts the run
    /// and is never answered by another rollback.
    pub rolling_back: bool,
}

/// An outage around a node's current step, as its failures told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outage {
    /// The first failure of the streak.
    pub since: Timestamp,
    /// Failures in the streak (attempts, and probes that could not look).
    pub tries: u32,
    /// The last one's kind: whose outage it is (`FailureKind::is_node_outage`).
    pub kind: crate::fault::FailureKind,
}

/// A refused eviction, as the last `EvictionBlocked` told it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Blocked {
    pub pod: String,
    pub pdb: String,
    pub disruptions_allowed: i64,
}

/// Per-event context: the record's time, and a place to report events that do not fit.
#[derive(Debug, Default)]
pub struct NodeCtx {
    pub at: Timestamp,
    /// The record's sequence number.
    pub seq: u64,
    pub anomalies: Vec<String>,
}

#[state_machine(
    initial = "State::pending()",
    state(derive(Debug, Clone, PartialEq, Eq)),
    superstate(derive(Debug))
)]
impl Node {
    /// Waiting for its batch; nothing has been done to the node.
    #[state]
    fn pending(&mut self, context: &mut NodeCtx, event: &Event) -> Outcome<State> {
        match event {
            Event::StepStarted { step, attempt, .. } => {
                if self.steps.first() != Some(step) {
                    context.anomalies.push(format!(
                        "{}: {step} started before the first step",
                        self.name
                    ));
                    return Handled;
                }
                self.since = context.at;
                self.step_began = context.seq;
                let mut state = self.state_at(0);
                if let Some(c) = state.cursor_mut() {
                    c.attempt = *attempt;
                    c.status = StepStatus::InFlight;
                }
                self.note_attempt(0, *attempt);
                Transition(state)
            }
            Event::AbortRequested { .. } => self.abort_outside_cordon(),
            e => self.unexpected(context, e),
        }
    }

    #[state(superstate = "working")]
    fn preflight(cursor: &mut Cursor) -> Outcome<State> {
        let _ = cursor;
        Super
    }

    #[state(superstate = "working")]
    fn preparing(cursor: &mut Cursor) -> Outcome<State> {
        let _ = cursor;
        Super
    }

    #[state(superstate = "disrupted")]
    fn cordoning(&mut self, cursor: &mut Cursor, event: &Event) -> Outcome<State> {
        match event {
            // Nothing took effect yet (not started, or every attempt refused outright): there
            // is nothing to undo, unless the node is still cordoned from being parked.
            Event::AbortRequested { .. }
                if matches!(cursor.status, StepStatus::Ready | StepStatus::Failed)
                    && !self.cordon_may_have_applied
                    && !self.parked_cordoned =>
            {
                Transition(State::aborted())
            }
            _ => Super,
        }
    }

    #[state(superstate = "disrupted")]
    fn draining(cursor: &mut Cursor) -> Outcome<State> {
        let _ = cursor;
        Super
    }

    #[state(superstate = "disrupted")]
    fn upgrading(cursor: &mut Cursor) -> Outcome<State> {
        let _ = cursor;
        Super
    }

    #[state(superstate = "disrupted")]
    fn restarting(cursor: &mut Cursor) -> Outcome<State> {
        let _ = cursor;
        Super
    }

    #[state(superstate = "disrupted")]
    fn verifying(cursor: &mut Cursor) -> Outcome<State> {
        let _ = cursor;
        Super
    }

    #[state(superstate = "disrupted")]
    fn uncordoning(cursor: &mut Cursor) -> Outcome<State> {
        let _ = cursor;
        Super
    }

    #[state(superstate = "working")]
    fn soaking(cursor: &mut Cursor) -> Outcome<State> {
        let _ = cursor;
        Super
    }

    /// The node is cordoned by us: any way out goes through `uncordoning`.
    #[superstate(
        superstate = "working",
        entry_action = "enter_disrupted",
        exit_action = "exit_disrupted"
    )]
    fn disrupted(&mut self, cursor: &mut Cursor, event: &Event) -> Outcome<State> {
        match event {
            Event::AbortRequested { .. }
                if matches!(cursor.status, StepStatus::Ready | StepStatus::Failed) =>
            {
                self.abort_requested = true;
                if self.steps.get(cursor.index) == Some(&Step::Uncordon) {
                    // Already on the way out: keep the attempt count going.
                    Handled
                } else {
                    Transition(self.unwind_state())
                }
            }
            Event::NodeParked {
                reason, uncordon, ..
            } if matches!(
                cursor.status,
                StepStatus::Ready | StepStatus::Failed | StepStatus::InDoubt
            ) =>
            {
                self.parked = Some(reason.clone());
                self.parked_cordoned = !*uncordon;
                if *uncordon {
                    Transition(self.unwind_state())
                } else {
                    Transition(State::parked())
                }
            }
            _ => Super,
        }
    }

    #[action]
    fn enter_disrupted(&mut self) {
        self.disrupted = true;
    }

    #[action]
    fn exit_disrupted(&mut self) {
        self.disrupted = false;
    }

    /// The step protocol, common to every step.
    #[superstate]
    fn working(
        &mut self,
        cursor: &mut Cursor,
        context: &mut NodeCtx,
        event: &Event,
    ) -> Outcome<State> {
        let at = context.at;
        match event {
            Event::StepStarted { step, attempt, .. } => {
                if !self.is_current(cursor, step, context) {
                    return Handled;
                }
                if cursor.status == StepStatus::InFlight {
                    context.anomalies.push(format!(
                        "{}: {step} started again while in flight",
                        self.name
                    ));
                }
                if cursor.status != StepStatus::InDoubt {
                    self.step_began = context.seq;
                }
                cursor.attempt = *attempt;
                cursor.status = StepStatus::InFlight;
                self.note_attempt(cursor.index, *attempt);
                self.since = at;
                Handled
            }
            Event::StepSucceeded { step, facts, .. } => {
                if !self.is_current(cursor, step, context) {
                    return Handled;
                }
                self.absorb(step, facts);
                self.advance(cursor.index, at)
            }
            Event::StepProbed {
                step, done, facts, ..
            } => {
                if !self.is_current(cursor, step, context) {
                    return Handled;
                }
                if *done {
                    self.absorb(step, facts);
                    self.advance(cursor.index, at)
                } else {
                    cursor.status = StepStatus::Ready;
                    self.since = at;
                    self.settle(cursor)
                }
            }
            Event::StepFailed {
                step, error, facts, ..
            } => {
                if !self.is_current(cursor, step, context) {
                    return Handled;
                }
                let kind = crate::fault::FailureKind::of(facts);
                if *step == Step::Cordon && kind.retryable() {
                    self.cordon_may_have_applied = true;
                }
                if cursor.status == StepStatus::InDoubt {
                    // A probe that could not look: the step stays in doubt, and what did
                    // not answer is an outage (asked again after a wait, within its limit).
                    self.note_outage(at, kind);
                    self.last_error = Some(error.clone());
                    self.since = at;
                    return Handled;
                }
                if kind == crate::fault::FailureKind::InDoubt {
                    // The answer was lost, not the step: in doubt, as after a crash, and the
                    // node hard to reach (asked again after a wait, as in an outage).
                    cursor.status = StepStatus::InDoubt;
                    self.note_outage(at, kind);
                    if *step == Step::Cordon {
                        self.cordon_may_have_applied = true;
                    }
                    self.last_error = Some(error.clone());
                    self.since = at;
                    return self.settle(cursor);
                }
                self.failure = Some(kind);
                self.failure_facts = facts.clone();
                cursor.status = StepStatus::Failed;
                if kind.is_outage() {
                    // An outage around the step: retried without using its attempts.
                    self.note_outage(at, kind);
                } else {
                    self.unavailable = None;
                    self.failures = self.failures.saturating_add(1);
                }
                self.last_error = Some(error.clone());
                self.since = at;
                self.settle(cursor)
            }
            Event::RunRecovered { .. } => {
                if cursor.status == StepStatus::InFlight {
                    cursor.status = StepStatus::InDoubt;
                    if self.steps.get(cursor.index) == Some(&Step::Cordon) {
                        self.cordon_may_have_applied = true;
                    }
                }
                Handled
            }
            Event::RunResumed { .. } => {
                // A fresh start: the operator says the cause is fixed.
                self.failures = 0;
                self.failure_facts.clear();
                self.failure = None;
                self.unavailable = None;
                Handled
            }
            Event::EvictionBlocked {
                pod,
                pdb,
                disruptions_allowed,
                ..
            } => {
                self.blocked = Some(Blocked {
                    pod: pod.clone(),
                    pdb: pdb.clone(),
                    disruptions_allowed: *disruptions_allowed,
                });
                Handled
            }
            // Outside the cordon (a node that stopped answering in its preflight, its
            // preparation or its soak): set aside as it is; nothing of ours to undo.
            Event::NodeParked { reason, .. }
                if matches!(
                    cursor.status,
                    StepStatus::Ready | StepStatus::Failed | StepStatus::InDoubt
                ) =>
            {
                self.parked = Some(reason.clone());
                self.parked_cordoned = false;
                Transition(State::parked())
            }
            Event::NodeParked { .. } => {
                context.anomalies.push(format!(
                    "{}: parked while its step was not settled",
                    self.name
                ));
                Handled
            }
            Event::NodeRollingBack { reason, steps, .. }
                if matches!(cursor.status, StepStatus::Ready | StepStatus::Failed)
                    && !self.rolling_back =>
            {
                // The failed step stays in the list (its attempts are history); the
                // rollback's steps replace the rest, then the node parks.
                let next = cursor.index + 1;
                self.steps.truncate(next);
                self.steps.extend(steps.iter().cloned());
                self.attempts.resize(self.steps.len(), 0);
                self.parked = Some(reason.clone());
                self.parked_cordoned = false;
                self.rolling_back = true;
                self.failures = 0;
                self.failure_facts.clear();
                self.failure = None;
                self.unavailable = None;
                self.since = at;
                Transition(self.state_at(next))
            }
            Event::NodeRollingBack { .. } => {
                context.anomalies.push(format!(
                    "{}: a rollback recorded while its step was not settled, or twice",
                    self.name
                ));
                Handled
            }
            Event::AbortRequested { .. } => {
                if matches!(cursor.status, StepStatus::InFlight | StepStatus::InDoubt) {
                    self.abort_requested = true;
                    Handled
                } else {
                    self.abort_outside_cordon()
                }
            }
            _ => Handled,
        }
    }

    #[state]
    fn done(&mut self, context: &mut NodeCtx, event: &Event) -> Outcome<State> {
        self.unexpected(context, event)
    }

    #[state]
    fn aborted(&mut self, context: &mut NodeCtx, event: &Event) -> Outcome<State> {
        self.unexpected(context, event)
    }

    /// Set aside: nothing happens until an operator resumes the run (or aborts it).
    #[state]
    fn parked(&mut self, context: &mut NodeCtx, event: &Event) -> Outcome<State> {
        match event {
            // The daemon's own resume after an outage is not an operator's word that a
            // parked node's cause is fixed: it stays parked.
            Event::RunResumed { by } if *by == crate::event::Actor::daemon() => Handled,
            Event::RunResumed { .. } => {
                // `parked_cordoned` stays until the node is cordoned by its workflow again:
                // an abort before that must still uncordon it.
                if self.rolling_back {
                    // Rolled back: the resume retries the upgrade from its first step.
                    self.steps = self.planned_steps.clone();
                    self.attempts.resize(self.steps.len(), 0);
                    self.rolling_back = false;
                }
                self.parked = None;
                self.failures = 0;
                self.last_error = None;
                self.failure_facts.clear();
                self.failure = None;
                self.unavailable = None;
                self.blocked = None;
                self.since = context.at;
                Transition(State::pending())
            }
            // Still cordoned by us: the abort uncordons it on the way out.
            Event::AbortRequested { .. } if self.parked_cordoned => {
                self.abort_requested = true;
                self.parked = None;
                self.parked_cordoned = false;
                Transition(self.unwind_state())
            }
            Event::AbortRequested { .. } => Transition(State::aborted()),
            Event::RunRecovered { .. } => Handled,
            e => self.unexpected(context, e),
        }
    }
}

impl Node {
    fn is_current(&self, cursor: &Cursor, step: &Step, context: &mut NodeCtx) -> bool {
        let current = self.steps.get(cursor.index);
        if current == Some(step) {
            return true;
        }
        context.anomalies.push(format!(
            "{}: event for {step} while the current step is {}",
            self.name,
            current.map_or_else(|| "none".to_string(), Step::to_string)
        ));
        false
    }

    fn unexpected(&self, context: &mut NodeCtx, event: &Event) -> Outcome<State> {
        if event.node().is_some() {
            context.anomalies.push(format!(
                "{}: {} after the node finished",
                self.name,
                event.kind().name()
            ));
        }
        Handled
    }

    /// An abort of a node that is not in the `disrupted` states: nothing to undo, unless it
    /// was parked cordoned and not yet cordoned again by its workflow.
    fn abort_outside_cordon(&mut self) -> Outcome<State> {
        if self.parked_cordoned {
            self.abort_requested = true;
            Transition(self.unwind_state())
        } else {
            Transition(State::aborted())
        }
    }

    /// One more failure in the current outage (the first begins it).
    fn note_outage(&mut self, at: Timestamp, kind: crate::fault::FailureKind) {
        let (since, tries) = self.unavailable.map_or((at, 0), |o| (o.since, o.tries));
        self.unavailable = Some(Outage {
            since,
            tries: tries.saturating_add(1),
            kind,
        });
    }

    fn note_attempt(&mut self, index: usize, attempt: u32) {
        if let Some(a) = self.attempts.get_mut(index) {
            *a = (*a).max(attempt);
        }
    }

    fn absorb(&mut self, step: &Step, facts: &Facts) {
        if matches!(step, Step::Cordon | Step::Uncordon) {
            self.parked_cordoned = false;
            self.cordon_may_have_applied = *step == Step::Cordon;
        }
        // Only the first preflight tells whether someone else had cordoned the node: a
        // node parked cordoned by us and resumed must not look cordoned by others.
        if *step == Step::Preflight && !self.facts.contains_key("unschedulable") {
            self.cordoned_before = facts.get("unschedulable").is_some_and(|v| v == "true");
        }
        // `unschedulable` is the state before the run; a later preflight (after a park) sees
        // our own cordon and must not replace it.
        let keep_first = self.facts.contains_key("unschedulable");
        self.facts.extend(
            facts
                .iter()
                .filter(|(k, _)| !(keep_first && k.as_str() == "unschedulable"))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }

    /// After an outcome that did not complete the step: an abort that was waiting for it now
    /// abandons the step (unless it is the uncordon itself, which is retried until it works).
    fn settle(&self, cursor: &Cursor) -> Outcome<State> {
        let step = self.steps.get(cursor.index);
        if !self.abort_requested || step == Some(&Step::Uncordon) {
            Handled
        } else if step == Some(&Step::Cordon)
            && !self.cordon_may_have_applied
            && !self.parked_cordoned
        {
            // The cordon we were waiting for was refused outright: nothing to undo.
            Transition(State::aborted())
        } else if self.disrupted || self.parked_cordoned {
            Transition(self.unwind_state())
        } else {
            Transition(State::aborted())
        }
    }

    fn advance(&mut self, index: usize, at: Timestamp) -> Outcome<State> {
        self.failures = 0;
        self.last_error = None;
        self.failure_facts.clear();
        self.failure = None;
        self.unavailable = None;
        self.blocked = None;
        self.since = at;
        let finished_uncordon = self.steps.get(index) == Some(&Step::Uncordon);
        if self.parked.is_some() && finished_uncordon && !self.abort_requested {
            return Transition(State::parked());
        }
        if self.abort_requested {
            return if (self.disrupted || self.parked_cordoned) && !finished_uncordon {
                Transition(self.unwind_state())
            } else {
                Transition(State::aborted())
            };
        }
        if index + 1 >= self.steps.len() {
            Transition(State::done())
        } else {
            Transition(self.state_at(index + 1))
        }
    }

    /// The leaf state that runs step `index`.
    fn state_at(&self, index: usize) -> State {
        let c = Cursor {
            attempt: self.attempts.get(index).copied().unwrap_or(0),
            ..Cursor::ready(index)
        };
        let cordon = self.steps.iter().position(|s| *s == Step::Cordon);
        let uncordon = self.steps.iter().position(|s| *s == Step::Uncordon);
        let inside_cordon = cordon.is_some_and(|c| c < index) && uncordon.is_none_or(|u| index < u);
        match self.steps.get(index).map(Phase::of_step) {
            Some(Phase::Preflight) => State::preflight(c),
            Some(Phase::Preparing) if inside_cordon => State::upgrading(c),
            Some(Phase::Preparing) => State::preparing(c),
            Some(Phase::Cordoning) => State::cordoning(c),
            Some(Phase::Draining) => State::draining(c),
            Some(Phase::Upgrading) => State::upgrading(c),
            Some(Phase::Restarting) => State::restarting(c),
            Some(Phase::Verifying) => State::verifying(c),
            Some(Phase::Uncordoning) => State::uncordoning(c),
            Some(Phase::Soaking) => State::soaking(c),
            _ => State::done(),
        }
    }

    /// Where an abort of a disrupted node goes: its uncordon step.
    fn unwind_state(&self) -> State {
        match self.steps.iter().position(|s| *s == Step::Uncordon) {
            Some(i) => self.state_at(i),
            None => State::aborted(),
        }
    }
}

impl State {
    pub fn cursor(&self) -> Option<&Cursor> {
        match self {
            State::Preflight { cursor }
            | State::Preparing { cursor }
            | State::Cordoning { cursor }
            | State::Draining { cursor }
            | State::Upgrading { cursor }
            | State::Restarting { cursor }
            | State::Verifying { cursor }
            | State::Uncordoning { cursor }
            | State::Soaking { cursor } => Some(cursor),
            State::Pending {} | State::Done {} | State::Aborted {} | State::Parked {} => None,
        }
    }

    fn cursor_mut(&mut self) -> Option<&mut Cursor> {
        match self {
            State::Preflight { cursor }
            | State::Preparing { cursor }
            | State::Cordoning { cursor }
            | State::Draining { cursor }
            | State::Upgrading { cursor }
            | State::Restarting { cursor }
            | State::Verifying { cursor }
            | State::Uncordoning { cursor }
            | State::Soaking { cursor } => Some(cursor),
            State::Pending {} | State::Done {} | State::Aborted {} | State::Parked {} => None,
        }
    }

    pub fn phase(&self) -> Phase {
        match self {
            State::Pending {} => Phase::Pending,
            State::Preflight { .. } => Phase::Preflight,
            State::Preparing { .. } => Phase::Preparing,
            State::Cordoning { .. } => Phase::Cordoning,
            State::Draining { .. } => Phase::Draining,
            State::Upgrading { .. } => Phase::Upgrading,
            State::Restarting { .. } => Phase::Restarting,
            State::Verifying { .. } => Phase::Verifying,
            State::Uncordoning { .. } => Phase::Uncordoning,
            State::Soaking { .. } => Phase::Soaking,
            State::Done {} => Phase::Done,
            State::Aborted {} => Phase::Aborted,
            State::Parked {} => Phase::Parked,
        }
    }
}

/// A node's machine plus the read-only view `decide` and `status` use.
#[derive(Debug, Clone)]
pub struct NodeState {
    machine: InitializedStateMachine<Node>,
}

impl NodeState {
    pub fn new(plan: &NodePlan, at: Timestamp) -> Self {
        let node = Node {
            name: plan.name.clone(),
            host: plan.host(),
            steps: plan.steps.clone(),
            role: plan.role,
            planned_steps: plan.steps.clone(),
            rolling_back: false,
            since: at,
            failures: 0,
            last_error: None,
            cordoned_before: false,
            disrupted: false,
            abort_requested: false,
            facts: Facts::new(),
            failure_facts: Facts::new(),
            failure: None,
            unavailable: None,
            blocked: None,
            parked: None,
            parked_cordoned: false,
            cordon_may_have_applied: false,
            attempts: vec![0; plan.steps.len()],
            step_began: 0,
        };
        let mut ctx = NodeCtx {
            at,
            seq: 0,
            anomalies: Vec::new(),
        };
        NodeState {
            machine: node
                .uninitialized_state_machine()
                .init_with_context(&mut ctx),
        }
    }

    pub fn handle(&mut self, event: &Event, ctx: &mut NodeCtx) {
        self.machine.handle_with_context(event, ctx);
    }

    pub fn node(&self) -> &Node {
        self.machine.inner()
    }

    pub fn phase(&self) -> Phase {
        self.machine.state().phase()
    }

    /// The current step's cursor; `pending` is the first step, ready.
    pub fn cursor(&self) -> Option<Cursor> {
        match self.machine.state() {
            State::Pending {} => Some(Cursor {
                attempt: self.node().attempts.first().copied().unwrap_or(0),
                ..Cursor::ready(0)
            }),
            s => s.cursor().copied(),
        }
    }

    pub fn current_step(&self) -> Option<&Step> {
        self.cursor().and_then(|c| self.node().steps.get(c.index))
    }
}
