//! The run policy: how patient, how careful, and what to do when a step fails.
//!
//! This is the part of the policy the engine needs; the operator-facing YAML file (with
//! windows, catalogs and gates) grows around it. Every field has a default so that old
//! recorded policies keep loading as fields are added.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::check::ChecksPolicy;
use crate::window::Window;

/// What happens when a PodDisruptionBudget still refuses an eviction at the drain timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OnDrainBlocked {
    /// Set the node aside (`NodeParked`), go on with the others, and halt at the end naming
    /// the parked nodes; `resume` retries them.
    #[default]
    Park,
    /// Pause the whole run with the blocking budget in the reason.
    Pause,
}

pub use crate::check::OnGateFailure;

/// A key that records written by older builds carry and this build reads and ignores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, schemars::JsonSchema)]
pub struct Retired;

impl<'de> Deserialize<'de> for Retired {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| Retired)
    }
}

/// The run's policy, stored as JSON inside `RunPlanned`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// Attempts per step before the run halts (a resume grants as many again).
    pub max_attempts: u32,
    /// First retry delay; doubles with each failed attempt, capped at `retry_backoff_max_secs`.
    pub retry_backoff_secs: u64,
    pub retry_backoff_max_secs: u64,
    /// Pause between the end of one batch and the start of the next.
    pub wait_between_batches_secs: u64,
    /// How long a node is watched after it is uncordoned (the `Soak` step).
    pub soak_secs: u64,
    /// How long a drain keeps retrying refused evictions and waiting for pods to go.
    pub drain_timeout_secs: u64,
    pub on_drain_blocked: OnDrainBlocked,
    /// A parked node is made schedulable again (true) or left cordoned for the operator.
    pub uncordon_parked: bool,
    /// Evict pods without a controller (they are not recreated anywhere: `kubectl drain
    /// --force`). Off: such a node is refused and the run halts.
    pub evict_unmanaged_pods: bool,
    /// Evict pods with emptyDir volumes, losing that data (`--delete-emptydir-data`). New
    /// runs get the planner's default (true); `false` here is what records written before
    /// the field existed meant, so it stays this document's default.
    pub delete_empty_dir_data: bool,
    /// When a budget that can never allow an eviction at the workload's size blocks a drain,
    /// scale the pod's Deployment or StatefulSet up by one, drain, and scale it back
    /// (`WorkloadScaled` events, restored even after a crash).
    pub scale_up_to_unblock: bool,
    /// Halt when the share of pods in CrashLoopBackOff rises more than this many percentage
    /// points over the pre-upgrade baseline.
    pub crash_loop_increase_percent: u32,
    /// A node not Ready (or not at its versions) this long after its kubelet restart fails
    /// its verify step; a node that has not answered this long (`unreachable`, `in-doubt`
    /// in a row) parks, or halts the run for a control-plane node.
    pub node_ready_timeout_secs: u64,
    /// The etcd snapshot is taken again when `kubeadm upgrade apply` begins and the last one
    /// is older than this.
    pub etcd_snapshot_max_age_secs: u64,
    /// Maintenance windows: a node only starts inside one, and only when its estimate fits
    /// before the window closes. Empty: any time.
    pub windows: Vec<Window>,
    /// What a worker's failed verify gate (or a canary's failed soak) does. New runs get
    /// the planner's default (`rollback-node`); `halt` is what older records meant.
    pub on_gate_failure: OnGateFailure,
    /// `onFailure`, which runs recorded before 2026-12 carry (it only ever said `halt`, which
    /// is what a failing step does); read and ignored, never written.
    #[serde(rename = "onFailure", skip_serializing)]
    pub retired_on_failure: Retired,
    /// The checks that prove an upgraded node works (`events::check`), as the policy set them.
    pub checks: ChecksPolicy,
    /// The node label naming hardware generations (pod-network probes dial one node of each
    /// other generation). `None` in records from before checks: the planner's default.
    pub generation_label: Option<String>,
    /// The kubelet config keys the agents read for drift (`/configz`); none in records
    /// from before drift was read on the machines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift_keys: Vec<String>,
    /// How long a step may find what it needs unavailable (the API server refusing, 5xx,
    /// 429) before the run pauses with the reason (`outage.pauseAfter`); until then such
    /// failures are retried without using the step's attempts.
    pub outage_pause_secs: u64,
    /// Whether a run the daemon paused for an outage resumes by itself once what did not
    /// answer answers again (`outage.resume: auto`). Off in records from before it existed.
    pub outage_resume: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_attempts: 3,
            retry_backoff_secs: 10,
            retry_backoff_max_secs: 300,
            wait_between_batches_secs: 300,
            soak_secs: 1800,
            drain_timeout_secs: 300,
            on_drain_blocked: OnDrainBlocked::Park,
            uncordon_parked: true,
            evict_unmanaged_pods: false,
            delete_empty_dir_data: false,
            scale_up_to_unblock: false,
            crash_loop_increase_percent: 5,
            node_ready_timeout_secs: 600,
            etcd_snapshot_max_age_secs: 3600,
            windows: Vec::new(),
            on_gate_failure: OnGateFailure::Halt,
            retired_on_failure: Retired,
            checks: ChecksPolicy::default(),
            generation_label: None,
            drift_keys: Vec::new(),
            outage_pause_secs: 600,
            outage_resume: false,
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

    #[test]
    fn the_retired_on_failure_key_is_read_and_never_written() {
        let p: Policy = serde_json::from_str(r#"{"onFailure": "halt", "soakSecs": 5}"#)
            .expect("records from older builds still decode");
        assert_eq!(p.soak_secs, 5);
        let json = serde_json::to_string(&p).expect("json");
        assert!(!json.contains("onFailure"), "{json}");
    }
}
