//! The daemon's Prometheus metrics as a fold of the log: every record moves counters, gauges
//! and histograms here, and [`Metrics::render`] writes the text format. Labels are bounded:
//! kinds of runs, steps, checks and results, never a run id, a node name or an attempt.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::event::{Event, Record, RunId};
use crate::time::Timestamp;

/// Upper bounds of the duration histograms, in seconds (a step takes seconds to an hour).
pub const DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

/// Upper bounds of the log's append latency, in seconds (a flushed append takes ~0.1 ms to
/// a few ms; a slow disk shows up in the top buckets).
pub const APPEND_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// A histogram of durations in seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations at or below each of the bounds.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum: f64,
    /// Its bucket bounds: [`DURATION_BUCKETS`] unless given.
    bounds: Option<&'static [f64]>,
}

impl Histogram {
    /// An empty histogram with these bucket bounds.
    pub fn with_bounds(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds: Some(bounds),
            ..Histogram::default()
        }
    }

    pub fn bounds(&self) -> &'static [f64] {
        self.bounds.unwrap_or(DURATION_BUCKETS)
    }

    pub fn observe(&mut self, secs: f64) {
        let bounds = self.bounds();
        if self.buckets.len() != bounds.len() {
            self.buckets = vec![0; bounds.len()];
        }
        for (b, le) in self.buckets.iter_mut().zip(bounds) {
            if secs <= *le {
                *b += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// What a run is and where it stands, for the runs gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RunLine {
    rollback: bool,
    state: &'static str,
}

/// The counters the log drives.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    runs: BTreeMap<RunId, RunLine>,
    /// (step kind, result) → count.
    steps: BTreeMap<(String, &'static str), u64>,
    step_seconds: BTreeMap<String, Histogram>,
    /// When each step attempt started: (run, entry, step, attempt).
    started: BTreeMap<(RunId, String, String, u32), Timestamp>,
    evictions_refused: u64,
    drain_seconds: Histogram,
    /// (check, result) → count.
    checks: BTreeMap<(String, &'static str), u64>,
    check_seconds: BTreeMap<String, Histogram>,
    /// When each check attempt started: (run, check, subject, attempt).
    checks_started: BTreeMap<(RunId, String, String, u32), Timestamp>,
    records: u64,
    last_progress: Option<Timestamp>,
    gate: crate::lease::EpochGate,
}

impl Metrics {
    /// Folds one record in.
    pub fn apply(&mut self, r: &Record) {
        if !self.gate.admits(r) {
            return;
        }
        self.records += 1;
        self.last_progress = Some(self.last_progress.map_or(r.at, |t| t.max(r.at)));
        let run = r.run;
        let mut state = |s: &'static str| {
            if let Some(line) = self.runs.get_mut(&run) {
                line.state = s;
            }
        };
        match &r.event {
            Event::RunPlanned { plan, .. } => {
                self.runs.insert(
                    run,
                    RunLine {
                        rollback: plan.0.undoes.is_some(),
                        state: "planned",
                    },
                );
            }
            Event::RunStarted { .. } | Event::RunResumed { .. } | Event::RunRecovered { .. } => {
                state("running");
            }
            Event::RunPaused { .. } => state("paused"),
            Event::RunHalted { .. } => state("halted"),
            Event::AbortRequested { .. } => state("aborting"),
            Event::RunCompleted => state("completed"),
            Event::RunAborted => state("aborted"),
            Event::StepStarted {
                node,
                step,
                attempt,
            } => {
                self.started.insert(
                    (
                        run,
                        node.as_str().to_string(),
                        step.name().to_string(),
                        *attempt,
                    ),
                    r.at,
                );
            }
            Event::StepSucceeded {
                node,
                step,
                attempt,
                ..
            }
            | Event::StepFailed {
                node,
                step,
                attempt,
                ..
            }
            | Event::StepProbed {
                node,
                step,
                attempt,
                ..
            } => {
                let result = match &r.event {
                    Event::StepSucceeded { .. } => "succeeded",
                    Event::StepFailed { .. } => "failed",
                    _ => "probed",
                };
                let kind = step.name().to_string();
                *self.steps.entry((kind.clone(), result)).or_default() += 1;
                let key = (run, node.as_str().to_string(), kind.clone(), *attempt);
                if let Some(t0) = self.started.remove(&key) {
                    let secs = (r.at.0 - t0.0).max(0) as f64 / 1000.0;
                    self.step_seconds
                        .entry(kind.clone())
                        .or_default()
                        .observe(secs);
                    if kind == "drain" && result == "succeeded" {
                        self.drain_seconds.observe(secs);
                    }
                }
            }
            Event::EvictionBlocked { .. } => self.evictions_refused += 1,
            Event::CheckStarted {
                check,
                subject,
                attempt,
                ..
            } => {
                self.checks_started
                    .insert((run, check.clone(), subject.clone(), *attempt), r.at);
            }
            Event::CheckPassed {
                check,
                subject,
                attempt,
                ..
            }
            | Event::CheckFailed {
                check,
                subject,
                attempt,
                ..
            }
            | Event::CheckInconclusive {
                check,
                subject,
                attempt,
                ..
            } => {
                let result = match &r.event {
                    Event::CheckPassed { .. } => "passed",
                    Event::CheckFailed { .. } => "failed",
                    _ => "inconclusive",
                };
                *self.checks.entry((check.clone(), result)).or_default() += 1;
                let key = (run, check.clone(), subject.clone(), *attempt);
                if let Some(t0) = self.checks_started.remove(&key) {
                    let secs = (r.at.0 - t0.0).max(0) as f64 / 1000.0;
                    self.check_seconds
                        .entry(check.clone())
                        .or_default()
                        .observe(secs);
                }
            }
            Event::ClusterObserved { .. }
            | Event::NodeParked { .. }
            | Event::WorkloadScaled { .. }
            | Event::NodeRollingBack { .. }
            | Event::RollbackRequested { .. }
            | Event::DriftObserved { .. }
            | Event::LeaderChanged { .. } => {}
        }
    }

    /// Records folded in so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The Prometheus text format (version 0.0.4): the log's metrics, then `extra` (what
    /// only the daemon knows: node passes of the active run, build, lag), each family with
    /// its HELP and TYPE.
    pub fn render(
        &self,
        version: &str,
        node_passes: &BTreeMap<String, u64>,
        process: &ProcessStats,
    ) -> String {
        let mut o = String::new();
        family(
            &mut o,
            "upgraded_build_info",
            "gauge",
            "The running daemon's version (always 1).",
        );
        let _ = writeln!(o, "upgraded_build_info{{version=\"{}\"}} 1", esc(version));

        family(
            &mut o,
            "upgraded_runs",
            "gauge",
            "Runs in the log by kind (upgrade, rollback) and state.",
        );
        let mut runs: BTreeMap<RunLine, u64> = BTreeMap::new();
        for line in self.runs.values() {
            *runs.entry(*line).or_default() += 1;
        }
        for (line, n) in runs {
            let kind = if line.rollback { "rollback" } else { "upgrade" };
            let _ = writeln!(
                o,
                "upgraded_runs{{kind=\"{kind}\",state=\"{}\"}} {n}",
                line.state
            );
        }

        family(
            &mut o,
            "upgraded_node_passes",
            "gauge",
            "The active run's node passes by phase.",
        );
        for (phase, n) in node_passes {
            let _ = writeln!(o, "upgraded_node_passes{{phase=\"{}\"}} {n}", esc(phase));
        }

        family(
            &mut o,
            "upgraded_steps_total",
            "counter",
            "Step outcomes recorded, by step kind and result (succeeded, failed, probed).",
        );
        for ((step, result), n) in &self.steps {
            let _ = writeln!(
                o,
                "upgraded_steps_total{{step=\"{}\",result=\"{result}\"}} {n}",
                esc(step)
            );
        }
        histograms(
            &mut o,
            "upgraded_step_duration_seconds",
            "How long step attempts took, from their start record to their outcome, by step kind.",
            "step",
            &self.step_seconds,
        );
        family(
            &mut o,
            "upgraded_evictions_refused_total",
            "counter",
            "Evictions a PodDisruptionBudget refused.",
        );
        let _ = writeln!(
            o,
            "upgraded_evictions_refused_total {}",
            self.evictions_refused
        );
        histograms(
            &mut o,
            "upgraded_drain_duration_seconds",
            "How long successful drains took.",
            "",
            &BTreeMap::from([(String::new(), self.drain_seconds.clone())]),
        );
        family(
            &mut o,
            "upgraded_checks_total",
            "counter",
            "Check verdicts recorded, by check and result (passed, failed, inconclusive).",
        );
        for ((check, result), n) in &self.checks {
            let _ = writeln!(
                o,
                "upgraded_checks_total{{check=\"{}\",result=\"{result}\"}} {n}",
                esc(check)
            );
        }
        histograms(
            &mut o,
            "upgraded_check_duration_seconds",
            "How long check attempts took, by check.",
            "check",
            &self.check_seconds,
        );
        family(
            &mut o,
            "upgraded_log_records_total",
            "counter",
            "Records in the event log since the daemon started reading it.",
        );
        let _ = writeln!(o, "upgraded_log_records_total {}", self.records);
        family(
            &mut o,
            "upgraded_last_progress_timestamp_seconds",
            "gauge",
            "When the newest record was written (Unix seconds).",
        );
        let _ = writeln!(
            o,
            "upgraded_last_progress_timestamp_seconds {}",
            self.last_progress.map_or(0.0, |t| t.0 as f64 / 1000.0)
        );
        process.render(&mut o);
        o
    }
}

/// A consumer family: its name, type, help and the value it shows.
type ConsumerFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ConsumerStats) -> u64,
);

/// What only the running process measures: how long appends take, how big the log is, and
/// how far each consumer of the log (NATS, traces, each notification sink) is behind.
#[derive(Debug, Clone, Default)]
pub struct ProcessStats {
    /// Use [`Histogram::with_bounds`]`(`[`APPEND_BUCKETS`]`)`.
    pub append_seconds: Histogram,
    pub log_bytes: Option<u64>,
    /// By consumer: `nats`, `traces`, `notify-<sink>` (sinks are configured, so bounded).
    pub consumers: BTreeMap<String, ConsumerStats>,
    /// `upgraded --ha`: this instance's name and whether it leads (acts) now.
    pub leader: Option<(String, bool)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Records in the log the consumer has not delivered yet.
    pub lag_records: u64,
    /// Delivery attempts that failed (each retry counts).
    pub failures: u64,
    /// Records (or spans, messages) delivered.
    pub delivered: u64,
}

impl ProcessStats {
    fn render(&self, o: &mut String) {
        histograms(
            o,
            "upgraded_log_append_duration_seconds",
            "How long appends to the event log took, until durable (the engine waits for it).",
            "",
            &BTreeMap::from([(String::new(), self.append_seconds.clone())]),
        );
        if let Some(b) = self.log_bytes {
            family(
                o,
                "upgraded_log_size_bytes",
                "gauge",
                "The event log's size on disk.",
            );
            let _ = writeln!(o, "upgraded_log_size_bytes {b}");
        }
        let rows: [ConsumerFamily; 3] = [
            (
                "upgraded_consumer_lag_records",
                "gauge",
                "Records of the log a consumer (nats, traces, notify-<sink>) has not delivered yet.",
                |c| c.lag_records,
            ),
            (
                "upgraded_consumer_failures_total",
                "counter",
                "Failed deliveries of a consumer (each retry counts).",
                |c| c.failures,
            ),
            (
                "upgraded_consumer_delivered_total",
                "counter",
                "Items a consumer delivered (messages, spans, notifications).",
                |c| c.delivered,
            ),
        ];
        for (name, kind, help, get) in rows {
            family(o, name, kind, help);
            for (consumer, c) in &self.consumers {
                let _ = writeln!(o, "{name}{{consumer=\"{}\"}} {}", esc(consumer), get(c));
            }
        }
        if let Some((instance, leads)) = &self.leader {
            family(
                o,
                "upgraded_leader",
                "gauge",
                "1 while this instance of upgraded --ha leads (holds the lease and may act), else 0.",
            );
            let _ = writeln!(
                o,
                "upgraded_leader{{instance=\"{}\"}} {}",
                esc(instance),
                u8::from(*leads)
            );
        }
    }
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// One histogram family; `label` names each series' label (none when empty).
fn histograms(
    o: &mut String,
    name: &str,
    help: &str,
    label: &str,
    series: &BTreeMap<String, Histogram>,
) {
    family(o, name, "histogram", help);
    for (value, h) in series {
        let own = if label.is_empty() {
            String::new()
        } else {
            format!("{label}=\"{}\",", esc(value))
        };
        let bare = own.trim_end_matches(',');
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        for (i, le) in h.bounds().iter().enumerate() {
            let n = h.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(o, "{name}_bucket{{{own}le=\"{le}\"}} {n}");
        }
        let _ = writeln!(o, "{name}_bucket{{{own}le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(o, "{name}_sum{} {}", braces(bare), h.sum);
        let _ = writeln!(o, "{name}_count{} {}", braces(bare), h.count);
    }
}

/// A label value escaped as the text format wants (backslash, quote, newline).
fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Facts;
    use crate::plan::{Plan, Step};
    use crate::{Entry, Json, Policy, Version};

    fn rec(seq: u64, at: i64, event: Event) -> Record {
        Record {
            run: RunId::nil(),
            seq,
            at: Timestamp(at),
            epoch: 0,
            event,
        }
    }

    #[test]
    fn a_run_folds_into_bounded_series() {
        let mut m = Metrics::default();
        let node = Entry::new("worker-07");
        let drain = Step::Drain;
        for r in [
            rec(
                0,
                0,
                Event::RunPlanned {
                    target: Version::new(1, 35, 3),
                    plan: Json(Plan::default()),
                    policy: Json(Policy::default()),
                    by: crate::Actor::daemon(),
                },
            ),
            rec(
                1,
                0,
                Event::RunStarted {
                    by: crate::Actor::daemon(),
                },
            ),
            rec(
                2,
                1_000,
                Event::StepStarted {
                    node: node.clone(),
                    step: drain.clone(),
                    attempt: 1,
                },
            ),
            rec(
                3,
                41_000,
                Event::StepSucceeded {
                    node: node.clone(),
                    step: drain.clone(),
                    attempt: 1,
                    facts: Facts::new(),
                },
            ),
            rec(4, 42_000, Event::RunCompleted),
        ] {
            m.apply(&r);
        }
        let mut process = ProcessStats {
            append_seconds: Histogram::with_bounds(APPEND_BUCKETS),
            log_bytes: Some(4096),
            leader: Some(("admin-\"2".into(), true)),
            ..ProcessStats::default()
        };
        process.append_seconds.observe(0.0003);
        process.consumers.insert(
            "traces".into(),
            ConsumerStats {
                lag_records: 3,
                failures: 2,
                delivered: 7,
            },
        );
        let text = m.render(
            "0.1.0",
            &BTreeMap::from([("done".to_string(), 1)]),
            &process,
        );
        assert!(text.contains("upgraded_log_append_duration_seconds_bucket{le=\"0.00025\"} 0\n"));
        assert!(text.contains("upgraded_log_append_duration_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("upgraded_log_size_bytes 4096\n"));
        assert!(
            text.contains("upgraded_leader{instance=\"admin-\\\"2\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("upgraded_consumer_lag_records{consumer=\"traces\"} 3\n"));
        assert!(text.contains("upgraded_consumer_failures_total{consumer=\"traces\"} 2\n"));
        assert!(text.contains("upgraded_runs{kind=\"upgrade\",state=\"completed\"} 1\n"));
        assert!(text.contains("upgraded_steps_total{step=\"drain\",result=\"succeeded\"} 1\n"));
        assert!(
            text.contains("upgraded_step_duration_seconds_bucket{step=\"drain\",le=\"30\"} 0\n")
        );
        assert!(
            text.contains("upgraded_step_duration_seconds_bucket{step=\"drain\",le=\"60\"} 1\n")
        );
        assert!(text.contains("upgraded_step_duration_seconds_sum{step=\"drain\"} 40\n"));
        assert!(text.contains("upgraded_drain_duration_seconds_count 1\n"));
        assert!(text.contains("upgraded_last_progress_timestamp_seconds 42\n"));
        assert!(!text.contains("worker-07"), "no node name in a label");
        assert_eq!(m.records(), 5);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
