//! The run-level machine: planned → running ⇄ paused/halted → completed, or → aborting → aborted.
//!
//! `active` groups the states in which an operator may still abort.

use serde::{Deserialize, Serialize};
use statig::prelude::*;

use crate::event::Event;

/// The run's phase, for people and for `decide`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunPhase {
    Planned,
    Running,
    Paused,
    Halted,
    Aborting,
    Completed,
    Aborted,
}

impl RunPhase {
    pub fn is_terminal(self) -> bool {
        matches!(self, RunPhase::Completed | RunPhase::Aborted)
    }

    /// The name people and the API see (the serde spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            RunPhase::Planned => "planned",
            RunPhase::Running => "running",
            RunPhase::Paused => "paused",
            RunPhase::Halted => "halted",
            RunPhase::Aborting => "aborting",
            RunPhase::Completed => "completed",
            RunPhase::Aborted => "aborted",
        }
    }
}

/// Shared storage: the last reason given, for `status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunMachine {
    pub reason: Option<String>,
    /// Who paused the run, while it is paused.
    pub paused_by: Option<crate::event::Actor>,
}

#[state_machine(
    initial = "State::planned()",
    state(derive(Debug, Clone, PartialEq, Eq)),
    superstate(derive(Debug))
)]
impl RunMachine {
    #[state]
    fn planned(&mut self, event: &Event) -> Outcome<State> {
        match event {
            Event::RunStarted { .. } => Transition(State::running()),
            Event::AbortRequested { reason, .. } => {
                self.note(reason);
                Transition(State::aborted())
            }
            _ => Handled,
        }
    }

    #[state(superstate = "active")]
    fn running(&mut self, event: &Event) -> Outcome<State> {
        match event {
            Event::RunPaused { reason, by } => {
                self.note(reason);
                self.paused_by = Some(by.clone());
                Transition(State::paused())
            }
            Event::RunHalted { reason } => {
                self.reason = Some(reason.clone());
                Transition(State::halted())
            }
            Event::RunCompleted => Transition(State::completed()),
            _ => Super,
        }
    }

    #[state(superstate = "active")]
    fn paused(&mut self, event: &Event) -> Outcome<State> {
        match event {
            Event::RunResumed { .. } => {
                self.reason = None;
                self.paused_by = None;
                Transition(State::running())
            }
            // A step that was in flight when the pause came may still fail: remember why.
            Event::RunHalted { reason } => {
                self.reason = Some(reason.clone());
                self.paused_by = None;
                Transition(State::halted())
            }
            _ => Super,
        }
    }

    #[state(superstate = "active")]
    fn halted(&mut self, event: &Event) -> Outcome<State> {
        match event {
            Event::RunResumed { .. } => {
                self.reason = None;
                Transition(State::running())
            }
            Event::RunPaused { reason, by } => {
                self.note(reason);
                self.paused_by = Some(by.clone());
                Transition(State::paused())
            }
            _ => Super,
        }
    }

    #[superstate]
    fn active(&mut self, event: &Event) -> Outcome<State> {
        match event {
            Event::AbortRequested { reason, .. } => {
                self.note(reason);
                self.paused_by = None;
                Transition(State::aborting())
            }
            _ => Handled,
        }
    }

    #[state]
    fn aborting(event: &Event) -> Outcome<State> {
        match event {
            Event::RunAborted => Transition(State::aborted()),
            _ => Handled,
        }
    }

    #[state]
    fn completed() -> Outcome<State> {
        Handled
    }

    #[state]
    fn aborted() -> Outcome<State> {
        Handled
    }
}

impl RunMachine {
    fn note(&mut self, reason: &str) {
        self.reason = Some(reason.to_string());
    }
}

impl State {
    pub fn phase(&self) -> RunPhase {
        match self {
            State::Planned {} => RunPhase::Planned,
            State::Running {} => RunPhase::Running,
            State::Paused {} => RunPhase::Paused,
            State::Halted {} => RunPhase::Halted,
            State::Aborting {} => RunPhase::Aborting,
            State::Completed {} => RunPhase::Completed,
            State::Aborted {} => RunPhase::Aborted,
        }
    }
}

/// The run machine, initialised.
#[derive(Debug, Clone)]
pub struct RunMachineState {
    machine: InitializedStateMachine<RunMachine>,
}

impl Default for RunMachineState {
    fn default() -> Self {
        RunMachineState {
            machine: RunMachine::default().uninitialized_state_machine().init(),
        }
    }
}

impl RunMachineState {
    pub fn handle(&mut self, event: &Event) {
        self.machine.handle(event);
    }
    pub fn phase(&self) -> RunPhase {
        self.machine.state().phase()
    }
    pub fn data(&self) -> &RunMachine {
        self.machine.inner()
    }
}
