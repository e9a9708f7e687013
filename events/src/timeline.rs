//! A run's timeline, folded from its records: one row per node pass (plan entry), grouped by
//! phase and batch; one bar per step attempt (a retry is a bar of its own); blocked
//! evictions and maintenance-window waits as spans of their own; the stretches where no
//! daemon ran; operator actions as marks. The terminal, HTML and trace views draw this.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::decide::decide;
use crate::event::{Event, Record, RunId, Timestamp};
use crate::names::Entry;
use crate::replay::{Action, Down};
use crate::state::RunState;

/// How a step attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Succeeded,
    Failed(String),
    /// Its daemon stopped before the outcome was recorded; the next one probed (`done`) or
    /// re-ran it.
    Interrupted,
    /// Found done (or not) by a probe after a restart, instead of being run again.
    Probed {
        done: bool,
    },
    /// Still running when the log ends.
    Running,
}

/// One attempt of one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bar {
    /// `drain`, `upgrade-packages v1.35.3`, …
    pub step: String,
    /// The step's kind (`Step::name`), for glyphs and colours.
    pub kind: String,
    pub attempt: u32,
    pub start: Timestamp,
    pub end: Timestamp,
    pub outcome: Outcome,
}

/// A wait drawn as its own span.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SpanKind {
    /// Evictions refused by these budgets during a drain attempt.
    Blocked { budgets: Vec<String> },
    /// Outside the maintenance windows: the pass could not start.
    Window,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub kind: SpanKind,
    pub start: Timestamp,
    pub end: Timestamp,
}

/// One node pass.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub entry: Entry,
    pub phase: String,
    pub batch: usize,
    pub batch_label: String,
    pub bars: Vec<Bar>,
    pub spans: Vec<Span>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub run: Option<RunId>,
    pub target: Option<String>,
    /// The run's phase at the end of the log.
    pub phase: String,
    pub start: Timestamp,
    pub end: Timestamp,
    /// In plan order (phases, then batches, then entries).
    pub rows: Vec<Row>,
    pub down: Vec<Down>,
    pub actions: Vec<Action>,
}

/// The timeline of one run's records (in order).
pub fn of(records: &[Record]) -> Timeline {
    let start = records.first().map_or(Timestamp(0), |r| r.at);
    let end = records.last().map_or(start, |r| r.at);
    let mut state = RunState::default();
    let mut rows: Vec<Row> = Vec::new();
    let mut index: BTreeMap<Entry, usize> = BTreeMap::new();
    // Open attempts per row: (bar index).
    let mut open: BTreeMap<usize, usize> = BTreeMap::new();
    // Open blocked spans per row.
    let mut blocked: BTreeMap<usize, usize> = BTreeMap::new();
    let mut window: Option<(usize, Timestamp)> = None;
    let mut last = start;
    for r in records {
        let row_of = |node: &Entry, index: &BTreeMap<Entry, usize>| index.get(node).copied();
        match &r.event {
            Event::RunPlanned { plan, .. } => {
                rows.clear();
                index.clear();
                for (b, batch) in plan.0.batches.iter().enumerate() {
                    for n in &batch.nodes {
                        index.insert(n.name.clone(), rows.len());
                        rows.push(Row {
                            entry: n.name.clone(),
                            phase: batch.phase_name().to_string(),
                            batch: b,
                            batch_label: batch.label.clone(),
                            bars: Vec::new(),
                            spans: Vec::new(),
                        });
                    }
                }
            }
            Event::StepStarted {
                node,
                step,
                attempt,
            } => {
                if let Some(i) = row_of(node, &index) {
                    if let Some((w, from)) = window.take() {
                        rows[w].spans.push(Span {
                            kind: SpanKind::Window,
                            start: from,
                            end: r.at,
                        });
                    }
                    open.insert(i, rows[i].bars.len());
                    rows[i].bars.push(Bar {
                        step: step.to_string(),
                        kind: step.name().to_string(),
                        attempt: *attempt,
                        start: r.at,
                        end: r.at,
                        outcome: Outcome::Running,
                    });
                }
            }
            Event::StepSucceeded { node, .. }
            | Event::StepFailed { node, .. }
            | Event::StepProbed { node, .. } => {
                if let Some(i) = row_of(node, &index) {
                    let outcome = match &r.event {
                        Event::StepFailed { error, .. } => Outcome::Failed(error.clone()),
                        Event::StepProbed { done, .. } => Outcome::Probed { done: *done },
                        _ => Outcome::Succeeded,
                    };
                    match open.remove(&i) {
                        Some(b) => {
                            let bar = &mut rows[i].bars[b];
                            bar.end = r.at;
                            bar.outcome = outcome;
                        }
                        // The attempt was closed by a restart: the probe is its own mark.
                        None => {
                            if let Event::StepProbed { step, attempt, .. } = &r.event {
                                rows[i].bars.push(Bar {
                                    step: step.to_string(),
                                    kind: step.name().to_string(),
                                    attempt: *attempt,
                                    start: r.at,
                                    end: r.at,
                                    outcome,
                                });
                            }
                        }
                    }
                    if let Some(s) = blocked.remove(&i) {
                        rows[i].spans[s].end = r.at;
                    }
                }
            }
            Event::EvictionBlocked { node, pdb, .. } => {
                if let Some(i) = row_of(node, &index) {
                    match blocked.get(&i) {
                        Some(&s) => {
                            let span = &mut rows[i].spans[s];
                            span.end = r.at;
                            if let SpanKind::Blocked { budgets } = &mut span.kind
                                && !budgets.contains(pdb)
                            {
                                budgets.push(pdb.clone());
                            }
                        }
                        None => {
                            blocked.insert(i, rows[i].spans.len());
                            rows[i].spans.push(Span {
                                kind: SpanKind::Blocked {
                                    budgets: vec![pdb.clone()],
                                },
                                start: r.at,
                                end: r.at,
                            });
                        }
                    }
                }
            }
            Event::RunRecovered { .. } => {
                // What was running when the daemon stopped ended there, in doubt.
                for (i, b) in std::mem::take(&mut open) {
                    let bar = &mut rows[i].bars[b];
                    bar.end = last;
                    bar.outcome = Outcome::Interrupted;
                }
                for (i, s) in std::mem::take(&mut blocked) {
                    rows[i].spans[s].end = last;
                }
            }
            _ => {}
        }
        state.apply(r);
        // A window wait begins when the engine would say so after this record (it asks only
        // when nothing runs).
        if window.is_none()
            && open.is_empty()
            && !state.policy.windows.is_empty()
            && !state.phase().is_terminal()
            && !state.nodes.is_empty()
            && let Some(e) = decide(&state, &state.policy, r.at).window_wait
            && let Some(i) = index.get(&e).copied()
        {
            window = Some((i, r.at));
        }
        last = r.at;
    }
    for (i, b) in open {
        rows[i].bars[b].end = end;
    }
    for (i, s) in blocked {
        rows[i].spans[s].end = end;
    }
    if let Some((w, from)) = window {
        rows[w].spans.push(Span {
            kind: SpanKind::Window,
            start: from,
            end,
        });
    }
    let replayed = crate::replay::at(records, crate::replay::At::Time(end));
    Timeline {
        run: state.id,
        target: state.target.map(|v| v.to_string()),
        phase: state.phase().as_str().to_string(),
        start,
        end,
        rows,
        down: replayed.down,
        actions: replayed.actions,
    }
}
