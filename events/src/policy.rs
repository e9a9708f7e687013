//! The run policy: how patient, how careful, and what to do when a step fails.
//!
//! This is the part of the policy the engine needs; the operator-facing YAML file (with
//! windows, catalogs and gates) grows around it. Every field has a default so that old
//! recorded policies keep loading as fields are added.

use serde::{Deserialize, Serialize};

/// What happens to the run when a node's step has failed `max_attempts` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Stop starting new steps and wait for an operator (`upgradectl resume` retries).
    #[default]
    Halt,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// Attempts per step before `on_failure` applies (a resume grants as many again).
    pub max_attempts: u32,
    /// First retry delay; doubles with each failed attempt, capped at `retry_backoff_max_secs`.
    pub retry_backoff_secs: u64,
    pub retry_backoff_max_secs: u64,
    /// Pause between the end of one batch and the start of the next.
    pub wait_between_batches_secs: u64,
    /// How long a node is watched after it is uncordoned (the `Soak` step).
    pub soak_secs: u64,
    pub on_failure: OnFailure,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_attempts: 3,
            retry_backoff_secs: 10,
            retry_backoff_max_secs: 300,
            wait_between_batches_secs: 300,
            soak_secs: 1800,
            on_failure: OnFailure::Halt,
        }
    }
}

impl Policy {
    /// Delay before attempt `failures + 1` after `failures` consecutive failures (>= 1).
    pub fn backoff_secs(&self, failures: u32) -> u64 {
        let shift = failures.saturating_sub(1).min(20);
        self.retry_backoff_secs
            .saturating_mul(1u64 << shift)
            .min(self.retry_backoff_max_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = Policy::default();
        assert_eq!(
            (1..=7).map(|n| p.backoff_secs(n)).collect::<Vec<_>>(),
            vec![10, 20, 40, 80, 160, 300, 300]
        );
        assert_eq!(p.backoff_secs(u32::MAX), 300);
    }

    #[test]
    fn old_policies_load_with_defaults() {
        let p: Policy = serde_json::from_str(r#"{"soakSecs": 5}"#).expect("parse");
        assert_eq!(p.soak_secs, 5);
        assert_eq!(p.max_attempts, 3);
        assert!(serde_json::from_str::<Policy>(r#"{"soakSec": 5}"#).is_err());
    }
}
