//! The timeline as Trace Event JSON (Perfetto, `chrome://tracing`): one process per phase,
//! one thread per node pass; each step attempt and each wait a complete (`X`) event, the
//! daemon's down stretches on a process of their own, operator actions as global instants.

use serde_json::{Value, json};
use upgraded_events::Timestamp;
use upgraded_events::timeline::{Outcome, SpanKind, Timeline};

/// Microseconds since the run's start.
fn us(t: &Timeline, at: Timestamp) -> i64 {
    (at.0 - t.start.0).max(0) * 1000
}

pub fn chrome_trace(t: &Timeline) -> Value {
    let mut events: Vec<Value> = Vec::new();
    let mut phases: Vec<&str> = Vec::new();
    for (tid, r) in t.rows.iter().enumerate() {
        let pid = match phases.iter().position(|p| *p == r.phase) {
            Some(p) => p + 1,
            None => {
                phases.push(&r.phase);
                events.push(json!({"name": "process_name", "ph": "M", "pid": phases.len(), "tid": 0, "args": {"name": r.phase}}));
                phases.len()
            }
        };
        let tid = tid + 1;
        events.push(json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": r.entry.as_str()}}));
        for b in &r.bars {
            let outcome = match &b.outcome {
                Outcome::Succeeded => "succeeded".to_string(),
                Outcome::Failed(e) => format!("failed: {e}"),
                Outcome::Interrupted => "cut short by a daemon stop".into(),
                Outcome::Probed { done } => {
                    format!("probed: {}", if *done { "done" } else { "not done" })
                }
                Outcome::Running => "no outcome recorded".into(),
            };
            events.push(json!({
                "name": b.step, "cat": b.kind, "ph": "X",
                "ts": us(t, b.start), "dur": us(t, b.end) - us(t, b.start),
                "pid": pid, "tid": tid,
                "args": {
                    "attempt": b.attempt, "outcome": outcome, "batch": r.batch_label,
                    "on_node_start_us": b.on_node.map(|(a, _)| us(t, a)),
                    "on_node_end_us": b.on_node.map(|(_, e)| us(t, e)),
                },
            }));
        }
        for s in &r.spans {
            let (name, cat) = match &s.kind {
                SpanKind::Window => ("waiting for a maintenance window".to_string(), "window"),
                SpanKind::Blocked { budgets } => (
                    format!("evictions blocked by {}", budgets.join(", ")),
                    "blocked",
                ),
            };
            events.push(json!({
                "name": name, "cat": cat, "ph": "X",
                "ts": us(t, s.start), "dur": us(t, s.end) - us(t, s.start),
                "pid": pid, "tid": tid, "args": {},
            }));
        }
    }
    if !t.down.is_empty() {
        let pid = phases.len() + 1;
        events.push(json!({"name": "process_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": "daemon"}}));
        events.push(json!({"name": "thread_name", "ph": "M", "pid": pid, "tid": 1, "args": {"name": "daemon down"}}));
        for d in &t.down {
            events.push(json!({
                "name": "daemon down", "cat": "down", "ph": "X",
                "ts": us(t, d.from), "dur": us(t, d.to) - us(t, d.from),
                "pid": pid, "tid": 1, "args": {},
            }));
        }
    }
    for a in &t.actions {
        events.push(json!({
            "name": format!("{} by {}", a.what, a.by.name), "cat": "operator", "ph": "i", "s": "g",
            "ts": us(t, a.at), "pid": 0, "tid": 0, "args": {"reason": a.reason},
        }));
    }
    json!({"traceEvents": events, "displayTimeUnit": "ms", "otherData": {"run": t.run, "start": t.start.0}})
}
