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
    /// When the node itself started and ended it (its clock, from the node command's
    /// facts); for an attempt cut short by a daemon stop, what the next attempt found the
    /// node had done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_node: Option<(Timestamp, Timestamp)>,
}

impl Bar {
    /// An attempt of `step` seen at `at`.
    fn new(step: &crate::plan::Step, attempt: u32, at: Timestamp, outcome: Outcome) -> Bar {
        Bar {
            step: step.to_string(),
            kind: step.name().to_string(),
            attempt,
            start: at,
            end: at,
            outcome,
            on_node: None,
        }
    }
}

/// `(started, ended)` on the node, from facts under `prefix` (`node_` or `earlier_node_`).
fn node_times(facts: &crate::event::Facts, prefix: &str) -> Option<(Timestamp, Timestamp)> {
    let get = |k: &str| {
        facts
            .get(&format!("{prefix}{k}_ms"))
            .and_then(|v| v.parse::<i64>().ok())
            .map(Timestamp)
    };
    Some((get("started")?, get("ended")?)).filter(|(a, b)| a <= b)
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
    /// Each reading of drift (`DriftObserved`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<crate::state::DriftSeen>,
    /// Which daemon led when (`upgraded --ha`: from each `LeaderChanged` to the next).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leaders: Vec<Tenure>,
}

/// One leader's time at the head of the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenure {
    pub instance: String,
    pub epoch: u64,
    pub start: Timestamp,
    pub end: Timestamp,
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
    // When the engine, idle after the last record, looks again by itself (the end of a wait
    // between batches): a window wait may begin then, with no record to mark it.
    let mut wakes_at: Option<Timestamp> = None;
    let mut last = start;
    let mut leaders: Vec<Tenure> = Vec::new();
    for r in records {
        let standing = crate::lease::standing(state.epoch, r);
        if standing == crate::lease::Standing::Deposed {
            // A deposed leader's record: the fold notes it and nothing is drawn.
            state.apply(r);
            continue;
        }
        if let Some(t) = wakes_at.take().filter(|t| *t < r.at)
            && window.is_none()
            && open.is_empty()
            && let Some(e) = decide(&state, &state.policy, t).window_wait
            && let Some(i) = index.get(&e).copied()
        {
            window = Some((i, t));
        }
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
                    rows[i]
                        .bars
                        .push(Bar::new(step, *attempt, r.at, Outcome::Running));
                }
            }
            Event::StepSucceeded { node, facts, .. }
            | Event::StepFailed { node, facts, .. }
            | Event::StepProbed { node, facts, .. } => {
                if let Some(i) = row_of(node, &index) {
                    // What the node had done of an attempt cut short by a daemon stop.
                    if let Some((a, b)) = node_times(facts, "earlier_node_")
                        && let Some(cut) = rows[i]
                            .bars
                            .iter_mut()
                            .rev()
                            .find(|x| x.outcome == Outcome::Interrupted && x.on_node.is_none())
                        && b >= cut.start
                    {
                        cut.on_node = Some((a, b));
                    }
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
                            bar.on_node = node_times(facts, "node_");
                        }
                        // The attempt was closed by a restart: the probe is its own mark.
                        None => {
                            if let Event::StepProbed { step, attempt, .. } = &r.event {
                                let mut bar = Bar::new(step, *attempt, r.at, outcome);
                                bar.on_node = node_times(facts, "node_");
                                rows[i].bars.push(bar);
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
            Event::LeaderChanged { instance, epoch }
                if standing == crate::lease::Standing::Takeover(*epoch) =>
            {
                if let Some(t) = leaders.last_mut() {
                    t.end = r.at;
                }
                leaders.push(Tenure {
                    instance: instance.clone(),
                    epoch: *epoch,
                    start: r.at,
                    end: r.at,
                });
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
        {
            let d = decide(&state, &state.policy, r.at);
            match d.window_wait.and_then(|e| index.get(&e).copied()) {
                Some(i) => window = Some((i, r.at)),
                None => wakes_at = d.wake_at,
            }
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
    let (actions, down) = crate::replay::actions_and_down(records);
    Timeline {
        run: state.id,
        target: state.target.map(|v| v.to_string()),
        phase: state.phase().as_str().to_string(),
        start,
        end,
        rows,
        down,
        actions,
        drift: state.drift,
        leaders: {
            if let Some(t) = leaders.last_mut() {
                t.end = end;
            }
            leaders
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Actor, Facts, Json};
    use crate::plan::{Batch, NodePlan, Plan, Role, Step};
    use crate::version::Version;

    fn rec(seq: u64, at: i64, event: Event) -> Record {
        Record {
            run: RunId::from_u128(1),
            seq,
            at: Timestamp(at),
            epoch: 0,
            event,
        }
    }

    /// The run's first record: a plan of one batch, `node`, a worker, with `steps`, to
    /// v1.35.3.
    fn planned(node: &Entry, steps: Vec<Step>) -> Record {
        let plan = Plan {
            target: Some(Version::new(1, 35, 3)),
            batches: vec![Batch {
                label: "workers 1/1".into(),
                phase: "workers".into(),
                nodes: vec![NodePlan {
                    name: node.clone(),
                    host: None,
                    role: Role::Worker,
                    from: Version::new(1, 34, 6),
                    steps,
                    estimate_secs: 0,
                }],
            }],
            undoes: None,
        };
        rec(
            0,
            0,
            Event::RunPlanned {
                target: Version::new(1, 35, 3),
                plan: Json(plan),
                policy: Json(Default::default()),
                by: Actor::daemon(),
            },
        )
    }

    fn facts(pairs: &[(&str, &str)]) -> Facts {
        crate::facts::facts_of(pairs)
    }

    /// Two leaders in turn (`--ha`): their tenures, and the deposed one's late record not
    /// drawn.
    #[test]
    fn leaders_tenures_and_a_deposed_leaders_record_left_out() {
        let node = Entry::new("w-1");
        let plan = planned(&node, vec![Step::Drain]);
        let led = |seq, at, epoch, event| Record {
            epoch,
            ..rec(seq, at, event)
        };
        let leader = |instance: &str, epoch| Event::LeaderChanged {
            instance: instance.into(),
            epoch,
        };
        let drained = Event::StepSucceeded {
            node: node.clone(),
            step: Step::Drain,
            attempt: 1,
            facts: Facts::new(),
        };
        let records = vec![
            plan,
            led(1, 0, 1, leader("admin-1", 1)),
            led(
                2,
                0,
                1,
                Event::RunStarted {
                    by: Actor::daemon(),
                },
            ),
            led(
                3,
                1_000,
                1,
                Event::StepStarted {
                    node: node.clone(),
                    step: Step::Drain,
                    attempt: 1,
                },
            ),
            led(4, 50_000, 2, leader("admin-2", 2)),
            led(5, 51_000, 1, drained.clone()),
            led(6, 60_000, 2, Event::RunRecovered { pid: 9 }),
            led(
                7,
                61_000,
                2,
                Event::StepStarted {
                    node: node.clone(),
                    step: Step::Drain,
                    attempt: 2,
                },
            ),
            led(
                8,
                70_000,
                2,
                Event::StepSucceeded {
                    node: node.clone(),
                    step: Step::Drain,
                    attempt: 2,
                    facts: Facts::new(),
                },
            ),
        ];
        let t = of(&records);
        let tenures: Vec<(&str, u64, i64, i64)> = t
            .leaders
            .iter()
            .map(|l| (l.instance.as_str(), l.epoch, l.start.0, l.end.0))
            .collect();
        assert_eq!(
            tenures,
            [("admin-1", 1, 0, 50_000), ("admin-2", 2, 50_000, 70_000)]
        );
        let bars: Vec<(u32, &Outcome, i64)> = t.rows[0]
            .bars
            .iter()
            .map(|b| (b.attempt, &b.outcome, b.end.0))
            .collect();
        // The first attempt ends in doubt at the takeover's recovery, not at the deposed
        // leader's late "succeeded".
        assert_eq!(
            bars,
            [
                (1, &Outcome::Interrupted, 50_000),
                (2, &Outcome::Succeeded, 70_000)
            ]
        );
    }

    /// A run whose daemon stopped while w-1's packages were being installed; the node
    /// finished them before the restart, which the re-run's facts tell.
    #[test]
    fn attempts_spans_gaps_and_what_the_node_did_while_the_daemon_was_down() {
        let v = Version::new(1, 35, 3);
        let node = Entry::new("w-1");
        let install = Step::UpgradePackages { version: v };
        let plan = planned(&node, vec![Step::Drain, install.clone()]);
        let started = |attempt| Event::StepStarted {
            node: node.clone(),
            step: install.clone(),
            attempt,
        };
        let records = vec![
            plan,
            rec(
                1,
                0,
                Event::RunStarted {
                    by: Actor::daemon(),
                },
            ),
            rec(
                2,
                1_000,
                Event::StepStarted {
                    node: node.clone(),
                    step: Step::Drain,
                    attempt: 1,
                },
            ),
            rec(
                3,
                2_000,
                Event::EvictionBlocked {
                    node: node.clone(),
                    pod: "default/app-1".into(),
                    pdb: "pdb/default/app".into(),
                    disruptions_allowed: 0,
                },
            ),
            rec(
                4,
                9_000,
                Event::StepSucceeded {
                    node: node.clone(),
                    step: Step::Drain,
                    attempt: 1,
                    facts: Facts::new(),
                },
            ),
            rec(5, 10_000, started(1)),
            rec(6, 600_000, Event::RunRecovered { pid: 7 }),
            rec(7, 601_000, started(2)),
            rec(
                8,
                602_000,
                Event::StepSucceeded {
                    node: node.clone(),
                    step: install.clone(),
                    attempt: 2,
                    facts: facts(&[
                        ("earlier_node_started_ms", "10500"),
                        ("earlier_node_ended_ms", "70000"),
                        ("node_started_ms", "601500"),
                        ("node_ended_ms", "601900"),
                    ]),
                },
            ),
            rec(9, 602_000, Event::RunCompleted),
        ];
        let t = of(&records);
        assert_eq!(t.rows.len(), 1);
        let r = &t.rows[0];
        assert_eq!(
            (r.phase.as_str(), r.batch_label.as_str()),
            ("workers", "workers 1/1")
        );
        let kinds: Vec<(&str, u32, &Outcome)> = r
            .bars
            .iter()
            .map(|b| (b.kind.as_str(), b.attempt, &b.outcome))
            .collect();
        assert_eq!(
            kinds,
            [
                ("drain", 1, &Outcome::Succeeded),
                ("upgrade-packages", 1, &Outcome::Interrupted),
                ("upgrade-packages", 2, &Outcome::Succeeded),
            ]
        );
        // Cut short where the log stops; the node had finished it at 70 s.
        assert_eq!(r.bars[1].end, Timestamp(10_000));
        assert_eq!(
            r.bars[1].on_node,
            Some((Timestamp(10_500), Timestamp(70_000)))
        );
        assert_eq!(
            r.bars[2].on_node,
            Some((Timestamp(601_500), Timestamp(601_900)))
        );
        assert_eq!(
            r.spans,
            [Span {
                kind: SpanKind::Blocked {
                    budgets: vec!["pdb/default/app".into()]
                },
                start: Timestamp(2_000),
                end: Timestamp(9_000),
            }]
        );
        assert_eq!(
            t.down,
            [Down {
                from: Timestamp(10_000),
                to: Timestamp(600_000)
            }]
        );
    }
}
