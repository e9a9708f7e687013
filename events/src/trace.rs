//! Traces as a fold of the log: every record goes into [`TraceFold::apply`], which hands back
//! the spans that record finished. One span per run (`upgrade <cluster>` or `rollback
//! <cluster>`, kind server), one per node pass under it, and one per step attempt and per
//! check under the pass, each with its start and end as the log recorded them.
//!
//! Ids are derived, never random: the trace id is the run id, and a span id is a hash of the
//! run id and what the span is (the entry; the step and attempt; the check, subject and
//! attempt). So a daemon that restarts, or `upgradectl export --otlp` long after, sends the
//! very same spans, and a collector sees one span per attempt however often it is sent.
//!
//! A span is finished by its terminal record: a step attempt by its verdict (or, when the
//! daemon stopped in the middle of it, by the next attempt of the same step); a node pass by
//! the success of its last step; the run by `RunCompleted` or `RunAborted`, which also close
//! whatever is still open. A halted run stays open: it may be resumed.
//!
//! Attributes follow the OpenTelemetry CI/CD conventions (`cicd.pipeline.*`), with
//! `k8s.cluster.name`, `k8s.node.name` and the versions. No node name is in a span name.

use std::collections::BTreeMap;

use crate::event::{Event, Record, RunId, Step};
use crate::plan::{Plan, final_version};
use crate::time::Timestamp;
use crate::version::Version;

/// How a span relates to its caller (OTLP's span kinds that we use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// The run: the daemon serving an operator's request.
    Server,
    Internal,
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

pub type Attributes = Vec<(&'static str, Value)>;

/// Something that happened during a span (a refused eviction, a park, a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanEvent {
    pub name: &'static str,
    pub at: Timestamp,
    pub attributes: Attributes,
}

/// An event that says why (a halt, a park, a rollback).
fn reason_event(name: &'static str, at: Timestamp, reason: &str) -> SpanEvent {
    SpanEvent {
        name,
        at,
        attributes: vec![("upgraded.reason", reason.into())],
    }
}

/// A finished span, ready for any exporter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub name: String,
    pub kind: SpanKind,
    pub start: Timestamp,
    pub end: Timestamp,
    /// The status: `None` is OK, `Some(message)` an error.
    pub error: Option<String>,
    pub attributes: Attributes,
    pub events: Vec<SpanEvent>,
    /// Other spans this one relates to: (trace id, span id).
    pub links: Vec<([u8; 16], [u8; 8])>,
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&Value> {
        self.attributes
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v)
    }
}

/// The trace id of a run: its id's 128 bits (a nil id, used only in samples, hashed).
pub fn trace_id(run: RunId) -> [u8; 16] {
    let b = *run.as_bytes();
    if b != [0; 16] {
        return b;
    }
    let h = fnv(&b, &["trace"]).to_be_bytes();
    let mut out = [1u8; 16];
    out[..8].copy_from_slice(&h);
    out
}

pub fn run_span_id(run: RunId) -> [u8; 8] {
    span_id(run, &["run"])
}

pub fn node_span_id(run: RunId, entry: &str) -> [u8; 8] {
    span_id(run, &["node", entry])
}

/// `step` is the step as displayed (`upgrade-packages v1.35.3`), which tells hops apart.
pub fn step_span_id(run: RunId, entry: &str, step: &str, attempt: u32) -> [u8; 8] {
    span_id(run, &["step", entry, step, &attempt.to_string()])
}

/// A check runs again at every boundary with the same name, subject and attempt: its span
/// is named by the seq of the record that started it.
pub fn check_span_id(run: RunId, started_seq: u64) -> [u8; 8] {
    span_id(run, &["check", &started_seq.to_string()])
}

fn span_id(run: RunId, parts: &[&str]) -> [u8; 8] {
    let h = fnv(run.as_bytes(), parts);
    if h == 0 { 1u64 } else { h }.to_be_bytes()
}

/// FNV-1a (64 bits) over the run id and each part, length-prefixed so parts cannot run
/// into each other. Stable across versions and platforms: ids must not change.
fn fnv(run: &[u8], parts: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    eat(run);
    for p in parts {
        eat(&(p.len() as u64).to_le_bytes());
        eat(p.as_bytes());
    }
    h
}

/// The fragment that names a step attempt in the HTML timeline (`upgradectl timeline RUN
/// --html F`): its bar's `id`. Letters, digits and `-` as they are, anything else `_XX`.
pub fn step_anchor(entry: &str, step: &str, attempt: u32) -> String {
    let mut out = String::from("step-");
    for part in [entry, step] {
        for b in part.bytes() {
            if b.is_ascii_alphanumeric() || b == b'-' {
                out.push(b as char);
            } else {
                out.push_str(&format!("_{b:02X}"));
            }
        }
        out.push('.');
    }
    out.push_str(&attempt.to_string());
    out
}

/// The CI/CD conventions' results.
pub mod result {
    pub const SUCCESS: &str = "success";
    pub const FAILURE: &str = "failure";
    pub const ERROR: &str = "error";
    pub const CANCELLATION: &str = "cancellation";
}

#[derive(Debug, Clone)]
struct EntryInfo {
    host: String,
    role: &'static str,
    batch: String,
    from: Version,
    to: Option<Version>,
    /// The last step, as displayed: its success ends the pass.
    last: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Pass {
    start: Option<Timestamp>,
    ended: bool,
    events: Vec<SpanEvent>,
    parked_at: Option<Timestamp>,
    parked_ms: i64,
    rolling_back: Option<String>,
}

#[derive(Debug, Clone)]
struct Attempt {
    kind: &'static str,
    start: Timestamp,
    /// The daemon stopped while the attempt ran: the last record before the restart.
    cut_at: Option<Timestamp>,
}

#[derive(Debug, Clone, Default)]
struct RunTrace {
    rollback_of: Option<RunId>,
    rollback: bool,
    target: Option<Version>,
    from: Option<Version>,
    planned_at: Option<Timestamp>,
    started_at: Option<Timestamp>,
    last_at: Option<Timestamp>,
    entries: BTreeMap<String, EntryInfo>,
    passes: BTreeMap<String, Pass>,
    /// (entry, step as displayed, attempt) → the open attempt.
    attempts: BTreeMap<(String, String, u32), Attempt>,
    /// (check, subject, attempt) → (start, boundary, the start's seq).
    checks: BTreeMap<(String, String, u32), (Timestamp, String, u64)>,
    events: Vec<SpanEvent>,
    rollback_requested: Option<String>,
    abort: Option<String>,
    done: bool,
}

/// Where the spans are going: the cluster's name and where the HTML timelines live.
#[derive(Debug, Clone)]
pub struct TraceContext {
    pub cluster: String,
    /// The HTML timeline of a run, with `{run}` for its id
    /// (`file:///var/lib/upgraded/timelines/{run}.html`); a step's link adds its anchor.
    pub timeline_url: String,
}

/// The fold. Feed it every record of a run from the first, in order.
#[derive(Debug, Clone)]
pub struct TraceFold {
    ctx: TraceContext,
    runs: BTreeMap<RunId, RunTrace>,
    gate: crate::lease::EpochGate,
}

impl TraceFold {
    pub fn new(ctx: TraceContext) -> TraceFold {
        TraceFold {
            ctx,
            runs: BTreeMap::new(),
            gate: crate::lease::EpochGate::default(),
        }
    }

    /// Every span of `records` that is finished, in the order their terminal records came.
    pub fn spans(ctx: TraceContext, records: &[Record]) -> Vec<Span> {
        let mut f = TraceFold::new(ctx);
        records.iter().flat_map(|r| f.apply(r)).collect()
    }

    /// Folds one record in; returns the spans it finished.
    pub fn apply(&mut self, r: &Record) -> Vec<Span> {
        if !self.gate.admits(r) {
            return Vec::new();
        }
        let ctx = &self.ctx;
        let t = self.runs.entry(r.run).or_default();
        let mut out = Vec::new();
        if t.done {
            return out;
        }
        let run = r.run;
        let before = t.last_at;
        t.last_at = Some(r.at);
        match &r.event {
            Event::RunPlanned { target, plan, .. } => t.planned(*target, &plan.0, r.at),
            Event::RunStarted { .. } => {
                t.started_at.get_or_insert(r.at);
            }
            Event::RunPaused { reason, by } => t.events.push(SpanEvent {
                name: "paused",
                at: r.at,
                attributes: vec![
                    ("upgraded.reason", reason.as_str().into()),
                    ("upgraded.by", by.name.as_str().into()),
                ],
            }),
            Event::RunResumed { by } => t.events.push(SpanEvent {
                name: "resumed",
                at: r.at,
                attributes: vec![("upgraded.by", by.name.as_str().into())],
            }),
            Event::RunHalted { reason } => t.events.push(reason_event("halted", r.at, reason)),
            Event::RunRecovered { pid } => {
                let cut = before.unwrap_or(r.at);
                for a in t.attempts.values_mut() {
                    a.cut_at.get_or_insert(cut);
                }
                t.events.push(SpanEvent {
                    name: "daemon restarted",
                    at: r.at,
                    attributes: vec![
                        ("process.pid", i64::from(*pid).into()),
                        ("upgraded.down_since", cut.0.into()),
                    ],
                });
            }
            Event::AbortRequested { by, reason } => {
                t.abort = Some(reason.clone());
                t.events.push(SpanEvent {
                    name: "abort requested",
                    at: r.at,
                    attributes: vec![
                        ("upgraded.reason", reason.as_str().into()),
                        ("upgraded.by", by.name.as_str().into()),
                    ],
                });
            }
            Event::RollbackRequested { reason } => {
                t.rollback_requested = Some(reason.clone());
                t.events
                    .push(reason_event("rollback requested", r.at, reason));
            }
            Event::StepStarted {
                node,
                step,
                attempt,
            } => {
                let entry = node.as_str().to_string();
                let shown = step.to_string();
                // An earlier attempt the daemon's stop cut short ends where the log lost it.
                let cut: Vec<_> = t
                    .attempts
                    .range(
                        (entry.clone(), shown.clone(), 0)..(entry.clone(), shown.clone(), *attempt),
                    )
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in cut {
                    if let Some(a) = t.attempts.remove(&k) {
                        out.push(t.interrupted(ctx, run, &k, &a, r.at));
                    }
                }
                let pass = t.passes.entry(entry.clone()).or_default();
                pass.start.get_or_insert(r.at);
                if let Some(p0) = pass.parked_at.take() {
                    pass.parked_ms += r.at.0 - p0.0;
                    pass.events.push(SpanEvent {
                        name: "unparked",
                        at: r.at,
                        attributes: vec![(
                            "upgraded.parked_seconds",
                            ((r.at.0 - p0.0) / 1000).into(),
                        )],
                    });
                }
                t.attempts.insert(
                    (entry, shown, *attempt),
                    Attempt {
                        kind: step.name(),
                        start: r.at,
                        cut_at: None,
                    },
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
                let (res, err) = match &r.event {
                    Event::StepSucceeded { .. } | Event::StepProbed { done: true, .. } => {
                        (result::SUCCESS, None)
                    }
                    Event::StepFailed { error, .. } => {
                        (result::FAILURE, Some(("step_failed", error.clone())))
                    }
                    _ => (
                        result::ERROR,
                        Some((
                            "not_done",
                            "the daemon stopped during the step and the probe found it not done"
                                .to_string(),
                        )),
                    ),
                };
                let key = (node.as_str().to_string(), step.to_string(), *attempt);
                // An answer lost: the attempt stays open for its probe (or is cut short by
                // the next attempt), as after a daemon stop.
                if let Event::StepFailed { facts, .. } = &r.event
                    && crate::fault::FailureKind::of(facts) == crate::fault::FailureKind::InDoubt
                    && let Some(a) = t.attempts.get_mut(&key)
                {
                    a.cut_at = Some(r.at);
                    return out;
                }
                let start = t.attempts.remove(&key).map_or(r.at, |a| a.start);
                out.push(t.step_span(ctx, run, &key, step.name(), start, r.at, res, err));
                if res == result::SUCCESS
                    && t.entries.get(&key.0).and_then(|e| e.last.as_deref()) == Some(key.1.as_str())
                {
                    out.extend(t.end_pass(ctx, run, &key.0, r.at));
                }
            }
            Event::EvictionBlocked {
                node,
                pod,
                pdb,
                disruptions_allowed,
            } => t.pass_event(
                node.as_str(),
                SpanEvent {
                    name: "eviction refused",
                    at: r.at,
                    attributes: vec![
                        ("k8s.pod.name", pod.as_str().into()),
                        ("upgraded.pdb", pdb.as_str().into()),
                        (
                            "upgraded.disruptions_allowed",
                            (*disruptions_allowed).into(),
                        ),
                    ],
                },
            ),
            Event::NodeParked { node, reason, .. } => {
                let pass = t.passes.entry(node.as_str().to_string()).or_default();
                pass.parked_at.get_or_insert(r.at);
                pass.events.push(reason_event("parked", r.at, reason));
            }
            Event::WorkloadScaled {
                node,
                kind,
                namespace,
                name,
                from,
                to,
                restore,
            } => t.pass_event(
                node.as_str(),
                SpanEvent {
                    name: if *restore {
                        "workload restored"
                    } else {
                        "workload scaled up"
                    },
                    at: r.at,
                    attributes: vec![
                        (
                            "upgraded.workload",
                            format!("{kind} {namespace}/{name}").into(),
                        ),
                        ("upgraded.replicas.from", i64::from(*from).into()),
                        ("upgraded.replicas.to", i64::from(*to).into()),
                    ],
                },
            ),
            Event::NodeRollingBack {
                node,
                reason,
                steps,
            } => {
                let entry = node.as_str().to_string();
                if let Some(e) = t.entries.get_mut(&entry) {
                    e.last = steps.last().map(Step::to_string);
                }
                let pass = t.passes.entry(entry).or_default();
                pass.rolling_back = Some(reason.clone());
                pass.events.push(reason_event("rolling back", r.at, reason));
            }
            Event::CheckStarted {
                check,
                subject,
                boundary,
                attempt,
            } => {
                t.checks.insert(
                    (check.clone(), subject.clone(), *attempt),
                    (r.at, boundary.name().to_string(), r.seq),
                );
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
                let (res, err) = match &r.event {
                    Event::CheckPassed { .. } => (result::SUCCESS, None),
                    Event::CheckFailed { detail, .. } => {
                        (result::FAILURE, Some(("check_failed", detail.clone())))
                    }
                    Event::CheckInconclusive { why, .. } => {
                        (result::ERROR, Some(("inconclusive", why.clone())))
                    }
                    _ => (result::ERROR, None),
                };
                let key = (check.clone(), subject.clone(), *attempt);
                let (start, boundary, seq) = t
                    .checks
                    .remove(&key)
                    .unwrap_or_else(|| (r.at, String::new(), r.seq));
                out.push(t.check_span(ctx, run, &key, (&boundary, seq), start, r.at, res, err));
            }
            Event::RunCompleted | Event::RunAborted => {
                out.extend(t.finish(ctx, run, r.at, matches!(r.event, Event::RunCompleted)));
            }
            Event::ClusterObserved { .. }
            | Event::DriftObserved { .. }
            | Event::LeaderChanged { .. } => {}
        }
        out
    }
}

/// A task's span (a step attempt or a check): internal, `(its id, its parent's)`, the
/// status and `error.type` from `err`.
fn task_span(
    run: RunId,
    (span_id, parent): ([u8; 8], [u8; 8]),
    name: String,
    (start, end): (Timestamp, Timestamp),
    mut attributes: Attributes,
    err: Option<(&'static str, String)>,
) -> Span {
    if let Some((ty, _)) = &err {
        attributes.push(("error.type", (*ty).into()));
    }
    Span {
        trace_id: trace_id(run),
        span_id,
        parent: Some(parent),
        name,
        kind: SpanKind::Internal,
        start,
        end: end.max(start),
        error: err.map(|(_, m)| m),
        attributes,
        events: Vec::new(),
        links: Vec::new(),
    }
}

fn link(ctx: &TraceContext, run: RunId, anchor: Option<&str>) -> String {
    let base = ctx.timeline_url.replace("{run}", &run.to_string());
    match anchor {
        Some(a) => format!("{base}#{a}"),
        None => base,
    }
}

impl RunTrace {
    fn planned(&mut self, target: Version, plan: &Plan, at: Timestamp) {
        self.planned_at.get_or_insert(at);
        self.target = Some(plan.target.unwrap_or(target));
        self.rollback = plan.undoes.is_some();
        self.rollback_of = plan.undoes;
        for b in &plan.batches {
            for n in &b.nodes {
                self.from = Some(self.from.map_or(n.from, |f| f.min(n.from)));
                self.entries.insert(
                    n.name.as_str().to_string(),
                    EntryInfo {
                        host: n.host().as_str().to_string(),
                        role: match n.role {
                            crate::plan::Role::ControlPlane => "control-plane",
                            crate::plan::Role::Worker => "worker",
                        },
                        batch: b.label.clone(),
                        from: n.from,
                        to: final_version(&n.steps),
                        last: n.steps.last().map(Step::to_string),
                    },
                );
            }
        }
    }

    fn name(&self, ctx: &TraceContext) -> String {
        let verb = if self.rollback { "rollback" } else { "upgrade" };
        format!("{verb} {}", ctx.cluster)
    }

    fn host(&self, entry: &str) -> String {
        self.entries
            .get(entry)
            .map_or_else(|| entry.to_string(), |e| e.host.clone())
    }

    fn pass_event(&mut self, entry: &str, e: SpanEvent) {
        self.passes
            .entry(entry.to_string())
            .or_default()
            .events
            .push(e);
    }

    fn common(&self, ctx: &TraceContext, run: RunId) -> Attributes {
        vec![
            ("k8s.cluster.name", ctx.cluster.as_str().into()),
            ("cicd.pipeline.name", self.name(ctx).into()),
            ("cicd.pipeline.run.id", run.to_string().into()),
        ]
    }

    #[allow(clippy::too_many_arguments)]
    fn step_span(
        &self,
        ctx: &TraceContext,
        run: RunId,
        (entry, shown, attempt): &(String, String, u32),
        kind: &'static str,
        start: Timestamp,
        end: Timestamp,
        res: &'static str,
        err: Option<(&'static str, String)>,
    ) -> Span {
        let anchor = step_anchor(entry, shown, *attempt);
        let mut attributes = self.common(ctx, run);
        attributes.extend([
            ("cicd.pipeline.task.name", shown.as_str().into()),
            (
                "cicd.pipeline.task.run.id",
                format!("{run}/{anchor}").into(),
            ),
            ("cicd.pipeline.task.run.result", res.into()),
            (
                "cicd.pipeline.task.run.url.full",
                link(ctx, run, Some(&anchor)).into(),
            ),
            ("k8s.node.name", self.host(entry).into()),
            ("upgraded.entry", entry.as_str().into()),
            ("upgraded.step.kind", kind.into()),
            ("upgraded.step.attempt", i64::from(*attempt).into()),
        ]);
        task_span(
            run,
            (
                step_span_id(run, entry, shown, *attempt),
                node_span_id(run, entry),
            ),
            kind.to_string(),
            (start, end),
            attributes,
            err,
        )
    }

    fn interrupted(
        &self,
        ctx: &TraceContext,
        run: RunId,
        key: &(String, String, u32),
        a: &Attempt,
        now: Timestamp,
    ) -> Span {
        self.step_span(
            ctx,
            run,
            key,
            a.kind,
            a.start,
            a.cut_at.unwrap_or(now),
            result::ERROR,
            Some((
                "interrupted",
                "cut short: the daemon stopped during the step".to_string(),
            )),
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn check_span(
        &self,
        ctx: &TraceContext,
        run: RunId,
        (check, subject, attempt): &(String, String, u32),
        (boundary, seq): (&str, u64),
        start: Timestamp,
        end: Timestamp,
        res: &'static str,
        err: Option<(&'static str, String)>,
    ) -> Span {
        // Under the pass of the node it checked, when that node has one; else the run.
        let entry = self
            .entries
            .iter()
            .filter(|(_, e)| e.host == *subject)
            .map(|(name, _)| name)
            .find(|name| self.passes.get(*name).is_some_and(|p| p.start.is_some()));
        let mut attributes = self.common(ctx, run);
        attributes.extend([
            ("cicd.pipeline.task.name", format!("check {check}").into()),
            (
                "cicd.pipeline.task.run.id",
                format!("{run}/check-{seq}").into(),
            ),
            ("cicd.pipeline.task.run.result", res.into()),
            (
                "cicd.pipeline.task.run.url.full",
                link(ctx, run, None).into(),
            ),
            ("upgraded.check.subject", subject.as_str().into()),
            ("upgraded.check.boundary", boundary.into()),
            ("upgraded.check.attempt", i64::from(*attempt).into()),
        ]);
        if entry.is_some() {
            attributes.push(("k8s.node.name", subject.as_str().into()));
        }
        let parent = entry.map_or_else(|| run_span_id(run), |e| node_span_id(run, e));
        task_span(
            run,
            (check_span_id(run, seq), parent),
            format!("check {check}"),
            (start, end),
            attributes,
            err,
        )
    }

    fn end_pass(
        &mut self,
        ctx: &TraceContext,
        run: RunId,
        entry: &str,
        at: Timestamp,
    ) -> Option<Span> {
        let attrs_base = self.common(ctx, run);
        let info = self.entries.get(entry).cloned();
        let pass = self.passes.get_mut(entry)?;
        if pass.ended {
            return None;
        }
        let start = pass.start?;
        pass.ended = true;
        let mut parked_ms = pass.parked_ms;
        if let Some(p0) = pass.parked_at.take() {
            parked_ms += at.0 - p0.0;
        }
        let (res, err) = match &pass.rolling_back {
            Some(reason) => (result::FAILURE, Some(("rolled_back", reason.clone()))),
            None => (result::SUCCESS, None),
        };
        let mut attributes = attrs_base;
        attributes.extend([
            (
                "k8s.node.name",
                info.as_ref()
                    .map_or(entry.to_string(), |i| i.host.clone())
                    .into(),
            ),
            ("upgraded.entry", entry.into()),
            ("upgraded.node.result", res.into()),
            ("upgraded.parked_seconds", (parked_ms / 1000).into()),
        ]);
        if let Some(i) = &info {
            attributes.extend([
                ("upgraded.node.role", i.role.into()),
                ("upgraded.batch", i.batch.as_str().into()),
                ("upgraded.version.from", i.from.to_string().into()),
            ]);
            if let Some(to) = i.to {
                attributes.push(("upgraded.version.to", to.to_string().into()));
            }
        }
        if let Some((ty, _)) = &err {
            attributes.push(("error.type", (*ty).into()));
        }
        Some(Span {
            trace_id: trace_id(run),
            span_id: node_span_id(run, entry),
            parent: Some(run_span_id(run)),
            name: "node pass".to_string(),
            kind: SpanKind::Internal,
            start,
            end: at.max(start),
            error: err.map(|(_, m)| m),
            attributes,
            events: std::mem::take(&mut pass.events),
            links: Vec::new(),
        })
    }

    fn finish(
        &mut self,
        ctx: &TraceContext,
        run: RunId,
        at: Timestamp,
        completed: bool,
    ) -> Vec<Span> {
        self.done = true;
        let mut out = Vec::new();
        for (k, a) in std::mem::take(&mut self.attempts) {
            out.push(self.interrupted(ctx, run, &k, &a, at));
        }
        for ((check, subject, attempt), (start, boundary, seq)) in std::mem::take(&mut self.checks)
        {
            out.push(self.check_span(
                ctx,
                run,
                &(check, subject, attempt),
                (&boundary, seq),
                start,
                at,
                result::ERROR,
                Some(("interrupted", "no verdict before the run ended".to_string())),
            ));
        }
        // Passes the run's end closes: a parked node, or one an abort cut short.
        let open: Vec<String> = self
            .passes
            .iter()
            .filter(|(_, p)| !p.ended && p.start.is_some())
            .map(|(e, _)| e.clone())
            .collect();
        for e in open {
            let still_parked = self.passes.get(&e).is_some_and(|p| p.parked_at.is_some());
            if let Some(mut s) = self.end_pass(ctx, run, &e, at) {
                if s.error.is_none() && (still_parked || !completed) {
                    let (ty, msg) = if still_parked {
                        ("parked", "the node was still parked when the run ended")
                    } else {
                        ("cancelled", "the run ended before the node's last step")
                    };
                    s.error = Some(msg.to_string());
                    for (k, v) in &mut s.attributes {
                        if *k == "upgraded.node.result" {
                            *v = result::FAILURE.into();
                        }
                    }
                    s.attributes.push(("error.type", ty.into()));
                }
                out.push(s);
            }
        }
        let (res, err) = if completed {
            (result::SUCCESS, None)
        } else if let Some(reason) = &self.rollback_requested {
            (
                result::FAILURE,
                Some(("rollback_requested", reason.clone())),
            )
        } else {
            (
                result::CANCELLATION,
                Some((
                    "aborted",
                    self.abort.clone().unwrap_or_else(|| "aborted".to_string()),
                )),
            )
        };
        let mut attributes = self.common(ctx, run);
        attributes.extend([
            ("cicd.pipeline.result", res.into()),
            ("cicd.pipeline.run.url.full", link(ctx, run, None).into()),
            (
                "upgraded.run.kind",
                if self.rollback { "rollback" } else { "upgrade" }.into(),
            ),
            ("upgraded.nodes", (self.passes.len() as i64).into()),
        ]);
        if let Some(v) = self.from {
            attributes.push(("upgraded.version.from", v.to_string().into()));
        }
        if let Some(v) = self.target {
            attributes.push(("upgraded.version.target", v.to_string().into()));
        }
        if let Some((ty, _)) = &err {
            attributes.push(("error.type", (*ty).into()));
        }
        let start = self.started_at.or(self.planned_at).unwrap_or(at);
        out.push(Span {
            trace_id: trace_id(run),
            span_id: run_span_id(run),
            parent: None,
            name: self.name(ctx),
            kind: SpanKind::Server,
            start,
            end: at.max(start),
            error: err.map(|(_, m)| m),
            attributes,
            events: std::mem::take(&mut self.events),
            links: self
                .rollback_of
                .map(|u| vec![(trace_id(u), run_span_id(u))])
                .unwrap_or_default(),
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Boundary;
    use crate::event::Facts;
    use crate::plan::{Batch, NodePlan, Role};
    use crate::{Actor, Entry, Host, Json, Policy};

    const RUN: u128 = 0x0190_0000_0000_7000_8000_0000_0000_0001;

    fn ctx() -> TraceContext {
        TraceContext {
            cluster: "prod".into(),
            timeline_url: "https://ops.example/timelines/{run}.html".into(),
        }
    }

    fn plan() -> Plan {
        let v34 = Version::new(1, 34, 6);
        let node = |name: &str, host: &str| NodePlan {
            name: Entry::new(name),
            host: Some(Host::new(host)),
            role: Role::Worker,
            from: Version::new(1, 33, 9),
            steps: vec![
                Step::Drain,
                Step::UpgradePackages { version: v34 },
                Step::Uncordon,
            ],
            estimate_secs: 0,
        };
        Plan {
            target: Some(v34),
            batches: vec![Batch {
                label: "canary r640".into(),
                phase: "workers → v1.34.6".into(),
                nodes: vec![node("w-1", "w-1"), node("w-2", "w-2")],
            }],
            undoes: None,
        }
    }

    struct Log(Vec<Record>);

    impl Log {
        fn push(&mut self, at: i64, event: Event) {
            let seq = self.0.len() as u64;
            self.0.push(Record {
                run: RunId::from_u128(RUN),
                seq,
                at: Timestamp(at),
                epoch: 0,
                event,
            });
        }
        fn step(&mut self, at: i64, node: &str, step: &Step, attempt: u32, ok: Option<bool>) {
            let node = Entry::new(node);
            let step = step.clone();
            self.push(
                at,
                match ok {
                    None => Event::StepStarted {
                        node,
                        step,
                        attempt,
                    },
                    Some(true) => Event::StepSucceeded {
                        node,
                        step,
                        attempt,
                        facts: Facts::new(),
                    },
                    Some(false) => Event::StepFailed {
                        node,
                        step,
                        attempt,
                        error: "apt-get: lock held".into(),
                        facts: Facts::new(),
                    },
                },
            );
        }
    }

    /// w-1: drain, packages failing once then passing, a refused eviction, a check;
    /// w-2: parked during its drain, then the daemon is killed inside its packages step.
    fn run_log() -> Log {
        let v34 = Version::new(1, 34, 6);
        let pkgs = Step::UpgradePackages { version: v34 };
        let mut l = Log(Vec::new());
        l.push(
            0,
            Event::RunPlanned {
                target: v34,
                plan: Json(plan()),
                policy: Json(Policy::default()),
                by: Actor::daemon(),
            },
        );
        l.push(
            1_000,
            Event::RunStarted {
                by: Actor::daemon(),
            },
        );
        l.step(2_000, "w-1", &Step::Drain, 1, None);
        l.push(
            3_000,
            Event::EvictionBlocked {
                node: Entry::new("w-1"),
                pod: "db-0".into(),
                pdb: "db".into(),
                disruptions_allowed: 0,
            },
        );
        l.step(9_000, "w-1", &Step::Drain, 1, Some(true));
        l.step(10_000, "w-1", &pkgs, 1, None);
        l.step(11_000, "w-1", &pkgs, 1, Some(false));
        l.step(12_000, "w-1", &pkgs, 2, None);
        l.step(20_000, "w-1", &pkgs, 2, Some(true));
        l.push(
            20_500,
            Event::CheckStarted {
                check: "dns".into(),
                subject: "w-1".into(),
                boundary: Boundary::AfterBatch,
                attempt: 1,
            },
        );
        l.push(
            21_000,
            Event::CheckPassed {
                check: "dns".into(),
                subject: "w-1".into(),
                attempt: 1,
                facts: Facts::new(),
            },
        );
        l.step(22_000, "w-1", &Step::Uncordon, 1, None);
        l.step(23_000, "w-1", &Step::Uncordon, 1, Some(true));
        l.step(24_000, "w-2", &Step::Drain, 1, None);
        l.step(29_000, "w-2", &Step::Drain, 1, Some(false));
        l.push(
            30_000,
            Event::NodeParked {
                node: Entry::new("w-2"),
                reason: "drain blocked by db".into(),
                uncordon: false,
            },
        );
        l.step(90_000, "w-2", &Step::Drain, 2, None);
        l.step(95_000, "w-2", &Step::Drain, 2, Some(true));
        l.step(96_000, "w-2", &pkgs, 1, None);
        // kill -9 here; the restart re-runs the packages step as attempt 2.
        l.push(400_000, Event::RunRecovered { pid: 4242 });
        l.step(401_000, "w-2", &pkgs, 2, None);
        l.step(405_000, "w-2", &pkgs, 2, Some(true));
        l.step(406_000, "w-2", &Step::Uncordon, 1, None);
        l.step(407_000, "w-2", &Step::Uncordon, 1, Some(true));
        l.push(408_000, Event::RunCompleted);
        l
    }

    fn str_attr<'a>(s: &'a Span, key: &str) -> &'a str {
        match s.attribute(key) {
            Some(Value::Str(v)) => v,
            other => panic!("{key} on {}: {other:?}", s.name),
        }
    }

    #[test]
    fn a_run_becomes_a_tree_of_spans_with_their_logged_times() {
        let log = run_log();
        let spans = TraceFold::spans(ctx(), &log.0);
        let run = RunId::from_u128(RUN);
        let root = spans.last().expect("the run span comes last");
        assert_eq!(root.name, "upgrade prod");
        assert_eq!(root.kind, SpanKind::Server);
        assert_eq!(root.parent, None);
        assert_eq!(
            (root.start, root.end),
            (Timestamp(1_000), Timestamp(408_000))
        );
        assert_eq!(str_attr(root, "cicd.pipeline.result"), "success");
        assert_eq!(str_attr(root, "cicd.pipeline.run.id"), run.to_string());
        assert_eq!(str_attr(root, "k8s.cluster.name"), "prod");
        assert_eq!(str_attr(root, "upgraded.version.target"), "v1.34.6");
        assert!(root.events.iter().any(|e| e.name == "daemon restarted"));

        let passes: Vec<_> = spans.iter().filter(|s| s.name == "node pass").collect();
        assert_eq!(passes.len(), 2);
        for p in &passes {
            assert_eq!(p.parent, Some(root.span_id));
            assert_eq!(p.trace_id, root.trace_id);
        }
        let w1 = passes
            .iter()
            .find(|p| str_attr(p, "k8s.node.name") == "w-1")
            .expect("w-1");
        assert_eq!((w1.start, w1.end), (Timestamp(2_000), Timestamp(23_000)));
        assert!(w1.events.iter().any(|e| e.name == "eviction refused"));
        let w2 = passes
            .iter()
            .find(|p| str_attr(p, "k8s.node.name") == "w-2")
            .expect("w-2");
        assert_eq!(
            w2.attribute("upgraded.parked_seconds"),
            Some(&Value::Int(60))
        );
        assert!(w2.events.iter().any(|e| e.name == "parked"));

        // Every attempt exactly once, under its pass; the cut one ends at the last record
        // before the restart.
        let steps: Vec<_> = spans
            .iter()
            .filter(|s| s.attribute("upgraded.step.kind").is_some())
            .collect();
        assert_eq!(
            steps.len(),
            9,
            "{:#?}",
            steps.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        let mut ids: Vec<_> = steps.iter().map(|s| s.span_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 9, "ids are distinct");
        let failed = steps
            .iter()
            .find(|s| str_attr(s, "cicd.pipeline.task.run.result") == "failure")
            .expect("the failed attempt");
        assert_eq!(str_attr(failed, "error.type"), "step_failed");
        assert_eq!(failed.error.as_deref(), Some("apt-get: lock held"));
        let cut = steps
            .iter()
            .find(|s| str_attr(s, "cicd.pipeline.task.run.result") == "error")
            .expect("the attempt the kill cut short");
        assert_eq!(str_attr(cut, "error.type"), "interrupted");
        assert_eq!((cut.start, cut.end), (Timestamp(96_000), Timestamp(96_000)));
        assert_eq!(cut.parent, Some(node_span_id(run, "w-2")));
        assert_eq!(
            str_attr(cut, "cicd.pipeline.task.run.url.full"),
            format!(
                "https://ops.example/timelines/{run}.html#{}",
                step_anchor("w-2", "upgrade-packages v1.34.6", 1)
            )
        );

        let check = spans
            .iter()
            .find(|s| s.name == "check dns")
            .expect("the check");
        assert_eq!(check.parent, Some(node_span_id(run, "w-1")));
        assert_eq!(
            (check.start, check.end),
            (Timestamp(20_500), Timestamp(21_000))
        );

        for s in &spans {
            assert!(
                !s.name.contains("w-1") && !s.name.contains("w-2"),
                "{}",
                s.name
            );
            assert!(s.end >= s.start);
        }
    }

    #[test]
    fn spans_are_the_same_whenever_the_log_is_folded() {
        let log = run_log();
        let once = TraceFold::spans(ctx(), &log.0);
        // A daemon that restarts folds what it had exported before without sending it
        // again, then carries on: the same spans, the same ids.
        let mut f = TraceFold::new(ctx());
        let split = 12;
        let before: Vec<_> = log.0[..split].iter().flat_map(|r| f.apply(r)).collect();
        let after: Vec<_> = log.0[split..].iter().flat_map(|r| f.apply(r)).collect();
        assert_eq!([before, after].concat(), once);
        assert_eq!(
            step_span_id(RunId::from_u128(RUN), "w-1", "drain", 1),
            step_span_id(RunId::from_u128(RUN), "w-1", "drain", 1)
        );
        assert_ne!(
            step_span_id(RunId::from_u128(RUN), "w-1", "drain", 1),
            step_span_id(RunId::from_u128(RUN), "w-1", "drain", 2)
        );
        // Parts are length-prefixed: ("ab","c") is not ("a","bc").
        assert_ne!(
            node_span_id(RunId::from_u128(RUN), "ab"),
            span_id(RunId::from_u128(RUN), &["node", "a", "b"])
        );
        assert_ne!(trace_id(RunId::nil()), [0; 16]);
    }

    #[test]
    fn an_abort_closes_what_is_open_and_a_rollback_requested_is_a_failure() {
        let mut log = run_log();
        log.0.truncate(16); // w-2 parked, nothing else finished
        log.push(
            31_000,
            Event::RollbackRequested {
                reason: "crash loops rose".into(),
            },
        );
        log.push(32_000, Event::RunAborted);
        let spans = TraceFold::spans(ctx(), &log.0);
        let root = spans.last().expect("root");
        assert_eq!(str_attr(root, "cicd.pipeline.result"), "failure");
        assert_eq!(str_attr(root, "error.type"), "rollback_requested");
        let w2 = spans
            .iter()
            .find(|s| s.name == "node pass" && str_attr(s, "k8s.node.name") == "w-2")
            .expect("w-2's pass is closed by the run's end");
        assert_eq!(str_attr(w2, "error.type"), "parked");
        // Nothing after the end.
        let mut f = TraceFold::new(ctx());
        for r in &log.0 {
            f.apply(r);
        }
        assert!(f.apply(&log.0[3]).is_empty());
    }

    #[test]
    fn anchors_are_safe_in_a_url_and_distinct() {
        assert_eq!(step_anchor("w-1", "drain", 2), "step-w-1.drain.2");
        assert_eq!(
            step_anchor("cp-1@v1.34", "upgrade-packages v1.34.6", 1),
            "step-cp-1_40v1_2E34.upgrade-packages_20v1_2E34_2E6.1"
        );
        assert_ne!(step_anchor("a.b", "c", 1), step_anchor("a", "b.c", 1));
    }
}
