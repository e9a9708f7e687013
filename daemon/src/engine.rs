//! The engine: replay a run's log into state, ask `decide`, record intents durably, execute
//! through the ports, record outcomes — and again, until the run ends.
//!
//! Records are applied only as the log publishes them (in commit order), whoever appended
//! them: the loop's own intents, step tasks' outcomes, operators' actions. So the live state is
//! always exactly the fold of the log's prefix, the same state a replay after a crash builds.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tracing::Instrument;

use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use upgraded_events::inventory::check_node_name;
use upgraded_events::run::RunPhase;
use upgraded_events::state::RunSummary;
use upgraded_events::{
    Actor, Command, Event, Json, Record, RunId, RunState, Timestamp, Version, decide,
};
use upgraded_planner::policy::PlanPolicy;
use upgraded_planner::{self as planner, PlanInput, PlanReport, Severity};

use crate::log::{EventLog, LogError};
use crate::ports::{BoxFut, Clock, PortError, Recorder};
use crate::steps::{self, Adapters, StepEnv};
use upgraded_events::Observation;
use upgraded_events::decide::probe_retry_at;
use upgraded_events::request::{self, Rejection, Request};
use upgraded_events::{Entry, Host};

mod rollback;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("a step task died: {0}")]
    Task(String),
    #[error("the event log stopped publishing")]
    Unsubscribed,
}

/// Why an operator request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The core's answer (`events::request`): busy, wrong phase, blocked, forbidden.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("cannot read the cluster's nodes: {0}")]
    Inventory(String),
    #[error("cannot plan: {0}")]
    Plan(String),
    #[error("cannot roll back: {0}")]
    Rollback(upgraded_planner::rollback::RollbackError),
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Settings for new runs: the operator's policy file, validated.
#[derive(Debug, Clone, Default)]
pub struct RunDefaults {
    pub policy: PlanPolicy,
}

/// Steps report observations (blocked evictions, scaled workloads) into the run's log.
struct LogRecorder<L> {
    log: L,
    run: RunId,
    clock: Arc<dyn Clock>,
}

impl<L: EventLog + Clone> Recorder for LogRecorder<L> {
    fn note(&self, event: Event) -> BoxFut<'_, Result<(), PortError>> {
        Box::pin(async move {
            self.log
                .append(self.run, vec![(self.clock.now(), event)])
                .await
                .map(|_| ())
                .map_err(|e| PortError::retryable(format!("recording an observation: {e}")))
        })
    }
}

pub struct Daemon<L: EventLog + Clone> {
    log: L,
    clock: Arc<dyn Clock>,
    ports: Adapters,
    defaults: RunDefaults,
    status: watch::Sender<Option<RunSummary>>,
    active: Mutex<Option<RunId>>,
    fatal: tokio::sync::mpsc::UnboundedSender<EngineError>,
    /// The drive loops running (one per started or recovered run), for [`Daemon::stop`].
    drives: Mutex<Vec<tokio::task::AbortHandle>>,
    /// The notification sinks, for `upgradectl notify test` (none configured: unset).
    notify: std::sync::OnceLock<Arc<crate::notify::Notify>>,
    /// `--ha`: this instance and its lease, as `status` shows them and writes are judged.
    ha: std::sync::OnceLock<watch::Receiver<upgraded_api::HaStatus>>,
}

impl<L: EventLog + Clone> std::fmt::Debug for Daemon<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

impl<L: EventLog + Clone> Daemon<L> {
    /// Returns the daemon and a receiver of fatal errors (the binary exits on the first).
    pub fn new(
        log: L,
        clock: Arc<dyn Clock>,
        ports: Adapters,
        defaults: RunDefaults,
    ) -> (Arc<Self>, tokio::sync::mpsc::UnboundedReceiver<EngineError>) {
        let (fatal, fatal_rx) = tokio::sync::mpsc::unbounded_channel();
        let (status, _) = watch::channel(None);
        (
            Arc::new(Daemon {
                log,
                clock,
                ports,
                defaults,
                status,
                active: Mutex::new(None),
                fatal,
                drives: Mutex::new(Vec::new()),
                notify: std::sync::OnceLock::new(),
                ha: std::sync::OnceLock::new(),
            }),
            fatal_rx,
        )
    }

    pub fn log(&self) -> &L {
        &self.log
    }

    /// Hands the daemon its notification sinks (once, at start).
    pub fn set_notify(&self, n: Arc<crate::notify::Notify>) {
        let _ = self.notify.set(n);
    }

    pub fn notify(&self) -> Option<&Arc<crate::notify::Notify>> {
        self.notify.get()
    }

    /// `--ha`: hands the daemon the view of its lease (once, at start).
    pub fn set_ha(&self, view: watch::Receiver<upgraded_api::HaStatus>) {
        let _ = self.ha.set(view);
    }

    /// `--ha`: this instance and its lease now.
    pub fn ha(&self) -> Option<upgraded_api::HaStatus> {
        self.ha.get().map(|v| v.borrow().clone())
    }

    /// Whether a drive loop is running (this instance acts on a run).
    pub fn driving(&self) -> bool {
        self.drives
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|d| !d.is_finished())
    }

    /// `--ha`: keeps `status` the fold of the newest run while no drive loop does (a
    /// standby's copy grows as it follows the replicated log).
    pub fn spawn_status_fold(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut sub = me.log.subscribe();
            let newest = |me: &Self| -> Option<RunState> {
                let run = me.log.runs().ok()?.into_iter().last()?;
                Some(RunState::replay(&me.log.read(run, 0).ok()?))
            };
            let mut state = newest(&me);
            loop {
                if !me.driving()
                    && let Some(s) = &state
                {
                    me.status.send_replace(Some(s.summary()));
                }
                match sub.recv().await {
                    Ok(r) => match &mut state {
                        Some(s) if s.id == Some(r.run) && s.next_seq == r.seq => s.apply(&r),
                        _ => state = newest(&me),
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => state = newest(&me),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }

    pub fn now(&self) -> upgraded_events::Timestamp {
        self.clock.now()
    }

    pub fn status(&self) -> watch::Receiver<Option<RunSummary>> {
        self.status.subscribe()
    }

    fn active(&self) -> Option<RunId> {
        *self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// On start: reopen the latest unfinished run, marking what was in flight as in doubt.
    pub async fn recover(self: &Arc<Self>) -> Result<Option<RunId>, EngineError> {
        let runs = self.log.runs()?;
        let mut newest = None;
        for &run in &runs {
            let state = RunState::replay(&self.log.read(run, 0)?);
            self.status.send_replace(Some(state.summary()));
            if !state.phase().is_terminal() {
                newest = Some((run, state));
            }
        }
        let Some((run, state)) = newest else {
            // Nothing to resume; a finished run may still owe its follow-up (a crash came
            // between its end and the rollback it asked for).
            if let Some(&last) = runs.last() {
                self.after_run(last).await;
            }
            return Ok(None);
        };
        self.log
            .append(
                run,
                vec![(
                    self.clock.now(),
                    Event::RunRecovered {
                        pid: std::process::id(),
                    },
                )],
            )
            .await?;
        tracing::info!(%run, phase = ?state.phase(), "resuming unfinished run");
        self.spawn_drive(run, state);
        Ok(Some(run))
    }

    /// Reads the cluster, plans a run to `target` with the planner; unless `dry_run`, records
    /// the pre-upgrade state and the plan, and starts it. Plans with blockers are refused
    /// unless `force`.
    pub async fn start(
        self: &Arc<Self>,
        target: Version,
        by: Actor,
        dry_run: bool,
        force: bool,
    ) -> Result<(Option<RunId>, PlanReport), RequestError> {
        request::may_plan(self.active_phase(), dry_run)?;
        let mut observed = self
            .ports
            .cluster
            .observe()
            .await
            .map_err(|e| RequestError::Inventory(e.to_string()))?;
        for n in &observed.inventory.nodes {
            check_node_name(&n.name).map_err(RequestError::Inventory)?;
        }
        // The removed-API gate's counters, from each apiserver instance.
        let apis = crate::apiusage::apiservers(
            self.ports.nodes.as_ref(),
            &observed.inventory,
            self.ports.command_timeout,
        )
        .await;
        observed.inventory.api_usage.apiservers = apis.apiservers;
        observed.inventory.api_usage.unread = apis.unread;
        crate::apiusage::helm(
            self.ports.cluster.as_ref(),
            &mut observed.inventory.api_usage,
        )
        .await;
        let policy = &self.defaults.policy;
        // Each machine's fingerprint, for drift within its generation.
        observed.inventory.hosts = crate::hostfacts::hosts(
            self.ports.nodes.as_ref(),
            self.ports.cluster.as_ref(),
            &observed.inventory,
            &policy.drift_keys,
            self.ports.command_timeout,
        )
        .await;
        let now = self.clock.now();
        let report = planner::plan(PlanInput {
            inventory: &observed.inventory,
            policy,
            target: Some(target),
            start: now,
        })
        .map_err(|e| RequestError::Plan(e.to_string()))?;
        let mut admission = request::Admission {
            dry_run,
            nothing_to_do: report.nothing_to_do(),
            blockers: report
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Blocker)
                .map(|f| format!("  {}: {} (fix: {})", f.code, f.message, f.fix))
                .collect(),
            force,
            missing_rights: Vec::new(),
        };
        if !request::admit(&admission)? {
            return Ok((None, report));
        }
        // Permissions first: a right missing now would halt the run after its first node.
        let needed = planner::permissions::required(policy);
        let allowed = self
            .ports
            .cluster
            .can_i(&needed)
            .await
            .map_err(|e| RequestError::Inventory(format!("cannot check permissions: {e}")))?;
        admission.missing_rights = planner::permissions::missing(&needed, &allowed)
            .iter()
            .map(|p| format!("  {p}"))
            .collect();
        request::admit(&admission)?;
        let run = self
            .record_and_drive(
                observed,
                report.target,
                report.execution_plan(),
                policy.run_policy(),
                Some((
                    report.generations.iter().map(|g| g.name.clone()).collect(),
                    report.drift.clone(),
                )),
                by,
            )
            .await?;
        Ok((Some(run), report))
    }

    /// Records a new run (the cluster as observed, its plan and policy, its start by `by`)
    /// and drives it.
    async fn record_and_drive(
        self: &Arc<Self>,
        observed: crate::ports::Observed,
        target: Version,
        plan: upgraded_events::Plan,
        policy: upgraded_events::Policy,
        drift: Option<(Vec<String>, Vec<upgraded_events::drift::DriftReport>)>,
        by: Actor,
    ) -> Result<RunId, RequestError> {
        let now = self.clock.now();
        let run = RunId::new();
        let mut records = vec![
            (
                now,
                Event::ClusterObserved {
                    apiserver: observed.apiserver,
                    inventory: Json(observed.inventory),
                },
            ),
            (
                now,
                Event::RunPlanned {
                    target,
                    plan: Json(plan),
                    policy: Json(policy),
                    by: by.clone(),
                },
            ),
        ];
        // A forward run's drift before anything is touched (a rollback compares nothing).
        if let Some((generations, reports)) = drift {
            records.push((
                now,
                Event::DriftObserved {
                    after: None,
                    generations,
                    reports: Json(reports),
                },
            ));
        }
        records.push((now, Event::RunStarted { by }));
        let records = self.log.append(run, records).await?;
        self.spawn_drive(run, RunState::replay(&records));
        Ok(run)
    }

    /// The active run and its phase, if there is one.
    fn active_phase(&self) -> Option<(RunId, RunPhase)> {
        let run = self.active()?;
        let phase = self
            .status
            .borrow()
            .as_ref()
            .map_or(RunPhase::Planned, |s| s.phase);
        Some((run, phase))
    }

    /// Pause, resume or abort the active run, as the core decides (`events::request`).
    pub async fn operator(&self, req: Request) -> Result<RunId, RequestError> {
        let active = self.active_phase();
        let event = request::operator(active.map(|(_, phase)| phase), req)?;
        let Some((run, _)) = active else {
            return Err(Rejection::NoRun.into());
        };
        self.log
            .append(run, vec![(self.clock.now(), event)])
            .await?;
        Ok(run)
    }

    fn spawn_drive(self: &Arc<Self>, run: RunId, state: RunState) {
        *self.active.lock().unwrap_or_else(|p| p.into_inner()) = Some(run);
        self.status.send_replace(Some(state.summary()));
        let me = Arc::clone(self);
        let handle = tokio::spawn(
            async move {
                match Arc::clone(&me).drive(run, state).await {
                    Err(e) => {
                        tracing::error!(error = %e, "engine stopped");
                        let _ = me.fatal.send(e);
                    }
                    Ok(()) => me.after_run(run).await,
                }
            }
            .instrument({
                let span = tracing::info_span!("run", run = %run);
                // With --otlp-endpoint, this process's span links to the run's trace.
                crate::traces::link_to_run(&span, run);
                span
            }),
        );
        let mut drives = self.drives.lock().unwrap_or_else(|p| p.into_inner());
        drives.retain(|d| !d.is_finished());
        drives.push(handle.abort_handle());
    }

    /// Stops every drive loop and the steps it is running, at whatever point they are, as
    /// a dying process would: what the log holds is what a restart resumes from. (The
    /// in-process harness's crash; the binary simply exits.)
    pub fn stop(&self) {
        for d in self
            .drives
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            d.abort();
        }
    }

    async fn drive(self: Arc<Self>, run: RunId, mut state: RunState) -> Result<(), EngineError> {
        let mut sub = self.log.subscribe();
        // Anything appended between the replay and the subscription.
        for r in self.log.read(run, state.next_seq)? {
            state.apply(&r);
        }
        let mut tasks: JoinSet<Result<TaskEnd, EngineError>> = JoinSet::new();
        let mut busy: HashSet<Entry> = HashSet::new();
        // Askings of what did not answer (`AwaitAnswer`, while paused) that went
        // unanswered, per node: how many in a row, and when to ask again.
        let mut probe_after: HashMap<Entry, (u32, Timestamp)> = HashMap::new();
        loop {
            if state.phase().is_terminal() && tasks.is_empty() {
                self.status.send_replace(Some(state.summary()));
                tracing::info!(%run, phase = ?state.phase(), "run finished");
                return Ok(());
            }
            let now = self.clock.now();
            let decision = decide(&state, &state.policy, now);
            let waiting = decision.waiting.clone().filter(|_| tasks.is_empty());
            // Brought up to date in place: only what the new records changed is rebuilt.
            self.status.send_modify(|current| {
                let summary = current.get_or_insert_with(|| state.summary());
                state.refresh_summary(summary);
                summary.waiting = waiting;
            });
            let mut intents = Vec::new();
            let mut work = Vec::new();
            let mut wake = decision.wake_at;
            for cmd in decision.commands {
                match &cmd {
                    Command::RunStep { node, .. }
                    | Command::Probe { node, .. }
                    | Command::AwaitAnswer { node }
                        if busy.contains(node) =>
                    {
                        continue;
                    }
                    Command::AwaitAnswer { node } => {
                        if let Some(&(_, t)) = probe_after.get(node).filter(|(_, t)| *t > now) {
                            wake = Some(wake.map_or(t, |w| w.min(t)));
                            continue;
                        }
                    }
                    _ => {}
                }
                if let Some(intent) = cmd.intent() {
                    intents.push((now, intent));
                }
                if let Command::ObserveDrift { after, .. } = &cmd
                    && busy.contains(&drift_task(*after))
                {
                    continue;
                }
                if matches!(
                    cmd,
                    Command::RunStep { .. }
                        | Command::Probe { .. }
                        | Command::ObserveDrift { .. }
                        | Command::AwaitAnswer { .. }
                ) {
                    work.push(cmd);
                }
            }
            let recorded = !intents.is_empty();
            if recorded {
                // Durable before any effect: the intent is the promise we keep after a crash.
                let last = self
                    .log
                    .append(run, intents)
                    .await?
                    .last()
                    .map_or(0, |r| r.seq);
                while state.next_seq <= last {
                    next_record(&self.log, &mut sub, run, &mut state).await?;
                }
            }
            for cmd in work {
                // What a log line inside the task is about (the drive's span names the run).
                let span = match &cmd {
                    Command::RunStep {
                        node,
                        step,
                        attempt,
                        ..
                    }
                    | Command::Probe {
                        node,
                        step,
                        attempt,
                    } => tracing::info_span!(
                        "step",
                        entry = %node,
                        step = %step,
                        attempt = *attempt,
                        probe = matches!(cmd, Command::Probe { .. })
                    ),
                    Command::ObserveDrift { after, .. } => {
                        tracing::info_span!("drift", after = *after)
                    }
                    Command::AwaitAnswer { node } => tracing::info_span!("outage", entry = %node),
                    _ => tracing::info_span!("task"),
                };
                let (node, task) = self.task(run, &state, cmd);
                busy.insert(node);
                tasks.spawn(task.instrument(span));
            }
            if recorded {
                // The intents changed the state (a run may have just completed): decide
                // again before waiting, or nothing might be left to wake this loop.
                continue;
            }
            if !busy.is_empty() || wake.is_some() {
                // Wait for a record, a finished task, or the wake time.
                let sleep = async {
                    match wake {
                        Some(t) => self.clock.sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = next_record(&self.log, &mut sub, run, &mut state) => r?,
                    Some(joined) = tasks.join_next() => {
                        match joined.map_err(|e| EngineError::Task(e.to_string()))?? {
                            TaskEnd::Done(node, seq) => {
                                // Its record applied before the next decision, which would
                                // otherwise ask for the same work again.
                                while seq.is_some_and(|q| state.next_seq <= q) {
                                    next_record(&self.log, &mut sub, run, &mut state).await?;
                                }
                                busy.remove(&node);
                                probe_after.remove(&node);
                            }
                            TaskEnd::Unanswered(node) => {
                                busy.remove(&node);
                                let failed = probe_after.get(&node).map_or(0, |p| p.0) + 1;
                                let at = probe_retry_at(&state.policy, failed, self.clock.now());
                                probe_after.insert(node, (failed, at));
                            }
                        }
                    }
                    () = sleep => {}
                }
            } else {
                // Nothing to do until an operator acts (paused, halted) or a record arrives.
                next_record(&self.log, &mut sub, run, &mut state).await?;
            }
        }
    }

    /// The task that executes one command and records its outcome.
    fn task(
        &self,
        run: RunId,
        state: &RunState,
        cmd: Command,
    ) -> (
        Entry,
        impl std::future::Future<Output = Result<TaskEnd, EngineError>> + Send + 'static,
    ) {
        let log = self.log.clone();
        let clock = Arc::clone(&self.clock);
        let ports = self.ports.clone();
        let node = match &cmd {
            Command::RunStep { node, .. }
            | Command::Probe { node, .. }
            | Command::AwaitAnswer { node } => node.clone(),
            Command::ObserveDrift { after, .. } => drift_task(*after),
            _ => Entry::default(),
        };
        let (host, all_steps) = state.node(node.as_str()).map_or_else(
            || (Host::new(node.as_str()), Vec::new()),
            |n| (n.node().host.clone(), n.node().steps.clone()),
        );
        let policy = state.policy.clone();
        let scaled = state.scaled_by(node.as_str());
        let baseline = state.baseline;
        let target = state.target;
        let name = node.clone();
        let (attempt, checks) = match &cmd {
            Command::RunStep {
                step: upgraded_events::Step::Checks { boundary },
                attempt,
                ..
            } => (
                *attempt,
                Some(state.node_checks(node.as_str(), host.as_str(), *boundary)),
            ),
            Command::RunStep { attempt, .. } | Command::Probe { attempt, .. } => (*attempt, None),
            _ => (0, None),
        };
        (name, async move {
            let notes = LogRecorder {
                log: log.clone(),
                run,
                clock: Arc::clone(&clock),
            };
            let env = StepEnv {
                ports: &ports,
                clock: clock.as_ref(),
                notes: &notes,
                policy: &policy,
                baseline,
                entry: &node,
                host: &host,
                steps: &all_steps,
                target,
                scaled,
                run,
                attempt,
                checks,
            };
            let seen = match &cmd {
                Command::RunStep {
                    node,
                    step,
                    attempt,
                    leave_cordoned,
                } => match steps::execute(&env, step, *leave_cordoned).await {
                    Ok(facts) => Observation::Succeeded(facts),
                    Err(e) => {
                        tracing::warn!(%node, %step, attempt, error = %e, "step failed");
                        Observation::Failed {
                            error: e.what,
                            kind: e.kind,
                            facts: e.facts,
                        }
                    }
                },
                Command::Probe { node, step, .. } => match steps::probe(&env, step).await {
                    Ok((done, facts)) => Observation::Probed { done, facts },
                    Err(e) => {
                        tracing::warn!(%node, %step, error = %e, "probe could not look");
                        Observation::Failed {
                            error: e.what,
                            kind: e.kind,
                            facts: e.facts,
                        }
                    }
                },
                Command::ObserveDrift { members, .. } => {
                    let names = members.iter().map(|(n, _)| n.clone()).collect();
                    Observation::Hosts(
                        crate::hostfacts::hosts_of(
                            ports.nodes.as_ref(),
                            ports.cluster.as_ref(),
                            names,
                            &policy.drift_keys,
                            ports.command_timeout,
                        )
                        .await,
                    )
                }
                Command::AwaitAnswer { node } => {
                    // The API server about the node, and the node's agent, both answering.
                    let api = ports.cluster.node_status(&host).await;
                    let agent = ports
                        .nodes
                        .run(
                            &host,
                            &crate::ports::RemoteCommand::Fingerprint,
                            ports.command_timeout,
                        )
                        .await;
                    match (api, agent) {
                        (Ok(_), Ok(_)) => Observation::Answered,
                        (Err(e), _) | (_, Err(e)) => {
                            tracing::info!(%node, error = %e, "still not answering");
                            Observation::Unknown
                        }
                    }
                }
                _ => return Ok(TaskEnd::Done(node, None)),
            };
            // What the core says records this observation; an unanswered asking records
            // nothing and is tried again.
            let Some(outcome) = cmd.outcome(seen) else {
                return Ok(TaskEnd::Unanswered(node));
            };
            let what = outcome.kind().name();
            let seq = log
                .append(run, vec![(clock.now(), outcome)])
                .await?
                .last()
                .map(|r| r.seq);
            tracing::info!(record = what, seq, "recorded");
            Ok(TaskEnd::Done(node, seq))
        })
    }
}

/// The busy key of the reading of drift after batch `after` (no plan entry has spaces).
fn drift_task(after: u32) -> Entry {
    Entry::new(format!("drift after batch {after}"))
}

enum TaskEnd {
    /// The command's entry, and the seq of the record it appended.
    Done(Entry, Option<u64>),
    Unanswered(Entry),
}

/// Waits for the next record of `run` from the log's publication and applies it; catches up
/// from storage if the subscription lagged.
async fn next_record<L: EventLog>(
    log: &L,
    sub: &mut broadcast::Receiver<Arc<Record>>,
    run: RunId,
    state: &mut RunState,
) -> Result<(), EngineError> {
    loop {
        match sub.recv().await {
            Ok(r) if r.run == run => {
                if r.seq == state.next_seq {
                    state.apply(&r);
                    return Ok(());
                }
                if r.seq > state.next_seq {
                    // Should not happen (one writer, in order), but the log is the truth.
                    for m in log.read(run, state.next_seq)? {
                        state.apply(&m);
                    }
                    return Ok(());
                }
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let missed = log.read(run, state.next_seq)?;
                let caught_up = !missed.is_empty();
                for r in &missed {
                    state.apply(r);
                }
                if caught_up {
                    return Ok(());
                }
            }
            Err(broadcast::error::RecvError::Closed) => return Err(EngineError::Unsubscribed),
        }
    }
}
