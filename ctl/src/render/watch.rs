//! `upgradectl watch`: the run as progress bars, drawn from the daemon's status.
//!
//! Pure rendering (tested); the verb polls `/v1/status` and redraws.

use std::fmt::Write as _;

use upgraded_events::node::Phase;
use upgraded_events::state::{NodeSummary, RunSummary};

use super::truncate;

const BAR: usize = 24;

fn bar(done: usize, total: usize) -> String {
    let filled = (done * BAR).checked_div(total).unwrap_or(BAR).min(BAR);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(BAR - filled))
}

/// Steps a node has finished.
fn node_done(n: &NodeSummary) -> usize {
    match n.phase {
        Phase::Done => n.steps,
        _ => n.cursor.map_or(0, |c| c.index),
    }
}

/// The whole view for one status (`/v1/status`'s `active`).
pub fn render(a: Option<&RunSummary>) -> String {
    let Some(a) = a else {
        return "no run yet\n".into();
    };
    let mut o = String::new();
    let nodes = &a.nodes;
    let total: usize = nodes.iter().map(|n| n.steps).sum();
    let done: usize = nodes.iter().map(node_done).sum();
    let finished = nodes.iter().filter(|n| n.phase == Phase::Done).count();
    let _ = writeln!(
        o,
        "run {}  {}  → {}   nodes {finished}/{}  steps {done}/{total}",
        a.run.map_or_else(|| "-".to_string(), |r| r.to_string()),
        a.phase.as_str(),
        a.target.as_deref().map_or("-".into(), |t| truncate(t, 20)),
        nodes.len()
    );
    let pct = (done * 100).checked_div(total).unwrap_or(100);
    let _ = writeln!(o, "{} {pct:>3}%", bar(done, total));
    if let Some(r) = &a.reason {
        let _ = writeln!(o, "reason: {}", truncate(r, 1024));
    }
    if let Some(w) = &a.waiting {
        let _ = writeln!(o, "waiting: {}", truncate(w, 1024));
    }
    for w in &a.scaled {
        let _ = writeln!(
            o,
            "scaled up to unblock {}: {}/{}/{} {} → {} replicas (restored after its drain)",
            truncate(w.node.as_str(), 40),
            truncate(&w.kind, 20),
            truncate(&w.namespace, 63),
            truncate(&w.name, 63),
            w.original,
            w.scaled
        );
    }
    let labels = &a.batch_labels;
    let _ = writeln!(o);
    let batch_done = |b: usize| {
        nodes
            .iter()
            .filter(|n| n.batch == b)
            .all(|n| n.phase == Phase::Done)
    };
    let done_batches = (0..labels.len()).filter(|&b| batch_done(b)).count();
    if done_batches > 0 {
        let _ = writeln!(o, "  {done_batches} of {} batches done", labels.len());
    }
    for (b, label) in labels.iter().enumerate() {
        if batch_done(b) {
            continue;
        }
        let members: Vec<&NodeSummary> = nodes.iter().filter(|n| n.batch == b).collect();
        let t: usize = members.iter().map(|n| n.steps).sum();
        let d: usize = members.iter().map(|n| node_done(n)).sum();
        let active = members
            .iter()
            .any(|n| !matches!(n.phase, Phase::Pending | Phase::Done));
        let mark = if active { ">" } else { " " };
        let _ = writeln!(
            o,
            "{mark} {:<36} {} {d}/{t}",
            truncate(label, 36),
            bar(d, t)
        );
        if !active {
            continue;
        }
        for n in members {
            let step = match (&n.step, n.cursor.map(|c| c.attempt)) {
                (Some(s), Some(a)) if a > 1 => format!("{s} (attempt {a})"),
                (Some(s), _) => s.clone(),
                (None, _) => n.phase.as_str().to_string(),
            };
            let _ = write!(
                o,
                "    {:<20} {} {}/{} {step}",
                truncate(n.name.as_str(), 20),
                bar(node_done(n), n.steps),
                node_done(n),
                n.steps
            );
            if let Some(bl) = &n.blocked {
                let _ = write!(
                    o,
                    "  BLOCKED: {} refuses evicting {} ({} disruptions allowed)",
                    truncate(&bl.pdb, 80),
                    truncate(&bl.pod, 80),
                    bl.disruptions_allowed
                );
            }
            if let Some(p) = &n.parked {
                let _ = write!(o, "  PARKED: {}", truncate(p, 1024));
            }
            if let Some(e) = &n.last_error {
                let _ = write!(o, "  last error: {}", truncate(e, 1024));
            }
            let _ = writeln!(o);
        }
    }
    o
}

/// Whether watching can stop.
pub fn finished(a: Option<&RunSummary>) -> bool {
    a.is_none_or(|a| a.phase.is_terminal())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bars_per_run_batch_and_node_with_blocked_reasons() {
        let a: RunSummary = serde_json::from_value(json!({
            "run": "0190f8a4-0000-7000-8000-000000000001", "phase": "running",
            "target": "v1.35.3", "reason": null, "nextSeq": 40, "recoveries": 0,
            "batches": 3, "anomalies": [],
            "scaled": [{"node": "w-1", "kind": "Deployment", "namespace": "default",
                        "name": "app", "original": 3, "scaled": 4}],
            "batchLabels": ["control plane v1.34.6: cp-1", "canary dell-r640", "dell-r640 1/2"],
            "nodes": [
                {"name": "cp-1", "batch": 0, "phase": "done", "steps": 10, "cursor": null,
                 "step": null, "failures": 0, "lastError": null},
                {"name": "w-1", "batch": 1, "phase": "draining", "steps": 8, "step": "drain",
                 "cursor": {"index": 2, "attempt": 3, "status": "in-flight"},
                 "blocked": {"pod": "default/app-1", "pdb": "pdb/default/app", "disruptionsAllowed": 0},
                 "failures": 0, "lastError": null},
                {"name": "w-4\u{1b}[2J", "batch": 2, "phase": "pending", "steps": 8,
                 "cursor": {"index": 0, "attempt": 0, "status": "ready"}, "step": null,
                 "failures": 0, "lastError": null}
            ]
        }))
        .expect("a summary as the daemon sends it");
        let v = render(Some(&a));
        assert!(v.contains("nodes 1/3  steps 12/26"), "{v}");
        assert!(v.contains("> canary dell-r640"), "{v}");
        assert!(
            v.contains("1 of 3 batches done") && !v.contains("control plane"),
            "{v}"
        );
        assert!(
            v.contains("w-1                  [######..................] 2/8 drain (attempt 3)"),
            "{v}"
        );
        assert!(
            v.contains(
                "BLOCKED: pdb/default/app refuses evicting default/app-1 (0 disruptions allowed)"
            ),
            "{v}"
        );
        assert!(
            v.contains("scaled up to unblock w-1: Deployment/default/app 3 → 4 replicas"),
            "{v}"
        );
        assert!(!v.contains("w-4"), "idle batches show no nodes: {v}");
        assert!(!v.contains('\u{1b}'));
        assert!(!finished(Some(&a)));
        let mut done = a.clone();
        done.phase = upgraded_events::run::RunPhase::Completed;
        assert!(finished(Some(&done)));
        assert!(finished(None));
    }
}
