//! Operator requests, decided in the core: a request goes in with what is known of the run,
//! and comes out as the event that records it, or as a typed rejection. The daemon only
//! observes (the active run's phase, the plan, the rights it was granted), asks here, and
//! appends what it is told.

use crate::event::{Actor, Event, RunId};
use crate::run::RunPhase;

/// What an operator asks of the active run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Pause { by: Actor, reason: String },
    Resume { by: Actor },
    Abort { by: Actor, reason: String },
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no run is in progress")]
    NoRun,
    #[error("the run is {0:?}: {1}")]
    WrongPhase(RunPhase, &'static str),
    #[error("run {run} is {phase:?}; wait for it to finish or abort it before starting another")]
    Busy { run: RunId, phase: RunPhase },
    #[error("the plan has {count} blocker(s); fix them or start with --force:\n{list}")]
    Blocked { count: usize, list: String },
    #[error(
        "the daemon's Kubernetes identity may not do what the run needs (nothing was \
         recorded); grant these in its RBAC role:\n{list}"
    )]
    Forbidden { list: String },
}

/// A pause, resume or abort of the active run (`None`: there is none), given its phase.
pub fn operator(active: Option<RunPhase>, request: Request) -> Result<Event, Rejection> {
    let phase = active.ok_or(Rejection::NoRun)?;
    let (allowed, why) = match &request {
        Request::Pause { .. } => (
            matches!(phase, RunPhase::Running | RunPhase::Halted),
            "only a running or halted run can be paused",
        ),
        Request::Resume { .. } => (
            matches!(phase, RunPhase::Paused | RunPhase::Halted),
            "only a paused or halted run can be resumed",
        ),
        Request::Abort { .. } => (
            matches!(
                phase,
                RunPhase::Running | RunPhase::Paused | RunPhase::Halted
            ),
            "only an unfinished run can be aborted",
        ),
    };
    if !allowed {
        return Err(Rejection::WrongPhase(phase, why));
    }
    Ok(match request {
        Request::Pause { by, reason } => Event::RunPaused { by, reason },
        Request::Resume { by } => Event::RunResumed { by },
        Request::Abort { by, reason } => Event::AbortRequested { by, reason },
    })
}

/// Whether a start may plan now: a dry run always may (it records nothing); a real start
/// only when the last run has finished.
pub fn may_plan(last: Option<(RunId, RunPhase)>, dry_run: bool) -> Result<(), Rejection> {
    match last {
        Some((run, phase)) if !dry_run && !phase.is_terminal() => {
            Err(Rejection::Busy { run, phase })
        }
        _ => Ok(()),
    }
}

/// What a start found, once planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub dry_run: bool,
    /// Every node is already at the target.
    pub nothing_to_do: bool,
    /// The plan's blockers, one line each.
    pub blockers: Vec<String>,
    /// Start despite blockers.
    pub force: bool,
    /// Rights the API server said the daemon lacks, one line each (asked only when the
    /// start would be recorded).
    pub missing_rights: Vec<String>,
}

/// What a planned start does: `Ok(true)` records the run, `Ok(false)` records nothing (a
/// dry run, or nothing to do), `Err` refuses it.
pub fn admit(a: &Admission) -> Result<bool, Rejection> {
    if a.dry_run || a.nothing_to_do {
        return Ok(false);
    }
    if !a.blockers.is_empty() && !a.force {
        return Err(Rejection::Blocked {
            count: a.blockers.len(),
            list: a.blockers.join("\n"),
        });
    }
    if !a.missing_rights.is_empty() {
        return Err(Rejection::Forbidden {
            list: a.missing_rights.join("\n"),
        });
    }
    Ok(true)
}

/// What the daemon does once a run has ended, as the log says: a run a gate asked to roll
/// back (`RollbackRequested`) and that is aborted gets its whole-run rollback, unless one was
/// recorded already (`rolled_back`: a rollback run of it exists).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowUp {
    RollbackWholeRun { reason: String },
}

pub fn follow_up(state: &crate::state::RunState, rolled_back: bool) -> Option<FollowUp> {
    match (&state.rollback_requested, state.phase()) {
        (Some(reason), RunPhase::Aborted) if !rolled_back => Some(FollowUp::RollbackWholeRun {
            reason: reason.clone(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by() -> Actor {
        Actor {
            uid: Some(1000),
            name: "alice".into(),
        }
    }

    #[test]
    fn pause_resume_and_abort_follow_the_phase() {
        use RunPhase::*;
        let pause = || Request::Pause {
            by: by(),
            reason: "freeze".into(),
        };
        let resume = || Request::Resume { by: by() };
        let abort = || Request::Abort {
            by: by(),
            reason: "no".into(),
        };
        // Given each phase, when each request arrives, then it is recorded or refused.
        for (phase, p, r, a) in [
            (Planned, false, false, false),
            (Running, true, false, true),
            (Paused, false, true, true),
            (Halted, true, true, true),
            (Aborting, false, false, false),
            (Completed, false, false, false),
            (Aborted, false, false, false),
        ] {
            assert_eq!(operator(Some(phase), pause()).is_ok(), p, "pause {phase:?}");
            assert_eq!(
                operator(Some(phase), resume()).is_ok(),
                r,
                "resume {phase:?}"
            );
            assert_eq!(operator(Some(phase), abort()).is_ok(), a, "abort {phase:?}");
        }
        assert_eq!(operator(None, pause()), Err(Rejection::NoRun));
        assert_eq!(
            operator(Some(Running), pause()),
            Ok(Event::RunPaused {
                by: by(),
                reason: "freeze".into()
            })
        );
        assert_eq!(
            operator(Some(Paused), pause()),
            Err(Rejection::WrongPhase(
                Paused,
                "only a running or halted run can be paused"
            ))
        );
    }

    #[test]
    fn a_dry_run_plans_whatever_the_last_run_does() {
        let run = RunId::nil();
        assert!(may_plan(Some((run, RunPhase::Halted)), true).is_ok());
        assert_eq!(
            may_plan(Some((run, RunPhase::Halted)), false),
            Err(Rejection::Busy {
                run,
                phase: RunPhase::Halted
            })
        );
        assert!(may_plan(Some((run, RunPhase::Completed)), false).is_ok());
        assert!(may_plan(None, false).is_ok());
    }

    #[test]
    fn a_start_is_recorded_only_when_nothing_stands_in_its_way() {
        let base = Admission {
            dry_run: false,
            nothing_to_do: false,
            blockers: vec![],
            force: false,
            missing_rights: vec![],
        };
        assert_eq!(admit(&base), Ok(true));
        let blocked = Admission {
            blockers: vec!["  pdb-never-allows: …".into()],
            ..base.clone()
        };
        assert!(matches!(
            admit(&blocked),
            Err(Rejection::Blocked { count: 1, .. })
        ));
        let forced = Admission {
            force: true,
            ..blocked.clone()
        };
        assert_eq!(admit(&forced), Ok(true));
        let forbidden = Admission {
            missing_rights: vec!["  patch nodes".into()],
            ..forced
        };
        assert!(matches!(
            admit(&forbidden),
            Err(Rejection::Forbidden { .. })
        ));
        for quiet in [
            Admission {
                dry_run: true,
                ..blocked.clone()
            },
            Admission {
                nothing_to_do: true,
                ..blocked
            },
        ] {
            assert_eq!(admit(&quiet), Ok(false));
        }
    }
}
