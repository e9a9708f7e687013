//! What a check's result means: the classifier of a probe's end (exit code, termination
//! message, disruptions), problems counted against the baseline, devices lost, what failing
//! at the baseline means, and the deterministic names of probe objects.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{Boundary, Check};
use crate::facts::Facts;

/// What a probe's pod (or a Job's last pod, or a command) showed when it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeEnd {
    /// The container's exit code; `None` while it has not terminated.
    pub exit_code: Option<i32>,
    /// The container's termination message (`terminationMessagePath`).
    pub message: Option<String>,
    /// What kept the probe from giving an answer, if anything did.
    pub disruption: Option<Disruption>,
}

/// Why a probe gave no answer about the thing it checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disruption {
    /// The pod was evicted (node pressure, the Eviction API).
    Evicted,
    /// A higher-priority pod took its place.
    Preempted,
    /// Its image could not be pulled (`ErrImagePull`, `ImagePullBackOff`, ...).
    ImagePull(String),
    /// It was deleted by someone else before it ended.
    Deleted,
    /// It did not end within the check's timeout.
    TimedOut,
}

/// A check's verdict on one subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed {
        facts: Facts,
    },
    Failed {
        detail: String,
        facts: Facts,
    },
    /// No answer about the subject: retried, never counted as a failure.
    Inconclusive {
        why: String,
        facts: Facts,
    },
}

/// The JSON line a probe writes to its termination message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeReport {
    /// The probe's own reading of its result (the exit code decides; a contradiction is
    /// inconclusive).
    pub ok: Option<bool>,
    /// One sentence an operator reads: what was tried and what happened.
    pub detail: String,
    /// Measurements (`dialled=3`, `failed=cp-1:8080`).
    pub facts: BTreeMap<String, String>,
}

/// Passed when nothing is wrong, else failed naming every problem.
pub fn passed_unless(wrong: Vec<String>, facts: Facts) -> Verdict {
    if wrong.is_empty() {
        Verdict::Passed { facts }
    } else {
        Verdict::Failed {
            detail: wrong.join("; "),
            facts,
        }
    }
}

/// One check's verdict from its several probes (the pod-network check's pod and
/// hostNetwork probes): any failure fails, their details joined, each after its probe's
/// label (none for the main probe); otherwise any inconclusive; otherwise passed. Facts
/// are kept under `label/fact` (the main probe's as they are).
pub fn combine(parts: Vec<(&str, Verdict)>) -> Verdict {
    let mut facts = Facts::new();
    let mut failed = Vec::new();
    let mut unsure = Vec::new();
    for (probe, verdict) in parts {
        let (own, failure, why) = match verdict {
            Verdict::Passed { facts } => (facts, None, None),
            Verdict::Failed { detail, facts } => (facts, Some(detail), None),
            Verdict::Inconclusive { why, facts } => (facts, None, Some(why)),
        };
        let labelled = |s: String| {
            if probe.is_empty() {
                s
            } else {
                format!("{probe}: {s}")
            }
        };
        for (k, v) in own {
            facts.insert(
                if probe.is_empty() {
                    k
                } else {
                    format!("{probe}/{k}")
                },
                v,
            );
        }
        if let Some(d) = failure {
            failed.push(labelled(d));
        }
        if let Some(w) = why {
            unsure.push(labelled(w));
        }
    }
    if !failed.is_empty() {
        Verdict::Failed {
            detail: failed.join("; "),
            facts,
        }
    } else if !unsure.is_empty() {
        // An image that could not be pulled stays visible to the baseline's verdict.
        Verdict::Inconclusive {
            why: unsure.join("; "),
            facts: {
                let pull = facts
                    .iter()
                    .find(|(k, _)| k.split('/').next_back() == Some(FACT_IMAGE_PULL))
                    .map(|(_, v)| v.clone());
                if let Some(p) = pull {
                    facts.insert(FACT_IMAGE_PULL.into(), p);
                }
                facts
            },
        }
    } else {
        Verdict::Passed { facts }
    }
}

/// The fact an inconclusive verdict carries when the probe's image could not be pulled:
/// at the baseline that blocks (every later check would need the image).
pub const FACT_IMAGE_PULL: &str = "image_pull";

/// The result classifier: exit code 0 passes, 1 fails, anything else (or no exit, or a
/// disruption) is inconclusive. The termination message's last line, a `ProbeReport`, gives
/// the detail and facts.
pub fn classify(end: &ProbeEnd) -> Verdict {
    let report = end
        .message
        .as_deref()
        .and_then(|m| m.lines().rev().find(|l| !l.trim().is_empty()))
        .map(|line| serde_json::from_str::<ProbeReport>(line.trim()));
    let (detail, facts) = match &report {
        Some(Ok(r)) => (r.detail.clone(), r.facts.clone()),
        Some(Err(_)) => (
            end.message.clone().unwrap_or_default().trim().to_string(),
            Facts::new(),
        ),
        None => (String::new(), Facts::new()),
    };
    let stated = match &report {
        Some(Ok(r)) => r.ok,
        _ => None,
    };
    if let Some(d) = &end.disruption {
        let why = match d {
            Disruption::Evicted => "the probe was evicted".to_string(),
            Disruption::Preempted => "the probe was preempted".to_string(),
            Disruption::ImagePull(reason) => {
                format!("the probe's image could not be pulled ({reason})")
            }
            Disruption::Deleted => "the probe was deleted before it ended".to_string(),
            Disruption::TimedOut => "the probe did not end within the check's timeout".to_string(),
        };
        let mut facts = facts;
        if let Disruption::ImagePull(reason) = d {
            facts.insert(FACT_IMAGE_PULL.into(), reason.clone());
        }
        return Verdict::Inconclusive { why, facts };
    }
    match (end.exit_code, stated) {
        (None, _) => Verdict::Inconclusive {
            why: "the probe has not ended".into(),
            facts,
        },
        (Some(0), Some(false)) | (Some(1), Some(true)) => Verdict::Inconclusive {
            why: format!(
                "the probe exited {} but reported ok={}",
                end.exit_code.unwrap_or_default(),
                stated.unwrap_or_default()
            ),
            facts,
        },
        (Some(0), _) => Verdict::Passed { facts },
        (Some(1), _) => Verdict::Failed {
            detail: if detail.is_empty() {
                "the probe exited 1 and said nothing".into()
            } else {
                detail
            },
            facts,
        },
        (Some(code), _) => Verdict::Inconclusive {
            why: format!("the probe exited {code} (0 passes, 1 fails)"),
            facts,
        },
    }
}

/// The pod conditions and container states that say a probe gave no answer, as the
/// apiserver reports them.
pub fn disruption_of(pod_reason: Option<&str>, waiting_reason: Option<&str>) -> Option<Disruption> {
    match pod_reason {
        Some("Evicted") => return Some(Disruption::Evicted),
        Some("Preempting" | "Preempted") => return Some(Disruption::Preempted),
        _ => {}
    }
    match waiting_reason {
        Some(
            r @ ("ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull"),
        ) => Some(Disruption::ImagePull(r.to_string())),
        _ => None,
    }
}

/// Problems that are counted against a baseline (Prometheus targets down, alerts firing):
/// one present at the baseline never fires; a new one fires after `fire_after` runs in a
/// row that see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemTally {
    pub baseline: BTreeSet<String>,
    /// New problems and how many runs in a row have seen each.
    pub streak: BTreeMap<String, u32>,
}

impl ProblemTally {
    pub fn new(baseline: BTreeSet<String>) -> ProblemTally {
        ProblemTally {
            baseline,
            streak: BTreeMap::new(),
        }
    }

    /// One run's problems: new ones extend their streak, gone ones lose it.
    pub fn observe(&mut self, now: &BTreeSet<String>) {
        let new: BTreeSet<&String> = now.difference(&self.baseline).collect();
        self.streak.retain(|p, _| new.contains(p));
        for p in new {
            *self.streak.entry(p.clone()).or_insert(0) += 1;
        }
    }

    /// The new problems that fire `check`.
    pub fn fired(&self, check: &Check) -> Vec<&str> {
        self.streak
            .iter()
            .filter(|(_, n)| check.fires(**n))
            .map(|(p, _)| p.as_str())
            .collect()
    }
}

/// The extended resources a node lost against its baseline (`nvidia.com/gpu: 4 → 2`).
pub fn devices_lost(baseline: &BTreeMap<String, u64>, now: &BTreeMap<String, u64>) -> Vec<String> {
    baseline
        .iter()
        .filter_map(|(resource, want)| {
            let have = now.get(resource).copied().unwrap_or(0);
            (have < *want).then(|| format!("{resource}: {want} → {have}"))
        })
        .collect()
}

/// The devices check's verdict on a node: its extended resources now against the baseline
/// the preflight recorded. A node that lost some fails, naming each with before and after;
/// more than before is no failure. The facts carry what it has now.
pub fn devices_verdict(baseline: &BTreeMap<String, u64>, now: &BTreeMap<String, u64>) -> Verdict {
    let have = now
        .iter()
        .map(|(r, n)| format!("{r}={n}"))
        .collect::<Vec<_>>()
        .join(",");
    let facts: Facts = [("devices".to_string(), have)].into();
    let lost = devices_lost(baseline, now);
    if lost.is_empty() {
        Verdict::Passed { facts }
    } else {
        Verdict::Failed {
            detail: format!(
                "allocatable extended resources lost since the baseline: {}",
                lost.join(", ")
            ),
            facts,
        }
    }
}

/// What a check failing at the baseline means: a control-plane check blocks the run; any
/// other is excluded for the run (recorded, never blamed on the upgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineFinding {
    Blocks,
    Excluded,
}

pub fn baseline_finding(check: &Check) -> BaselineFinding {
    if check.kind.is_control_plane() {
        BaselineFinding::Blocks
    } else {
        BaselineFinding::Excluded
    }
}

/// The deterministic name of a probe object: the same run, check, boundary, subject and
/// attempt give the same name, so a restarted daemon adopts what it had created (and a
/// baseline's probe is never taken for a later one's). DNS-1123, at most 63 characters: a
/// readable prefix and a hash of the whole.
pub fn probe_name(
    run: &str,
    check: &str,
    boundary: Boundary,
    subject: &str,
    attempt: u32,
) -> String {
    let whole = format!("{run}/{check}/{}/{subject}/{attempt}", boundary.name());
    let hash = crc32fast::hash(whole.as_bytes());
    let mut readable = String::new();
    for c in format!("{check}-{subject}").chars() {
        if c.is_ascii_alphanumeric() {
            readable.push(c.to_ascii_lowercase());
        } else if !readable.ends_with('-') {
            readable.push('-');
        }
    }
    let readable = readable.trim_matches('-');
    let mut head: String = readable.chars().take(40).collect();
    while head.ends_with('-') {
        head.pop();
    }
    format!("upg-{head}-a{attempt}-{hash:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::builtin;

    fn find<'a>(checks: &'a [Check], id: &str) -> &'a Check {
        checks
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("{id} in the catalog"))
    }

    fn end(code: Option<i32>, message: &str) -> ProbeEnd {
        ProbeEnd {
            exit_code: code,
            message: (!message.is_empty()).then(|| message.to_string()),
            disruption: None,
        }
    }

    #[test]
    fn exit_codes_decide_and_the_message_explains() {
        let line = r#"{"ok":false,"detail":"10.244.2.7:8080 from w-1: connection timed out","facts":{"dialled":"3","failed":"1"}}"#;
        match classify(&end(Some(1), &format!("starting\n{line}\n"))) {
            Verdict::Failed { detail, facts } => {
                assert_eq!(detail, "10.244.2.7:8080 from w-1: connection timed out");
                assert_eq!(facts["failed"], "1");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            classify(&end(Some(0), r#"{"ok":true,"facts":{"dialled":"3"}}"#)),
            Verdict::Passed {
                facts: [("dialled".to_string(), "3".to_string())].into()
            }
        );
        // No message at all: the exit code alone.
        assert_eq!(
            classify(&end(Some(0), "")),
            Verdict::Passed {
                facts: Facts::new()
            }
        );
        assert_eq!(
            classify(&end(Some(1), "plain words")),
            Verdict::Failed {
                detail: "plain words".into(),
                facts: Facts::new()
            }
        );
        for (code, why) in [
            (Some(2), "the probe exited 2 (0 passes, 1 fails)"),
            (Some(137), "the probe exited 137 (0 passes, 1 fails)"),
            (None, "the probe has not ended"),
        ] {
            assert_eq!(
                classify(&end(code, "")),
                Verdict::Inconclusive {
                    why: why.into(),
                    facts: Facts::new()
                }
            );
        }
        // A probe that contradicts itself is not believed either way.
        assert!(matches!(
            classify(&end(Some(0), r#"{"ok":false}"#)),
            Verdict::Inconclusive { .. }
        ));
    }

    #[test]
    fn a_disrupted_probe_is_inconclusive_whatever_it_exited() {
        for (pod, waiting, want) in [
            (Some("Evicted"), None, Disruption::Evicted),
            (Some("Preempting"), None, Disruption::Preempted),
            (
                None,
                Some("ImagePullBackOff"),
                Disruption::ImagePull("ImagePullBackOff".into()),
            ),
            (
                None,
                Some("ErrImagePull"),
                Disruption::ImagePull("ErrImagePull".into()),
            ),
        ] {
            let d = disruption_of(pod, waiting).expect("a disruption");
            assert_eq!(d, want);
            let v = classify(&ProbeEnd {
                exit_code: Some(1),
                message: None,
                disruption: Some(d),
            });
            assert!(matches!(v, Verdict::Inconclusive { .. }), "{v:?}");
        }
        assert_eq!(disruption_of(None, Some("ContainerCreating")), None);
        assert_eq!(disruption_of(Some("OOMKilled"), None), None);
        let timed_out = classify(&ProbeEnd {
            exit_code: None,
            message: None,
            disruption: Some(Disruption::TimedOut),
        });
        assert_eq!(
            timed_out,
            Verdict::Inconclusive {
                why: "the probe did not end within the check's timeout".into(),
                facts: Facts::new()
            }
        );
    }

    #[test]
    fn a_target_down_at_baseline_never_fires_and_a_new_one_fires_after_its_count() {
        let prom = find(&builtin(), "prometheus").clone();
        assert_eq!(prom.fire_after, 2);
        let set = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        let mut tally = ProblemTally::new(set(&["target node-exporter/r640-01"]));
        tally.observe(&set(&["target node-exporter/r640-01"]));
        assert!(tally.fired(&prom).is_empty(), "down at the baseline");
        tally.observe(&set(&[
            "target node-exporter/r640-01",
            "target kube-state-metrics",
        ]));
        assert!(tally.fired(&prom).is_empty(), "once is not yet twice");
        tally.observe(&set(&["target kube-state-metrics", "alert KubeletDown"]));
        assert_eq!(tally.fired(&prom), ["target kube-state-metrics"]);
        tally.observe(&set(&["alert KubeletDown"]));
        assert_eq!(tally.fired(&prom), ["alert KubeletDown"]);
        // A problem that went away lost its streak: back once is not yet twice.
        tally.observe(&set(&["target kube-state-metrics"]));
        assert!(tally.fired(&prom).is_empty());
    }

    #[test]
    fn devices_lost_are_named_with_before_and_after() {
        let before: BTreeMap<String, u64> = [
            ("nvidia.com/gpu".to_string(), 4),
            ("intel.com/sriov_netdevice".to_string(), 8),
        ]
        .into();
        let mut now = before.clone();
        assert!(devices_lost(&before, &now).is_empty());
        now.insert("nvidia.com/gpu".into(), 2);
        now.remove("intel.com/sriov_netdevice");
        now.insert("example.com/new".into(), 1);
        assert_eq!(
            devices_lost(&before, &now),
            [
                "intel.com/sriov_netdevice: 8 → 0".to_string(),
                "nvidia.com/gpu: 4 → 2".to_string()
            ]
        );
    }

    #[test]
    fn a_node_fails_its_devices_check_only_when_it_has_fewer_than_at_the_baseline() {
        let before: BTreeMap<String, u64> = [("nvidia.com/gpu".to_string(), 2)].into();
        assert!(matches!(
            devices_verdict(&before, &before),
            Verdict::Passed { facts } if facts["devices"] == "nvidia.com/gpu=2"
        ));
        let more: BTreeMap<String, u64> = [("nvidia.com/gpu".to_string(), 3)].into();
        assert!(matches!(
            devices_verdict(&before, &more),
            Verdict::Passed { .. }
        ));
        match devices_verdict(&before, &BTreeMap::new()) {
            Verdict::Failed { detail, facts } => {
                assert!(detail.contains("nvidia.com/gpu: 2 → 0"), "{detail}");
                assert_eq!(facts["devices"], "");
            }
            other => panic!("lost devices pass: {other:?}"),
        }
    }

    #[test]
    fn failing_at_the_baseline_blocks_only_for_the_control_plane() {
        let all = builtin();
        assert_eq!(
            baseline_finding(find(&all, "etcd-quorum")),
            BaselineFinding::Blocks
        );
        assert_eq!(
            baseline_finding(find(&all, "pod-network")),
            BaselineFinding::Excluded
        );
    }

    #[test]
    fn probe_names_are_deterministic_dns_labels() {
        const B: Boundary = Boundary::AfterBatch;
        let a = probe_name("0193-run", "pod-network", B, "r640-01", 1);
        // The baseline's probe and a later one of the same attempt number differ.
        assert_ne!(
            a,
            probe_name("0193-run", "pod-network", Boundary::Preflight, "r640-01", 1)
        );
        assert_eq!(a, probe_name("0193-run", "pod-network", B, "r640-01", 1));
        assert_ne!(a, probe_name("0193-run", "pod-network", B, "r640-01", 2));
        assert_ne!(a, probe_name("0193-run", "pod-network", B, "r640-02", 1));
        let long = probe_name("run", "storage/local-path", B, &"n".repeat(200), 12);
        for name in [a, long] {
            assert!(name.len() <= 63, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name}"
            );
            assert!(!name.starts_with('-') && !name.ends_with('-'), "{name}");
        }
        // Hostile node names never reach the name unescaped.
        let hostile = probe_name("r", "dns", B, "a;rm -rf /`x`$(y)", 1);
        assert!(hostile.starts_with("upg-dns-a-rm-rf-x-y-a1-"), "{hostile}");
    }

    #[test]
    fn a_check_of_several_probes_fails_if_any_fails_else_is_unsure_if_any_is() {
        let pass = |k: &str| Verdict::Passed {
            facts: [(k.to_string(), "3".to_string())].into(),
        };
        let fail = Verdict::Failed {
            detail: "dial back from 10.244.0.7:8080 to 10.244.0.9:8080: i/o timeout".into(),
            facts: Facts::new(),
        };
        match combine(vec![("", fail), ("hostNetwork", pass("dialled"))]) {
            Verdict::Failed { detail, facts } => {
                assert!(detail.starts_with("dial back from"), "{detail}");
                assert_eq!(facts["hostNetwork/dialled"], "3");
            }
            other => panic!("{other:?}"),
        }
        let pull = classify(&ProbeEnd {
            disruption: Some(Disruption::ImagePull("ErrImagePull".into())),
            ..ProbeEnd::default()
        });
        match combine(vec![("", pass("dialled")), ("hostNetwork", pull)]) {
            Verdict::Inconclusive { why, facts } => {
                assert!(why.starts_with("hostNetwork: the probe's image"), "{why}");
                assert_eq!(facts[FACT_IMAGE_PULL], "ErrImagePull");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            combine(vec![("a", pass("x")), ("b", pass("y"))]),
            Verdict::Passed { facts } if facts.len() == 2
        ));
    }
}
