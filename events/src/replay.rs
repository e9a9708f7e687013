//! Replay at an instant: a run as it stood then, folded from its records up to that
//! instant, with what `status` showed and what only the log knows (who paused or aborted it,
//! what was in doubt, where the daemon was down).

use serde::{Deserialize, Serialize};

use crate::decide::decide;
use crate::event::{Actor, Event, Record, Timestamp};
use crate::node::StepStatus;
use crate::quantity::duration_secs;
use crate::state::{RunState, RunSummary};

/// The instant a replay stops at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Every record at or before this time.
    Time(Timestamp),
    /// This long (ms) after the run's first record.
    SinceStart(u64),
    /// Every record up to and including this sequence number.
    Seq(u64),
}

impl At {
    /// `2026-11-30T03:12:00Z` (RFC 3339), `+1h30m` (after the run's first record) or
    /// `seq 42` (`seq:42`, `seq=42`).
    pub fn parse(s: &str) -> Result<At, String> {
        let t = s.trim();
        if let Some(n) = t
            .strip_prefix("seq")
            .map(|r| r.trim_start_matches([' ', ':', '=']))
        {
            return n
                .parse()
                .map(At::Seq)
                .map_err(|_| format!("{s:?}: expected `seq N` with N a record number"));
        }
        if let Some(d) = t.strip_prefix('+') {
            return duration_secs(d).map(|secs| At::SinceStart(secs.saturating_mul(1000)));
        }
        t.parse::<jiff::Timestamp>()
            .map(|ts| At::Time(Timestamp(ts.as_millisecond())))
            .map_err(|e| {
                format!(
                    "{s:?}: expected an RFC 3339 time (2026-11-30T03:12:00Z), +DURATION from the \
                     run's start (+1h30m) or `seq N` ({e})"
                )
            })
    }

    /// The records of `records` (one run's, in order) up to this instant, and the instant's
    /// time (the time asked, or the last record's for `seq`).
    pub fn cut<'a>(&self, records: &'a [Record]) -> (&'a [Record], Timestamp) {
        let start = records.first().map_or(Timestamp(0), |r| r.at);
        let upto = |t: Timestamp| records.partition_point(|r| r.at <= t);
        match *self {
            At::Time(t) => (&records[..upto(t)], t),
            At::SinceStart(ms) => {
                let t = start.plus_millis(ms);
                (&records[..upto(t)], t)
            }
            At::Seq(n) => {
                let k = records.partition_point(|r| r.seq <= n);
                let t = records[..k].last().map_or(start, |r| r.at);
                (&records[..k], t)
            }
        }
    }
}

/// An operator's (or the daemon's) request on the run: pause, resume or abort.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Action {
    pub at: Timestamp,
    pub seq: u64,
    pub what: String,
    pub by: Actor,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A stretch where no daemon ran the run: from its last record before a stop to the
/// `RunRecovered` that reopened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Down {
    pub from: Timestamp,
    pub to: Timestamp,
}

/// The run at an instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Replayed {
    pub at: Timestamp,
    /// The last record folded (none before the first).
    pub seq: Option<u64>,
    /// What `status` showed then.
    pub status: RunSummary,
    /// Pauses, resumes and aborts so far, with who asked.
    pub actions: Vec<Action>,
    /// Steps started whose outcome was not recorded yet (running then, or cut short by a
    /// crash), as `entry: step`.
    pub in_flight: Vec<String>,
    /// Daemon-down stretches so far.
    pub down: Vec<Down>,
}

/// Folds `records` (one run's, in order) up to `at`.
pub fn at(records: &[Record], at: At) -> Replayed {
    let (prefix, t) = at.cut(records);
    let state = RunState::replay(prefix);
    let mut status = state.summary();
    let in_flight: Vec<String> = status
        .nodes
        .iter()
        .filter(|n| {
            n.cursor
                .is_some_and(|c| matches!(c.status, StepStatus::InFlight | StepStatus::InDoubt))
        })
        .map(|n| format!("{}: {}", n.name, n.step.as_deref().unwrap_or("?")))
        .collect();
    // As the engine says it: why nothing starts, when nothing runs.
    if !state.phase().is_terminal() && state.id.is_some() && in_flight.is_empty() {
        status.waiting = decide(&state, &state.policy, t).waiting;
    }
    let (actions, down) = actions_and_down(prefix);
    Replayed {
        at: t,
        seq: prefix.last().map(|r| r.seq),
        status,
        actions,
        in_flight,
        down,
    }
}

/// The operators' requests and the daemon-down stretches in `records`, in order.
pub fn actions_and_down(records: &[Record]) -> (Vec<Action>, Vec<Down>) {
    let mut actions = Vec::new();
    let mut down = Vec::new();
    let mut last: Option<Timestamp> = None;
    for r in records {
        let (what, by, reason) = match &r.event {
            Event::RunPaused { by, reason } => ("pause", by, reason.clone()),
            Event::RunResumed { by } => ("resume", by, String::new()),
            Event::AbortRequested { by, reason } => ("abort", by, reason.clone()),
            Event::RunRecovered { .. } => {
                if let Some(from) = last {
                    down.push(Down { from, to: r.at });
                }
                last = Some(r.at);
                continue;
            }
            _ => {
                last = Some(r.at);
                continue;
            }
        };
        last = Some(r.at);
        actions.push(Action {
            at: r.at,
            seq: r.seq,
            what: what.into(),
            by: by.clone(),
            reason,
        });
    }
    (actions, down)
}
