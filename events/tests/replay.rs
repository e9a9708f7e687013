//! Property: a run that is killed at random points and resumed from its log ends in the same
//! state, with the same effects per node, as the same run left alone — at most an idempotent
//! in-doubt step runs again; a step that must not repeat is probed instead.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use upgraded_events::Observation;
use upgraded_events::node::Phase;
use upgraded_events::policy::OnDrainBlocked;
use upgraded_events::run::RunPhase;
use upgraded_events::{
    Actor, Command, Event, Facts, InDoubt, Json, NodeInfo, Plan, Policy, Record, Role, RunState,
    Step, Timestamp, Version, decide,
};

/// The world the model engine acts on. It outlives "crashes" of the engine.
#[derive(Debug, Clone, Default)]
struct World {
    /// Effects per node, in order: the step that took effect.
    effects: BTreeMap<String, Vec<Step>>,
    installed: BTreeMap<String, Version>,
    restarted_at: BTreeMap<String, Version>,
    cordoned: BTreeMap<String, bool>,
    /// (node, step name, attempt) that fail without effect.
    failures: BTreeSet<(String, &'static str, u32)>,
    /// Nodes whose drain a budget refuses until an operator resumes the run (the fix).
    blocked: BTreeSet<String>,
}

impl World {
    fn execute(
        &mut self,
        node: &str,
        step: &Step,
        attempt: u32,
        leave: bool,
    ) -> Result<Facts, String> {
        if self
            .failures
            .contains(&(node.to_string(), step.name(), attempt))
        {
            return Err(format!("injected failure of {step} attempt {attempt}"));
        }
        if *step == Step::Drain && self.blocked.contains(node) {
            return Err(format!("{BLOCKED}: eviction refused by pdb/x"));
        }
        let mut facts = Facts::new();
        match step {
            Step::Preflight => {
                let c = self.cordoned.get(node).copied().unwrap_or(false);
                facts.insert("unschedulable".into(), c.to_string());
            }
            Step::Cordon => {
                self.cordoned.insert(node.into(), true);
            }
            Step::Uncordon => {
                if !leave {
                    self.cordoned.insert(node.into(), false);
                }
            }
            Step::UpgradePackages { version } | Step::DowngradePackages { version, .. } => {
                self.installed.insert(node.into(), *version);
            }
            Step::RestartKubelet => {
                let v = self
                    .installed
                    .get(node)
                    .copied()
                    .unwrap_or(Version::new(1, 0, 0));
                self.restarted_at.insert(node.into(), v);
            }
            Step::Drain
            | Step::Verify
            | Step::Checks { .. }
            | Step::RestoreKubeletFiles { .. }
            | Step::Soak
            | Step::EtcdSnapshot
            | Step::KubeadmUpgrade { .. }
            | Step::KubeProxy { .. }
            | Step::KubeadmDowngrade { .. }
            | Step::EtcdRestore(_) => {}
        }
        self.effects
            .entry(node.into())
            .or_default()
            .push(step.clone());
        Ok(facts)
    }

    fn probe(&self, node: &str, step: &Step) -> bool {
        match step {
            Step::UpgradePackages { version } => self.installed.get(node) >= Some(version),
            Step::RestartKubelet => {
                self.installed.contains_key(node)
                    && self.restarted_at.get(node) == self.installed.get(node)
            }
            _ => false,
        }
    }
}

const BLOCKED: &str = "blocked";

/// A synchronous model of the engine: append intents, execute, append outcomes; `budget` ops
/// (appends and effects) before it "crashes". Returns true when the run finished.
struct Engine<'a> {
    log: &'a mut Vec<Record>,
    world: &'a mut World,
    now: &'a mut Timestamp,
    state: RunState,
    budget: Option<usize>,
    abort_after: Option<u64>,
}

#[derive(Debug)]
struct Crashed;

impl Engine<'_> {
    fn tick(&mut self) -> Result<(), Crashed> {
        if let Some(b) = &mut self.budget {
            if *b == 0 {
                return Err(Crashed);
            }
            *b -= 1;
        }
        *self.now = self.now.plus_millis(250);
        Ok(())
    }

    fn append(&mut self, event: Event) -> Result<(), Crashed> {
        self.tick()?;
        let rec = Record {
            run: upgraded_events::RunId::from_u128(1),
            seq: self.log.len() as u64,
            at: *self.now,
            epoch: 0,
            event,
        };
        self.state.apply(&rec);
        self.log.push(rec);
        Ok(())
    }

    fn run(&mut self) -> Result<(), Crashed> {
        for _ in 0..100_000 {
            if let Some(at) = self.abort_after
                && self.log.len() as u64 >= at
                && !self
                    .log
                    .iter()
                    .any(|r| matches!(r.event, Event::AbortRequested { .. }))
            {
                self.append(Event::AbortRequested {
                    by: op(),
                    reason: "test".into(),
                })?;
            }
            let policy = self.state.policy.clone();
            let d = decide(&self.state, &policy, *self.now);
            if d.commands.is_empty() {
                match (self.state.phase(), d.wake_at) {
                    (p, _) if p.is_terminal() => return Ok(()),
                    (p @ (RunPhase::Halted | RunPhase::Paused), _) => {
                        // The operator fixes what blocked drains when the stop was about
                        // them (a pause or parked nodes), then resumes.
                        let why = self.state.run.data().reason.clone().unwrap_or_default();
                        if p == RunPhase::Paused || why.contains("parked") {
                            self.world.blocked.clear();
                        }
                        self.append(Event::RunResumed { by: op() })?
                    }
                    (_, Some(w)) => *self.now = w.max(*self.now),
                    (p, None) => panic!("stuck in {p:?}: {:#?}", self.state.summary()),
                }
                continue;
            }
            // Like the daemon: all intents of one decision first, then the effects.
            let mut todo = Vec::new();
            for c in d.commands {
                if let Some(intent) = c.intent() {
                    self.append(intent)?;
                }
                todo.push(c);
            }
            for c in todo {
                match c {
                    Command::RunStep {
                        ref node,
                        ref step,
                        attempt,
                        leave_cordoned,
                    } => {
                        self.tick()?;
                        let seen =
                            match self
                                .world
                                .execute(node.as_str(), step, attempt, leave_cordoned)
                            {
                                Ok(facts) => Observation::Succeeded(facts),
                                // A failed drain is a budget refusing to the end: parked or
                                // paused, per the scenario's policy.
                                Err(error) => {
                                    let blocked = error.starts_with(BLOCKED);
                                    Observation::Failed {
                                        facts: if blocked {
                                            [("eviction_blocked".to_string(), "pdb/x".to_string())]
                                                .into()
                                        } else {
                                            Facts::new()
                                        },
                                        error,
                                        kind: if blocked {
                                            upgraded_events::fault::FailureKind::EvictionBlocked
                                        } else {
                                            upgraded_events::fault::FailureKind::Transient
                                        },
                                    }
                                }
                            };
                        if let Some(e) = c.outcome(seen) {
                            self.append(e)?;
                        }
                    }
                    Command::Probe {
                        ref node, ref step, ..
                    } => {
                        let done = self.world.probe(node.as_str(), step);
                        let seen = Observation::Probed {
                            done,
                            facts: Facts::new(),
                        };
                        if let Some(e) = c.outcome(seen) {
                            self.append(e)?;
                        }
                    }
                    // The machines read as they are: alike.
                    Command::ObserveDrift { .. } => {
                        if let Some(e) = c.outcome(Observation::Hosts(Default::default())) {
                            self.append(e)?;
                        }
                    }
                    // The world here always answers.
                    Command::AwaitAnswer { .. } => {
                        if let Some(e) = c.outcome(Observation::Answered) {
                            self.append(e)?;
                        }
                    }
                    Command::Halt { .. }
                    | Command::Pause { .. }
                    | Command::Park { .. }
                    | Command::RollBackNode { .. }
                    | Command::RollBackRun { .. }
                    | Command::Complete
                    | Command::FinishAbort => {}
                }
            }
        }
        panic!("no end after 100k iterations");
    }
}

fn op() -> Actor {
    Actor {
        uid: Some(0),
        name: "test".into(),
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    nodes: Vec<NodeInfo>,
    cordoned_before: BTreeSet<String>,
    max_unavailable: usize,
    soak: bool,
    failures: BTreeSet<(String, &'static str, u32)>,
    blocked: BTreeSet<String>,
    policy: Policy,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let node = (any::<bool>(), 30u16..=35, any::<bool>());
    (
        proptest::collection::vec(node, 1..8),
        1usize..4,
        any::<bool>(),
        proptest::collection::vec((0usize..8, 0usize..8, 1u32..5), 0..6),
        0u64..3,
        (
            any::<bool>(),
            any::<bool>(),
            proptest::collection::btree_set(0usize..8, 0..3),
        ),
    )
        .prop_map(
            |(ns, max_unavailable, soak, fails, wait, (pause, uncordon_parked, blocked))| {
                let mut cordoned_before = BTreeSet::new();
                let nodes: Vec<NodeInfo> = ns
                    .iter()
                    .enumerate()
                    .map(|(i, (cp, minor, cordoned))| {
                        let name = format!("n{i}");
                        if *cordoned {
                            cordoned_before.insert(name.clone());
                        }
                        NodeInfo {
                            name,
                            role: if *cp && i < 3 {
                                Role::ControlPlane
                            } else {
                                Role::Worker
                            },
                            version: Version::new(1, *minor, 2),
                        }
                    })
                    .collect();
                let step_names = [
                    "preflight",
                    "cordon",
                    "drain",
                    "upgrade-packages",
                    "restart-kubelet",
                    "verify",
                    "uncordon",
                    "soak",
                ];
                let failures = fails
                    .into_iter()
                    .filter(|(n, _, _)| *n < nodes.len())
                    .map(|(n, s, a)| (format!("n{n}"), step_names[s], a))
                    .collect();
                let policy = Policy {
                    max_attempts: 2,
                    retry_backoff_secs: 1,
                    retry_backoff_max_secs: 4,
                    wait_between_batches_secs: wait,
                    soak_secs: 3,
                    on_drain_blocked: if pause {
                        OnDrainBlocked::Pause
                    } else {
                        OnDrainBlocked::Park
                    },
                    uncordon_parked,
                    ..Policy::default()
                };
                // Injected failures are keyed by attempt number, which kills shift; mixed
                // with parks (whose resumes restart nodes) the clean and killed runs would
                // take different paths. A scenario exercises one or the other.
                let failures: BTreeSet<(String, &'static str, u32)> = failures;
                let blocked = blocked
                    .into_iter()
                    .filter(|_| failures.is_empty())
                    .filter(|n| *n < nodes.len())
                    .map(|n| format!("n{n}"))
                    .collect();
                Scenario {
                    nodes,
                    cordoned_before,
                    max_unavailable,
                    soak,
                    failures,
                    blocked,
                    policy,
                }
            },
        )
}

fn start(s: &Scenario) -> (Vec<Record>, World) {
    let target = Version::new(1, 35, 3);
    let plan = Plan::basic_rolling(&s.nodes, target, s.max_unavailable, s.soak, |_, m| m % 7)
        .expect("plan");
    let mut world = World {
        failures: s.failures.clone(),
        blocked: s.blocked.clone(),
        ..World::default()
    };
    for n in &s.cordoned_before {
        world.cordoned.insert(n.clone(), true);
    }
    let mut log = Vec::new();
    let mut now = Timestamp(1_000_000);
    let mut e = Engine {
        log: &mut log,
        world: &mut world,
        now: &mut now,
        state: RunState::default(),
        budget: None,
        abort_after: None,
    };
    e.append(Event::RunPlanned {
        target,
        plan: Json(plan),
        policy: Json(s.policy.clone()),
        by: op(),
    })
    .expect("no budget");
    e.append(Event::RunStarted { by: op() }).expect("no budget");
    (log, world)
}

/// Runs to the end, crashing after each budget in `kills` (counted in ops since the restart).
fn run_with_kills(
    s: &Scenario,
    kills: &[usize],
    abort_after: Option<u64>,
) -> (RunState, World, usize) {
    let (state, world, crashes, _) = run_with_kills_log(s, kills, abort_after);
    (state, world, crashes)
}

fn run_with_kills_log(
    s: &Scenario,
    kills: &[usize],
    abort_after: Option<u64>,
) -> (RunState, World, usize, Vec<Record>) {
    let (mut log, mut world) = start(s);
    let mut now = Timestamp(2_000_000);
    let mut crashes = 0;
    let mut budgets = kills.iter().copied().map(Some).chain(std::iter::once(None));
    loop {
        let state = RunState::replay(&log);
        let mut e = Engine {
            log: &mut log,
            world: &mut world,
            now: &mut now,
            state,
            budget: budgets.next().flatten(),
            abort_after,
        };
        if crashes > 0 {
            // What the daemon appends when it reopens an unfinished run.
            if e.state.phase().is_terminal() {
                break;
            }
            if e.append(Event::RunRecovered { pid: 1 }).is_err() {
                crashes += 1;
                continue;
            }
        }
        match e.run() {
            Ok(()) => break,
            Err(Crashed) => crashes += 1,
        }
    }
    // Replaying the whole log must give the state the live engine had.
    (RunState::replay(&log), world, crashes, log)
}

/// Collapses adjacent repeats of idempotent steps (re-runs of in-doubt steps).
fn without_reruns(effects: &[Step]) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for s in effects {
        if s.in_doubt() == InDoubt::Rerun && out.last() == Some(s) {
            continue;
        }
        out.push(s.clone());
    }
    out
}

fn outcome(state: &RunState) -> Vec<(String, Phase, Facts, bool)> {
    state
        .nodes
        .iter()
        .map(|n| {
            (
                n.node().name.to_string(),
                n.phase(),
                n.node().facts.clone(),
                n.node().disrupted,
            )
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn killed_runs_end_like_uninterrupted_ones(s in scenario(), kills in proptest::collection::vec(0usize..60, 0..4)) {
        let (clean, clean_world, _) = run_with_kills(&s, &[], None);
        prop_assert_eq!(clean.phase(), RunPhase::Completed, "{:#?}", clean.summary());
        prop_assert!(clean.anomalies.is_empty(), "{:?}", clean.anomalies);

        let (killed, world, crashes) = run_with_kills(&s, &kills, None);
        prop_assert!(crashes <= kills.len());
        prop_assert_eq!(killed.phase(), RunPhase::Completed);
        prop_assert!(killed.anomalies.is_empty(), "{:?}", killed.anomalies);
        prop_assert_eq!(outcome(&killed), outcome(&clean));
        for (node, effects) in &clean_world.effects {
            let got = world.effects.get(node).cloned().unwrap_or_default();
            // Steps that must not repeat: exactly the same sequence.
            let once = |v: &[Step]| v.iter().filter(|s| s.in_doubt() == InDoubt::Probe).cloned().collect::<Vec<_>>();
            prop_assert_eq!(once(&got), once(effects), "node {}", node);
            prop_assert_eq!(without_reruns(&got), without_reruns(effects), "node {}", node);
            prop_assert!(got.len() - effects.len() <= kills.len());
        }
        prop_assert_eq!(&world.cordoned, &clean_world.cordoned);
        prop_assert_eq!(&world.installed, &clean_world.installed);
    }

    #[test]
    fn a_summary_kept_up_to_date_record_by_record_equals_one_built_anew(s in scenario(), abort_at in proptest::option::of(2u64..80), kills in proptest::collection::vec(0usize..60, 0..3), groups in proptest::collection::vec(1usize..6, 1..40)) {
        let (_, _, _, log) = run_with_kills_log(&s, &kills, abort_at);
        let mut state = RunState::default();
        let mut kept = state.summary();
        let mut sizes = groups.iter().cycle();
        let mut at = 0;
        while at < log.len() {
            let n = (*sizes.next().unwrap_or(&1)).min(log.len() - at);
            for r in &log[at..at + n] {
                state.apply(r);
            }
            at += n;
            state.refresh_summary(&mut kept);
            prop_assert_eq!(&kept, &state.summary(), "after {} records", at);
        }
    }

    #[test]
    fn aborts_leave_no_node_cordoned_by_us(s in scenario(), abort_at in 2u64..80, kills in proptest::collection::vec(0usize..60, 0..3)) {
        let (state, world, _) = run_with_kills(&s, &kills, Some(abort_at));
        prop_assert!(state.phase().is_terminal(), "{:?}", state.phase());
        for n in &state.nodes {
            prop_assert!(n.phase().is_terminal() || n.phase() == Phase::Pending, "{} is {:?}", n.node().name, n.phase());
            prop_assert!(!n.node().disrupted);
            let cordoned = world.cordoned.get(n.node().name.as_str()).copied().unwrap_or(false);
            prop_assert_eq!(cordoned, s.cordoned_before.contains(n.node().name.as_str()), "node {}", n.node().name);
        }
    }
}

#[test]
fn every_single_kill_point_of_a_fixed_run_recovers() {
    let nodes: Vec<NodeInfo> = (0..5)
        .map(|i| NodeInfo {
            name: format!("n{i}"),
            role: if i == 0 {
                Role::ControlPlane
            } else {
                Role::Worker
            },
            version: Version::new(1, 32, 1),
        })
        .collect();
    let s = Scenario {
        nodes,
        cordoned_before: ["n3".to_string()].into(),
        max_unavailable: 2,
        soak: true,
        failures: [("n2".to_string(), "drain", 1)].into(),
        blocked: ["n4".to_string()].into(),
        policy: Policy {
            max_attempts: 2,
            retry_backoff_secs: 1,
            retry_backoff_max_secs: 4,
            wait_between_batches_secs: 2,
            soak_secs: 3,
            ..Policy::default()
        },
    };
    let (clean, clean_world, _, clean_log) = run_with_kills_log(&s, &[], None);
    assert_eq!(clean.phase(), RunPhase::Completed);
    // n4's drain is refused until the operator's resume: parked (uncordoned), the others
    // finish, the run halts naming it, and the resume finishes it.
    let kinds: Vec<String> = clean_log
        .iter()
        .filter_map(|r| match &r.event {
            Event::NodeParked { node, uncordon, .. } => Some(format!("parked {node} {uncordon}")),
            Event::RunHalted { reason } if reason.contains("parked: n4") => Some("halted".into()),
            Event::RunResumed { .. } => Some("resumed".into()),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["parked n4 true", "halted", "resumed"]);
    assert_eq!(
        clean_world.effects["n4"][..4],
        [
            Step::Preflight,
            Step::Cordon,
            Step::Uncordon,
            Step::Preflight
        ]
    );
    let total_ops = clean.next_seq as usize * 2; // appends plus effects, an upper bound
    let mut probes = 0;
    let mut crashed = 0;
    for k in 0..total_ops {
        let (killed, world, crashes, log) = run_with_kills_log(&s, &[k], None);
        crashed += crashes;
        assert_eq!(killed.phase(), RunPhase::Completed, "kill at {k}");
        assert_eq!(outcome(&killed), outcome(&clean), "kill at {k}");
        assert_eq!(world.installed, clean_world.installed, "kill at {k}");
        assert_eq!(world.cordoned, clean_world.cordoned, "kill at {k}");
        for (node, effects) in &clean_world.effects {
            let got = &world.effects[node];
            assert_eq!(
                without_reruns(got),
                without_reruns(effects),
                "kill at {k}, node {node}"
            );
        }
        probes += log
            .iter()
            .filter(|r| matches!(r.event, Event::StepProbed { .. }))
            .count();
    }
    assert!(
        crashed > total_ops / 3,
        "only {crashed} of {total_ops} kill points crashed the run"
    );
    assert!(probes > 0);
}
