//! Draining a node the way `kubectl drain` does, without `--force`: through the Eviction API,
//! honouring PodDisruptionBudgets, with a finite timeout.
//!
//! DaemonSet pods and static (mirror) pods stay; finished pods are evicted like the rest;
//! pods without a controller and pods with emptyDir data are refused unless the policy
//! consents. A budget's refusal (HTTP 429) is a state, not an error: it is recorded once per
//! pod as `EvictionBlocked` and retried every 5 s plus a per-node jitter (as kubectl does,
//! so the drains of one batch take turns at a shared budget) until the drain times out: a
//! timeout is a drain that nothing moved for `drainTimeout` (no eviction let through, no
//! evicted pod gone), so serialised turns are slow, never failed, and a stuck drain is
//! bounded. Then the step fails with an `eviction_blocked` fact, and `decide` parks the node or pauses the run.
//!
//! With `drain.scaleUpToUnblock`, a pod whose budget allows no eviction although every pod
//! it covers is healthy (refused twice in a row) has its Deployment scaled up by one: the
//! scale-up is recorded (`WorkloadScaled`) before it is made, and the drain restores the
//! original replicas when it ends, whatever the outcome. A drain re-run after a crash gets
//! the run's unrestored scale-ups and restores them too. StatefulSets are not scaled (a new
//! ordinal can bring a volume or a quorum member with it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use upgraded_events::drain::{self as evictable, Refusal};
use upgraded_events::inventory::PodInv;
use upgraded_events::state::ScaledWorkload;
use upgraded_events::{Entry, Event, Facts, Host, Policy};

use crate::ports::{Clock, ClusterApi, Eviction, PortError, Recorder, ScaleChange, Workload};

/// Refused evictions are retried every 5 s, as `kubectl drain` does, plus a jitter of up to
/// [`JITTER_MS`] that differs per node and round: drains of one batch that share a budget
/// then take turns at the evictions it lets through, none starving while another takes
/// every allowed disruption. (Deterministic, so a scenario records the same run twice.)
const RETRY: Duration = Duration::from_secs(5);
const JITTER_MS: u64 = 2_000;

/// The jitter of `node`'s `round`-th retry, in ms (FNV-1a of both).
fn jitter_ms(node: &str, round: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.bytes().chain(round.to_le_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h % JITTER_MS
}
/// How often the drain looks whether evicted pods are gone.
const POLL: Duration = Duration::from_secs(2);

/// How a drain runs: what it may evict (the core's rule) and how long it keeps trying.
#[derive(Debug, Clone, Copy)]
pub struct DrainRules {
    pub timeout_secs: u64,
    pub may_evict: evictable::DrainRules,
    pub scale_up: bool,
}

impl DrainRules {
    pub fn of(policy: &Policy) -> Self {
        DrainRules {
            timeout_secs: policy.drain_timeout_secs.max(1),
            may_evict: evictable::DrainRules::of(policy),
            scale_up: policy.scale_up_to_unblock,
        }
    }
}

fn key(p: &PodInv) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// The pods to evict, by the core's rule (`events::drain::triage`): every refused pod and
/// every reason are named at once, in the error and in facts. Two budgets over one pod are
/// left to the API server's answer (a non-retried refusal, see the kube adapter), since
/// the node's pods are all the drain reads.
fn select(
    pods: Vec<PodInv>,
    rules: DrainRules,
    facts: &mut Facts,
) -> Result<Vec<PodInv>, PortError> {
    let t = evictable::triage(pods, &[], rules.may_evict);
    facts.insert("skipped_daemonset".into(), t.daemonsets.to_string());
    facts.insert("skipped_mirror".into(), t.mirrors.to_string());
    if let Some(message) = t.refusal_message() {
        let mut e = PortError::fatal(message);
        let unmanaged = t.refused_for(|r| matches!(r, Refusal::Unmanaged));
        let empty_dir = t.refused_for(|r| matches!(r, Refusal::EmptyDirData));
        for (fact, pods) in [
            ("refused_unmanaged", unmanaged),
            ("refused_empty_dir", empty_dir),
        ] {
            if !pods.is_empty() {
                e = e.with_fact(fact, pods.join(","));
            }
        }
        return Err(e);
    }
    Ok(t.evict)
}

/// Drains `node` (the Kubernetes node name); `entry` is the plan entry events name;
/// `scaled`: workloads this entry's earlier drain attempts scaled up and nobody restored.
/// Every scale-up is restored before this returns (a failed restore fails the drain, whose
/// re-run restores again).
pub async fn drain(
    cluster: &dyn ClusterApi,
    clock: &dyn Clock,
    notes: &dyn Recorder,
    entry: &Entry,
    node: &Host,
    rules: DrainRules,
    scaled: Vec<ScaledWorkload>,
) -> Result<Facts, PortError> {
    let mut scaler = Scaler::new(cluster, notes, entry, scaled);
    let drained = match scaler.complete_recorded().await {
        Ok(()) => evict_all(cluster, clock, notes, entry, node, rules, &mut scaler).await,
        Err(e) => Err(e),
    };
    let restored = scaler.restore_all().await;
    match (drained, restored) {
        (Ok(mut facts), Ok(more)) => {
            facts.extend(more);
            Ok(facts)
        }
        (Err(mut e), Ok(more)) => {
            e.facts.extend(more);
            Err(e)
        }
        (_, Err(e)) => Err(e),
    }
}

async fn evict_all(
    cluster: &dyn ClusterApi,
    clock: &dyn Clock,
    notes: &dyn Recorder,
    entry: &Entry,
    node: &Host,
    rules: DrainRules,
    scaler: &mut Scaler<'_>,
) -> Result<Facts, PortError> {
    let mut facts = Facts::new();
    // The timeout is a drain that makes no progress: each eviction let through (and each
    // evicted pod gone) gives it the whole timeout again, so drains that take turns at a
    // shared budget are slow, not stuck; one that nothing moves for that long stops.
    let mut deadline = clock.now().plus_secs(rules.timeout_secs);
    let mut pending = select(cluster.pods_on(node).await?, rules, &mut facts)?;
    // Evicted pods, by key, with the uid of the incarnation evicted.
    let mut evicted: BTreeMap<String, String> = BTreeMap::new();
    let mut reported: BTreeMap<String, String> = BTreeMap::new();
    let mut round = 0u64;
    let mut refusals = 0u64;
    // Consecutive refused rounds per pod (a scale-up waits for the second).
    let mut refused_rounds: BTreeMap<String, u32> = BTreeMap::new();
    loop {
        let mut still = Vec::new();
        let mut blocked_now = Vec::new();
        let mut refused_now = BTreeMap::new();
        let pending_len = pending.len();
        for p in pending {
            match cluster.evict(&p.namespace, &p.name, &p.uid).await? {
                Eviction::Evicted => {
                    evicted.insert(key(&p), p.uid.clone());
                }
                Eviction::Gone => {}
                Eviction::Blocked {
                    pdb: pdb_name,
                    message,
                } => {
                    refusals += 1;
                    let label = pdb_name.as_ref().map_or_else(
                        || format!("a disruption budget ({message})"),
                        |b| format!("pdb/{}/{b}", p.namespace),
                    );
                    if reported.get(&key(&p)) != Some(&label) {
                        let allowed = match &pdb_name {
                            Some(b) => cluster
                                .pdb(&p.namespace, b)
                                .await?
                                .map_or(-1, |s| i64::from(s.disruptions_allowed)),
                            None => -1,
                        };
                        notes
                            .note(Event::EvictionBlocked {
                                node: entry.clone(),
                                pod: key(&p),
                                pdb: label.clone(),
                                disruptions_allowed: allowed,
                            })
                            .await?;
                        reported.insert(key(&p), label.clone());
                    }
                    let rounds = refused_rounds.get(&key(&p)).copied().unwrap_or(0) + 1;
                    refused_now.insert(key(&p), rounds);
                    if rules.scale_up
                        && rounds >= evictable::SCALE_AFTER_REFUSALS
                        && let Some(b) = &pdb_name
                    {
                        scaler.unblock(&p, b).await?;
                    }
                    blocked_now.push(format!("{} by {label}", key(&p)));
                    still.push(p);
                }
            }
        }
        let progressed = still.len() < pending_len;
        pending = still;
        refused_rounds = refused_now;
        if pending.is_empty() {
            break;
        }
        let now = clock.now();
        if progressed {
            deadline = now.plus_secs(rules.timeout_secs);
        }
        if now >= deadline {
            facts.insert("eviction_refusals".into(), refusals.to_string());
            let what = blocked_now.join("; ");
            let skipped = scaler.skipped();
            let mut e = PortError::retryable(format!(
                "drain timed out: no eviction let through for {}s: eviction refused for {}",
                rules.timeout_secs, what
            ))
            .with_kind(upgraded_events::fault::FailureKind::EvictionBlocked)
            .with_fact("eviction_blocked", what)
            .with_fact("evicted", evicted.len().to_string());
            if !skipped.is_empty() {
                e = e.with_fact("scale_skipped", skipped);
            }
            return Err(e);
        }
        round += 1;
        let wait = RETRY.as_millis() as u64 + jitter_ms(node.as_str(), round);
        let wake = now.plus_millis(wait).min(deadline);
        clock.sleep_until(wake).await;
    }
    // Wait until the evicted incarnations are gone (terminated and deleted).
    let mut terminating = usize::MAX;
    loop {
        let left: Vec<String> = cluster
            .pods_on(node)
            .await?
            .iter()
            .filter(|p| evicted.get(&key(p)).is_some_and(|uid| *uid == p.uid))
            .map(key)
            .collect();
        if left.is_empty() {
            break;
        }
        let now = clock.now();
        if left.len() < terminating {
            if terminating != usize::MAX {
                deadline = now.plus_secs(rules.timeout_secs);
            }
            terminating = left.len();
        }
        if now >= deadline {
            return Err(PortError::retryable(format!(
                "drain timed out: none of {} evicted pod(s) went away for {}s: {}",
                left.len(),
                rules.timeout_secs,
                left.join(", ")
            ))
            .with_fact("terminating", left.join(",")));
        }
        clock
            .sleep_until(now.plus_millis(POLL.as_millis() as u64).min(deadline))
            .await;
    }
    facts.insert("evicted".into(), evicted.len().to_string());
    facts.insert("eviction_refusals".into(), refusals.to_string());
    Ok(facts)
}

/// Scale-ups to unblock a drain, and their restore.
struct Scaler<'a> {
    cluster: &'a dyn ClusterApi,
    notes: &'a dyn Recorder,
    entry: &'a Entry,
    /// Scaled up and not restored (from earlier attempts, and this one).
    scaled: Vec<ScaledWorkload>,
    /// Workloads already considered in this drain, and why some were not scaled.
    tried: BTreeSet<Workload>,
    skipped: Vec<String>,
    /// Pod owners (namespace, kind, name) already decided on.
    settled: BTreeSet<(String, String, String)>,
}

impl<'a> Scaler<'a> {
    fn new(
        cluster: &'a dyn ClusterApi,
        notes: &'a dyn Recorder,
        entry: &'a Entry,
        scaled: Vec<ScaledWorkload>,
    ) -> Self {
        Scaler {
            cluster,
            notes,
            entry,
            scaled,
            tried: BTreeSet::new(),
            skipped: Vec::new(),
            settled: BTreeSet::new(),
        }
    }

    /// Scale-ups earlier attempts recorded: a change the daemon died before making is made
    /// now (`events::drain::recorded_scale_up` decides); the rest are left as found.
    async fn complete_recorded(&mut self) -> Result<(), PortError> {
        for s in self.scaled.clone() {
            let w = Workload {
                kind: s.kind.clone(),
                namespace: s.namespace.clone(),
                name: s.name.clone(),
            };
            let found = self.cluster.replicas(&w).await?;
            if evictable::recorded_scale_up(s.original, s.scaled, found)
                == evictable::RecordedScaleUp::NotApplied
            {
                // Changed: the promised replica comes. Found: someone else got there first;
                // the restore sees it and leaves it.
                self.cluster
                    .change_replicas(&w, s.original, s.scaled)
                    .await?;
            }
        }
        Ok(())
    }

    fn skipped(&self) -> String {
        self.skipped.join("; ")
    }

    async fn record(
        &self,
        w: &Workload,
        from: u32,
        to: u32,
        restore: bool,
    ) -> Result<(), PortError> {
        self.notes
            .note(Event::WorkloadScaled {
                node: self.entry.clone(),
                kind: w.kind.clone(),
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                from,
                to,
                restore,
            })
            .await
    }

    /// `p` was refused again by `budget`: scale its Deployment up by one when that is what
    /// stands in the way (every covered pod healthy, and one more pod makes room).
    async fn unblock(&mut self, p: &PodInv, budget: &str) -> Result<(), PortError> {
        let Some(owner) = &p.owner else {
            return Ok(());
        };
        // Decided already for this owner in this drain: no more API calls for it.
        let owner_key = (p.namespace.clone(), owner.kind.clone(), owner.name.clone());
        if self.settled.contains(&owner_key) {
            return Ok(());
        }
        let Some(budget) = self.cluster.pdb(&p.namespace, budget).await? else {
            return Ok(());
        };
        if !evictable::budget_lacks_a_replica(&budget) {
            return Ok(());
        }
        self.settled.insert(owner_key);
        let Some(w) = self.cluster.workload_of(&p.namespace, owner).await? else {
            return Ok(());
        };
        if !self.tried.insert(w.clone()) || self.scaled.iter().any(|s| s.key() == w.to_string()) {
            return Ok(());
        }
        if let Err(why) = evictable::may_scale_up(&w.kind, &budget) {
            self.skipped.push(format!("{w}: {why}"));
            return Ok(());
        }
        let from = self.cluster.replicas(&w).await?;
        let Some(to) = from.checked_add(1) else {
            return Ok(());
        };
        // Recorded first: a crash after the change still finds it in the log and restores.
        self.record(&w, from, to, false).await?;
        let scaled = ScaledWorkload {
            node: self.entry.clone(),
            kind: w.kind.clone(),
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            original: from,
            scaled: to,
        };
        match self.cluster.change_replicas(&w, from, to).await {
            Ok(ScaleChange::Changed) => {
                self.scaled.push(scaled);
                Ok(())
            }
            Ok(ScaleChange::Found(now)) => {
                // Someone else scaled it between our read and write: not ours to change.
                self.record(&w, now, now, true).await?;
                self.skipped.push(format!(
                    "{w} not scaled: changed to {now} replicas meanwhile"
                ));
                Ok(())
            }
            Err(e) => {
                // Unknown whether it took: keep it as scaled, the restore checks.
                self.scaled.push(scaled);
                Err(e)
            }
        }
    }

    /// Puts every scaled workload back to its original replicas, unless someone else has
    /// changed it since (then it is left as found). Each restore is recorded after it.
    async fn restore_all(&mut self) -> Result<Facts, PortError> {
        let mut restored = Vec::new();
        let mut left = Vec::new();
        while let Some(s) = self.scaled.first().cloned() {
            let w = Workload {
                kind: s.kind.clone(),
                namespace: s.namespace.clone(),
                name: s.name.clone(),
            };
            let (from, to) = match self
                .cluster
                .change_replicas(&w, s.scaled, s.original)
                .await?
            {
                ScaleChange::Changed => {
                    restored.push(format!("{w} {}→{}", s.scaled, s.original));
                    (s.scaled, s.original)
                }
                ScaleChange::Found(now) => {
                    if now != s.original {
                        left.push(format!("{w} at {now} (scaled by someone else)"));
                    }
                    (now, now)
                }
            };
            self.record(&w, from, to, true).await?;
            self.scaled.remove(0);
        }
        let mut facts = Facts::new();
        if !restored.is_empty() {
            facts.insert("scale_restored".into(), restored.join(","));
        }
        if !left.is_empty() {
            facts.insert("scale_left".into(), left.join(","));
        }
        Ok(facts)
    }
}

/// Restores what `entry`'s drains scaled up (for steps after a drain that did not finish,
/// e.g. the uncordon of an aborted run).
pub async fn restore_scaled(
    cluster: &dyn ClusterApi,
    notes: &dyn Recorder,
    entry: &Entry,
    scaled: Vec<ScaledWorkload>,
) -> Result<Facts, PortError> {
    Scaler::new(cluster, notes, entry, scaled)
        .restore_all()
        .await
}
