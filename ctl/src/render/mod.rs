//! Text for people, from the API's typed answers. Pure: every function returns a `String`
//! (tested here); the verbs print it. Names and reasons come from the cluster or from
//! operators, so they go through [`one_line`] before they reach a terminal.

use std::fmt::Write as _;

use upgraded_api::{RollbackResponse, RunEntry};
use upgraded_events::history::RunHistory;
use upgraded_events::state::{CheckState, RunSummary};
use upgraded_events::window::rfc3339;

pub mod record;
pub mod replay;
pub mod timeline;
pub mod watch;

/// `s` on one line with control characters (escape sequences, line breaks) made spaces.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// At most `n` characters of [`one_line`]`(s)`, an ellipsis marking a cut.
pub fn truncate(s: &str, n: usize) -> String {
    let clean = one_line(s);
    if clean.chars().count() <= n {
        clean
    } else {
        clean
            .chars()
            .take(n.saturating_sub(1))
            .chain(std::iter::once('…'))
            .collect()
    }
}

/// An operator's action, in words: when, what, who, why.
pub fn action(a: &upgraded_events::replay::Action) -> String {
    format!(
        "{} {} by {}{}",
        rfc3339(a.at),
        a.what,
        one_line(&a.by.name),
        if a.reason.is_empty() {
            String::new()
        } else {
            format!(": {}", one_line(&a.reason))
        }
    )
}

/// A stretch with no daemon, in words.
pub fn down(d: &upgraded_events::replay::Down) -> String {
    format!(
        "daemon down {} → {} ({})",
        rfc3339(d.from),
        rfc3339(d.to),
        upgraded_events::quantity::human_secs(
            u64::try_from((d.to.0 - d.from.0) / 1000).unwrap_or(0)
        )
    )
}

/// A refused eviction, in words.
pub fn blocked(b: &upgraded_events::node::Blocked) -> String {
    format!(
        "eviction of {} refused by {} (disruptionsAllowed {})",
        one_line(&b.pod),
        one_line(&b.pdb),
        b.disruptions_allowed
    )
}

/// `upgradectl status` against an instance of `upgraded --ha`: which one answered, and how
/// it stands.
pub fn instance(h: &upgraded_api::HaStatus) -> String {
    let role = if h.acting { "leading" } else { "not acting" };
    let mut o = format!("instance {}: {role}", one_line(&h.instance));
    if let (Some(l), Some(e)) = (&h.leader, h.leader_epoch)
        && l != &h.instance
    {
        let _ = write!(o, "; the lease is {}'s (epoch {e})", one_line(l));
    }
    let _ = writeln!(o, "\n  {}", one_line(&h.note));
    o
}

/// `upgradectl status`: the run, then one line per node.
pub fn status(a: Option<&RunSummary>) -> String {
    let Some(a) = a else {
        return "no run yet\n".into();
    };
    let mut o = String::new();
    let _ = writeln!(
        o,
        "run {}  {}  target {}",
        a.run.map_or_else(|| "-".to_string(), |r| r.to_string()),
        a.phase.as_str(),
        a.target.as_deref().map_or("-".into(), one_line)
    );
    if let Some(l) = &a.leader {
        let _ = writeln!(o, "  leader: {} (epoch {})", one_line(&l.instance), l.epoch);
    }
    if let Some(r) = &a.reason {
        let _ = writeln!(o, "  reason: {}", one_line(r));
    }
    let rows: Vec<[String; 6]> = a
        .nodes
        .iter()
        .map(|n| {
            let done = n.cursor.map_or(
                if n.phase.as_str() == "done" {
                    n.steps
                } else {
                    0
                },
                |c| c.index,
            );
            let note = n
                .last_error
                .as_deref()
                .map(one_line)
                .or_else(|| {
                    n.parked
                        .as_deref()
                        .map(|p| format!("parked: {}", one_line(p)))
                })
                .or_else(|| n.blocked.as_ref().map(blocked))
                .unwrap_or_default();
            [
                one_line(n.name.as_str()),
                (n.batch + 1).to_string(),
                n.phase.as_str().to_string(),
                n.step.as_deref().map_or("-".into(), one_line),
                format!(
                    "{done}/{}{}",
                    n.steps,
                    n.cursor
                        .filter(|c| c.attempt > 1)
                        .map(|c| format!(" (attempt {})", c.attempt))
                        .unwrap_or_default()
                ),
                note,
            ]
        })
        .collect();
    let header = ["NODE", "BATCH", "PHASE", "STEP", "DONE", "NOTE"];
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |o: &mut String, cells: &[&str]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(o, "  {}", text.join("  ").trim_end());
    };
    if !rows.is_empty() {
        line(&mut o, &header);
    }
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&mut o, &cells);
    }
    o.push_str(&checks(&a.checks));
    if a.drift_readings > 0 {
        o.push_str(&drift(&a.drift));
    }
    o
}

/// When drift was read (at the start, after batch N) and each outlier, one line each.
pub fn drift_when(after: Option<u32>) -> String {
    after.map_or_else(
        || "at the start".to_string(),
        |b| format!("after batch {}", b + 1),
    )
}

/// Each outlier of a drift report, in words.
pub fn drift_lines(reports: &[upgraded_events::drift::DriftReport]) -> Vec<String> {
    let mut out = Vec::new();
    for r in reports {
        for f in &r.fields {
            for (node, value) in &f.outliers {
                out.push(format!(
                    "{}: {} has {} {} where {} of {} have {} ({}-match)",
                    one_line(&r.generation),
                    one_line(node),
                    one_line(&f.field),
                    one_line(value),
                    r.nodes - f.outliers.len(),
                    r.nodes,
                    one_line(&f.majority),
                    match f.level {
                        upgraded_events::drift::Match::Must => "must",
                        upgraded_events::drift::Match::Should => "should",
                    }
                ));
            }
        }
    }
    out
}

/// Each generation's latest drift under `status`.
fn drift(reports: &[upgraded_events::drift::DriftReport]) -> String {
    let lines = drift_lines(reports);
    if lines.is_empty() {
        return "  drift: every generation alike\n".to_string();
    }
    let mut o = "  drift (each generation's latest reading):\n".to_string();
    for l in lines {
        let _ = writeln!(o, "    {l}");
    }
    o
}

/// The checks' summary under `status`: how many passed, then every one that did not (or
/// runs now), one line each.
fn checks(checks: &[CheckState]) -> String {
    use upgraded_events::state::CheckOutcome;
    if checks.is_empty() {
        return String::new();
    }
    let passed = checks
        .iter()
        .filter(|c| c.outcome == CheckOutcome::Passed)
        .count();
    let mut o = format!("  checks: {passed} of {} passing\n", checks.len());
    for c in checks {
        let what = match &c.outcome {
            CheckOutcome::Passed => continue,
            CheckOutcome::Running => "running".to_string(),
            CheckOutcome::Failed { detail } => format!("FAILED: {}", one_line(detail)),
            CheckOutcome::Inconclusive { why } => format!("inconclusive: {}", one_line(why)),
        };
        let baseline = if c.failed_at_baseline {
            " (failed at the baseline: excluded)"
        } else {
            ""
        };
        let _ = writeln!(
            o,
            "    {} on {} ({}, attempt {}){baseline}: {what}",
            one_line(&c.check),
            one_line(&c.subject),
            c.boundary.name(),
            c.attempt
        );
    }
    o
}

/// `upgradectl rollback`: what the rollback does, in order, and why.
pub fn rollback(r: &RollbackResponse) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "rollback of run {}: {} batch(es), one after the other, in this order:",
        r.undoes,
        r.why.len()
    );
    for (i, w) in r.why.iter().enumerate() {
        let _ = writeln!(o, "  {}. {}", i + 1, one_line(w));
    }
    let _ = writeln!(o, "etcd: {}", one_line(&r.etcd));
    match r.run {
        Some(run) => {
            let _ = writeln!(
                o,
                "\nstarted rollback run {run}; follow it with `upgradectl watch`"
            );
        }
        None => {
            let _ = writeln!(o, "\n(plan only: nothing recorded)");
        }
    }
    o
}

/// `upgradectl runs`: the history, one aligned line per run, oldest first.
pub fn runs(runs: &[RunEntry]) -> String {
    let history: Vec<RunHistory> = runs
        .iter()
        .map(|r| {
            r.history.clone().unwrap_or(RunHistory {
                run: r.run,
                kind: "-".into(),
                undoes: None,
                from: None,
                to: r.target.clone(),
                state: r.phase.as_str().to_string(),
                started_by: None,
                started: None,
                ended: None,
                last_active: None,
                steps: 0,
                retries: 0,
                records: r.records,
            })
        })
        .collect();
    history_table(&history)
}

/// The run history as a table.
pub fn history_table(runs: &[RunHistory]) -> String {
    if runs.is_empty() {
        return "no run yet\n".into();
    }
    let time = |t: Option<upgraded_events::Timestamp>| {
        t.map_or_else(
            || "-".to_string(),
            |t| rfc3339(t).replace('T', " ").replace('Z', ""),
        )
    };
    let header = [
        "RUN",
        "KIND",
        "FROM",
        "TO",
        "STATE",
        "STARTED (UTC)",
        "ENDED",
        "LAST ACTIVE",
        "BY",
        "STEPS",
        "RETRIES",
    ];
    let rows: Vec<[String; 11]> = runs
        .iter()
        .map(|h| {
            [
                h.run.to_string(),
                match h.undoes {
                    Some(u) => format!("{} of {}…", h.kind, &u.to_string()[..13]),
                    None => h.kind.clone(),
                },
                h.from.as_deref().map_or("-".into(), one_line),
                h.to.as_deref().map_or("-".into(), one_line),
                h.state.clone(),
                time(h.started),
                time(h.ended),
                time(h.last_active),
                h.started_by
                    .as_ref()
                    .map_or("-".into(), |a| one_line(&a.name)),
                h.steps.to_string(),
                h.retries.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut o = String::new();
    let line = |o: &mut String, cells: &[&str]| {
        let text: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i >= 9 {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        let _ = writeln!(o, "{}", text.join("  ").trim_end());
    };
    line(&mut o, &header);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&mut o, &cells);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Status lists each generation's latest drift, one outlier a line, or says all alike.
    #[test]
    fn status_shows_each_generations_drift() {
        use upgraded_events::drift::{DriftReport, FieldDrift, Match};
        let mut a = upgraded_events::RunState::default().summary();
        a.drift_readings = 2;
        assert!(status(Some(&a)).contains("  drift: every generation alike\n"));
        a.drift = vec![DriftReport {
            generation: "dell-r640 at v1.34.2".into(),
            nodes: 3,
            fields: vec![FieldDrift {
                field: "package-holds".into(),
                level: Match::Should,
                majority: "kubeadm,kubectl,kubelet".into(),
                outliers: vec![("w-4".into(), "kubeadm,kubelet".into())],
            }],
        }];
        let text = status(Some(&a));
        assert!(
            text.contains("  drift (each generation's latest reading):\n    dell-r640 at v1.34.2: w-4 has package-holds kubeadm,kubelet where 2 of 3 have kubeadm,kubectl,kubelet (should-match)\n"),
            "{text}"
        );
        a.drift_readings = 0;
        assert!(!status(Some(&a)).contains("drift"), "no reading, no line");
    }

    #[test]
    fn status_prints_each_node_on_one_line_whatever_its_name() {
        let a: RunSummary = serde_json::from_value(serde_json::json!({
            "run": "0190f8a4-0000-7000-8000-000000000001", "phase": "halted",
            "target": "v1.35.3", "reason": "cp-1 failed\nverify", "nextSeq": 9,
            "recoveries": 0, "batches": 1, "batchLabels": ["control plane"],
            "anomalies": [],
            "nodes": [{"name": "cp-1\u{1b}[2J", "batch": 0, "phase": "verifying",
                       "step": "verify", "cursor": null, "steps": 9, "failures": 3,
                       "lastError": "kubelet is v1.34.6"}]
        }))
        .expect("a summary");
        let v = status(Some(&a));
        assert!(
            v.starts_with("run 0190f8a4-0000-7000-8000-000000000001  halted  target v1.35.3\n"),
            "{v}"
        );
        assert!(v.contains("  reason: cp-1 failed verify\n"), "{v}");
        assert!(
            v.contains("  NODE      BATCH  PHASE      STEP    DONE  NOTE\n"),
            "{v}"
        );
        assert!(
            v.contains("  cp-1 [2J  1      verifying  verify  0/9   kubelet is v1.34.6\n"),
            "{v}"
        );
        assert!(!v.contains('\u{1b}'));
        assert!(
            !v.contains("leader:"),
            "a single daemon names no leader: {v}"
        );
        assert_eq!(status(None), "no run yet\n");
        // Under `--ha`: the leader and its epoch.
        let mut led = a.clone();
        led.leader = Some(upgraded_events::state::Leader {
            instance: "admin-2".into(),
            epoch: 3,
        });
        let v = status(Some(&led));
        assert!(v.contains("\n  leader: admin-2 (epoch 3)\n"), "{v}");
    }

    #[test]
    fn status_counts_passing_checks_and_names_the_others() {
        let check = |check: &str, outcome: serde_json::Value, baseline: bool| {
            serde_json::json!({"check": check, "subject": "w-1", "boundary": "after-canary",
                "attempt": 2, "outcome": outcome, "failuresInARow": 1,
                "failedAtBaseline": baseline, "since": 0})
        };
        let a: RunSummary = serde_json::from_value(serde_json::json!({
            "run": null, "phase": "running", "target": "v1.35.3", "reason": null,
            "nextSeq": 9, "recoveries": 0, "batches": 0, "batchLabels": [], "anomalies": [],
            "nodes": [],
            "checks": [
                check("pod-network", serde_json::json!({"result": "failed", "detail": "dial 10.0.0.2:8080:\ni/o timeout"}), false),
                check("dns", serde_json::json!({"result": "failed", "detail": "lookup: no answer"}), true),
                check("user/smoke", serde_json::json!({"result": "passed"}), false),
            ]
        }))
        .expect("a summary");
        let v = status(Some(&a));
        assert!(v.contains("  checks: 1 of 3 passing\n"), "{v}");
        assert!(
            v.contains("    pod-network on w-1 (after-canary, attempt 2): FAILED: dial 10.0.0.2:8080: i/o timeout\n"),
            "{v}"
        );
        assert!(
            v.contains("    dns on w-1 (after-canary, attempt 2) (failed at the baseline: excluded): FAILED"),
            "{v}"
        );
        assert!(
            !v.contains("user/smoke"),
            "passing checks are only counted: {v}"
        );
    }
}
