//! The in-process harness: the daemon's real engine, sled log and API on the sim's router,
//! in tokio's paused time. Hours of upgrade take seconds, nothing sleeps on the wall clock,
//! and a scenario gives the same result on every run.
//!
//! What is real: the engine (`decide`, the fold, steps, drains through the Eviction API,
//! gates), the sled log in a temp dir (fsync per group commit), the kube-rs adapter, the
//! node agents (`SimAgents`) and the API's router. What is not: sockets (the sim's router is
//! kube's service and the agents' transport; the API's router is called directly, with the
//! peer uid 0) and processes ([`Harness::crash`] aborts the engine's tasks where they are).
//!
//! Use it in a current-thread runtime with paused time: `#[tokio::test(start_paused =
//! true)]`. Time jumps to the next timer whenever every task waits on one; a log append
//! runs on a blocking thread, which holds time still, so an fsync never looks like minutes.
//! Waits are bounded in virtual time, so a stuck scenario fails with the status it was in.

pub mod chaos;
pub mod faults;
pub mod rehearse;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};
use tower::ServiceExt;
use upgraded_daemon::api::Peer;
use upgraded_daemon::engine::{Daemon, EngineError, RunDefaults};
use upgraded_daemon::kube::KubeCluster;
use upgraded_daemon::log::{EventLog, LogError, SledLog};
use upgraded_daemon::ports::{BoxFut, Clock, NodeExecutor};
use upgraded_daemon::simagent::{Exchange, SimAgents};
use upgraded_daemon::steps::Adapters;
use upgraded_events::{Event, Record, RunId, Timestamp};
use upgraded_planner::policy::PlanPolicy;
use upgraded_sim::clock::VIRTUAL_EPOCH;
use upgraded_sim::{Sim, World};

/// The sim's clock for a harness world: tokio's (paused) time from [`VIRTUAL_EPOCH`], the
/// same time the daemon reads. Call it inside the test's runtime.
pub fn sim_clock() -> upgraded_sim::Clock {
    upgraded_sim::Clock::tokio_at(VIRTUAL_EPOCH)
}

/// A built-in sim scenario (`lab`, `seed`, `large-N`) on [`sim_clock`].
pub fn scenario(name: &str, seed: u64) -> World {
    upgraded_sim::scenario::build(name, sim_clock(), seed)
        .unwrap_or_else(|e| panic!("scenario {name}: {e}"))
}

/// The daemon's clock on tokio's time, from the instant its world starts at.
#[derive(Debug)]
pub struct TokioClock {
    origin: tokio::time::Instant,
    base: i64,
}

impl TokioClock {
    /// Reading `base` (ms since the Unix epoch) now.
    pub fn at(base: i64) -> TokioClock {
        TokioClock {
            origin: tokio::time::Instant::now(),
            base,
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.base + self.origin.elapsed().as_millis() as i64)
    }

    fn sleep_until(&self, at: Timestamp) -> BoxFut<'_, ()> {
        let ms = at.0.saturating_sub(self.now().0).max(0) as u64;
        Box::pin(tokio::time::sleep(Duration::from_millis(ms)))
    }
}

/// The sled log as one engine sees it: each append waited for on a blocking thread (which
/// holds paused time still), and a handle a crash takes away, so a stopped engine can
/// record nothing more.
#[derive(Clone)]
pub struct HarnessLog {
    slot: Arc<Mutex<Option<SledLog>>>,
    rt: tokio::runtime::Handle,
    /// Appends on their way to the disk: a crash waits for them (a dead process writes
    /// nothing after it died, and a write it began either landed before or never does).
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// When the log's disk is full (every append then fails, as sled's on `ENOSPC`).
    full: Option<(Arc<faults::LogFaults>, Arc<TokioClock>)>,
    /// One append at a time, in the order the engine's tasks asked (a fair lock): appends
    /// racing on blocking threads would take sequence numbers in the order the OS ran those
    /// threads, and a run of many nodes would not replay alike from its seed.
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for HarnessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HarnessLog").finish_non_exhaustive()
    }
}

impl HarnessLog {
    fn new(log: SledLog, full: Option<(Arc<faults::LogFaults>, Arc<TokioClock>)>) -> HarnessLog {
        HarnessLog {
            slot: Arc::new(Mutex::new(Some(log))),
            rt: tokio::runtime::Handle::current(),
            in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            full,
            turn: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn current(&self) -> Result<SledLog, LogError> {
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(LogError::Closed)
    }

    /// Takes the log away from this handle's engine; returns it for the next one.
    fn sever(&self) -> Option<SledLog> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl EventLog for HarnessLog {
    async fn append(
        &self,
        run: RunId,
        entries: Vec<(Timestamp, Event)>,
    ) -> Result<Vec<Record>, LogError> {
        use std::sync::atomic::Ordering;
        let (log, rt) = (self.current()?, self.rt.clone());
        if let Some((faults, clock)) = &self.full
            && faults.full(clock.now())
        {
            return Err(LogError::WriteFailed(
                "No space left on device (os error 28, an injected fault)".into(),
            ));
        }
        let _turn = self.turn.lock().await;
        let in_flight = Arc::clone(&self.in_flight);
        in_flight.fetch_add(1, Ordering::SeqCst);
        // Counted down by the blocking task itself: an abort of this future (a crash) does
        // not stop the write, so the count must follow the write, not the future.
        let done = Arc::clone(&in_flight);
        tokio::task::spawn_blocking(move || {
            let r = rt.block_on(log.append(run, entries));
            done.fetch_sub(1, Ordering::SeqCst);
            r
        })
        .await
        .map_err(|_| LogError::Closed)?
    }
    fn read(&self, run: RunId, from: u64) -> Result<Vec<Record>, LogError> {
        self.current()?.read(run, from)
    }
    fn runs(&self) -> Result<Vec<RunId>, LogError> {
        self.current()?.runs()
    }
    fn subscribe(&self) -> broadcast::Receiver<Arc<Record>> {
        match self.current() {
            Ok(log) => log.subscribe(),
            Err(_) => broadcast::channel(1).1,
        }
    }
}

/// An API answer that was not a success, worded as `upgradectl`'s client words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "upgraded refused: {} (HTTP {})",
            self.message, self.status
        )
    }
}

impl std::error::Error for Refused {}

/// How [`Harness::wait_until`] ended: the status wanted; the engine's fatal error (the
/// daemon exited) with the last status; the deadline, with the last status.
#[derive(Debug)]
pub enum Waited {
    Done(Value),
    Exited(String, Value),
    Deadline(Value),
}

/// The node executor a harness gives its engine, built from the sim.
pub type Nodes = Box<dyn Fn(&Arc<Sim>) -> Arc<dyn NodeExecutor>>;

/// One daemon (and its restarts) on one simulated cluster, in virtual time.
pub struct Harness {
    pub sim: Arc<Sim>,
    _dir: tempfile::TempDir,
    /// Sled, open (closed only while [`Harness::restart_damaged`] damages its files).
    log: Option<SledLog>,
    clock: Arc<TokioClock>,
    policy: PlanPolicy,
    kube: axum::Router,
    nodes: Arc<dyn NodeExecutor>,
    api_faults: Option<Arc<faults::ApiFaults>>,
    log_faults: Option<Arc<faults::LogFaults>>,
    engine: Engine,
}

/// The engine of the current daemon "process".
struct Engine {
    daemon: Arc<Daemon<HarnessLog>>,
    log: HarnessLog,
    fatal: mpsc::UnboundedReceiver<EngineError>,
    api: axum::Router,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").finish_non_exhaustive()
    }
}

/// The sim's router as one HTTP exchange (the node agents' transport).
pub(crate) fn exchange(router: axum::Router) -> Exchange {
    Arc::new(move |req: Request<Full<Bytes>>| {
        let router = router.clone();
        Box::pin(async move {
            let resp = router
                .oneshot(req.map(axum::body::Body::new))
                .await
                .map_err(|e| e.to_string())?;
            upgraded_daemon::simagent::status_and_body(resp).await
        })
    })
}

/// What a harness may change about the daemon's surroundings.
#[derive(Default)]
pub struct Options {
    /// The node executor, built from the sim (default: the sim's node agents, as
    /// `--sim-agents`; the benchmark's takes each command's estimated time instead).
    pub nodes: Option<Nodes>,
    /// A layer around the sim's router as the kube adapter sees it (the benchmark times the
    /// sim's share with one).
    pub kube_layer: Option<Box<dyn Fn(axum::Router) -> axum::Router>>,
    /// Faults between the daemon's kube client and the sim, in virtual time.
    pub api_faults: Option<Arc<faults::ApiFaults>>,
    /// Faults between the daemon and the node agents, in virtual time.
    pub node_faults: Option<Arc<faults::NodeFaults>>,
    /// The log's disk full, in virtual time.
    pub log_faults: Option<Arc<faults::LogFaults>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options").finish_non_exhaustive()
    }
}

impl Harness {
    /// A daemon with `policy` (YAML) on `world` (built on [`sim_clock`]), its node agents
    /// acting on the sim's machines as `--sim-agents` does.
    pub async fn new(world: World, policy: &str) -> Harness {
        let policy = PlanPolicy::from_yaml(policy).unwrap_or_else(|e| panic!("policy: {e}"));
        Self::with(world, policy, Options::default()).await
    }

    /// A daemon with `policy` on `world`, with `options`.
    pub async fn with(world: World, policy: PlanPolicy, options: Options) -> Harness {
        Self::try_with(world, policy, options)
            .await
            .unwrap_or_else(|e| panic!("the harness: {e}"))
    }

    /// [`Harness::with`], its failures (a temp dir, the log, the engine's recovery) as errors.
    pub async fn try_with(
        world: World,
        policy: PlanPolicy,
        options: Options,
    ) -> Result<Harness, String> {
        // The daemon's clock reads what the world's does (a world may start at any time).
        let clock = Arc::new(TokioClock::at(
            i64::try_from(world.now()).unwrap_or(i64::MAX),
        ));
        let sim = Sim::new(world);
        let router = upgraded_sim::server::router(Arc::clone(&sim));
        let kube = match &options.kube_layer {
            Some(layer) => layer(router.clone()),
            None => router.clone(),
        };
        let mut nodes: Arc<dyn NodeExecutor> = match &options.nodes {
            Some(f) => f(&sim),
            None => Arc::new(SimAgents::in_process(exchange(router))),
        };
        if let Some(f) = &options.node_faults {
            nodes = Arc::new(faults::FaultyNodes {
                inner: nodes,
                faults: Arc::clone(f),
                clock: clock.clone(),
                sim: Arc::clone(&sim),
            });
        }
        let dir = tempfile::tempdir().map_err(|e| format!("a temp dir for the log: {e}"))?;
        let (log, _) = SledLog::open(dir.path(), Default::default())
            .map_err(|e| format!("the log in {}: {e}", dir.path().display()))?;
        let api_faults = options.api_faults.clone();
        let log_faults = options.log_faults.clone();
        let engine = Self::engine(
            (&log, &log_faults),
            &clock,
            &policy,
            (&kube, &api_faults),
            &nodes,
        );
        let h = Harness {
            sim,
            _dir: dir,
            log: Some(log),
            clock,
            policy,
            kube,
            nodes,
            api_faults,
            log_faults,
            engine,
        };
        h.engine
            .daemon
            .recover()
            .await
            .map_err(|e| format!("the engine's start: {e}"))?;
        Ok(h)
    }

    fn engine(
        (log, log_faults): (&SledLog, &Option<Arc<faults::LogFaults>>),
        clock: &Arc<TokioClock>,
        policy: &PlanPolicy,
        (kube, api_faults): (&axum::Router, &Option<Arc<faults::ApiFaults>>),
        nodes: &Arc<dyn NodeExecutor>,
    ) -> Engine {
        let client = match api_faults {
            Some(f) => kube::Client::new(
                faults::FaultyApi {
                    router: kube.clone(),
                    faults: Arc::clone(f),
                    clock: clock.clone(),
                },
                "default",
            ),
            None => kube::Client::new(kube.clone(), "default"),
        };
        let cluster = KubeCluster::from_client(client);
        let ports = Adapters {
            cluster: Arc::new(cluster),
            nodes: Arc::clone(nodes),
            // `http://sim.in-process/sim/v1/prometheus` is the sim's Prometheus.
            host: Arc::new(upgraded_daemon::host::Host::in_process(exchange(
                kube.clone(),
            ))),
            command_timeout: Duration::from_secs(3600),
        };
        let log = HarnessLog::new(
            log.clone(),
            log_faults
                .as_ref()
                .map(|f| (Arc::clone(f), Arc::clone(clock))),
        );
        let clock: Arc<dyn Clock> = clock.clone();
        let (daemon, fatal) = Daemon::new(
            log.clone(),
            clock,
            ports,
            RunDefaults {
                policy: policy.clone(),
            },
        );
        let api = upgraded_daemon::api::router(Arc::clone(&daemon));
        Engine {
            daemon,
            log,
            fatal,
            api,
        }
    }

    /// The engine, for what the API does not show.
    pub fn daemon(&self) -> &Arc<Daemon<HarnessLog>> {
        &self.engine.daemon
    }

    /// The log's feed of records as they become durable (acknowledged), from now on; a
    /// [`Harness::restart_damaged`] opens a new log, with a new feed.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Record>> {
        match &self.log {
            Some(log) => log.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// The time the daemon and the sim read.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The daemon dies where it is, as under `kill -9`: its drive loops and steps are
    /// aborted, and it can record nothing more. Steps are cut between awaits; a record
    /// being written finishes (it was on its way to the disk).
    pub fn crash(&mut self) {
        self.engine.daemon.stop();
        self.engine.log.sever();
    }

    /// A new daemon on the same log and cluster, which resumes the unfinished run.
    pub async fn restart(&mut self) {
        self.try_restart()
            .await
            .unwrap_or_else(|e| panic!("the engine resumes from the log: {e}"));
    }

    /// [`Harness::restart`], a failed start (as when the log's disk is full) as an error:
    /// the daemon is then down, as a process that exited, until the next try.
    pub async fn try_restart(&mut self) -> Result<(), String> {
        self.stop_engine().await;
        let log = self.log.as_ref().ok_or("the log could not be opened")?;
        self.engine = Self::engine(
            (log, &self.log_faults),
            &self.clock,
            &self.policy,
            (&self.kube, &self.api_faults),
            &self.nodes,
        );
        match self.engine.daemon.recover().await {
            Ok(_) => Ok(()),
            Err(e) => {
                self.crash();
                Err(e.to_string())
            }
        }
    }

    /// The daemon dies; `damage` is done to the log's files (its data dir) while no process
    /// has them open, as a crash or a disk leaves them; then the log is opened again, as a
    /// starting daemon opens it (start one with [`Harness::try_restart`]). The refusal to
    /// open it (naming what was lost) is the error, and the daemon stays down.
    pub async fn reopen_damaged(
        &mut self,
        damage: impl FnOnce(&std::path::Path),
    ) -> Result<upgraded_daemon::log::OpenReport, String> {
        self.stop_engine().await;
        let dir = self._dir.path().to_path_buf();
        // Sled closed: its writer thread joined; its flusher lets the file lock go a moment
        // after the last handle is dropped.
        if let Some(log) = self.log.take() {
            log.close();
        }
        damage(&dir);
        let (log, report) = loop {
            match SledLog::open(&dir, Default::default()) {
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e.to_string()),
                Ok(opened) => break opened,
            }
        };
        self.log = Some(log);
        Ok(report)
    }

    /// Stops the current engine and waits for its writes already on their way to land.
    async fn stop_engine(&mut self) {
        self.engine.daemon.stop();
        self.engine.log.sever();
        while self
            .engine
            .log
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
        {
            tokio::task::yield_now().await;
        }
    }

    /// One API call, as `upgradectl` makes it (peer uid 0); the answer as JSON.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Refused> {
        let (status, bytes) = self.call(method, path, body).await;
        let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        if status.is_success() {
            Ok(value)
        } else {
            Err(Refused {
                status: status.as_u16(),
                message: value["error"].as_str().unwrap_or("no reason").to_string(),
            })
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (StatusCode, Bytes) {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body))
            .expect("a request");
        req.extensions_mut()
            .insert(ConnectInfo(Peer { uid: Some(0) }));
        let resp = self
            .engine
            .api
            .clone()
            .oneshot(req)
            .await
            .unwrap_or_else(|e| match e {});
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .expect("the API's answer")
            .to_bytes();
        (status, bytes)
    }

    /// `POST /v1/runs` for `target`.
    pub async fn start(&self, target: &str) -> Result<Value, Refused> {
        self.json(
            Method::POST,
            "/v1/runs",
            Some(&serde_json::json!({ "target": target })),
        )
        .await
    }

    /// `/v1/status`'s `active`.
    pub async fn active(&self) -> Value {
        self.json(Method::GET, "/v1/status", None)
            .await
            .expect("status")["active"]
            .clone()
    }

    /// Every record of a run so far, as the API sends them (JSON).
    pub async fn events(&self, run: &str) -> Vec<Value> {
        let (status, bytes) = self
            .call(Method::GET, &format!("/v1/runs/{run}/events"), None)
            .await;
        assert!(status.is_success(), "events of {run}: {status}");
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("a JSON record"))
            .collect()
    }

    /// Waits, at most `within` of virtual time, until the status (`/v1/status`'s `active`
    /// as JSON) satisfies `done`; returns it. Fails with the last status when time runs out
    /// or the engine stops.
    pub async fn until(&mut self, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        match self
            .wait_until(tokio::time::Instant::now() + within, done)
            .await
        {
            Waited::Done(v) => v,
            Waited::Exited(e, now) => panic!("the engine stopped: {e}; status {now:#}"),
            Waited::Deadline(now) => panic!(
                "not done within {} s of virtual time; status {now:#}",
                within.as_secs()
            ),
        }
    }

    /// Waits until the status (`/v1/status`'s `active`) satisfies `done`, the engine stops
    /// on a fatal error (as the binary exits), or `deadline` (virtual time) passes.
    pub async fn wait_until(
        &mut self,
        deadline: tokio::time::Instant,
        done: impl Fn(&Value) -> bool,
    ) -> Waited {
        let mut status = self.engine.daemon.status();
        loop {
            let now =
                serde_json::to_value(status.borrow_and_update().clone()).expect("status as JSON");
            if done(&now) {
                return Waited::Done(now);
            }
            tokio::select! {
                changed = status.changed() => {
                    if changed.is_err() {
                        return Waited::Exited("the engine is gone".into(), now);
                    }
                }
                Some(e) = self.engine.fatal.recv() => return Waited::Exited(e.to_string(), now),
                () = tokio::time::sleep_until(deadline) => return Waited::Deadline(now),
            }
        }
    }

    /// [`Harness::until`] the run's phase is `phase`.
    pub async fn until_phase(&mut self, phase: &str, within: Duration) -> Value {
        self.until(within, |a| a["phase"] == phase).await
    }

    /// Waits, at most `within` of virtual time, until a record of `run` satisfies `found`
    /// (the record as JSON); returns it.
    pub async fn until_record(
        &mut self,
        run: &str,
        within: Duration,
        found: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        let mut sub = self.engine.log.subscribe();
        if let Some(r) = self.events(run).await.into_iter().find(|r| found(r)) {
            return r;
        }
        loop {
            tokio::select! {
                r = sub.recv() => {
                    let r = r.expect("the log's feed");
                    let v = serde_json::to_value(&*r).expect("a record as JSON");
                    if r.run.to_string() == run && found(&v) {
                        return v;
                    }
                }
                Some(e) = self.engine.fatal.recv() => panic!("the engine stopped: {e}"),
                () = tokio::time::sleep_until(deadline) => {
                    panic!("no such record within {} s of virtual time", within.as_secs())
                }
            }
        }
    }
}
