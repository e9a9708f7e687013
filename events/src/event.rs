//! The event vocabulary: past-tense facts about runs, nodes and operators, and the stored record.
//!
//! Compatibility rule (bincode records carry no field names): never reorder, remove or change
//! a variant or field; only append new variants at the end of an enum. Documents that are
//! expected to grow (plans, policies, observed facts) are stored as JSON inside the record
//! (see [`Json`]) so they can gain fields without a format change. `tests/golden.rs` keeps
//! committed byte samples of every variant and fails on any incompatible change.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::check::Boundary;
use crate::inventory::Inventory;
use crate::names::Entry;
pub use crate::plan::Step;
use crate::plan::{EtcdRestoreStage, Plan};
use crate::policy::Policy;
pub use crate::time::Timestamp;
use crate::version::Version;

pub use crate::names::RunId;

pub use crate::facts::Facts;

/// Who did an operator action: the peer uid the kernel reported on the API socket (trusted)
/// and the name the client gave (informational).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Actor {
    pub uid: Option<u32>,
    pub name: String,
}

impl Actor {
    /// The daemon itself (automatic decisions).
    pub fn daemon() -> Self {
        Actor {
            uid: None,
            name: "upgraded".into(),
        }
    }
}

/// How a step whose intent was recorded but whose outcome was not (the daemon died in
/// between) is resolved on restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InDoubt {
    /// The step is idempotent: run it again.
    Rerun,
    /// The step must not run twice: look at the node first and record what was found.
    Probe,
}

impl Step {
    pub fn in_doubt(&self) -> InDoubt {
        match self {
            // Package installs and kubelet restarts are observable (installed version, kubelet
            // start time) and are not repeated blindly.
            Step::UpgradePackages { .. } | Step::RestartKubelet => InDoubt::Probe,
            Step::Preflight
            | Step::Cordon
            | Step::Drain
            | Step::Verify
            | Step::Uncordon
            | Step::Soak
            // A fresh snapshot replaces a half-written one; kubeadm upgrade is idempotent
            // (its documentation: fix the cause and run it again).
            | Step::EtcdSnapshot
            | Step::KubeadmUpgrade { .. }
            // Its script installs only when the version differs and then puts the recorded
            // kubelet config back: running it again finishes what a crash cut short.
            | Step::DowngradePackages { .. }
            // Copies the same kept files again and sets the same annotation.
            | Step::RestoreKubeletFiles { .. }
            // Setting an image, and kubeadm's own idempotence, as for an upgrade.
            | Step::KubeProxy { .. }
            | Step::KubeadmDowngrade { .. }
            // Each stage checks where the node is (manifest parked or not, a marker per
            // restored token) and does only what is left.
            | Step::EtcdRestore(_)
            // Probe objects have deterministic names: a re-run adopts what it had created.
            | Step::Checks { .. } => InDoubt::Rerun,
        }
    }

    /// Short stable name, for logs, subjects and tables.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Preflight => "preflight",
            Step::Cordon => "cordon",
            Step::Drain => "drain",
            Step::UpgradePackages { .. } => "upgrade-packages",
            Step::RestartKubelet => "restart-kubelet",
            Step::Verify => "verify",
            Step::Uncordon => "uncordon",
            Step::Soak => "soak",
            Step::EtcdSnapshot => "etcd-snapshot",
            Step::KubeadmUpgrade { apply: true, .. } => "kubeadm-upgrade-apply",
            Step::KubeadmUpgrade { apply: false, .. } => "kubeadm-upgrade-node",
            Step::DowngradePackages { .. } => "downgrade-packages",
            Step::KubeProxy { .. } => "kube-proxy-image",
            Step::KubeadmDowngrade { apply: true, .. } => "kubeadm-downgrade-apply",
            Step::KubeadmDowngrade { apply: false, .. } => "kubeadm-downgrade-node",
            Step::EtcdRestore(EtcdRestoreStage::StopApiserver) => "etcd-restore-stop-apiserver",
            Step::EtcdRestore(EtcdRestoreStage::Restore(_)) => "etcd-restore-member",
            Step::EtcdRestore(EtcdRestoreStage::StartEtcd) => "etcd-restore-start-etcd",
            Step::EtcdRestore(EtcdRestoreStage::StartControlPlane) => {
                "etcd-restore-start-control-plane"
            }
            Step::Checks { .. } => "checks",
            Step::RestoreKubeletFiles { .. } => "restore-kubelet-files",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::UpgradePackages { version } => write!(f, "upgrade-packages {version}"),
            Step::DowngradePackages { version, .. } => write!(f, "downgrade-packages {version}"),
            Step::KubeProxy { version } | Step::KubeadmDowngrade { version, .. } => {
                write!(f, "{} {version}", self.name())
            }
            Step::KubeadmUpgrade { version, .. } => write!(f, "{} {version}", self.name()),
            Step::Checks { boundary } => write!(f, "checks {}", boundary.name()),
            other => f.write_str(other.name()),
        }
    }
}

/// Everything that can happen in a run. Append-only enum (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Event {
    /// A plan was recorded for this run, with the policy in force.
    RunPlanned {
        target: Version,
        plan: Json<Plan>,
        policy: Json<Policy>,
        by: Actor,
    },
    RunStarted {
        by: Actor,
    },
    RunPaused {
        by: Actor,
        reason: String,
    },
    RunResumed {
        by: Actor,
    },
    /// The daemon stopped the run on its own (a step failed beyond its retries, a gate failed).
    RunHalted {
        reason: String,
    },
    RunCompleted,
    AbortRequested {
        by: Actor,
        reason: String,
    },
    /// Every node the run touched was put back in a recorded state.
    RunAborted,
    /// A daemon process (re)opened this unfinished run; steps in flight before are in doubt.
    RunRecovered {
        pid: u32,
    },
    /// Intent: the step is about to be executed. Durable before the side effect.
    StepStarted {
        node: Entry,
        step: Step,
        attempt: u32,
    },
    StepSucceeded {
        node: Entry,
        step: Step,
        attempt: u32,
        facts: Facts,
    },
    StepFailed {
        node: Entry,
        step: Step,
        attempt: u32,
        error: String,
        facts: Facts,
    },
    /// An in-doubt step was probed instead of re-run: `done` says whether its effect was found.
    StepProbed {
        node: Entry,
        step: Step,
        attempt: u32,
        done: bool,
        facts: Facts,
    },
    /// The pre-upgrade state: every node, pod, budget and controller as read from the
    /// cluster before the plan was made, with the component versions they run.
    ClusterObserved {
        apiserver: Version,
        inventory: Json<Inventory>,
    },
    /// A PodDisruptionBudget refused an eviction; the drain keeps retrying with backoff
    /// until its timeout. Recorded once per pod per drain attempt.
    EvictionBlocked {
        node: Entry,
        pod: String,
        pdb: String,
        disruptions_allowed: i64,
    },
    /// The daemon set the node aside after its drain stayed blocked (policy `park`): the
    /// run goes on with the others and halts at the end; `resume` retries it. `uncordon`:
    /// the node is made schedulable again first.
    NodeParked {
        node: Entry,
        reason: String,
        uncordon: bool,
    },
    /// The daemon changed a workload's replicas to unblock a drain (policy
    /// `drain.scaleUpToUnblock`). A scale-up (`restore: false`, `to = from + 1`) is recorded
    /// *before* the change, so a crash in between still restores it; a restore (`restore:
    /// true`) is recorded *after* the change (`from` = replicas found, `to` = replicas left;
    /// equal when someone else had changed the workload meanwhile and it was left alone).
    WorkloadScaled {
        node: Entry,
        /// `Deployment` or `StatefulSet`.
        kind: String,
        namespace: String,
        name: String,
        from: u32,
        to: u32,
        restore: bool,
    },
    /// A worker failed its verify gate (or a canary its soak) past its attempts and policy
    /// says `rollback-node`: its remaining steps are replaced by `steps`, which take it back
    /// to the versions its preflight recorded; then it is parked and the run halts with
    /// `reason`. Recorded before any of those steps.
    NodeRollingBack {
        node: Entry,
        reason: String,
        steps: Vec<Step>,
    },
    /// A gate failed and policy says `rollback-run`: the run is aborted (every node put back
    /// in a recorded state, as for an operator's abort), then the whole run is rolled back
    /// in a rollback run of its own. Recorded before either.
    RollbackRequested {
        reason: String,
    },
    /// A check of the catalog (`events::check`) is about to run on `subject` (a node, a
    /// generation, or `cluster`) at `boundary`. Its probe objects are named from the run,
    /// the check, the subject and the attempt, so a restarted daemon adopts them.
    CheckStarted {
        check: String,
        subject: String,
        boundary: Boundary,
        attempt: u32,
    },
    /// The check saw what it should (`facts`: what it measured).
    CheckPassed {
        check: String,
        subject: String,
        attempt: u32,
        facts: Facts,
    },
    /// The check saw the subject broken: `detail` says what was tried and what happened.
    CheckFailed {
        check: String,
        subject: String,
        attempt: u32,
        detail: String,
        facts: Facts,
    },
    /// The check gave no answer about the subject (its probe evicted, preempted, stuck on an
    /// image pull, timed out): retried, never counted as a failure.
    CheckInconclusive {
        check: String,
        subject: String,
        attempt: u32,
        why: String,
        facts: Facts,
    },
    /// Drift within each hardware generation as the machines' agents read it: at the
    /// start (`after: None`, before anything is touched) and after each batch (`after`:
    /// its index), when the nodes of a generation are compared with those at the same
    /// kubelet version. Generations without outliers are not listed.
    DriftObserved {
        after: Option<u32>,
        /// The generations read (a reading replaces their earlier ones).
        generations: Vec<String>,
        reports: Json<Vec<crate::drift::DriftReport>>,
    },
    /// Another daemon took over the run (`--ha`): `instance` leads in `epoch` from this
    /// record on, resuming as after a crash; a record of an older epoch after it is a
    /// deposed leader's, and the fold ignores it.
    LeaderChanged {
        instance: String,
        epoch: u64,
    },
}

/// The variant names, for golden samples, subjects and schema docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    RunPlanned,
    RunStarted,
    RunPaused,
    RunResumed,
    RunHalted,
    RunCompleted,
    AbortRequested,
    RunAborted,
    RunRecovered,
    StepStarted,
    StepSucceeded,
    StepFailed,
    StepProbed,
    ClusterObserved,
    EvictionBlocked,
    NodeParked,
    WorkloadScaled,
    NodeRollingBack,
    RollbackRequested,
    CheckStarted,
    CheckPassed,
    CheckFailed,
    CheckInconclusive,
    DriftObserved,
    LeaderChanged,
}

impl EventKind {
    pub const ALL: [EventKind; 25] = [
        EventKind::RunPlanned,
        EventKind::RunStarted,
        EventKind::RunPaused,
        EventKind::RunResumed,
        EventKind::RunHalted,
        EventKind::RunCompleted,
        EventKind::AbortRequested,
        EventKind::RunAborted,
        EventKind::RunRecovered,
        EventKind::StepStarted,
        EventKind::StepSucceeded,
        EventKind::StepFailed,
        EventKind::StepProbed,
        EventKind::ClusterObserved,
        EventKind::EvictionBlocked,
        EventKind::NodeParked,
        EventKind::WorkloadScaled,
        EventKind::NodeRollingBack,
        EventKind::RollbackRequested,
        EventKind::CheckStarted,
        EventKind::CheckPassed,
        EventKind::CheckFailed,
        EventKind::CheckInconclusive,
        EventKind::DriftObserved,
        EventKind::LeaderChanged,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::RunPlanned => "RunPlanned",
            EventKind::RunStarted => "RunStarted",
            EventKind::RunPaused => "RunPaused",
            EventKind::RunResumed => "RunResumed",
            EventKind::RunHalted => "RunHalted",
            EventKind::RunCompleted => "RunCompleted",
            EventKind::AbortRequested => "AbortRequested",
            EventKind::RunAborted => "RunAborted",
            EventKind::RunRecovered => "RunRecovered",
            EventKind::StepStarted => "StepStarted",
            EventKind::StepSucceeded => "StepSucceeded",
            EventKind::StepFailed => "StepFailed",
            EventKind::StepProbed => "StepProbed",
            EventKind::ClusterObserved => "ClusterObserved",
            EventKind::EvictionBlocked => "EvictionBlocked",
            EventKind::NodeParked => "NodeParked",
            EventKind::WorkloadScaled => "WorkloadScaled",
            EventKind::NodeRollingBack => "NodeRollingBack",
            EventKind::RollbackRequested => "RollbackRequested",
            EventKind::CheckStarted => "CheckStarted",
            EventKind::CheckPassed => "CheckPassed",
            EventKind::CheckFailed => "CheckFailed",
            EventKind::CheckInconclusive => "CheckInconclusive",
            EventKind::DriftObserved => "DriftObserved",
            EventKind::LeaderChanged => "LeaderChanged",
        }
    }
}

impl Event {
    /// Exhaustive on purpose: a new variant does not compile until it has a kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::RunPlanned { .. } => EventKind::RunPlanned,
            Event::RunStarted { .. } => EventKind::RunStarted,
            Event::RunPaused { .. } => EventKind::RunPaused,
            Event::RunResumed { .. } => EventKind::RunResumed,
            Event::RunHalted { .. } => EventKind::RunHalted,
            Event::RunCompleted => EventKind::RunCompleted,
            Event::AbortRequested { .. } => EventKind::AbortRequested,
            Event::RunAborted => EventKind::RunAborted,
            Event::RunRecovered { .. } => EventKind::RunRecovered,
            Event::StepStarted { .. } => EventKind::StepStarted,
            Event::StepSucceeded { .. } => EventKind::StepSucceeded,
            Event::StepFailed { .. } => EventKind::StepFailed,
            Event::StepProbed { .. } => EventKind::StepProbed,
            Event::ClusterObserved { .. } => EventKind::ClusterObserved,
            Event::EvictionBlocked { .. } => EventKind::EvictionBlocked,
            Event::NodeParked { .. } => EventKind::NodeParked,
            Event::WorkloadScaled { .. } => EventKind::WorkloadScaled,
            Event::NodeRollingBack { .. } => EventKind::NodeRollingBack,
            Event::RollbackRequested { .. } => EventKind::RollbackRequested,
            Event::CheckStarted { .. } => EventKind::CheckStarted,
            Event::CheckPassed { .. } => EventKind::CheckPassed,
            Event::CheckFailed { .. } => EventKind::CheckFailed,
            Event::CheckInconclusive { .. } => EventKind::CheckInconclusive,
            Event::DriftObserved { .. } => EventKind::DriftObserved,
            Event::LeaderChanged { .. } => EventKind::LeaderChanged,
        }
    }

    /// The plan entry this event is about, if any.
    pub fn node(&self) -> Option<&Entry> {
        match self {
            Event::StepStarted { node, .. }
            | Event::StepSucceeded { node, .. }
            | Event::StepFailed { node, .. }
            | Event::StepProbed { node, .. }
            | Event::EvictionBlocked { node, .. }
            | Event::NodeParked { node, .. }
            | Event::WorkloadScaled { node, .. }
            | Event::NodeRollingBack { node, .. } => Some(node),
            _ => None,
        }
    }
}

/// What is stored and published: one event of one run at one position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Record {
    pub run: RunId,
    /// Position in the run, from 0, without gaps.
    pub seq: u64,
    pub at: Timestamp,
    /// The leadership epoch of the daemon that appended it (`--ha`; 0 for a single daemon,
    /// and left out of JSON then). The fold ignores a record of an epoch older than the
    /// run's last `LeaderChanged`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    pub event: Event,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A value stored as JSON text inside binary records (evolvable: fields can be added with
/// `#[serde(default)]`), and as a plain nested value in human-readable formats.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Json<T>(pub T);

/// In JSON a `Json<T>` is the `T` itself (only the stored form holds it as text).
impl<T: schemars::JsonSchema> schemars::JsonSchema for Json<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

impl<T: Serialize> Serialize for Json<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.0.serialize(s)
        } else {
            let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
            s.serialize_str(&text)
        }
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for Json<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            T::deserialize(d).map(Json)
        } else {
            let text = String::deserialize(d)?;
            serde_json::from_str(&text)
                .map(Json)
                .map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_utc() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_795_000_000_123).to_string(),
            "2026-11-18T11:06:40.123Z"
        );
    }

    #[test]
    fn every_kind_is_listed_once() {
        let mut names: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventKind::ALL.len());
    }
}
