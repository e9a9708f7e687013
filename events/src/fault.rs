//! Why a step attempt failed, as the executor saw it: a closed set of kinds that the core's
//! rules match on (`decide`: retry with backoff, give up at once, park the node or pause the
//! run, halt without a rollback). The daemon's ports say which kind a failure is; nothing in
//! the core reads an error's text.
//!
//! A record keeps the kind in its facts (`failure=<kind>`), beside the facts that detail it
//! (`eviction_blocked=<what refused>`). Records written before the kind existed still read:
//! `retryable=false` was a permanent failure, an `eviction_blocked` fact a blocked drain, a
//! checks step's `verdict=inconclusive` or `severity=halt` what they said.

use crate::facts::Facts;

/// The fact that holds a failure's kind.
pub const FACT: &str = "failure";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// May work if tried again: a timeout, a lost connection, a 5xx, an unreachable API, a
    /// gate not met yet. Retried with backoff until the step's attempts run out.
    Transient,
    /// Will fail the same way again: a refusal, a missing right, a name that is not allowed,
    /// a machine that does not qualify. Not retried: a person has to act.
    Permanent,
    /// A drain that a PodDisruptionBudget still refused at its timeout: park the node or
    /// pause the run, as the policy says (the `eviction_blocked` fact names what refused).
    EvictionBlocked,
    /// A checks step whose checks gave no answer: halt, roll nothing back.
    ChecksInconclusive,
    /// A checks step with a failed check of generation or cluster scope (or policy `halt`):
    /// halt, roll nothing back.
    ChecksHalt,
    /// What the step needs did not answer (the Kubernetes API refused the connection,
    /// answered 5xx or 429, or timed out): an outage around the step, not a verdict on it.
    /// Retried with backoff and jitter without using the step's attempts; an outage longer
    /// than the policy's `outage.pauseAfter` pauses the run with the reason.
    Unavailable,
    /// The command was sent but its answer was lost (the connection dropped, the agent hung
    /// past the command's timeout): it may or may not have taken effect. The step is in
    /// doubt, as after a daemon crash: probed before it is redone when it can be
    /// (`Step::in_doubt`), re-run when running it again is harmless. Not a failed attempt.
    InDoubt,
    /// The node itself did not answer: its agent could not be reached (the connection
    /// refused or timed out: the machine down, rebooting, or cut off), or the answer to a
    /// command that only reads was lost. An outage of one node, retried with backoff
    /// without using the step's attempts; once the node has not answered for the policy's
    /// `gates.nodeReadyTimeout`, it parks, still cordoned, with the reason, and the run goes
    /// on with the others.
    Unreachable,
}

impl FailureKind {
    pub const ALL: [FailureKind; 8] = [
        FailureKind::Transient,
        FailureKind::Permanent,
        FailureKind::EvictionBlocked,
        FailureKind::ChecksInconclusive,
        FailureKind::ChecksHalt,
        FailureKind::Unavailable,
        FailureKind::InDoubt,
        FailureKind::Unreachable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FailureKind::Transient => "transient",
            FailureKind::Permanent => "permanent",
            FailureKind::EvictionBlocked => "eviction-blocked",
            FailureKind::ChecksInconclusive => "checks-inconclusive",
            FailureKind::ChecksHalt => "checks-halt",
            FailureKind::Unavailable => "unavailable",
            FailureKind::InDoubt => "in-doubt",
            FailureKind::Unreachable => "unreachable",
        }
    }

    /// Whether the failure is an outage around the step (nothing said about the step
    /// itself): retried without using its attempts, for as long as the outage rules allow.
    pub fn is_outage(self) -> bool {
        matches!(
            self,
            FailureKind::Unavailable | FailureKind::InDoubt | FailureKind::Unreachable
        )
    }

    /// Whether the outage is the node's own (its agent, its connection), which parks the
    /// node after `gates.nodeReadyTimeout`; otherwise it is what the whole run needs (the
    /// API server), which pauses the run after `outage.pauseAfter`.
    pub fn is_node_outage(self) -> bool {
        matches!(self, FailureKind::InDoubt | FailureKind::Unreachable)
    }

    /// Whether the same attempt may work later.
    pub fn retryable(self) -> bool {
        self != FailureKind::Permanent
    }

    /// Whether the step's failure stops the run without rolling the node back.
    pub fn halts_without_rollback(self) -> bool {
        matches!(
            self,
            FailureKind::ChecksInconclusive | FailureKind::ChecksHalt
        )
    }

    /// Puts the kind in a failure's facts.
    pub fn record(self, facts: &mut Facts) {
        facts.insert(FACT.to_string(), self.name().to_string());
    }

    /// The kind of a recorded failure: its `failure` fact, or what records written before it
    /// said; a failure that says nothing is transient.
    pub fn of(facts: &Facts) -> FailureKind {
        if let Some(k) = facts
            .get(FACT)
            .and_then(|n| FailureKind::ALL.into_iter().find(|k| k.name() == n))
        {
            return k;
        }
        let is = |key: &str, value: &str| facts.get(key).is_some_and(|v| v == value);
        if facts.contains_key("eviction_blocked") {
            FailureKind::EvictionBlocked
        } else if is("verdict", "inconclusive") {
            FailureKind::ChecksInconclusive
        } else if is("severity", "halt") {
            FailureKind::ChecksHalt
        } else if is("retryable", "false") {
            FailureKind::Permanent
        } else {
            FailureKind::Transient
        }
    }
}

/// The delay before retry number `failures + 1`: `start_ms` doubled per failure, at most
/// `max_ms`. Every retry loop of the daemon waits this long (the outbox, the trace and
/// notification consumers), so none is unbounded in its rate.
pub fn backoff_ms(start_ms: u64, max_ms: u64, failures: u32) -> u64 {
    start_ms
        .saturating_mul(1u64 << failures.min(32))
        .min(max_ms)
}

/// `ms` spread over `[ms/2, ms]` by `salt` (a node and an attempt): nodes that met the same
/// outage do not all come back at the same instant. Deterministic: replay decides alike.
pub fn jitter_ms(ms: u64, salt: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in salt.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let lo = ms - ms / 2;
    lo + h % (ms - lo + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(pairs: &[(&str, &str)]) -> Facts {
        crate::facts::facts_of(pairs)
    }

    #[test]
    fn every_kind_is_read_back_from_its_fact() {
        for k in FailureKind::ALL {
            let mut f = Facts::new();
            k.record(&mut f);
            assert_eq!(FailureKind::of(&f), k);
        }
    }

    /// Records written before the kind existed, a row per legacy fact.
    #[test]
    fn older_records_read_as_what_they_said() {
        let rows: &[(&[(&str, &str)], FailureKind)] = &[
            (&[], FailureKind::Transient),
            (&[("retryable", "true")], FailureKind::Transient),
            (&[("retryable", "false")], FailureKind::Permanent),
            (
                &[("eviction_blocked", "pdb db"), ("retryable", "true")],
                FailureKind::EvictionBlocked,
            ),
            (
                &[("gate", "checks"), ("verdict", "inconclusive")],
                FailureKind::ChecksInconclusive,
            ),
            (
                &[("verdict", "failed"), ("severity", "halt")],
                FailureKind::ChecksHalt,
            ),
            (
                &[("verdict", "failed"), ("severity", "rollback-node")],
                FailureKind::Transient,
            ),
            (&[("failure", "no-such-kind")], FailureKind::Transient),
        ];
        for (f, want) in rows {
            assert_eq!(FailureKind::of(&facts(f)), *want, "{f:?}");
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap() {
        let rows = [
            (0, 200),
            (1, 400),
            (2, 800),
            (5, 5_000),
            (40, 5_000),
            (u32::MAX, 5_000),
        ];
        for (failures, want) in rows {
            assert_eq!(backoff_ms(200, 5_000, failures), want, "{failures}");
        }
    }

    #[test]
    fn jitter_stays_within_half_and_whole_and_spreads() {
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..50 {
            let j = jitter_ms(10_000, &format!("w-{i}:1"));
            assert!((5_000..=10_000).contains(&j), "{j}");
            seen.insert(j);
        }
        assert!(seen.len() > 40, "spread: {}", seen.len());
        assert_eq!(jitter_ms(10_000, "w-1:1"), jitter_ms(10_000, "w-1:1"));
        assert_eq!(jitter_ms(0, "x"), 0);
        assert_eq!(jitter_ms(1, "x"), 1);
    }

    #[test]
    fn only_a_permanent_failure_is_not_retried() {
        for k in FailureKind::ALL {
            assert_eq!(k.retryable(), k != FailureKind::Permanent);
        }
    }
}
