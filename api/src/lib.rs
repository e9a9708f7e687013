//! The daemon's API, typed: every path, request body, query and response body that `upgraded`
//! serves and `upgradectl` reads. Both sides compile against these types, so a renamed field
//! is a build error, not a silently empty column.
//!
//! HTTP/1.1 + JSON over a Unix socket. Requests are strict (`deny_unknown_fields`: a mistyped
//! field is refused, not ignored); every error is an [`ErrorBody`].

use serde::{Deserialize, Serialize};
use upgraded_events::RunId;
use upgraded_events::plan::Plan;
use upgraded_events::run::RunPhase;
use upgraded_events::state::RunSummary;
use upgraded_planner::PlanReport;

/// The API's paths.
pub mod path {
    use upgraded_events::RunId;

    /// `GET`: [`super::Status`].
    pub const STATUS: &str = "/v1/status";
    /// `GET`: a [`super::RunEntry`] per run; `POST` a [`super::StartRequest`]:
    /// [`super::StartResponse`].
    pub const RUNS: &str = "/v1/runs";
    /// `POST` an optional [`super::ReasonRequest`]: [`super::RunAck`].
    pub const PAUSE: &str = "/v1/run/pause";
    /// `POST`: [`super::RunAck`].
    pub const RESUME: &str = "/v1/run/resume";
    /// `POST` a [`super::RollbackRequest`]: [`super::RollbackResponse`].
    pub const ROLLBACKS: &str = "/v1/rollbacks";
    /// `POST` a [`super::NotifyTestRequest`]: [`super::NotifyTestResponse`].
    pub const NOTIFY_TEST: &str = "/v1/notify/test";
    /// `POST` an optional [`super::ReasonRequest`]: [`super::RunAck`].
    pub const ABORT: &str = "/v1/run/abort";

    /// `GET`: the run's [`upgraded_events::RunSummary`].
    pub fn run(run: RunId) -> String {
        format!("/v1/runs/{run}")
    }

    /// `GET`: the run's records as JSON lines ([`upgraded_events::Record`]), see
    /// [`super::EventsQuery`].
    pub fn events(run: RunId, q: &super::EventsQuery) -> String {
        format!("/v1/runs/{run}/events?from={}&follow={}", q.from, q.follow)
    }
}

/// `POST /v1/runs`: plan an upgrade and start it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartRequest {
    /// A release like `v1.35.3`.
    pub target: String,
    /// Plan only; record nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Start despite blockers in the plan (recorded as forced).
    #[serde(default)]
    pub force: bool,
}

/// The answer to a [`StartRequest`]: the run recorded (none for a dry run or when there is
/// nothing to do) and the plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartResponse {
    pub run: Option<RunId>,
    pub plan: PlanReport,
}

/// `POST /v1/rollbacks`: plan a rollback of a finished run, and start it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackRequest {
    /// Nodes to take back to the versions recorded before the run.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Take the whole cluster back to this release, one minor below the control plane.
    #[serde(default)]
    pub to: Option<String>,
    /// Take the whole run back: the control plane one minor at a time to where it started,
    /// every node it changed to its recorded versions.
    #[serde(default)]
    pub all: bool,
    /// The run to undo (default: the newest).
    #[serde(default)]
    pub run: Option<RunId>,
    /// Plan only; record nothing.
    #[serde(default)]
    pub plan_only: bool,
    /// What happens to etcd (`restore-snapshot` only with `to`).
    #[serde(default)]
    pub etcd: EtcdMode,
    /// Required with `etcd: restore-snapshot` (unless `planOnly`): every write made since the
    /// snapshot is lost.
    #[serde(default)]
    pub confirm_data_loss: bool,
}

/// What a rollback does with etcd.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EtcdMode {
    /// etcd stays at its newer version, with its data (kubeadm's way).
    #[default]
    Keep,
    /// etcd's data goes back to the snapshot taken before the control plane went past the
    /// target (etcd's disaster-recovery procedure).
    RestoreSnapshot,
}

/// The answer to a [`RollbackRequest`]: the rollback run recorded (none when only planned),
/// the run it undoes, and what it does, in order, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackResponse {
    pub run: Option<RunId>,
    pub undoes: RunId,
    pub plan: Plan,
    pub why: Vec<String>,
    pub etcd: String,
}

/// `upgradectl notify test SINK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyTestRequest {
    /// A sink's `name` in the daemon's policy.
    pub sink: String,
}

/// What the sink answered to one synthetic notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyTestResponse {
    pub sink: String,
    /// The CloudEvents type sent (`dev.upgraded.run.test`).
    #[serde(rename = "type")]
    pub event_type: String,
    /// The HTTP status; none when the sink did not answer.
    pub status: Option<u16>,
    /// The answer's body (at most 1 KiB), or what went wrong.
    pub detail: String,
}

/// The body of a pause or an abort; it may be absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// One line, at most [`MAX_REASON_BYTES`].
    #[serde(default)]
    pub reason: String,
}

/// The run an operator request was recorded on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunAck {
    pub run: RunId,
}

/// `GET /v1/status`: the active run, or the last one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub active: Option<RunSummary>,
    /// `upgraded --ha`: the instance that answered and the lease as it sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaStatus>,
}

/// `upgraded --ha`: one instance and the lease as it sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaStatus {
    /// The instance that answered (`--instance`).
    pub instance: String,
    /// Whether it may act now: it holds the lease, its campaign delay is over and its last
    /// renewal is recent enough.
    pub acting: bool,
    /// The lease's holder as this instance last knew it (itself while it leads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_epoch: Option<u64>,
    /// What it is doing, for people: following the replicated log, leading, or why it
    /// stopped acting (fenced, deposed, NATS without quorum).
    pub note: String,
}

/// One run in `GET /v1/runs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunEntry {
    pub run: RunId,
    pub phase: RunPhase,
    pub target: Option<String>,
    /// How many records the run has.
    pub records: u64,
    /// Its place in the history: kind, versions, how it ended, when, by whom, how much.
    #[serde(default)]
    pub history: Option<upgraded_events::history::RunHistory>,
}

/// The query of `GET /v1/runs/{id}/events`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// The first seq to send.
    #[serde(default)]
    pub from: u64,
    /// Keep the stream open, sending records as they are committed, until the run ends.
    #[serde(default)]
    pub follow: bool,
}

/// Every non-2xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// The largest request body the daemon reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest operator reason (bytes) recorded in the log.
pub const MAX_REASON_BYTES: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_refuse_a_mistyped_field_and_default_the_optional_ones() {
        let s: StartRequest = serde_json::from_str(r#"{"target":"v1.35.3"}"#).expect("minimal");
        assert_eq!(
            s,
            StartRequest {
                target: "v1.35.3".into(),
                dry_run: false,
                force: false
            }
        );
        let e = serde_json::from_str::<StartRequest>(r#"{"target":"v1.35.3","dry_run":true}"#)
            .expect_err("snake_case is not the API's spelling");
        assert!(e.to_string().contains("unknown field `dry_run`"), "{e}");
        let e = serde_json::from_str::<ReasonRequest>(r#"{"reasn":"x"}"#).expect_err("typo");
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn phases_print_as_the_api_spells_them() {
        use upgraded_events::node::Phase;
        for p in [
            RunPhase::Planned,
            RunPhase::Running,
            RunPhase::Paused,
            RunPhase::Halted,
            RunPhase::Aborting,
            RunPhase::Completed,
            RunPhase::Aborted,
        ] {
            assert_eq!(
                serde_json::to_value(p).expect("json"),
                serde_json::Value::from(p.as_str())
            );
        }
        for p in [
            Phase::Pending,
            Phase::Preflight,
            Phase::Preparing,
            Phase::Cordoning,
            Phase::Draining,
            Phase::Upgrading,
            Phase::Restarting,
            Phase::Verifying,
            Phase::Uncordoning,
            Phase::Soaking,
            Phase::Done,
            Phase::Aborted,
            Phase::Parked,
        ] {
            assert_eq!(
                serde_json::to_value(p).expect("json"),
                serde_json::Value::from(p.as_str())
            );
        }
    }

    #[test]
    fn the_events_path_carries_its_query() {
        let run = RunId::nil();
        let q = EventsQuery {
            from: 7,
            follow: true,
        };
        assert_eq!(
            path::events(run, &q),
            "/v1/runs/00000000-0000-0000-0000-000000000000/events?from=7&follow=true"
        );
    }
}
