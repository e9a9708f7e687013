//! Notifications as a fold of the log: which records tell a person something (a run started,
//! halted or completed; a canary passed or failed; a node parked; a rollback), what they
//! say, and how a sink's answer is handled. The daemon only delivers what this decides.
//!
//! A sink (policy `notifications:`) is a webhook, which gets every notice as a CloudEvents
//! 1.0 structured JSON body whose `data` is the record, or a Slack incoming webhook, which
//! gets `{"text": …}` at most once a second with node notices coalesced.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::event::{Event, Record, RunId, Step};
use crate::plan::{Plan, final_version};
use crate::time::Timestamp;
use crate::version::Version;

/// What a notice is about; a sink subscribes to classes.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// A run started, paused, halted (with the evidence), aborted or completed.
    Run,
    /// A canary passed its soak, or failed (parked or rolled back).
    Canary,
    /// A rollback was requested, started or completed.
    Rollback,
    /// Per node: upgraded, parked (with the command that continues), rolling back. Off
    /// unless asked for: a large cluster makes many.
    Node,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::Run, Class::Canary, Class::Rollback, Class::Node];

    pub fn name(self) -> &'static str {
        match self {
            Class::Run => "run",
            Class::Canary => "canary",
            Class::Rollback => "rollback",
            Class::Node => "node",
        }
    }

    /// The classes a sink gets when its policy names none: all but `node`.
    pub fn defaults() -> BTreeSet<Class> {
        [Class::Run, Class::Canary, Class::Rollback].into()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Webhook,
    Slack,
}

/// Where a webhook's signing key comes from (never the policy file itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Secret {
    File(String),
    Env(String),
}

/// A validated sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Sink {
    /// `[a-z0-9-]`, unique: cursor files and metrics are named after it.
    pub name: String,
    pub kind: SinkKind,
    pub url: String,
    pub secret: Option<Secret>,
    pub classes: BTreeSet<Class>,
}

/// A record worth telling someone about.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    pub class: Class,
    /// `completed`, `parked`, …: the CloudEvents type is `dev.upgraded.<class>.<what>`.
    pub what: &'static str,
    pub record: Record,
    /// The node it is about (the host), if any.
    pub node: Option<String>,
    /// One or a few lines for people: what happened, why, and what to do next.
    pub text: String,
}

impl Notice {
    pub fn event_type(&self) -> String {
        format!("dev.upgraded.{}.{}", self.class.name(), self.what)
    }

    /// The record's id: `<run>:<seq>` (the NATS message id too); receivers dedupe on it.
    pub fn id(&self) -> String {
        format!("{}:{}", self.record.run, self.record.seq)
    }

    /// The CloudEvents 1.0 structured-mode body (`application/cloudevents+json`).
    pub fn cloudevent(&self, cluster: &str) -> serde_json::Value {
        let mut ce = serde_json::json!({
            "specversion": "1.0",
            "id": self.id(),
            "source": format!("upgraded/{cluster}"),
            "type": self.event_type(),
            "time": self.record.at.to_string(),
            "datacontenttype": "application/json",
            "subject": self.node.clone().unwrap_or_else(|| self.record.run.to_string()),
            "data": self.record,
        });
        if let Some(o) = ce.as_object_mut() {
            o.insert("upgradedtext".into(), self.text.clone().into());
        }
        ce
    }
}

#[derive(Debug, Clone, Default)]
struct RunFacts {
    rollback: bool,
    from: Option<Version>,
    to: Option<Version>,
    started: Option<Timestamp>,
    /// entry → (host, canary batch, last step as shown).
    entries: BTreeMap<String, (String, bool, Option<String>)>,
    /// entry → first step's start.
    first: BTreeMap<String, Timestamp>,
    /// entry → how long its pass took.
    took: BTreeMap<String, i64>,
}

/// Turns records into notices. Feed every record of a run from the first, in order.
#[derive(Debug, Clone)]
pub struct NoticeFold {
    cluster: String,
    /// A run's HTML timeline, with `{run}` for its id.
    timeline_url: String,
    /// The command that reaches the daemon (`upgradectl`, or with its `--socket`).
    ctl: String,
    runs: BTreeMap<RunId, RunFacts>,
    gate: crate::lease::EpochGate,
}

fn secs(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        s if s >= 3600 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s if s >= 60 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{s}s"),
    }
}

impl NoticeFold {
    pub fn new(cluster: &str, timeline_url: &str, ctl: &str) -> NoticeFold {
        NoticeFold {
            cluster: cluster.to_string(),
            timeline_url: timeline_url.to_string(),
            ctl: ctl.to_string(),
            runs: BTreeMap::new(),
            gate: crate::lease::EpochGate::default(),
        }
    }

    fn link(&self, run: RunId) -> String {
        self.timeline_url.replace("{run}", &run.to_string())
    }

    /// The notices one record makes (most make none; a canary's end makes two).
    pub fn apply(&mut self, r: &Record) -> Vec<Notice> {
        if !self.gate.admits(r) {
            return Vec::new();
        }
        let run = r.run;
        let link = self.link(run);
        let (cluster, ctl) = (self.cluster.clone(), self.ctl.clone());
        let f = self.runs.entry(run).or_default();
        let kind = if f.rollback { "rollback" } else { "upgrade" };
        let head = format!("{cluster}: {kind} run {run}");
        let versions = match (f.from, f.to) {
            (Some(a), Some(b)) => format!("{a} → {b}"),
            (None, Some(b)) => format!("→ {b}"),
            _ => String::new(),
        };
        let notice = |class, what, node: Option<String>, text: String| Notice {
            class,
            what,
            record: r.clone(),
            node,
            text,
        };
        let mut out = Vec::new();
        match &r.event {
            Event::RunPlanned { target, plan, .. } => f.planned(*target, &plan.0),
            Event::RunStarted { by } => {
                f.started.get_or_insert(r.at);
                let class = if f.rollback {
                    Class::Rollback
                } else {
                    Class::Run
                };
                out.push(notice(
                    class,
                    "started",
                    None,
                    format!(
                        "{head} started by {} ({versions}, {} node passes). Timeline: {link}",
                        by.name,
                        f.entries.len()
                    ),
                ));
            }
            Event::RunPaused { by, reason } => out.push(notice(
                Class::Run,
                "paused",
                None,
                format!(
                    "{head} paused by {}: {reason}. It waits for the operator: `{ctl} resume` continues.",
                    by.name
                ),
            )),
            Event::RunHalted { reason } => out.push(notice(
                Class::Run,
                "halted",
                None,
                format!(
                    "{head} halted: {reason}. Look at `{ctl} status` and the timeline ({link}); \
                     `{ctl} resume` retries, `{ctl} rollback` goes back."
                ),
            )),
            Event::RunAborted => out.push(notice(
                if f.rollback {
                    Class::Rollback
                } else {
                    Class::Run
                },
                "aborted",
                None,
                format!("{head} aborted: every node it touched is back in a recorded state."),
            )),
            Event::RollbackRequested { reason } => out.push(notice(
                Class::Rollback,
                "requested",
                None,
                format!(
                    "{head}: a gate failed ({reason}); the run is aborted and rolled back."
                ),
            )),
            Event::RunCompleted => {
                let took = f.started.map_or(0, |s| r.at.0 - s.0);
                let slowest = f
                    .took
                    .iter()
                    .max_by_key(|(_, ms)| **ms)
                    .map(|(e, ms)| {
                        let host = f.entries.get(e).map_or(e.as_str(), |x| x.0.as_str());
                        format!("; slowest node {host} ({})", secs(*ms))
                    })
                    .unwrap_or_default();
                let hosts: BTreeSet<&str> =
                    f.entries.values().map(|(h, _, _)| h.as_str()).collect();
                out.push(notice(
                    if f.rollback {
                        Class::Rollback
                    } else {
                        Class::Run
                    },
                    "completed",
                    None,
                    format!(
                        "{head} completed: {versions}, {} nodes in {}{slowest}. Timeline: {link}",
                        hosts.len(),
                        secs(took)
                    ),
                ));
            }
            Event::StepStarted { node, .. } => {
                f.first.entry(node.as_str().to_string()).or_insert(r.at);
            }
            Event::StepSucceeded { node, step, .. }
            | Event::StepProbed {
                node,
                step,
                done: true,
                ..
            } => {
                let entry = node.as_str();
                if let Some((host, canary, Some(last))) = f.entries.get(entry)
                    && *last == step.to_string()
                {
                    let took = f.first.get(entry).map_or(0, |s| r.at.0 - s.0);
                    f.took.insert(entry.to_string(), took);
                    if *canary {
                        out.push(notice(
                            Class::Canary,
                            "passed",
                            Some(host.clone()),
                            format!(
                                "{head}: canary {host} passed its soak; the rest of its generation follows."
                            ),
                        ));
                    }
                    out.push(notice(
                        Class::Node,
                        "upgraded",
                        Some(host.clone()),
                        format!("{host} done ({entry}) in {}", secs(took)),
                    ));
                }
            }
            Event::NodeParked { node, reason, .. } | Event::NodeRollingBack { node, reason, .. } => {
                let (host, canary) = f.host(node.as_str());
                let parked = matches!(r.event, Event::NodeParked { .. });
                if canary {
                    let how = if parked { "is parked" } else { "is being rolled back" };
                    out.push(notice(
                        Class::Canary,
                        "failed",
                        Some(host.clone()),
                        format!("{head}: canary {host} failed and {how}: {reason}"),
                    ));
                }
                out.push(if parked {
                    notice(
                        Class::Node,
                        "parked",
                        Some(host.clone()),
                        format!(
                            "{host} parked: {reason}. The run goes on with the others and halts at the end; \
                             once fixed, `{ctl} resume` retries it."
                        ),
                    )
                } else {
                    notice(
                        Class::Node,
                        "rolling-back",
                        Some(host.clone()),
                        format!("{host} is going back to its recorded versions: {reason}"),
                    )
                });
            }
            _ => {}
        }
        out
    }
}

impl RunFacts {
    fn planned(&mut self, target: Version, plan: &Plan) {
        self.rollback = plan.undoes.is_some();
        self.to = Some(plan.target.unwrap_or(target));
        for b in &plan.batches {
            let canary = b.label.starts_with("canary");
            for n in &b.nodes {
                self.from = Some(self.from.map_or(n.from, |f| f.min(n.from)));
                if self.rollback {
                    self.to = final_version(&n.steps).or(self.to);
                }
                self.entries.insert(
                    n.name.as_str().to_string(),
                    (
                        n.host().as_str().to_string(),
                        canary,
                        n.steps.last().map(Step::to_string),
                    ),
                );
            }
        }
    }

    fn host(&self, entry: &str) -> (String, bool) {
        self.entries
            .get(entry)
            .map_or((entry.to_string(), false), |(h, c, _)| (h.clone(), *c))
    }
}

/// Slack: the messages for `notices` (in order), with runs of node notices folded into one
/// message each; every message says the last seq it covers.
pub fn slack_messages(notices: &[Notice]) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = Vec::new();
    let mut nodes: Vec<&Notice> = Vec::new();
    let flush = |nodes: &mut Vec<&Notice>, out: &mut Vec<(u64, String)>| {
        if let Some(last) = nodes.last() {
            let text = if nodes.len() == 1 {
                last.text.clone()
            } else {
                let mut t = format!("{} node events:", nodes.len());
                for n in nodes.iter() {
                    t.push_str("\n• ");
                    t.push_str(&n.text);
                }
                t
            };
            out.push((last.record.seq, text));
        }
        nodes.clear();
    };
    for n in notices {
        if n.class == Class::Node {
            nodes.push(n);
        } else {
            flush(&mut nodes, &mut out);
            out.push((n.record.seq, n.text.clone()));
        }
    }
    flush(&mut nodes, &mut out);
    out
}

/// What to do after a sink answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again after this many milliseconds.
    Retry(u64),
    /// The sink refused it for good (a 4xx other than 429): drop it and say so.
    Drop,
}

/// The first retry's delay and the cap, in milliseconds.
pub const RETRY_START_MS: u64 = 500;
pub const RETRY_MAX_MS: u64 = 60_000;
/// The longest `Retry-After` honoured (a sink asking for more is asked again then).
pub const RETRY_AFTER_MAX_MS: u64 = 300_000;

/// The rule table for a sink's answer: `status` (None: no answer, a connection error or a
/// timeout), its `Retry-After` in seconds when it sent one, and how many tries failed.
pub fn verdict(status: Option<u16>, retry_after_secs: Option<u64>, failures: u32) -> Verdict {
    let backoff = crate::fault::backoff_ms(RETRY_START_MS, RETRY_MAX_MS, failures);
    match status {
        Some(200..=299) => Verdict::Delivered,
        Some(429) => Verdict::Retry(
            retry_after_secs
                .map(|s| s.saturating_mul(1000).min(RETRY_AFTER_MAX_MS))
                .unwrap_or(backoff),
        ),
        // Refused for good, or a redirect (not followed: the URL is wrong).
        Some(300..=499) => Verdict::Drop,
        // 5xx, 1xx, no answer: the sink may come back.
        _ => Verdict::Retry(backoff),
    }
}

#[cfg(test)]
mod tests;
