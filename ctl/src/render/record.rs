//! One readable line per record, for `upgradectl demo` (and anyone following a run).

use upgraded_events::{Actor, Event, Record, Step};

use super::one_line;

fn step(s: &Step) -> String {
    s.to_string()
}

fn by(a: &Actor) -> String {
    match a.uid {
        Some(uid) => format!("{} (uid {uid})", one_line(&a.name)),
        None => one_line(&a.name),
    }
}

fn because(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {}", one_line(reason))
    }
}

/// `seq  what happened`, on one line whatever the record holds.
pub fn describe(r: &Record) -> String {
    let node = |n: &upgraded_events::Entry| format!("{:<12}", one_line(n.as_str()));
    let what = match &r.event {
        Event::StepStarted {
            node: n,
            step: s,
            attempt,
        } => format!("{} ▶ {} (attempt {attempt})", node(n), step(s)),
        Event::StepSucceeded {
            node: n, step: s, ..
        } => format!("{} ✓ {}", node(n), step(s)),
        Event::StepFailed {
            node: n,
            step: s,
            error,
            ..
        } => format!("{} ✗ {}: {}", node(n), step(s), one_line(error)),
        Event::StepProbed {
            node: n,
            step: s,
            done,
            ..
        } => format!("{} ? {} probed: done={done}", node(n), step(s)),
        Event::ClusterObserved {
            apiserver,
            inventory,
        } => format!(
            "run: cluster observed: {} nodes, {} pods, {} budgets; apiserver {apiserver}",
            inventory.0.nodes.len(),
            inventory.0.pods.len(),
            inventory.0.pdbs.len(),
        ),
        Event::RunPlanned { target, plan, .. } => format!(
            "run: plan recorded: {} batch(es), {} node pass(es) to {target}",
            plan.0.batches.len(),
            plan.0.batches.iter().map(|b| b.nodes.len()).sum::<usize>(),
        ),
        Event::EvictionBlocked {
            node: n,
            pod,
            pdb,
            disruptions_allowed,
        } => format!(
            "{} ⏸ eviction of {} refused by {} (disruptionsAllowed {disruptions_allowed}); retrying",
            node(n),
            one_line(pod),
            one_line(pdb)
        ),
        Event::NodeParked {
            node: n,
            reason,
            uncordon,
        } => format!(
            "{} ⏏ parked{}: {}",
            node(n),
            if *uncordon {
                " (uncordoned)"
            } else {
                " (left cordoned)"
            },
            one_line(reason)
        ),
        Event::WorkloadScaled {
            node: n,
            kind,
            namespace,
            name,
            from,
            to,
            restore,
        } => format!(
            "{} {} {}/{}/{}: {from} → {to} replicas",
            node(n),
            if *restore { "restored" } else { "scaled up" },
            one_line(kind),
            one_line(namespace),
            one_line(name)
        ),
        Event::NodeRollingBack {
            node: n,
            reason,
            steps,
        } => format!(
            "{} ↩ rolling back ({}): {}",
            node(n),
            steps.iter().map(step).collect::<Vec<_>>().join(", "),
            one_line(reason)
        ),
        Event::RunStarted { by: a } => format!("run: started by {}", by(a)),
        Event::RunPaused { by: a, reason } => {
            format!("run: paused by {}{}", by(a), because(reason))
        }
        Event::RunResumed { by: a } => format!("run: resumed by {}", by(a)),
        Event::RunHalted { reason } => format!("run: halted{}", because(reason)),
        Event::RunCompleted => "run: completed".to_string(),
        Event::AbortRequested { by: a, reason } => {
            format!("run: abort requested by {}{}", by(a), because(reason))
        }
        Event::RunAborted => "run: aborted".to_string(),
        Event::RollbackRequested { reason } => {
            format!(
                "run: aborting, then rolling the whole run back: {}",
                one_line(reason)
            )
        }
        Event::RunRecovered { pid } => format!("run: recovered by daemon pid {pid}"),
        Event::CheckStarted {
            check,
            subject,
            boundary,
            attempt,
        } => format!(
            "{} ▶ check {} ({}, attempt {attempt})",
            node(&upgraded_events::Entry::new(subject)),
            one_line(check),
            boundary.name()
        ),
        Event::CheckPassed { check, subject, .. } => format!(
            "{} ✓ check {}",
            node(&upgraded_events::Entry::new(subject)),
            one_line(check)
        ),
        Event::CheckFailed {
            check,
            subject,
            detail,
            ..
        } => format!(
            "{} ✗ check {}: {}",
            node(&upgraded_events::Entry::new(subject)),
            one_line(check),
            one_line(detail)
        ),
        Event::CheckInconclusive {
            check,
            subject,
            why,
            ..
        } => format!(
            "{} ? check {} inconclusive, retried: {}",
            node(&upgraded_events::Entry::new(subject)),
            one_line(check),
            one_line(why)
        ),
        Event::DriftObserved { after, reports, .. } => {
            let lines = super::drift_lines(&reports.0);
            if lines.is_empty() {
                format!(
                    "run: drift {}: every generation alike",
                    super::drift_when(*after)
                )
            } else {
                format!(
                    "run: drift {}: {}",
                    super::drift_when(*after),
                    lines.join("; ")
                )
            }
        }
        Event::LeaderChanged { instance, epoch } => format!(
            "run: leader now {} (epoch {epoch}): resuming as after a crash",
            one_line(instance)
        ),
    };
    format!("{:>4}  {what}", r.seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use upgraded_events::{Timestamp, Version};

    fn rec(seq: u64, event: Event) -> Record {
        Record {
            run: upgraded_events::RunId::nil(),
            seq,
            at: Timestamp(0),
            epoch: 0,
            event,
        }
    }

    #[test]
    fn each_record_is_one_line_naming_node_step_and_outcome() {
        let v = Version::parse_release("v1.35.3").expect("version");
        let started = rec(
            12,
            Event::StepStarted {
                node: "w-1".into(),
                step: Step::UpgradePackages { version: v },
                attempt: 2,
            },
        );
        assert_eq!(
            describe(&started),
            "  12  w-1          ▶ upgrade-packages v1.35.3 (attempt 2)"
        );
        let failed = rec(
            13,
            Event::StepFailed {
                node: "w-1\n\u{1b}[2J".into(),
                step: Step::Drain,
                attempt: 1,
                error: "pdb/default/app\nrefused".into(),
                facts: Default::default(),
            },
        );
        let line = describe(&failed);
        assert_eq!(line, "  13  w-1  [2J     ✗ drain: pdb/default/app refused");
        let paused = rec(
            14,
            Event::RunPaused {
                by: Actor {
                    uid: Some(1000),
                    name: "alice".into(),
                },
                reason: "lunch".into(),
            },
        );
        assert_eq!(
            describe(&paused),
            "  14  run: paused by alice (uid 1000): lunch"
        );
    }
}
