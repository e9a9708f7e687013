//! The run history (`upgradectl runs`), folded from each run's records, like OpenShift's
//! ClusterVersion history: what kind of run, from and to which version, how it ended, when,
//! who started it, and how much it did.

use serde::{Deserialize, Serialize};

use crate::event::{Actor, Event, Record, RunId, Step, Timestamp};
use crate::run::RunPhase;
use crate::state::RunState;

/// One run in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunHistory {
    pub run: RunId,
    /// `upgrade`, `rollback` (the control plane goes back) or `node rollback` (single
    /// nodes).
    pub kind: String,
    /// The run it rolls back, for a rollback run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undoes: Option<RunId>,
    /// The apiserver's version when the run was planned.
    pub from: Option<String>,
    pub to: Option<String>,
    /// `completed`, `halted`, `aborted`, `rolled back` (a completed rollback undid it), or
    /// the phase of a run still going.
    pub state: String,
    pub started_by: Option<Actor>,
    pub started: Option<Timestamp>,
    pub ended: Option<Timestamp>,
    pub last_active: Option<Timestamp>,
    pub steps: u32,
    /// Attempts after a step's first.
    pub retries: u32,
    pub records: u64,
}

/// One run's entry (without what later runs say of it).
pub fn entry(records: &[Record]) -> Option<RunHistory> {
    entry_of(&RunState::replay(records), records)
}

/// [`entry`], for a caller that has folded the records already.
pub fn entry_of(state: &RunState, records: &[Record]) -> Option<RunHistory> {
    let first = records.first()?;
    let (mut steps, mut retries) = (0, 0);
    let (mut started, mut started_by, mut ended) = (None, None, None);
    for r in records {
        match &r.event {
            Event::RunPlanned { by, .. } => {
                started_by.get_or_insert_with(|| by.clone());
            }
            Event::RunStarted { by } => {
                started.get_or_insert(r.at);
                started_by.get_or_insert_with(|| by.clone());
            }
            Event::StepStarted { attempt, .. } => {
                steps += 1;
                if *attempt > 1 {
                    retries += 1;
                }
            }
            Event::RunCompleted | Event::RunAborted | Event::RunHalted { .. } => {
                ended = Some(r.at);
            }
            Event::RunResumed { .. } => ended = None,
            _ => {}
        }
    }
    let phase = state.phase();
    let control_plane = state.plan.nodes().any(|(_, n)| {
        n.steps
            .iter()
            .any(|s| matches!(s, Step::KubeadmDowngrade { .. }))
    });
    let kind = match (state.plan.undoes, control_plane) {
        (None, _) => "upgrade",
        (Some(_), true) => "rollback",
        (Some(_), false) => "node rollback",
    };
    Some(RunHistory {
        run: first.run,
        kind: kind.into(),
        undoes: state.plan.undoes,
        from: state.apiserver_before.map(|v| v.to_string()),
        to: state.target.map(|v| v.to_string()),
        state: phase.as_str().to_string(),
        started_by,
        started: started.or(Some(first.at)),
        ended: ended.filter(|_| phase.is_terminal() || phase == RunPhase::Halted),
        last_active: records.last().map(|r| r.at),
        steps,
        retries,
        records: state.next_seq,
    })
}

/// Every run's entry, oldest first: a run whose control plane a completed rollback took
/// back is `rolled back`; one with only nodes rolled back says so.
pub fn history(runs: &[Vec<Record>]) -> Vec<RunHistory> {
    let mut out: Vec<RunHistory> = runs.iter().filter_map(|r| entry(r)).collect();
    mark_undone(&mut out);
    out
}

/// What later runs say of earlier ones: rolled back, or nodes rolled back.
pub fn mark_undone(out: &mut [RunHistory]) {
    let undone: Vec<(RunId, bool)> = out
        .iter()
        .filter(|h| h.state == RunPhase::Completed.as_str())
        .filter_map(|h| h.undoes.map(|u| (u, h.kind == "rollback")))
        .collect();
    for h in out.iter_mut() {
        let whole = undone.iter().any(|(u, cp)| *u == h.run && *cp);
        let nodes = undone.iter().any(|(u, cp)| *u == h.run && !*cp);
        if whole {
            h.state = "rolled back".into();
        } else if nodes {
            h.state = format!("{} (nodes rolled back)", h.state);
        }
    }
}
