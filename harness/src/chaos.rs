//! The chaos campaign: a whole upgrade or rollback of a scenario under a schedule of faults
//! drawn from a seed (API outages of every kind, lost node answers, hangs, the log's disk
//! full, daemon crashes with or without damage to the log's files), and the promises checked
//! after it against the same plan run without faults. A failing schedule shrinks to the
//! fewest faults that still fail, and every schedule has a text form to replay it.
//!
//! The schedule's text: faults separated by `,`, each `KIND[:NODE][/COMMAND]@AT+FOR` with
//! times in seconds from the run's start (for `crash` and `crash-damage`, FOR is the time the
//! daemon stays down; for `node-reboot`, the time the machine does). A node fault with
//! `/COMMAND` meets only that command (one of [`COMMANDS`]). Kinds: see [`Kind::ALL`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};
use upgraded_events::{Event, Record, Timestamp};
use upgraded_planner::policy::PlanPolicy;

use crate::faults::{ApiFault, ApiFaults, LogFaults, NodeFault, NodeFaults, NodeWindow, Window};
use crate::{Harness, Options, Waited, scenario};

/// A kind of fault the campaign draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    ApiRefused,
    Api503,
    Api500RetryAfter,
    Api429,
    ApiHang,
    ApiCut,
    ApiStale,
    NodeDropBefore,
    NodeDropAfter,
    NodeHang,
    NodeReboot,
    NodeGone,
    DiskFull,
    Crash,
    CrashDamage,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::ApiRefused,
        Kind::Api503,
        Kind::Api500RetryAfter,
        Kind::Api429,
        Kind::ApiHang,
        Kind::ApiCut,
        Kind::ApiStale,
        Kind::NodeDropBefore,
        Kind::NodeDropAfter,
        Kind::NodeHang,
        Kind::NodeReboot,
        Kind::NodeGone,
        Kind::DiskFull,
        Kind::Crash,
        Kind::CrashDamage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::ApiRefused => "api-refused",
            Kind::Api503 => "api-503",
            Kind::Api500RetryAfter => "api-500-retry-after",
            Kind::Api429 => "api-429",
            Kind::ApiHang => "api-hang",
            Kind::ApiCut => "api-cut",
            Kind::ApiStale => "api-stale",
            Kind::NodeDropBefore => "node-drop-before",
            Kind::NodeDropAfter => "node-drop-after",
            Kind::NodeHang => "node-hang",
            Kind::NodeReboot => "node-reboot",
            Kind::NodeGone => "node-gone",
            Kind::DiskFull => "disk-full",
            Kind::Crash => "crash",
            Kind::CrashDamage => "crash-damage",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    fn api(self) -> Option<ApiFault> {
        Some(match self {
            Kind::ApiRefused => ApiFault::Refused,
            Kind::Api503 => ApiFault::Status {
                code: 503,
                retry_after: None,
            },
            Kind::Api500RetryAfter => ApiFault::Status {
                code: 500,
                retry_after: Some(5),
            },
            Kind::Api429 => ApiFault::Status {
                code: 429,
                retry_after: Some(3),
            },
            Kind::ApiHang => ApiFault::Hang,
            Kind::ApiCut => ApiFault::Cut,
            // Answers as they were half a minute ago.
            Kind::ApiStale => ApiFault::Stale { secs: 30 },
            _ => return None,
        })
    }

    /// The node fault of this kind lasting `dur` ms (for a reboot, the time the machine
    /// stays down).
    fn node(self, dur: i64) -> Option<NodeFault> {
        Some(match self {
            Kind::NodeDropBefore => NodeFault::DropBefore,
            Kind::NodeDropAfter => NodeFault::DropAfter,
            Kind::NodeHang => NodeFault::Hang,
            Kind::NodeReboot => NodeFault::Reboot {
                down_secs: u64::try_from(dur / 1000).unwrap_or(0),
            },
            Kind::NodeGone => NodeFault::Gone,
            _ => return None,
        })
    }

    fn is_node(self) -> bool {
        self.node(0).is_some()
    }

    /// Whether a run must ride this fault out and complete: every kind but a machine that
    /// never comes back ends (an outage, a lost answer, a reboot shorter than the node's
    /// timeout, a full disk, a crash); a halt or pause is then a defect.
    fn recoverable(self) -> bool {
        self != Kind::NodeGone
    }

    /// Words a halt or pause this fault caused would name (what did not answer).
    fn named_by(self) -> &'static [&'static str] {
        match self {
            Kind::NodeGone => &["has not answered"],
            k if k.api().is_some() => &["API server", "Kubernetes API", "could not reach"],
            k if k.is_node() => &["SSH", "node"],
            _ => &["event log", "space"],
        }
    }
}

/// The commands that change a node which a node fault may be aimed at: several of them
/// run within the same instant of a node's upgrade, so a fault that meets "the next one"
/// would almost always meet the first.
pub const COMMANDS: [&str; 4] = [
    "KubeadmUpgrade",
    "InstallPackages",
    "RestartKubelet",
    "DowngradePackages",
];

/// One fault: `kind` from `at` for `dur` (ms from the run's start); on `node` (node
/// faults: one node, or all when `None`), meeting only `only` (a command of [`COMMANDS`])
/// when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: Kind,
    pub node: Option<String>,
    pub only: Option<&'static str>,
    pub at: i64,
    pub dur: i64,
}

/// Faults, in the order drawn.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule(pub Vec<Fault>);

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, x) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(x.kind.name())?;
            if let Some(n) = &x.node {
                write!(f, ":{n}")?;
            }
            if let Some(c) = x.only {
                write!(f, "/{c}")?;
            }
            write!(f, "@{}+{}", x.at / 1000, x.dur / 1000)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Schedule, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || format!("{part:?}: expected KIND[:NODE][/COMMAND]@AT+FOR (seconds)");
            let (what, when) = part.split_once('@').ok_or_else(bad)?;
            let (what, only) = match what.split_once('/') {
                Some((w, c)) => {
                    let c = COMMANDS.into_iter().find(|k| *k == c).ok_or_else(|| {
                        format!(
                            "{part:?}: unknown command {c:?}; known: {}",
                            COMMANDS.join(", ")
                        )
                    })?;
                    (w, Some(c))
                }
                None => (what, None),
            };
            let (kind, node) = match what.split_once(':') {
                Some((k, n)) => (k, Some(n.to_string())),
                None => (what, None),
            };
            let kind = Kind::parse(kind).ok_or_else(|| {
                let known: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "{part:?}: unknown fault {kind:?}; known: {}",
                    known.join(", ")
                )
            })?;
            let (at, dur) = when.split_once('+').ok_or_else(bad)?;
            let secs = |v: &str| v.parse::<i64>().map_err(|_| bad()).map(|s| s * 1000);
            out.push(Fault {
                kind,
                node,
                only,
                at: secs(at)?,
                dur: secs(dur)?,
            });
        }
        Ok(Schedule(out))
    }
}

/// splitmix64: a small deterministic generator (the schedule is a function of the seed).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`lo` when empty).
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + (self.next_u64() % (hi - lo) as u64) as i64
    }
}

/// What a campaign run does: an upgrade of a scenario to v1.35.3, or (after a calm upgrade)
/// a rollback of some of its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Upgrade,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Plan {
    pub scenario: &'static str,
    pub op: Op,
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            Op::Upgrade => "upgrade",
            Op::Rollback => "rollback",
        };
        write!(f, "{op} of {}", self.scenario)
    }
}

/// The campaign's policy: canaries, a soak, batches, retries, a pause after 15 minutes of
/// outage, and a node parked after two hours without an answer (longer than node faults
/// drawn one after another on one node last: only a machine that never comes back parks).
pub const POLICY: &str = "apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
generations: {maxUnavailable: 34%, canaries: 1}
canarySoak: 5m
waitBetweenBatches: 1m
drainTimeout: 10m
drain: {deleteEmptyDirData: true}
retries: {maxAttempts: 3, backoff: 10s, maxBackoff: 1m}
outage: {pauseAfter: 15m}
gates: {nodeReadyTimeout: 2h}
";

const TARGET: &str = "v1.35.3";
/// No run may take longer than this in virtual time, faults and all: never hung.
const BOUND: Duration = Duration::from_secs(3 * 24 * 3600);
/// How long a daemon that exited stays down before its service manager starts it again.
const RESTART_SEC: Duration = Duration::from_secs(10);

/// What a plan's calm run left: the measure of every faulted run of the same plan.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub effects: BTreeMap<String, u64>,
    pub nodes: BTreeMap<String, String>,
    pub pods: BTreeMap<String, usize>,
    pub low_water: BTreeMap<String, i64>,
    pub steps: BTreeMap<String, usize>,
    /// The run's length in virtual time (ms): faults are drawn within it.
    pub length: i64,
    /// Node names (node faults pick among them).
    pub node_names: Vec<String>,
    /// The workers' (a machine that never comes back is one of them: a control plane that
    /// does not come back halts the run, which is tested on its own).
    pub workers: Vec<String>,
}

/// How a faulted run ended, and what it met.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `completed`, `paused`, `halted`, or `down` (the daemon refused its damaged log).
    pub end: String,
    pub reason: String,
    /// Faults of the schedule that took effect, by kind.
    pub met: BTreeMap<&'static str, u64>,
    /// Requests, commands and appends that met a fault (one fault meets many).
    pub hits: u64,
    /// Reads answered from the past by a stale window.
    pub stale_answers: u64,
    pub records: usize,
}

impl Report {
    pub fn faults(&self) -> u64 {
        self.met.values().sum()
    }
}

/// Each node as a run left it: kubelet, packages, cordoned.
pub fn nodes_of(h: &Harness) -> BTreeMap<String, String> {
    h.sim
        .world()
        .nodes
        .iter()
        .map(|(name, n)| {
            (
                name.clone(),
                format!("{} {:?} {}", n.kubelet, n.packages, n.unschedulable),
            )
        })
        .collect()
}

/// Pods by owner (or by name, for a pod nobody owns), placed ones only.
fn pods_of(h: &Harness) -> BTreeMap<String, usize> {
    let w = h.sim.world();
    let mut out = BTreeMap::new();
    for p in w.pods.values().filter(|p| p.node.is_some()) {
        let who = match &p.owner {
            Some(o) => format!("{}/{:?}", p.namespace, o),
            None => format!("{}/{}", p.namespace, p.name),
        };
        *out.entry(who).or_default() += 1;
    }
    out
}

/// Steps done (succeeded, or found done by a probe) per (entry, step).
fn steps_of(records: &[Record]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in records {
        let key = match &r.event {
            Event::StepSucceeded { node, step, .. } => format!("{node} {step:?}"),
            Event::StepProbed {
                node,
                step,
                done: true,
                ..
            } => format!("{node} {step:?}"),
            _ => continue,
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

/// Where a run ends: a pause for an outage resumes by itself (`outage.resume: auto`), so a
/// run still paused at the campaign's bound never resumed.
fn terminal(a: &Value) -> bool {
    ["completed", "halted", "aborted"].contains(&a["phase"].as_str().unwrap_or(""))
}

/// The world and the harness of a plan, its faults' schedules empty.
async fn harness(plan: Plan, faults: &Injected) -> Harness {
    let mut world = scenario(plan.scenario, 7);
    // What an operator fixes before starting (the seed's bare pod and cgroup v1 machine).
    upgraded_sim::scenario::fix_blockers(&mut world)
        .unwrap_or_else(|e| panic!("{plan}: the blockers' fixes: {e}"));
    world.watch_budgets();
    Harness::with(
        world,
        PlanPolicy::from_yaml(POLICY).unwrap_or_else(|e| panic!("the campaign's policy: {e}")),
        Options {
            api_faults: Some(Arc::clone(&faults.api)),
            node_faults: Some(Arc::clone(&faults.node)),
            log_faults: Some(Arc::clone(&faults.log)),
            ..Options::default()
        },
    )
    .await
}

struct Injected {
    api: Arc<ApiFaults>,
    node: Arc<NodeFaults>,
    log: Arc<LogFaults>,
}

impl Injected {
    fn new() -> Injected {
        Injected {
            api: ApiFaults::new(Vec::new()),
            node: NodeFaults::new(),
            log: LogFaults::new(),
        }
    }
}

/// The two workers a rollback takes back (the first by name).
fn rollback_nodes(h: &Harness) -> Vec<String> {
    h.sim
        .world()
        .nodes
        .iter()
        .filter(|(_, n)| n.control_plane.is_none())
        .map(|(name, _)| name.clone())
        .take(2)
        .collect()
}

/// Starts an upgrade, or a rollback of two workers of the upgrade just done; the run's id.
///
/// A start the daemon refuses because the API server does not answer it (502, 503, 504:
/// nothing recorded) is asked again half a minute later, as an operator would, for at most
/// a day; one refused because the log's disk was full, after the restart the refusal asks
/// for.
async fn begin(h: &mut Harness, op: Op) -> Result<String, String> {
    let mut tries = 0;
    let v = loop {
        let answer = match op {
            Op::Upgrade => h.start(TARGET).await,
            Op::Rollback => {
                let nodes = rollback_nodes(h);
                h.json(
                    Method::POST,
                    "/v1/rollbacks",
                    Some(&json!({ "nodes": nodes })),
                )
                .await
            }
        };
        match answer {
            Err(e) if [502, 503, 504].contains(&e.status) && tries < 2880 => {
                tries += 1;
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            // The log's disk was full: the daemon says it takes no more writes until it is
            // restarted, and the operator does that (it starts once there is room).
            Err(e) if e.message.contains("until the daemon is restarted") && tries < 2880 => {
                tries += 1;
                tokio::time::sleep(Duration::from_secs(30)).await;
                let _ = h.try_restart().await;
            }
            other => break other.map_err(|e| e.to_string())?,
        }
    };
    v["run"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("no run started: {v}"))
}

/// The runs of a plan, in order: an upgrade; for a rollback, the upgrade and then the
/// rollback (faults fall on both).
fn ops(plan: Plan) -> &'static [Op] {
    match plan.op {
        Op::Upgrade => &[Op::Upgrade],
        Op::Rollback => &[Op::Upgrade, Op::Rollback],
    }
}

async fn records(h: &Harness, run: &str) -> Vec<Record> {
    h.events(run)
        .await
        .into_iter()
        .map(|r| serde_json::from_value(r).unwrap_or_else(|e| panic!("a record: {e}")))
        .collect()
}

/// The plan run without faults.
pub async fn baseline(plan: Plan) -> Baseline {
    let faults = Injected::new();
    let mut h = harness(plan, &faults).await;
    let t0 = h.now().0;
    let mut steps = BTreeMap::new();
    for (i, op) in ops(plan).iter().enumerate() {
        let run = begin(&mut h, *op)
            .await
            .unwrap_or_else(|e| panic!("{plan}: {e}"));
        match h
            .wait_until(tokio::time::Instant::now() + BOUND, terminal)
            .await
        {
            Waited::Done(a) if a["phase"] == "completed" => {}
            other => panic!("{plan}, calm: {other:?}"),
        }
        for (k, n) in steps_of(&records(&h, &run).await) {
            steps.insert(format!("{i} {k}"), n);
        }
    }
    let (nodes, pods) = (nodes_of(&h), pods_of(&h));
    let w = h.sim.world();
    Baseline {
        effects: w.effects.clone(),
        nodes,
        pods,
        low_water: w.budget_low_water.clone().unwrap_or_default(),
        steps,
        length: h.now().0 - t0,
        node_names: w.nodes.keys().cloned().collect(),
        workers: w
            .nodes
            .iter()
            .filter(|(_, n)| n.control_plane.is_none())
            .map(|(name, _)| name.clone())
            .collect(),
    }
}

/// Kinds by weight: outages and lost answers (cheap in wall time) three times as often as
/// a full disk or a crash (each restart folds the log again).
const WEIGHTS: [(Kind, i64); 14] = [
    (Kind::ApiRefused, 3),
    (Kind::Api503, 3),
    (Kind::Api500RetryAfter, 3),
    (Kind::Api429, 3),
    (Kind::ApiHang, 3),
    (Kind::ApiCut, 3),
    (Kind::ApiStale, 3),
    (Kind::NodeDropBefore, 3),
    (Kind::NodeDropAfter, 3),
    (Kind::NodeHang, 3),
    (Kind::NodeReboot, 2),
    (Kind::DiskFull, 1),
    (Kind::Crash, 1),
    (Kind::CrashDamage, 1),
];

/// A schedule of `n` faults for a plan whose calm run takes `base.length`: times anywhere in
/// it, outages mostly short (seconds to minutes), one in eight long enough to pause the run;
/// reboots shorter than the node's timeout (10 minutes); in one schedule in eight, the last
/// fault is a worker that never comes back.
pub fn draw(rng: &mut Rng, base: &Baseline, n: usize) -> Schedule {
    let total: i64 = WEIGHTS.iter().map(|(_, w)| w).sum();
    let mut out = Vec::new();
    for _ in 0..n {
        let mut pick = rng.range(0, total);
        let kind = WEIGHTS
            .iter()
            .find(|(_, w)| {
                pick -= w;
                pick < 0
            })
            .map_or(Kind::Crash, |(k, _)| *k);
        // In whole seconds, as the text form writes it: a printed schedule replays exactly.
        let at = rng.range(0, (base.length / 1000).max(1)) * 1000;
        let long = rng.range(0, 8) == 0;
        let dur = match kind {
            Kind::Crash | Kind::CrashDamage => rng.range(0, 60) * 1000,
            Kind::DiskFull => rng.range(5, 300) * 1000,
            // Down for a minute to eight, as a machine's firmware and boot take.
            Kind::NodeReboot => rng.range(60, 480) * 1000,
            _ if long => rng.range(900, 2400) * 1000,
            // A node's commands are minutes apart: its faults must last to meet one.
            _ if kind.is_node() => rng.range(30, 600) * 1000,
            _ => rng.range(5, 240) * 1000,
        };
        let node = match kind.node(dur) {
            Some(_) if kind == Kind::NodeReboot || rng.range(0, 3) > 0 => {
                let i = rng.range(0, base.node_names.len() as i64) as usize;
                base.node_names.get(i).cloned()
            }
            _ => None,
        };
        // A lost answer or a reboot aimed at one command, half the time.
        let only = match kind {
            Kind::NodeDropBefore | Kind::NodeDropAfter | Kind::NodeReboot
                if rng.range(0, 2) == 0 =>
            {
                COMMANDS
                    .get(rng.range(0, COMMANDS.len() as i64) as usize)
                    .copied()
            }
            _ => None,
        };
        out.push(Fault {
            kind,
            node,
            only,
            at,
            dur,
        });
    }
    if rng.range(0, 8) == 0
        && let Some(last) = out.last_mut()
        && !base.workers.is_empty()
    {
        let i = rng.range(0, base.workers.len() as i64) as usize;
        *last = Fault {
            kind: Kind::NodeGone,
            node: base.workers.get(i).cloned(),
            only: None,
            at: last.at,
            dur: 0,
        };
    }
    Schedule(out)
}

/// How driving one run ended: its last status, or the daemon down on a log it refused.
enum Ended {
    Done(Value),
    Down(String),
}

/// The faults still to come that are not windows (crashes), and what the run saw.
struct Driving {
    t0: i64,
    crashes: std::iter::Peekable<std::vec::IntoIter<Fault>>,
    deadline: tokio::time::Instant,
    bound: Duration,
    last: i64,
    met: BTreeMap<&'static str, u64>,
    acked: tokio::sync::broadcast::Receiver<Arc<Record>>,
    acks: BTreeMap<(String, u64), Record>,
}

/// Drives `run` to its end through the crashes due meanwhile, restarting the daemon as its
/// service manager would.
async fn drive(h: &mut Harness, d: &mut Driving) -> Result<Ended, String> {
    loop {
        let next = d
            .crashes
            .peek()
            .map(|c| tokio::time::Instant::now() + ms(d.t0 + c.at - h.now().0))
            .unwrap_or(d.deadline)
            .min(d.deadline);
        let waited = h.wait_until(next, terminal).await;
        drain_acks(&mut d.acked, &mut d.acks)?;
        match waited {
            Waited::Done(a) => return Ok(Ended::Done(a)),
            Waited::Exited(e, _) => {
                // The daemon exited (a full disk): its service manager starts it again.
                if !e.contains("No space left") {
                    return Err(format!("the daemon exited on something no fault did: {e}"));
                }
                h.crash();
                tokio::time::sleep(RESTART_SEC).await;
                start_again(h, d.deadline).await?;
                d.acked = h.subscribe();
            }
            Waited::Deadline(a) if tokio::time::Instant::now() >= d.deadline => {
                return Err(format!(
                    "hung: not ended within {} min of virtual time (the last fault ended \
                     {} min in): {a:#}",
                    d.bound.as_secs() / 60,
                    d.last / 60_000
                ));
            }
            Waited::Deadline(_) => {
                let Some(c) = d.crashes.next() else { continue };
                *d.met.entry(c.kind.name()).or_default() += 1;
                h.crash();
                tokio::time::sleep(ms(c.dur)).await;
                if c.kind == Kind::CrashDamage {
                    let mut rng = Rng::new(c.at as u64 ^ c.dur as u64);
                    if let Err(e) = h.reopen_damaged(|dir| torn_tail(dir, &mut rng)).await {
                        return Ok(Ended::Down(e));
                    }
                }
                start_again(h, d.deadline).await?;
                d.acked = h.subscribe();
            }
        }
    }
}

/// One run of `plan` under `schedule`, and every promise checked against `base`: the error
/// names the promise broken.
pub async fn run(plan: Plan, schedule: &Schedule, base: &Baseline) -> Result<Report, String> {
    let faults = Injected::new();
    let mut h = harness(plan, &faults).await;
    let acked = h.subscribe();
    let t0 = h.now().0;
    let mut crashes = Vec::new();
    // Where each windowed fault went, to tell afterwards whether it met anything.
    let mut windows = Vec::new();
    for f in &schedule.0 {
        let (from, until) = (Timestamp(t0 + f.at), Timestamp(t0 + f.at + f.dur));
        if let Some(fault) = f.kind.api() {
            windows.push((
                f.kind,
                Source::Api,
                faults.api.add(Window { from, until, fault }),
            ));
        } else if let Some(fault) = f.kind.node(f.dur) {
            // A lost connection before or after a command, or a machine going down in the
            // middle of one, matters for the commands that change the node: such a fault
            // waits for the next one (a day at most).
            let next_change = !matches!(fault, NodeFault::Hang);
            let until = if next_change {
                Timestamp(from.0 + 24 * 3_600_000)
            } else {
                until
            };
            let i = faults.node.add(NodeWindow {
                node: f.node.clone(),
                from,
                until,
                fault,
                next_change,
                only: f.only,
            });
            windows.push((f.kind, Source::Node, i));
        } else if f.kind == Kind::DiskFull {
            windows.push((f.kind, Source::Log, faults.log.add(from, until)));
        } else {
            crashes.push(f.clone());
        }
    }
    crashes.sort_by_key(|c| c.at);
    // Never hung: the run ends within four calm runs' time after its last fault ended.
    let last = schedule.0.iter().map(|f| f.at + f.dur).max().unwrap_or(0);
    let bound = ms(last + 4 * base.length)
        .max(Duration::from_secs(6 * 3600))
        .min(BOUND);
    let mut d = Driving {
        t0,
        crashes: crashes.into_iter().peekable(),
        deadline: tokio::time::Instant::now() + bound,
        bound,
        last,
        met: BTreeMap::new(),
        acked,
        acks: BTreeMap::new(),
    };
    let mut runs = Vec::new();
    let mut end = Ended::Done(Value::Null);
    for op in ops(plan) {
        runs.push(begin(&mut h, *op).await?);
        end = drive(&mut h, &mut d).await?;
        match &end {
            Ended::Done(a) if a["phase"] == "completed" => {}
            _ => break,
        }
    }
    let stale = faults
        .api
        .met()
        .get("api-stale-answered")
        .copied()
        .unwrap_or(0);
    if stale > 0 {
        *d.met.entry(Kind::ApiStale.name()).or_default() += 1;
    }
    // What the faults met: a window that met a request, a command or an append.
    let hits = [faults.api.hits(), faults.node.hits(), faults.log.hits()];
    let mut met = std::mem::take(&mut d.met);
    for (kind, source, i) in windows {
        // A stale window counts only when it answered a read from the past: the daemon asks
        // for consistent reads, which a lagging cache does not answer.
        if kind == Kind::ApiStale {
            continue;
        }
        if hits[source as usize].get(i).copied().unwrap_or(0) > 0 {
            *met.entry(kind.name()).or_default() += 1;
        }
    }
    let mut report = Report {
        met,
        hits: hits.iter().flatten().sum(),
        stale_answers: stale,
        ..Report::default()
    };
    let end = match end {
        Ended::Done(a) => a,
        Ended::Down(e) => {
            // The damaged log was refused by name; nothing more can be checked through it.
            if !e.contains("seq") && !e.contains("witness") {
                return Err(format!("a damaged log refused without naming what: {e}"));
            }
            report.end = "down".into();
            report.reason = e;
            return Ok(report);
        }
    };
    report.end = end["phase"].as_str().unwrap_or_default().to_string();
    report.reason = end["reason"].as_str().unwrap_or_default().to_string();
    let mut all = Vec::new();
    for run in &runs {
        let records = records(&h, run).await;
        report.records += records.len();
        all.push((run.clone(), records));
    }
    check(&h, &all, &d.acks, &report, schedule, base).await?;
    Ok(report)
}

fn ms(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// Restarts the daemon, as its service manager does, until it starts (a full disk may
/// refuse its first tries).
async fn start_again(h: &mut Harness, deadline: tokio::time::Instant) -> Result<(), String> {
    loop {
        match h.try_restart().await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("the daemon never started again: {e}"));
            }
            Err(_) => tokio::time::sleep(RESTART_SEC).await,
        }
    }
}

/// Records the log acknowledged (published once durable), by run and seq; the same seq
/// acknowledged twice with two contents is a broken promise.
fn drain_acks(
    rx: &mut tokio::sync::broadcast::Receiver<Arc<Record>>,
    acks: &mut BTreeMap<(String, u64), Record>,
) -> Result<(), String> {
    use tokio::sync::broadcast::error::TryRecvError;
    loop {
        match rx.try_recv() {
            Ok(r) => {
                if let Some(old) = acks.insert((r.run.to_string(), r.seq), (*r).clone())
                    && old != *r
                {
                    return Err(format!("seq {} acknowledged twice, differently", r.seq));
                }
            }
            Err(TryRecvError::Lagged(n)) => {
                return Err(format!(
                    "the campaign lost {n} acknowledgements (its buffer)"
                ));
            }
            Err(TryRecvError::Empty | TryRecvError::Closed) => return Ok(()),
        }
    }
}

/// What a crash leaves at the end of sled's main file: its last 4 KiB zeroed (a write
/// torn by the power going), or one byte of its last 512 flipped.
fn torn_tail(dir: &std::path::Path, rng: &mut Rng) {
    let db = dir.join("db");
    let Ok(mut bytes) = std::fs::read(&db) else {
        return;
    };
    if rng.range(0, 2) == 0 {
        let from = bytes.len().saturating_sub(4096);
        bytes[from..].fill(0);
    } else if !bytes.is_empty() {
        let back = rng.range(1, 513).min(bytes.len() as i64) as usize;
        let at = bytes.len() - back;
        bytes[at] ^= 0xa5;
    }
    let _ = std::fs::write(&db, bytes);
}

/// The promises, after the runs (`runs`: each run's id and records, in order).
async fn check(
    h: &Harness,
    runs: &[(String, Vec<Record>)],
    acks: &BTreeMap<(String, u64), Record>,
    report: &Report,
    schedule: &Schedule,
    base: &Baseline,
) -> Result<(), String> {
    // Every acknowledged record is in the log, in order, nothing twice.
    let mut steps = BTreeMap::new();
    for (i, (run, records)) in runs.iter().enumerate() {
        for (i, r) in records.iter().enumerate() {
            if r.seq != i as u64 {
                return Err(format!("run {run}: the log's record {i} has seq {}", r.seq));
            }
        }
        for ((_, seq), r) in acks.range((run.clone(), 0)..=(run.clone(), u64::MAX)) {
            match records.get(*seq as usize) {
                Some(x) if x == r => {}
                Some(x) => {
                    return Err(format!(
                        "run {run}: acknowledged seq {seq} changed: {:?} became {:?}",
                        r.event, x.event
                    ));
                }
                None => {
                    return Err(format!(
                        "run {run}: acknowledged seq {seq} is not in the log"
                    ));
                }
            }
        }
        for (k, n) in steps_of(records) {
            steps.insert(format!("{i} {k}"), n);
        }
        probed_before_redone(records).map_err(|e| format!("run {run}: {e}"))?;
        status_replay_timeline(h, run, records).await?;
    }
    // No step done twice; no effect on a machine done twice, or more than in a calm run.
    if let Some((s, n)) = steps.iter().find(|(_, n)| **n > 1) {
        return Err(format!("{s} done {n} times"));
    }
    let (mut effects, low_water, pending, boot_restarts) = {
        let w = h.sim.world();
        (
            w.effects.clone(),
            w.budget_low_water.clone().unwrap_or_default(),
            w.pending_pods(),
            w.boot_restarts.clone(),
        )
    };
    // A reboot mid-upgrade that started the newer kubelet did the restart a calm run's
    // daemon did: the daemon, probing its step in doubt, found it done and rightly did not
    // do it again. It counts for the missing one (never for one more).
    for what in boot_restarts.keys() {
        let want = base.effects.get(what).copied().unwrap_or(0);
        let seen = effects.entry(what.clone()).or_default();
        if *seen == 0 && want > 0 {
            *seen = want;
        }
    }
    effects.retain(|_, n| *n > 0);
    for (what, n) in &effects {
        let want = base.effects.get(what).copied().unwrap_or(0);
        if *n > want {
            return Err(format!(
                "effect {what:?} happened {n} time(s), {want} in a calm run"
            ));
        }
    }
    // No budget below its minimum (or below where a calm run took it). A machine that went
    // down (rebooted, or gone) takes its pods with it, which no budget can prevent: the
    // sim still refuses every eviction a budget does not allow, but the low water is then
    // not the daemon's doing.
    let machine_down = ["node-reboot", "node-gone"]
        .iter()
        .any(|k| report.met.contains_key(k));
    for (pdb, low) in low_water.into_iter().filter(|_| !machine_down) {
        let floor = base.low_water.get(&pdb).copied().unwrap_or(0).min(0);
        if low < floor {
            return Err(format!(
                "budget {pdb} went to {low}, below its minimum ({floor})"
            ));
        }
    }
    match report.end.as_str() {
        "completed" => {
            if effects != base.effects {
                return Err(format!(
                    "completed with other effects than a calm run: {effects:?} vs {:?}",
                    base.effects
                ));
            }
            let nodes = nodes_of(h);
            if nodes != base.nodes {
                return Err(format!(
                    "completed with the nodes otherwise than a calm run: {nodes:?} vs {:?}",
                    base.nodes
                ));
            }
            if steps != base.steps {
                return Err(format!(
                    "completed with other steps done than a calm run: {steps:?} vs {:?}",
                    base.steps
                ));
            }
            // No pod lost: every owner has its pods placed, as in a calm run.
            if !pending.is_empty() {
                return Err(format!("pods left Pending: {pending:?}"));
            }
            let pods = pods_of(h);
            if pods != base.pods {
                return Err(format!("pods lost or added: {pods:?} vs {:?}", base.pods));
            }
        }
        "halted" if schedule.0.iter().all(|f| f.kind.recoverable()) => {
            return Err(format!(
                "halted although every fault was one to ride out: {:?}",
                report.reason
            ));
        }
        "halted" => {
            let named = schedule
                .0
                .iter()
                .any(|f| f.kind.named_by().iter().any(|w| report.reason.contains(w)));
            if !named {
                return Err(format!(
                    "halted with a reason that names no fault: {:?}",
                    report.reason
                ));
            }
            // A machine that never came back is parked as it is, still cordoned, and
            // named in the halt.
            for f in schedule.0.iter().filter(|f| f.kind == Kind::NodeGone) {
                let Some(node) = f.node.as_deref() else {
                    continue;
                };
                let gone = h
                    .sim
                    .world()
                    .nodes
                    .get(node)
                    .map(|n| (n.down, n.unschedulable));
                if gone == Some((true, true)) && !report.reason.contains(node) {
                    return Err(format!(
                        "{node} never came back, and the halt does not name it: {:?}",
                        report.reason
                    ));
                }
                if gone == Some((true, false)) {
                    return Err(format!("{node} never came back, and was uncordoned"));
                }
            }
        }
        other => return Err(format!("ended {other}: {:?}", report.reason)),
    }
    Ok(())
}

/// A step in doubt (started with no outcome recorded, or its answer lost) that must not
/// run twice blindly (`Step::in_doubt`) is looked at (`StepProbed`) before it is started
/// again.
fn probed_before_redone(records: &[Record]) -> Result<(), String> {
    use upgraded_events::InDoubt;
    use upgraded_events::fault::FailureKind;
    let mut doubt: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in records {
        match &r.event {
            Event::StepStarted { node, step, .. } => {
                let key = (node.to_string(), format!("{step:?}"));
                if let Some(seq) = doubt.get(&key)
                    && step.in_doubt() == InDoubt::Probe
                {
                    return Err(format!(
                        "{node} {step} started again at seq {} without a probe after seq {seq} \
                         left it in doubt",
                        r.seq
                    ));
                }
                doubt.insert(key, r.seq);
            }
            Event::StepFailed {
                node, step, facts, ..
            } => {
                // A probe that could not look leaves the step in doubt.
                let key = (node.to_string(), format!("{step:?}"));
                let probe = facts.get("probe").is_some_and(|v| v == "failed");
                if FailureKind::of(facts) != FailureKind::InDoubt && !probe {
                    doubt.remove(&key);
                }
            }
            Event::StepSucceeded { node, step, .. } | Event::StepProbed { node, step, .. } => {
                doubt.remove(&(node.to_string(), format!("{step:?}")));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Status (`/v1/runs/ID`, and what the daemon showed last), replay and timeline say what
/// the log says.
async fn status_replay_timeline(h: &Harness, run: &str, records: &[Record]) -> Result<(), String> {
    use upgraded_events::replay::{At, at};
    let status = h
        .json(Method::GET, &format!("/v1/runs/{run}"), None)
        .await
        .map_err(|e| e.to_string())?;
    let last = records.len().saturating_sub(1) as u64;
    let replayed =
        serde_json::to_value(&at(records, At::Seq(last)).status).map_err(|e| e.to_string())?;
    if status != replayed {
        return Err(format!(
            "status and replay differ:\n{status:#}\n{replayed:#}"
        ));
    }
    // What the daemon showed last is the log folded up to the record it had then.
    let live = h.active().await;
    if let Some(next) = live["nextSeq"]
        .as_u64()
        .filter(|n| *n > 0 && live["run"] == run)
    {
        let then = serde_json::to_value(&at(records, At::Seq(next - 1)).status)
            .map_err(|e| e.to_string())?;
        if live != then {
            return Err(format!(
                "live status and the log differ:\n{live:#}\n{then:#}"
            ));
        }
    }
    let timeline = upgraded_events::timeline::of(records);
    if timeline.phase != status["phase"] {
        return Err(format!(
            "the timeline says {} and the status {}",
            timeline.phase, status["phase"]
        ));
    }
    let bars = timeline
        .rows
        .iter()
        .flat_map(|r| &r.bars)
        .filter(|b| {
            matches!(
                b.outcome,
                upgraded_events::timeline::Outcome::Succeeded
                    | upgraded_events::timeline::Outcome::Probed { done: true }
            )
        })
        .count();
    let done: usize = steps_of(records).values().sum();
    if bars != done {
        return Err(format!(
            "run {run}: the timeline shows {bars} steps done, the log {done}"
        ));
    }
    Ok(())
}

/// Which schedule a windowed fault is in.
#[derive(Debug, Clone, Copy)]
enum Source {
    Api = 0,
    Node = 1,
    Log = 2,
}

/// The fewest faults of a failing `schedule` that still fail (each removed in turn while
/// the run still fails), and the failure it then gives.
pub async fn shrink(plan: Plan, schedule: Schedule, base: &Baseline) -> (Schedule, String) {
    let mut current = schedule;
    let mut why = match run(plan, &current, base).await {
        Err(e) => e,
        Ok(_) => return (current, "passed when run again: not deterministic".into()),
    };
    loop {
        let mut smaller = None;
        for i in 0..current.0.len() {
            let mut fewer = current.clone();
            fewer.0.remove(i);
            if let Err(e) = run(plan, &fewer, base).await {
                smaller = Some((fewer, e));
                break;
            }
        }
        match smaller {
            Some((s, e)) => {
                current = s;
                why = e;
            }
            None => return (current, why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_reads_back_as_it_is_printed_and_bad_text_says_why() {
        let text = "api-503@300+120,node-drop-after:w-1@60+30,crash@900+20,api-stale@5+600,\
                    node-reboot:w-2/InstallPackages@70+300,node-drop-before/RestartKubelet@1+0";
        let s: Schedule = text.parse().expect("parses");
        assert_eq!(s.0.len(), 6);
        assert_eq!(s.0[1].node.as_deref(), Some("w-1"));
        assert_eq!(
            (s.0[4].node.as_deref(), s.0[4].only),
            (Some("w-2"), Some("InstallPackages"))
        );
        assert_eq!(
            (s.0[5].node.as_deref(), s.0[5].only),
            (None, Some("RestartKubelet"))
        );
        assert_eq!(
            (s.0[2].kind, s.0[2].at, s.0[2].dur),
            (Kind::Crash, 900_000, 20_000)
        );
        assert_eq!(s.to_string(), text);
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(k), "{k:?}");
        }
        for (bad, why) in [
            ("api-530@1+2", "unknown fault"),
            ("api-503@1", "expected KIND[:NODE][/COMMAND]@AT+FOR"),
            ("api-503", "expected KIND[:NODE][/COMMAND]@AT+FOR"),
            ("api-503@x+2", "expected KIND[:NODE][/COMMAND]@AT+FOR"),
            ("node-hang:w-1/Reboot@1+2", "unknown command \"Reboot\""),
        ] {
            let e = bad.parse::<Schedule>().expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!("".parse::<Schedule>(), Ok(Schedule::default()));
    }

    #[test]
    fn draws_follow_the_seed_and_stay_within_the_run() {
        let base = Baseline {
            effects: BTreeMap::new(),
            nodes: BTreeMap::new(),
            pods: BTreeMap::new(),
            low_water: BTreeMap::new(),
            steps: BTreeMap::new(),
            length: 3_600_000,
            node_names: vec!["cp-1".into(), "w-1".into()],
            workers: vec!["w-1".into()],
        };
        let a = draw(&mut Rng::new(7), &base, 200);
        assert!(a == draw(&mut Rng::new(7), &base, 200), "the same seed");
        assert!(a != draw(&mut Rng::new(8), &base, 200), "another seed");
        assert!(a.0.iter().all(|f| (0..base.length).contains(&f.at)));
        for k in Kind::ALL.into_iter().filter(|k| *k != Kind::NodeGone) {
            assert!(a.0.iter().any(|f| f.kind == k), "{k:?} drawn");
        }
        // A machine that never comes back: in some schedules, once at most, a worker.
        let gone: Vec<usize> = (0..64)
            .map(|seed| {
                let s = draw(&mut Rng::new(seed), &base, 30);
                let gone: Vec<&Fault> = s.0.iter().filter(|f| f.kind == Kind::NodeGone).collect();
                assert!(gone.iter().all(|f| f.node.as_deref() == Some("w-1")), "{s}");
                gone.len()
            })
            .collect();
        assert!(gone.iter().all(|n| *n <= 1), "{gone:?}");
        assert!((2..=20).contains(&gone.iter().sum::<usize>()), "{gone:?}");
        // What a failure prints is the schedule that failed, to the millisecond.
        assert!(a.to_string().parse::<Schedule>() == Ok(a.clone()), "{a}");
    }
}
