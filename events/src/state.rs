//! The fold: a run's state is the result of applying its records in order. Infallible and pure.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::check::{self, Boundary, Check, ClusterHas, DEFAULT_GENERATION_LABEL, Peer};
use crate::event::{Actor, Event, Record, RunId, Timestamp};
use crate::inventory::Labels;
use crate::inventory::PodInv;
use crate::names::Entry;
use crate::node::{Blocked, Cursor, NodeCtx, NodeState, Phase};
use crate::plan::Plan;
use crate::plan::Role;
use crate::policy::Policy;
use crate::run::{RunMachineState, RunPhase};
use crate::version::Version;

/// Everything known about one run, folded from its log.
#[derive(Debug, Clone, Default)]
pub struct RunState {
    pub id: Option<RunId>,
    pub run: RunMachineState,
    pub target: Option<Version>,
    pub plan: Plan,
    pub policy: Policy,
    /// One per planned node, in plan order.
    pub nodes: Vec<NodeState>,
    /// Batch index of each entry of `nodes`.
    pub batch_of: Vec<usize>,
    index: HashMap<Entry, usize>,
    /// Each host's entries in `nodes` (a control-plane host has one per hop).
    host_entries: HashMap<String, Vec<usize>>,
    /// The sequence number the next record must have.
    pub next_seq: u64,
    pub planned_at: Option<Timestamp>,
    pub last_at: Timestamp,
    /// How many times a daemon reopened this run after a stop or crash.
    pub recoveries: u32,
    /// The daemon leading the run and its epoch, from the last `LeaderChanged` (`None` and
    /// 0 for a single daemon). A record of an older epoch is a deposed leader's: ignored.
    pub leader: Option<String>,
    pub epoch: u64,
    /// Records that did not fit the state they met (bugs or hand-edited logs); never fatal.
    pub anomalies: Vec<String>,
    /// The apiserver version before the run (`ClusterObserved`).
    pub apiserver_before: Option<Version>,
    /// Health measured before the run, which the gates compare against.
    pub baseline: Option<Baseline>,
    /// A gate asked for the whole run to be rolled back (`RollbackRequested`): why.
    pub rollback_requested: Option<String>,
    /// Workloads scaled up to unblock a drain and not restored yet, by `kind/ns/name`.
    pub scaled: BTreeMap<String, ScaledWorkload>,
    /// What the checks have found, by check and subject.
    pub checks: BTreeMap<(String, String), CheckState>,
    /// What the pre-upgrade inventory shows the cluster has (for the catalog).
    pub cluster_has: Option<ClusterHas>,
    /// The nodes as observed before the run: name, labels, control plane or not
    /// (`set_observed_nodes`).
    observed_nodes: Vec<(String, Labels, bool)>,
    /// Where each observed node is in `observed_nodes`, by name.
    observed_at: HashMap<String, usize>,
    /// Each node's allocatable extended resources before the run (nodes that have any):
    /// the devices check's baseline.
    pub observed_devices: BTreeMap<String, BTreeMap<String, u64>>,
    /// Drift as the machines' agents read it (`DriftObserved`), oldest first.
    pub drift: Vec<DriftSeen>,
    /// What records changed since a summary was last brought up to date.
    touched: Touched,
}

/// The nodes and checks records changed since [`RunState::refresh_summary`] last ran, so a
/// large run's status is kept up to date record by record without rebuilding every line.
#[derive(Debug, Clone, Default)]
struct Touched {
    /// A record about every node (planned, recovered, resumed, aborted).
    all: bool,
    nodes: std::collections::BTreeSet<usize>,
    checks: std::collections::BTreeSet<(String, String)>,
    /// `next_seq` of the summary the last refresh produced.
    refreshed: Option<u64>,
}

/// A node's checks at one boundary, as the core chose them: the catalog's node checks that
/// run as probes there, the peers its pod-network probe dials, and the probes' images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChecks {
    pub boundary: Boundary,
    pub checks: Vec<Check>,
    pub peers: Vec<String>,
    /// Checks this node already failed at the baseline: not run again, never blamed on the
    /// upgrade.
    pub excluded: Vec<String>,
    /// Checks started at this boundary whose verdict was never recorded (the daemon stopped
    /// in between), with that attempt: its probes are adopted, not created again.
    pub resume: BTreeMap<String, u32>,
    /// The node's extended resources before the run (what the devices check compares with).
    pub devices: BTreeMap<String, u64>,
    /// The generation- and cluster-scope checks this step runs for the run (the plan's
    /// first entry at the baseline, each canary, each batch's last entry, the last
    /// control-plane node, the final entry), with their subjects.
    pub run: Vec<check::run::RunCheck>,
    /// The version the entry ends at (what the addons check expects of the control plane).
    pub version: Option<Version>,
    /// At the run's baseline (the plan's first entry): one worker of each hardware
    /// generation, the first the plan upgrades (its canary), checked before anything is
    /// touched, since a worker's own preflight comes after the control plane moved.
    pub samples: Vec<(String, NodeChecks)>,
    /// Verdicts this execution of the step already recorded, by (check, subject), before
    /// the daemon stopped: kept, not run again (a long checks step under restarts still
    /// ends).
    pub done: BTreeMap<(String, String), check::Verdict>,
    /// At a worker's own preflight: its checks that passed on its generation's sample before
    /// the run changed anything, with the sample's name; one of them failing now is the
    /// run's doing, not a finding about the cluster as it was.
    pub proven: BTreeMap<String, String>,
    /// The control-plane nodes (the control plane's checks ask each), with the version
    /// their static pods must run at this step where the plan says: the node a kubeadm
    /// step just upgraded, or every one after the hop's last.
    pub control_plane: Vec<(String, Option<Version>)>,
}

/// One check on one subject, folded from its `Check*` records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckState {
    pub check: String,
    pub subject: String,
    /// Where the last run of it began.
    pub boundary: Boundary,
    pub attempt: u32,
    pub outcome: CheckOutcome,
    /// Failures since its last pass (inconclusive runs neither add nor reset).
    pub failures_in_a_row: u32,
    /// It failed at the preflight baseline: a finding about the cluster as it was, excluded
    /// from the verdicts (or blocking, for a control-plane check).
    pub failed_at_baseline: bool,
    pub since: Timestamp,
    /// The sequence number of its last record.
    #[serde(default)]
    pub seq: u64,
    /// It passed at a baseline (the run's samples or the node's own preflight), whatever
    /// came after.
    #[serde(default)]
    pub passed_at_baseline: bool,
    /// What its baseline run saw and later runs do not count (Prometheus's problems).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub baseline: BTreeSet<String>,
}

/// The last word of a check on a subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "result")]
pub enum CheckOutcome {
    Running,
    Passed,
    Failed { detail: String },
    Inconclusive { why: String },
}

/// A workload the run scaled up (`WorkloadScaled`, not yet restored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaledWorkload {
    /// The plan entry whose drain scaled it (its drain or uncordon restores it).
    pub node: Entry,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Replicas before the run touched it: what the restore puts back.
    pub original: u32,
    /// Replicas the run set.
    pub scaled: u32,
}

impl ScaledWorkload {
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// The cluster's health before the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Baseline {
    /// Pods that count (not finished, not mirror pods).
    pub pods: u32,
    pub crash_looping: u32,
}

/// What the health gate reads of one pod (all it needs of a cluster's pods, so an adapter
/// may read just this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PodHealth {
    /// Succeeded or Failed.
    pub finished: bool,
    /// A static pod's mirror.
    pub mirror: bool,
    /// A container waits in CrashLoopBackOff.
    pub crash_looping: bool,
}

impl PodHealth {
    pub fn of(p: &PodInv) -> PodHealth {
        PodHealth {
            finished: p.is_finished(),
            mirror: p.mirror,
            crash_looping: p.crash_looping,
        }
    }
}

impl Baseline {
    /// The cluster's pods' health, without the checks' own probes (as the daemon's pod watch
    /// reads it).
    pub fn of(pods: &[PodInv]) -> Baseline {
        Baseline::of_health(
            pods.iter()
                .filter(|p| p.namespace != crate::check::probe::NAMESPACE)
                .map(PodHealth::of),
        )
    }

    /// The pods that count (not finished, not mirrors) and those crash-looping.
    pub fn of_health(pods: impl IntoIterator<Item = PodHealth>) -> Baseline {
        let live = pods.into_iter().filter(|p| !p.finished && !p.mirror);
        let (mut pods, mut crash_looping) = (0u32, 0u32);
        for p in live {
            pods += 1;
            crash_looping += u32::from(p.crash_looping);
        }
        Baseline {
            pods,
            crash_looping,
        }
    }

    /// CrashLoopBackOff share in basis points (1/100 of a percentage point).
    pub fn crash_loop_bp(&self) -> u32 {
        if self.pods == 0 {
            0
        } else {
            ((u64::from(self.crash_looping) * 10_000) / u64::from(self.pods)) as u32
        }
    }

    /// The gate: has the share risen more than `points` percentage points over `self`?
    pub fn exceeded_by(&self, now: &Baseline, points: u32) -> bool {
        now.crash_loop_bp()
            > self
                .crash_loop_bp()
                .saturating_add(points.saturating_mul(100))
    }
}

impl RunState {
    /// Replays a run's records from the start.
    pub fn replay<'a>(records: impl IntoIterator<Item = &'a Record>) -> RunState {
        let mut state = RunState::default();
        for r in records {
            state.apply(r);
        }
        state
    }

    /// Applies one record. Never fails: what does not fit is noted in `anomalies`.
    pub fn apply(&mut self, record: &Record) {
        if self.id.is_none() {
            self.id = Some(record.run);
        }
        if Some(record.run) != self.id {
            self.anomalies.push(format!(
                "record of run {} applied to another run",
                record.run
            ));
            return;
        }
        if record.seq < self.next_seq {
            self.anomalies
                .push(format!("duplicate record at seq {}", record.seq));
            return;
        }
        if record.seq > self.next_seq {
            self.anomalies.push(format!(
                "gap: expected seq {}, got {}",
                self.next_seq, record.seq
            ));
        }
        self.next_seq = record.seq + 1;
        let standing = crate::lease::standing(self.epoch, record);
        if standing == crate::lease::Standing::Deposed {
            // Its seq is taken (the log holds it), its content is not the run's.
            self.anomalies.push(format!(
                "seq {}: a record of epoch {} after epoch {} began (a deposed leader's): ignored",
                record.seq, record.epoch, self.epoch
            ));
            return;
        }
        self.last_at = record.at;
        let mut ctx = NodeCtx {
            at: record.at,
            seq: record.seq,
            anomalies: Vec::new(),
        };
        // A rollback request aborts the run as an operator's abort would, and is remembered.
        let as_abort;
        let event = match &record.event {
            Event::RollbackRequested { reason } => {
                self.rollback_requested = Some(reason.clone());
                as_abort = Event::AbortRequested {
                    by: Actor::daemon(),
                    reason: reason.clone(),
                };
                &as_abort
            }
            e => e,
        };
        match event {
            Event::RunPlanned {
                target,
                plan,
                policy,
                ..
            } => {
                if self.planned_at.is_some() {
                    self.anomalies.push("run planned twice".into());
                    return;
                }
                self.planned_at = Some(record.at);
                self.touched.all = true;
                self.target = Some(*target);
                self.plan = plan.0.clone();
                self.policy = policy.0.clone();
                for (batch, n) in self.plan.nodes() {
                    self.index.insert(n.name.clone(), self.nodes.len());
                    let state = NodeState::new(n, record.at);
                    self.host_entries
                        .entry(state.node().host.as_str().to_string())
                        .or_default()
                        .push(self.nodes.len());
                    self.nodes.push(state);
                    self.batch_of.push(batch);
                }
            }
            Event::ClusterObserved {
                apiserver,
                inventory,
            } => {
                self.apiserver_before = Some(*apiserver);
                self.baseline = Some(Baseline::of(&inventory.0.pods));
                self.cluster_has = Some(ClusterHas::of(&inventory.0));
                self.observed_devices = inventory
                    .0
                    .nodes
                    .iter()
                    .filter(|n| !n.extended.is_empty())
                    .map(|n| (n.name.clone(), n.extended.clone()))
                    .collect();
                self.set_observed_nodes(
                    inventory
                        .0
                        .nodes
                        .iter()
                        .map(|n| {
                            (
                                n.name.clone(),
                                n.labels.clone(),
                                n.role == Role::ControlPlane,
                            )
                        })
                        .collect(),
                );
            }
            Event::WorkloadScaled {
                node,
                kind,
                namespace,
                name,
                from,
                to,
                restore,
            } => {
                if !self.index.contains_key(node) {
                    ctx.anomalies
                        .push(format!("event for node {node:?}, which is not in the plan"));
                }
                let w = ScaledWorkload {
                    node: node.clone(),
                    kind: kind.clone(),
                    namespace: namespace.clone(),
                    name: name.clone(),
                    original: *from,
                    scaled: *to,
                };
                if *restore {
                    self.scaled.remove(&w.key());
                } else {
                    // Scaled again before a restore: the first original is what goes back.
                    let original = self.scaled.get(&w.key()).map_or(*from, |s| s.original);
                    self.scaled
                        .insert(w.key(), ScaledWorkload { original, ..w });
                }
            }
            Event::StepStarted { node, .. }
            | Event::StepSucceeded { node, .. }
            | Event::StepFailed { node, .. }
            | Event::StepProbed { node, .. }
            | Event::EvictionBlocked { node, .. }
            | Event::NodeParked { node, .. }
            | Event::NodeRollingBack { node, .. } => match self.index.get(node) {
                Some(&i) => {
                    self.touched.nodes.insert(i);
                    self.nodes[i].handle(event, &mut ctx);
                }
                None => ctx
                    .anomalies
                    .push(format!("event for node {node:?}, which is not in the plan")),
            },
            Event::CheckStarted {
                check,
                subject,
                boundary,
                attempt,
            } => {
                let key = (check.clone(), subject.clone());
                self.touched.checks.insert(key.clone());
                let c = self.checks.entry(key).or_insert_with(|| CheckState {
                    check: check.clone(),
                    subject: subject.clone(),
                    boundary: *boundary,
                    attempt: *attempt,
                    outcome: CheckOutcome::Running,
                    failures_in_a_row: 0,
                    failed_at_baseline: false,
                    passed_at_baseline: false,
                    seq: record.seq,
                    since: record.at,
                    baseline: BTreeSet::new(),
                });
                c.boundary = *boundary;
                c.attempt = *attempt;
                c.outcome = CheckOutcome::Running;
                c.since = record.at;
                c.seq = record.seq;
            }
            Event::CheckPassed {
                check,
                subject,
                attempt,
                ..
            }
            | Event::CheckFailed {
                check,
                subject,
                attempt,
                ..
            }
            | Event::CheckInconclusive {
                check,
                subject,
                attempt,
                ..
            } => match self.checks.get_mut(&(check.clone(), subject.clone())) {
                Some(c) if c.attempt == *attempt => {
                    self.touched.checks.insert((check.clone(), subject.clone()));
                    c.since = record.at;
                    c.seq = record.seq;
                    if c.boundary == Boundary::Preflight
                        && let Event::CheckPassed { facts, .. } | Event::CheckFailed { facts, .. } =
                            event
                    {
                        c.baseline = check::run::problems_of(facts);
                    }
                    match event {
                        Event::CheckPassed { .. } => {
                            c.outcome = CheckOutcome::Passed;
                            c.failures_in_a_row = 0;
                            // The baseline taken again (a retried preflight) passed.
                            if c.boundary == Boundary::Preflight {
                                c.failed_at_baseline = false;
                                c.passed_at_baseline = true;
                            }
                        }
                        Event::CheckFailed { detail, .. } => {
                            c.outcome = CheckOutcome::Failed {
                                detail: detail.clone(),
                            };
                            c.failures_in_a_row += 1;
                            if c.boundary == Boundary::Preflight {
                                c.failed_at_baseline = true;
                            }
                        }
                        Event::CheckInconclusive { why, .. } => {
                            c.outcome = CheckOutcome::Inconclusive { why: why.clone() };
                        }
                        _ => {}
                    }
                }
                _ => ctx.anomalies.push(format!(
                    "result of check {check} on {subject} (attempt {attempt}) that was not started"
                )),
            },
            Event::DriftObserved {
                after,
                generations,
                reports,
            } => {
                if self
                    .drift
                    .iter()
                    .any(|d| d.after.is_some() && d.after == *after)
                {
                    ctx.anomalies
                        .push(format!("drift after batch {after:?} recorded twice"));
                }
                self.drift.push(DriftSeen {
                    at: record.at,
                    after: *after,
                    generations: generations.clone(),
                    reports: reports.0.clone(),
                });
            }
            Event::LeaderChanged { instance, epoch } => {
                if standing == crate::lease::Standing::Takeover(*epoch) {
                    self.leader = Some(instance.clone());
                    self.epoch = *epoch;
                } else {
                    ctx.anomalies.push(format!(
                        "seq {}: leadership to {instance} in epoch {epoch} (record of epoch {}, \
                         the run at epoch {}): ignored",
                        record.seq, record.epoch, self.epoch
                    ));
                }
            }
            run_event => {
                if let Event::RunRecovered { .. } = run_event {
                    self.recoveries += 1;
                }
                self.run.handle(run_event);
                // Recovery, resume and abort concern every node.
                if matches!(
                    run_event,
                    Event::RunRecovered { .. }
                        | Event::RunResumed { .. }
                        | Event::AbortRequested { .. }
                ) {
                    self.touched.all = true;
                    for n in &mut self.nodes {
                        n.handle(run_event, &mut ctx);
                    }
                }
            }
        }
        self.anomalies.append(&mut ctx.anomalies);
    }

    pub fn phase(&self) -> RunPhase {
        self.run.phase()
    }

    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// Nodes of batch `b`.
    pub fn batch(&self, b: usize) -> impl Iterator<Item = &NodeState> {
        // The plan lists its nodes batch by batch: a batch's entries are one run of
        // `nodes`, found by binary search (`decide` asks for batches at every step).
        let start = self.batch_of.partition_point(|&i| i < b);
        let end = self.batch_of.partition_point(|&i| i <= b);
        self.nodes[start..end.max(start)].iter()
    }

    /// The machines to read for drift after batch `b` (node, generation): every observed
    /// worker of the generations the batch touched; none when the batch touched no
    /// generation (the control plane), its drift is recorded already, or the run is a
    /// rollback (it puts machines back, it does not compare them).
    pub fn drift_members(&self, b: usize) -> Option<Vec<(String, String)>> {
        let after = u32::try_from(b).ok()?;
        if self.plan.undoes.is_some() || self.drift.iter().any(|d| d.after == Some(after)) {
            return None;
        }
        let label = self
            .policy
            .generation_label
            .as_deref()
            .unwrap_or(DEFAULT_GENERATION_LABEL);
        let touched: BTreeSet<&str> = self
            .batch(b)
            .filter_map(|n| self.worker_generation(n.node().host.as_str(), label))
            .collect();
        if touched.is_empty() {
            return None;
        }
        Some(
            self.observed_nodes
                .iter()
                .filter(|(_, labels, cp)| {
                    !cp && labels
                        .get(label)
                        .is_some_and(|g| touched.contains(g.as_str()))
                })
                .map(|(name, labels, _)| {
                    (name.clone(), labels.get(label).cloned().unwrap_or_default())
                })
                .collect(),
        )
    }

    /// A compact, serialisable summary for `status`.
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            run: self.id,
            phase: self.phase(),
            target: self.target.map(|v| v.to_string()),
            reason: self.run.data().reason.clone(),
            next_seq: self.next_seq,
            recoveries: self.recoveries,
            batches: self.plan.batches.len(),
            batch_labels: self.plan.batches.iter().map(|b| b.label.clone()).collect(),
            nodes: (0..self.nodes.len())
                .map(|i| self.node_summary(i))
                .collect(),
            anomalies: self.anomalies.clone(),
            baseline: self.baseline,
            waiting: None,
            scaled: self.scaled.values().cloned().collect(),
            checks: self.checks.values().cloned().collect(),
            drift: self.drift_now(),
            drift_readings: self.drift.len(),
            leader: self.leader(),
        }
    }

    /// The run's leader, once a `LeaderChanged` named one.
    fn leader(&self) -> Option<Leader> {
        self.leader.as_ref().map(|instance| Leader {
            instance: instance.clone(),
            epoch: self.epoch,
        })
    }

    /// Each generation's drift as its latest reading found it (the start's, or the one
    /// after the last batch that touched it), generation by generation.
    pub fn drift_now(&self) -> Vec<crate::drift::DriftReport> {
        let mut latest: BTreeMap<&str, Vec<&crate::drift::DriftReport>> = BTreeMap::new();
        for seen in &self.drift {
            for g in &seen.generations {
                let mine = seen
                    .reports
                    .iter()
                    .filter(|r| {
                        r.generation == *g
                            || r.generation
                                .strip_prefix(g.as_str())
                                .is_some_and(|rest| rest.starts_with(" at "))
                    })
                    .collect();
                latest.insert(g.as_str(), mine);
            }
        }
        latest.into_values().flatten().cloned().collect()
    }

    /// The status line of the `i`th entry of the plan.
    fn node_summary(&self, i: usize) -> NodeSummary {
        let n = &self.nodes[i];
        NodeSummary {
            name: n.node().name.clone(),
            batch: self.batch_of.get(i).copied().unwrap_or_default(),
            phase: n.phase(),
            step: n.current_step().map(|s| s.to_string()),
            cursor: n.cursor(),
            steps: n.node().steps.len(),
            failures: n.node().failures,
            last_error: n.node().last_error.clone(),
            blocked: n.node().blocked.clone(),
            parked: n.node().parked.clone(),
        }
    }

    /// `summary` brought up to the state's records: when it is what the last refresh left,
    /// only the nodes and checks records have changed since are rebuilt (O(changes), where
    /// [`RunState::summary`] is O(nodes + checks)); otherwise it is built anew. Equal to
    /// `summary()` either way (except `waiting`, which the engine sets).
    pub fn refresh_summary(&mut self, summary: &mut RunSummary) {
        let touched = std::mem::take(&mut self.touched);
        let incremental = !touched.all
            && touched.refreshed == Some(summary.next_seq)
            && summary.run == self.id
            && summary.nodes.len() == self.nodes.len();
        if !incremental {
            *summary = self.summary();
        } else {
            for i in touched.nodes {
                if let Some(line) = summary.nodes.get_mut(i) {
                    *line = self.node_summary(i);
                }
            }
            for key in touched.checks {
                let Some(c) = self.checks.get(&key) else {
                    continue;
                };
                let at = summary
                    .checks
                    .binary_search_by(|s| (&s.check, &s.subject).cmp(&(&key.0, &key.1)));
                match at {
                    Ok(j) => summary.checks[j] = c.clone(),
                    Err(j) => summary.checks.insert(j, c.clone()),
                }
            }
            summary.phase = self.phase();
            summary.target = self.target.map(|v| v.to_string());
            summary.reason.clone_from(&self.run.data().reason);
            summary.next_seq = self.next_seq;
            summary.recoveries = self.recoveries;
            if summary.anomalies.len() != self.anomalies.len() {
                summary.anomalies.clone_from(&self.anomalies);
            }
            summary.baseline = self.baseline;
            summary.leader = self.leader();
            summary.scaled = self.scaled.values().cloned().collect();
            if summary.drift_readings != self.drift.len() {
                summary.drift = self.drift_now();
                summary.drift_readings = self.drift.len();
            }
        }
        self.touched.refreshed = Some(summary.next_seq);
    }

    /// The nodes as observed before the run (name, labels, control plane), indexed by name.
    pub fn set_observed_nodes(&mut self, nodes: Vec<(String, Labels, bool)>) {
        self.observed_at = nodes
            .iter()
            .enumerate()
            .map(|(i, (n, _, _))| (n.clone(), i))
            .collect();
        self.observed_nodes = nodes;
    }

    /// A worker's hardware generation, as observed before the run.
    fn worker_generation(&self, host: &str, label: &str) -> Option<&str> {
        let (_, labels, cp) = self.observed_nodes.get(*self.observed_at.get(host)?)?;
        if *cp {
            return None;
        }
        labels.get(label).map(String::as_str)
    }

    /// The checks `host` runs at `boundary`: the policy's catalog for what the cluster has,
    /// its node probe checks there, and the peers its pod-network probe dials (a node whose
    /// entries have not started counts as not yet upgraded).
    pub fn node_checks(&self, entry: &str, host: &str, boundary: Boundary) -> NodeChecks {
        // What this execution of the step recorded counts from its first start.
        let began = self.node(entry).map_or(u64::MAX, |n| n.node().step_began);
        let mut out = self.node_checks_alone(entry, host, boundary, began);
        if boundary != Boundary::Preflight {
            return out;
        }
        let preflight = crate::plan::Step::Checks {
            boundary: Boundary::Preflight,
        };
        let label = self
            .policy
            .generation_label
            .as_deref()
            .unwrap_or(DEFAULT_GENERATION_LABEL);
        // The first worker entry of each generation that checks at the baseline (its
        // canary, upgraded first); with `only`, that generation's alone, found as soon as
        // the plan reaches it (canaries come early: no pass over a large plan per node).
        let samples = |only: Option<&str>| {
            let mut sample: BTreeMap<String, (String, String)> = BTreeMap::new();
            for n in &self.nodes {
                let plan = n.node();
                if plan.role != crate::plan::Role::Worker {
                    continue;
                }
                let h = plan.host.as_str();
                let Some(g) = self.worker_generation(h, label) else {
                    continue;
                };
                if only.is_some_and(|o| o != g)
                    || sample.contains_key(g)
                    || !plan.steps.contains(&preflight)
                {
                    continue;
                }
                sample.insert(
                    g.to_string(),
                    (plan.name.as_str().to_string(), h.to_string()),
                );
                if only.is_some() {
                    break;
                }
            }
            sample
        };
        let first = self
            .nodes
            .iter()
            .position(|n| n.node().steps.contains(&preflight));
        let is_first = first.is_some() && first == self.index.get(entry).copied();
        let own_generation = self.worker_generation(host, label);
        let sample = if is_first {
            let sample = samples(None);
            out.samples = sample
                .values()
                .filter(|(_, h)| h != host)
                .map(|(e, h)| (h.clone(), self.node_checks_alone(e, h, boundary, began)))
                .filter(|(_, nc)| !nc.checks.is_empty())
                .collect();
            sample
        } else {
            match own_generation {
                Some(g) => samples(Some(g)),
                None => BTreeMap::new(),
            }
        };
        if let Some((_, s)) = own_generation.and_then(|g| sample.get(g)) {
            out.proven = out
                .checks
                .iter()
                .filter(|c| {
                    self.checks
                        .get(&(c.id.clone(), s.clone()))
                        .is_some_and(|st| st.passed_at_baseline)
                })
                .map(|c| (c.id.clone(), s.clone()))
                .collect();
        }
        out
    }

    /// [`RunState::node_checks`] without the run's samples; `began`: the sequence number
    /// where the carrying step's execution began.
    fn node_checks_alone(
        &self,
        entry: &str,
        host: &str,
        boundary: Boundary,
        began: u64,
    ) -> NodeChecks {
        let has = self
            .cluster_has
            .clone()
            .unwrap_or_else(|| ClusterHas::everything(&self.policy.checks));
        let on = check::catalog(&self.policy.checks, &has)
            .map(|(on, _)| on)
            .unwrap_or_default();
        let (checks, excluded): (Vec<Check>, Vec<Check>) = check::node_probe_checks(&on, boundary)
            .into_iter()
            // A control-plane node is proven by the control plane's gates; its entry
            // carries only the run's checks (the baseline on the plan's first entry).
            .filter(|_| {
                self.node(entry)
                    .is_none_or(|n| n.node().role == crate::plan::Role::Worker)
            })
            // Devices are checked on the nodes that had some before the run.
            .filter(|c| {
                c.kind != check::CheckKind::Devices || self.observed_devices.contains_key(host)
            })
            .partition(|c| {
                boundary == Boundary::Preflight
                    || !self
                        .checks
                        .get(&(c.id.clone(), host.to_string()))
                        .is_some_and(|s| s.failed_at_baseline)
            });
        let label = self
            .policy
            .generation_label
            .as_deref()
            .unwrap_or(DEFAULT_GENERATION_LABEL);
        // A host's entries: all still pending (not yet upgraded), one under way (busy).
        let phases = |name: &str| {
            let entries = self
                .host_entries
                .get(name)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let pending = !entries.is_empty()
                && entries
                    .iter()
                    .all(|&i| self.nodes[i].phase() == Phase::Pending);
            // Under way, or set aside (a parked node may be down: nothing to learn there).
            let busy = entries.iter().any(|&i| {
                let p = self.nodes[i].phase();
                p != Phase::Pending && (!p.is_settled() || p == Phase::Parked)
            });
            (pending, busy)
        };
        // `network_peers` picks the first node by name of each category; only those
        // candidates (and the subject) are handed to it, so a check costs no allocation per
        // node of a large cluster.
        let mut own: Option<&(String, Labels, bool)> = None;
        let mut per_generation: BTreeMap<&str, &(String, Labels, bool)> = BTreeMap::new();
        let mut first_pending: Option<&(String, Labels, bool)> = None;
        let mut first_cp: Option<&(String, Labels, bool)> = None;
        let earlier =
            |a: Option<&&(String, Labels, bool)>, name: &str| a.is_none_or(|a| name < a.0.as_str());
        for o in &self.observed_nodes {
            let (name, labels, control_plane) = o;
            if name == host {
                own = Some(o);
                continue;
            }
            let generation = labels.get(label).map(String::as_str).unwrap_or_default();
            // A node that comes after every candidate it could replace is not looked at
            // further (most of a large cluster, once the first of each kind is found).
            let may_replace = if *control_plane {
                earlier(first_cp.as_ref(), name)
            } else {
                earlier(per_generation.get(generation), name)
                    || earlier(first_pending.as_ref(), name)
            };
            if !may_replace {
                continue;
            }
            let (pending, busy) = phases(name);
            if busy {
                continue;
            }
            if *control_plane {
                first_cp = Some(o);
                continue;
            }
            if earlier(per_generation.get(generation), name) {
                per_generation.insert(generation, o);
            }
            if pending && earlier(first_pending.as_ref(), name) {
                first_pending = Some(o);
            }
        }
        let mut candidates: Vec<&(String, Labels, bool)> = Vec::new();
        for o in own
            .into_iter()
            .chain(per_generation.into_values())
            .chain(first_pending)
            .chain(first_cp)
        {
            if !candidates.iter().any(|c| c.0 == o.0) {
                candidates.push(o);
            }
        }
        let peers: Vec<Peer> = candidates
            .into_iter()
            .map(|(name, labels, control_plane)| Peer {
                name: name.clone(),
                generation: labels.get(label).cloned().unwrap_or_default(),
                control_plane: *control_plane,
                not_yet_upgraded: phases(name).0,
                busy: false,
            })
            .collect();
        let resume = checks
            .iter()
            .filter_map(|c| {
                let s = self.checks.get(&(c.id.clone(), host.to_string()))?;
                (s.boundary == boundary && s.outcome == CheckOutcome::Running)
                    .then(|| (c.id.clone(), s.attempt))
            })
            .collect();
        let run = self.run_checks(entry, boundary, &on);
        let upgraded_to = self
            .node(entry)
            .and_then(|n| crate::plan::control_plane_version(&n.node().steps));
        let control_plane = self
            .observed_nodes
            .iter()
            .filter(|(_, _, cp)| *cp)
            .map(|(name, _, _)| {
                let expect = match boundary {
                    Boundary::AfterControlPlaneNode if name == host => upgraded_to,
                    Boundary::AfterControlPlane => upgraded_to,
                    _ => None,
                };
                (name.clone(), expect)
            })
            .collect();
        let recorded = |check: &str, subject: &str| {
            let s = self.checks.get(&(check.to_string(), subject.to_string()))?;
            if s.boundary != boundary || s.seq <= began {
                return None;
            }
            let facts = crate::event::Facts::new();
            Some(match &s.outcome {
                CheckOutcome::Running => return None,
                CheckOutcome::Passed => check::Verdict::Passed { facts },
                CheckOutcome::Failed { detail } => check::Verdict::Failed {
                    detail: detail.clone(),
                    facts,
                },
                CheckOutcome::Inconclusive { why } => check::Verdict::Inconclusive {
                    why: why.clone(),
                    facts,
                },
            })
        };
        let done = checks
            .iter()
            .map(|c| (c.id.as_str(), host))
            .chain(
                run.iter()
                    .map(|r| (r.check.id.as_str(), r.subject.as_str())),
            )
            .filter_map(|(c, s)| Some(((c.to_string(), s.to_string()), recorded(c, s)?)))
            .collect();
        NodeChecks {
            done,
            samples: Vec::new(),
            proven: BTreeMap::new(),
            control_plane,
            boundary,
            checks,
            peers: check::network_peers(host, &peers),
            excluded: excluded.into_iter().map(|c| c.id).collect(),
            resume,
            devices: self.observed_devices.get(host).cloned().unwrap_or_default(),
            run,
            version: self
                .node(entry)
                .and_then(|n| crate::plan::final_version(&n.node().steps)),
        }
    }

    /// The generation- and cluster-scope checks `entry`'s checks step at `boundary` runs:
    /// at the baseline, the plan's first entry that checks there; after a canary, the
    /// canary (its generation); after a batch, the batch's last entry that checks there
    /// (the batch's generations); after the control plane and at the end, the entry the
    /// planner gave that step. A check that failed on a subject at the baseline is left
    /// out (recorded there, never blamed on the upgrade), unless it is the control plane's.
    fn run_checks(
        &self,
        entry: &str,
        boundary: Boundary,
        on: &[Check],
    ) -> Vec<check::run::RunCheck> {
        let Some(&i) = self.index.get(entry) else {
            return Vec::new();
        };
        let checks_here = |j: usize| {
            self.nodes[j]
                .node()
                .steps
                .contains(&crate::plan::Step::Checks { boundary })
        };
        let label = self
            .policy
            .generation_label
            .as_deref()
            .unwrap_or(DEFAULT_GENERATION_LABEL);
        // A worker this run set aside (parked: it may be down) is no place to schedule on.
        let parked = |name: &str| {
            self.host_entries.get(name).is_some_and(|entries| {
                !entries.is_empty()
                    && entries
                        .iter()
                        .all(|&j| self.nodes[j].phase() == Phase::Parked)
            })
        };
        // The generations of the workers `hosts` names (all of them: `None`), in one pass.
        let generations_of = |hosts: Option<&BTreeSet<&str>>| -> Vec<String> {
            self.observed_nodes
                .iter()
                .filter(|(name, _, cp)| !cp && hosts.is_none_or(|h| h.contains(name.as_str())))
                .filter(|(name, _, _)| !parked(name))
                .filter_map(|(_, labels, _)| labels.get(label).cloned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let host_of = |j: usize| self.nodes[j].node().host.as_str();
        let generations: Vec<String> = match boundary {
            Boundary::BeforeKubeletRestart => return Vec::new(),
            Boundary::AfterControlPlaneNode => {
                if !checks_here(i) {
                    return Vec::new();
                }
                generations_of(None)
            }
            Boundary::Preflight => {
                if (0..self.nodes.len()).find(|&j| checks_here(j)) != Some(i) {
                    return Vec::new();
                }
                generations_of(None)
            }
            Boundary::AfterCanary => generations_of(Some(&[host_of(i)].into())),
            Boundary::AfterBatch => {
                // The plan lists a batch's entries as one run of `nodes`.
                let batch = self.batch_of.get(i).copied().unwrap_or(usize::MAX);
                let start = self.batch_of.partition_point(|&b| b < batch);
                let end = self.batch_of.partition_point(|&b| b <= batch);
                if (start..end).rev().find(|&j| checks_here(j)) != Some(i) {
                    return Vec::new();
                }
                let hosts: BTreeSet<&str> = (start..end)
                    .filter(|&j| checks_here(j))
                    .map(host_of)
                    .collect();
                generations_of(Some(&hosts))
            }
            Boundary::AfterControlPlane | Boundary::Final => generations_of(None),
        };
        let on = check::run::run_scope_checks(on, boundary);
        let mut out = Vec::new();
        for c in on {
            for (subject, generation) in check::run::subjects(c.scope, &generations) {
                let state = self.checks.get(&(c.id.clone(), subject.clone()));
                // A control-plane check that failed there blocked the run instead.
                if boundary != Boundary::Preflight
                    && state.is_some_and(|s| s.failed_at_baseline)
                    && check::baseline_finding(&c) == check::BaselineFinding::Excluded
                {
                    continue;
                }
                out.push(check::run::RunCheck {
                    resume: state
                        .filter(|s| s.boundary == boundary && s.outcome == CheckOutcome::Running)
                        .map(|s| s.attempt),
                    baseline: state.map(|s| s.baseline.clone()).unwrap_or_default(),
                    check: c.clone(),
                    subject,
                    generation,
                });
            }
        }
        out
    }

    /// The workloads `node`'s drain scaled up and nobody restored yet.
    pub fn scaled_by(&self, node: &str) -> Vec<ScaledWorkload> {
        self.scaled
            .values()
            .filter(|w| w.node == node)
            .cloned()
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Why nothing is starting now (set by the engine from its decision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    pub run: Option<RunId>,
    pub phase: RunPhase,
    pub target: Option<String>,
    pub reason: Option<String>,
    pub next_seq: u64,
    pub recoveries: u32,
    pub batches: usize,
    /// What each batch is (`canary dell-r640`, `dell-r640 2/4`), in order.
    pub batch_labels: Vec<String>,
    pub nodes: Vec<NodeSummary>,
    pub anomalies: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// Workloads scaled up to unblock a drain and not restored yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scaled: Vec<ScaledWorkload>,
    /// Every check's last word on each subject.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckState>,
    /// Each generation's drift as its latest reading found it (`RunState::drift_now`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<crate::drift::DriftReport>,
    /// How many readings of drift the run has (at the start, after batches).
    #[serde(default)]
    pub drift_readings: usize,
    /// The daemon leading the run (`upgraded --ha`), from its last `LeaderChanged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<Leader>,
}

/// Who leads a run and in which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    pub instance: String,
    pub epoch: u64,
}

/// Drift within each generation as recorded (`DriftObserved`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftSeen {
    pub at: Timestamp,
    /// The batch it was read after; `None`: at the start.
    pub after: Option<u32>,
    /// The generations it read.
    pub generations: Vec<String>,
    pub reports: Vec<crate::drift::DriftReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSummary {
    pub name: Entry,
    pub batch: usize,
    pub phase: Phase,
    pub step: Option<String>,
    pub cursor: Option<Cursor>,
    pub steps: usize,
    pub failures: u32,
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<Blocked>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parked: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Facts;

    fn rec(seq: u64, event: Event) -> Record {
        Record {
            run: RunId::nil(),
            seq,
            at: Timestamp(1_000 * seq as i64),
            epoch: 0,
            event,
        }
    }

    /// A run planned (a basic rolling plan of `nodes` to v1.35.3, `max_unavailable` at once).
    fn planned(nodes: &[crate::plan::NodeInfo], max_unavailable: usize) -> RunState {
        let plan = crate::plan::Plan::basic_rolling(
            nodes,
            Version::new(1, 35, 3),
            max_unavailable,
            false,
            |_, m| m % 7,
        )
        .expect("plan");
        RunState::replay(&[rec(
            0,
            Event::RunPlanned {
                target: Version::new(1, 35, 3),
                plan: crate::event::Json(plan),
                policy: crate::event::Json(Policy::default()),
                by: Actor::daemon(),
            },
        )])
    }

    /// `node_checks` hands `network_peers` only the first candidate of each kind; what it
    /// dials is what the whole list of observed nodes would give, whatever the phases.
    #[test]
    fn node_checks_dial_what_the_full_list_of_nodes_would() {
        use crate::check::{Peer, network_peers};
        use crate::event::Step;
        use crate::plan::{NodeInfo, Role};
        let nodes: Vec<NodeInfo> = (0..24)
            .map(|i| NodeInfo {
                name: format!("n{:02}", (i * 7) % 24),
                role: if i < 2 {
                    Role::ControlPlane
                } else {
                    Role::Worker
                },
                version: Version::new(1, 32, 1),
            })
            .collect();
        let mut s = planned(&nodes, 3);
        s.set_observed_nodes(
            nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let labels: Labels =
                        [(DEFAULT_GENERATION_LABEL.to_string(), format!("g{}", i % 3))].into();
                    (n.name.clone(), labels, n.role == Role::ControlPlane)
                })
                .collect(),
        );
        let full = |s: &RunState, host: &str| -> Vec<String> {
            let phase = |name: &str| -> (bool, bool) {
                let mine: Vec<Phase> = s
                    .nodes
                    .iter()
                    .filter(|n| n.node().host.as_str() == name)
                    .map(NodeState::phase)
                    .collect();
                (
                    !mine.is_empty() && mine.iter().all(|p| *p == Phase::Pending),
                    mine.iter()
                        .any(|p| *p != Phase::Pending && (!p.is_settled() || *p == Phase::Parked)),
                )
            };
            let peers: Vec<Peer> = s
                .observed_nodes
                .iter()
                .map(|(name, labels, cp)| Peer {
                    name: name.clone(),
                    generation: labels[DEFAULT_GENERATION_LABEL].clone(),
                    control_plane: *cp,
                    not_yet_upgraded: phase(name).0,
                    busy: name != host && phase(name).1,
                })
                .collect();
            network_peers(host, &peers)
        };
        // Entry by entry, each step started and finished in turn: hosts go from not yet
        // upgraded to busy to done, and every host's peers agree at every phase.
        let entries: Vec<(Entry, Vec<Step>)> = s
            .nodes
            .iter()
            .map(|n| (n.node().name.clone(), n.node().steps.clone()))
            .collect();
        let mut seq = 1;
        let mut done = 0;
        for (entry, steps) in entries {
            for step in steps {
                for started in [true, false] {
                    for n in &nodes {
                        let got = s.node_checks(&n.name, &n.name, Boundary::AfterBatch).peers;
                        assert_eq!(got, full(&s, &n.name), "{} at {entry} {step:?}", n.name);
                    }
                    let (node, step, attempt) = (entry.clone(), step.clone(), 1);
                    s.apply(&rec(
                        seq,
                        if started {
                            Event::StepStarted {
                                node,
                                step,
                                attempt,
                            }
                        } else {
                            Event::StepSucceeded {
                                node,
                                step,
                                attempt,
                                facts: Facts::new(),
                            }
                        },
                    ));
                    seq += 1;
                }
            }
            done += usize::from(
                s.node(entry.as_str())
                    .is_some_and(|n| n.phase().is_settled()),
            );
        }
        assert!(done > 10, "entries went through to done: {done}");
    }

    /// A takeover (`LeaderChanged`) raises the run's epoch; a record of an older epoch after
    /// it (a deposed leader's append) takes its seq and changes nothing; a change of leader
    /// to an epoch not above the run's is ignored.
    #[test]
    fn a_record_of_a_deposed_leader_changes_nothing() {
        use crate::plan::{NodeInfo, Role};
        let nodes = [NodeInfo {
            name: "w-1".into(),
            role: Role::Worker,
            version: Version::new(1, 34, 6),
        }];
        let mut s = planned(&nodes, 1);
        let n = s.nodes[0].node().clone();
        let (entry, step) = (n.name.clone(), n.steps[0].clone());
        let at = |seq: u64, epoch: u64, event: Event| Record {
            epoch,
            ..rec(seq, event)
        };
        s.apply(&at(
            1,
            0,
            Event::StepStarted {
                node: entry.clone(),
                step: step.clone(),
                attempt: 1,
            },
        ));
        s.apply(&at(
            2,
            1,
            Event::LeaderChanged {
                instance: "admin-2".into(),
                epoch: 1,
            },
        ));
        assert_eq!((s.leader.as_deref(), s.epoch), (Some("admin-2"), 1));
        assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
        assert_eq!(
            s.summary().leader,
            Some(Leader {
                instance: "admin-2".into(),
                epoch: 1
            })
        );
        // The deposed leader's outcome: its seq is taken, the step still in flight.
        let done = Event::StepSucceeded {
            node: entry.clone(),
            step: step.clone(),
            attempt: 1,
            facts: Facts::new(),
        };
        s.apply(&at(3, 0, done.clone()));
        assert_eq!(s.next_seq, 4);
        assert_eq!(
            s.nodes[0].cursor().map(|c| c.status),
            Some(crate::node::StepStatus::InFlight)
        );
        assert_eq!(s.anomalies.len(), 1, "{:?}", s.anomalies);
        assert!(s.anomalies[0].contains("deposed"), "{:?}", s.anomalies);
        // Leadership to an epoch not above the run's: ignored.
        s.apply(&at(
            4,
            1,
            Event::LeaderChanged {
                instance: "admin-3".into(),
                epoch: 1,
            },
        ));
        assert_eq!((s.leader.as_deref(), s.epoch), (Some("admin-2"), 1));
        assert_eq!(s.anomalies.len(), 2, "{:?}", s.anomalies);
        // The leader's own record counts.
        s.apply(&at(5, 1, done));
        assert_eq!(s.nodes[0].cursor().map(|c| c.index), Some(1));
        assert_eq!(s.anomalies.len(), 2, "{:?}", s.anomalies);
    }

    /// A worker the run parked (it may be down) is dialled by no pod-network probe and is no
    /// generation to schedule on; its generation's other workers still are.
    #[test]
    fn a_parked_worker_is_neither_dialled_nor_scheduled_on() {
        use crate::plan::{NodeInfo, Role};
        let names = [("cp", "g-a"), ("a", "g-a"), ("b", "g-bc"), ("c", "g-bc")];
        let nodes: Vec<NodeInfo> = names
            .iter()
            .map(|(n, _)| NodeInfo {
                name: (*n).to_string(),
                role: if *n == "cp" {
                    Role::ControlPlane
                } else {
                    Role::Worker
                },
                version: Version::new(1, 34, 6),
            })
            .collect();
        let mut s = planned(&nodes, 1);
        s.set_observed_nodes(
            names
                .iter()
                .map(|(n, g)| {
                    let labels: Labels =
                        [(DEFAULT_GENERATION_LABEL.to_string(), (*g).into())].into();
                    ((*n).to_string(), labels, *n == "cp")
                })
                .collect(),
        );
        let schedules = |s: &RunState| -> Vec<String> {
            s.node_checks("c", "c", Boundary::Final)
                .run
                .into_iter()
                .filter(|r| r.check.id == "scheduling")
                .map(|r| r.subject)
                .collect()
        };
        assert!(
            s.node_checks("b", "b", Boundary::AfterBatch)
                .peers
                .contains(&"a".to_string())
        );
        assert_eq!(schedules(&s), ["(generation g-a)", "(generation g-bc)"]);
        // a's agent stops answering in its first step, and it is parked.
        let a = s.node("a").map(|n| n.node().clone()).expect("a's entry");
        let mut facts = Facts::new();
        crate::fault::FailureKind::Unreachable.record(&mut facts);
        for (i, event) in [
            Event::StepStarted {
                node: a.name.clone(),
                step: a.steps[0].clone(),
                attempt: 1,
            },
            Event::StepFailed {
                node: a.name.clone(),
                step: a.steps[0].clone(),
                attempt: 1,
                error: "node a: cannot connect over SSH".into(),
                facts,
            },
            Event::NodeParked {
                node: a.name.clone(),
                reason: "node a has not answered for 600s".into(),
                uncordon: false,
            },
        ]
        .into_iter()
        .enumerate()
        {
            s.apply(&rec(1 + i as u64, event));
        }
        assert!(s.anomalies.is_empty(), "{:?}", s.anomalies);
        assert_eq!(s.node("a").map(NodeState::phase), Some(Phase::Parked));
        let peers = s.node_checks("b", "b", Boundary::AfterBatch).peers;
        assert!(!peers.contains(&"a".to_string()), "{peers:?}");
        assert_eq!(schedules(&s), ["(generation g-bc)"]);
    }

    fn started(check: &str, subject: &str, boundary: Boundary, attempt: u32) -> Event {
        Event::CheckStarted {
            check: check.into(),
            subject: subject.into(),
            boundary,
            attempt,
        }
    }

    fn failed(check: &str, subject: &str, attempt: u32) -> Event {
        Event::CheckFailed {
            check: check.into(),
            subject: subject.into(),
            attempt,
            detail: "dial 10.0.0.2:8080: timed out".into(),
            facts: Facts::new(),
        }
    }

    #[test]
    fn checks_fold_into_failures_in_a_row_and_a_baseline() {
        let log = [
            // At the baseline, DNS already fails on w-1; pod-network passes.
            started("dns", "w-1", Boundary::Preflight, 1),
            failed("dns", "w-1", 1),
            started("pod-network", "w-1", Boundary::Preflight, 1),
            Event::CheckPassed {
                check: "pod-network".into(),
                subject: "w-1".into(),
                attempt: 1,
                facts: Facts::new(),
            },
            // After the canary: one failure, one inconclusive (no change), one failure.
            started("pod-network", "w-1", Boundary::AfterCanary, 2),
            failed("pod-network", "w-1", 2),
            started("pod-network", "w-1", Boundary::AfterCanary, 3),
            Event::CheckInconclusive {
                check: "pod-network".into(),
                subject: "w-1".into(),
                attempt: 3,
                why: "the probe was evicted".into(),
                facts: Facts::new(),
            },
            started("pod-network", "w-1", Boundary::AfterCanary, 4),
            failed("pod-network", "w-1", 4),
            // A result for an attempt never started is an anomaly, not a verdict.
            failed("pod-network", "w-1", 9),
        ];
        let records: Vec<Record> = log
            .into_iter()
            .enumerate()
            .map(|(i, e)| rec(i as u64, e))
            .collect();
        let state = RunState::replay(&records);
        let dns = &state.checks[&("dns".to_string(), "w-1".to_string())];
        assert!(dns.failed_at_baseline);
        let net = &state.checks[&("pod-network".to_string(), "w-1".to_string())];
        assert!(!net.failed_at_baseline);
        assert_eq!(net.failures_in_a_row, 2);
        assert_eq!(net.attempt, 4);
        assert_eq!(
            net.outcome,
            CheckOutcome::Failed {
                detail: "dial 10.0.0.2:8080: timed out".into()
            }
        );
        assert_eq!(
            state.anomalies,
            ["result of check pod-network on w-1 (attempt 9) that was not started"]
        );
    }
}
