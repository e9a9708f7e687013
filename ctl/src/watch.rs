//! `upgradectl watch`: the run as progress bars, drawn from the daemon's status.
//!
//! Pure rendering (tested); the command polls `/v1/status` and redraws.

use std::fmt::Write as _;

use serde_json::Value;

const BAR: usize = 24;

fn bar(done: usize, total: usize) -> String {
    let filled = (done * BAR).checked_div(total).unwrap_or(BAR).min(BAR);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(BAR - filled))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// Steps a node has finished.
fn node_done(n: &Value) -> usize {
    let steps = n["steps"].as_u64().unwrap_or(0) as usize;
    match n["phase"].as_str() {
        Some("done") => steps,
        _ => n["cursor"]["index"].as_u64().unwrap_or(0) as usize,
    }
}

/// The whole view for one status (`/v1/status`'s `active`).
pub fn render(a: &Value) -> String {
    let mut o = String::new();
    if a.is_null() {
        return "no run yet\n".into();
    }
    let nodes: Vec<&Value> = a["nodes"]
        .as_array()
        .map(|v| v.iter().collect())
        .unwrap_or_default();
    let total: usize = nodes
        .iter()
        .map(|n| n["steps"].as_u64().unwrap_or(0) as usize)
        .sum();
    let done: usize = nodes.iter().map(|n| node_done(n)).sum();
    let finished = nodes.iter().filter(|n| n["phase"] == "done").count();
    let _ = writeln!(
        o,
        "run {}  {}  → {}   nodes {finished}/{}  steps {done}/{total}",
        text(&a["run"]),
        text(&a["phase"]),
        text(&a["target"]),
        nodes.len()
    );
    let pct = (done * 100).checked_div(total).unwrap_or(100);
    let _ = writeln!(o, "{} {pct:>3}%", bar(done, total));
    if let Some(r) = a["reason"].as_str() {
        let _ = writeln!(o, "reason: {r}");
    }
    if let Some(w) = a["waiting"].as_str() {
        let _ = writeln!(o, "waiting: {w}");
    }
    for w in a["scaled"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "scaled up to unblock {}: {}/{}/{} {} → {} replicas (restored after its drain)",
            truncate(text(&w["node"]), 40),
            text(&w["kind"]),
            truncate(text(&w["namespace"]), 63),
            truncate(text(&w["name"]), 63),
            w["original"],
            w["scaled"]
        );
    }
    let labels: Vec<&str> = a["batchLabels"]
        .as_array()
        .map(|l| l.iter().map(text).collect())
        .unwrap_or_default();
    let _ = writeln!(o);
    let batch_done = |b: usize| {
        nodes
            .iter()
            .filter(|n| n["batch"] == b)
            .all(|n| n["phase"] == "done")
    };
    let done_batches = (0..labels.len()).filter(|&b| batch_done(b)).count();
    if done_batches > 0 {
        let _ = writeln!(o, "  {done_batches} of {} batches done", labels.len());
    }
    for (b, label) in labels.iter().enumerate() {
        if batch_done(b) {
            continue;
        }
        let members: Vec<&&Value> = nodes.iter().filter(|n| n["batch"] == b).collect();
        let t: usize = members
            .iter()
            .map(|n| n["steps"].as_u64().unwrap_or(0) as usize)
            .sum();
        let d: usize = members.iter().map(|n| node_done(n)).sum();
        let active = members
            .iter()
            .any(|n| !matches!(n["phase"].as_str(), Some("pending" | "done")));
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
            let step = match (n["step"].as_str(), n["cursor"]["attempt"].as_u64()) {
                (Some(s), Some(a)) if a > 1 => format!("{s} (attempt {a})"),
                (Some(s), _) => s.to_string(),
                (None, _) => text(&n["phase"]).to_string(),
            };
            let _ = write!(
                o,
                "    {:<20} {} {}/{} {step}",
                truncate(text(&n["name"]), 20),
                bar(node_done(n), n["steps"].as_u64().unwrap_or(0) as usize),
                node_done(n),
                n["steps"]
            );
            if let Some(bl) = n.get("blocked").filter(|b| !b.is_null()) {
                let _ = write!(
                    o,
                    "  BLOCKED: {} refuses evicting {} ({} disruptions allowed)",
                    text(&bl["pdb"]),
                    text(&bl["pod"]),
                    bl["disruptions_allowed"]
                );
            }
            if let Some(p) = n["parked"].as_str() {
                let _ = write!(o, "  PARKED: {p}");
            }
            if let Some(e) = n["lastError"].as_str() {
                let _ = write!(o, "  last error: {e}");
            }
            let _ = writeln!(o);
        }
    }
    o
}

/// At most `n` characters (labels and names come from the cluster).
fn truncate(s: &str, n: usize) -> String {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= n {
        clean
    } else {
        clean
            .chars()
            .take(n - 1)
            .chain(std::iter::once('…'))
            .collect()
    }
}

/// Whether watching can stop.
pub fn finished(a: &Value) -> bool {
    matches!(a["phase"].as_str(), Some("completed" | "aborted"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bars_per_run_batch_and_node_with_blocked_reasons() {
        let a = json!({
            "run": "r1", "phase": "running", "target": "v1.35.3",
            "waiting": null,
            "scaled": [{"node": "w-1", "kind": "Deployment", "namespace": "default",
                        "name": "app", "original": 3, "scaled": 4}],
            "batchLabels": ["control plane v1.34.6: cp-1", "canary dell-r640", "dell-r640 1/2"],
            "nodes": [
                {"name": "cp-1", "batch": 0, "phase": "done", "steps": 10, "cursor": null},
                {"name": "w-1", "batch": 1, "phase": "draining", "steps": 8, "step": "drain",
                 "cursor": {"index": 2, "attempt": 3, "status": "in-flight"},
                 "blocked": {"pod": "default/app-1", "pdb": "pdb/default/app", "disruptions_allowed": 0},
                 "lastError": null},
                {"name": "w-4\u{1b}[2J", "batch": 2, "phase": "pending", "steps": 8, "cursor": {"index": 0}}
            ]
        });
        let v = render(&a);
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
        assert!(!finished(&a));
        assert!(finished(&json!({"phase": "completed"})));
    }
}
