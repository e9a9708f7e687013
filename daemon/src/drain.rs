//! Draining a node the way `kubectl drain` does, without `--force`: through the Eviction API,
//! honouring PodDisruptionBudgets, with a finite timeout.
//!
//! DaemonSet pods and static (mirror) pods stay; finished pods are evicted like the rest;
//! pods without a controller and pods with emptyDir data are refused unless the policy
//! consents. A budget's refusal (HTTP 429) is a state, not an error: it is recorded once per
//! pod as `EvictionBlocked` and retried with backoff until the drain timeout. Then the step
//! fails with an `eviction_blocked` fact, and `decide` parks the node or pauses the run.

use std::collections::BTreeMap;
use std::time::Duration;

use upgraded_events::planner::inventory::PodInv;
use upgraded_events::{Event, Facts, Policy};

use crate::ports::{Clock, ClusterApi, Eviction, Notes, PortError};

/// First retry of refused evictions; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the drain looks whether evicted pods are gone.
const POLL: Duration = Duration::from_secs(2);

/// What a drain may evict.
#[derive(Debug, Clone, Copy)]
pub struct DrainRules {
    pub timeout_secs: u64,
    pub evict_unmanaged: bool,
    pub delete_empty_dir_data: bool,
}

impl DrainRules {
    pub fn of(policy: &Policy) -> Self {
        DrainRules {
            timeout_secs: policy.drain_timeout_secs.max(1),
            evict_unmanaged: policy.evict_unmanaged_pods,
            delete_empty_dir_data: policy.delete_empty_dir_data,
        }
    }
}

fn key(p: &PodInv) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// The pods to evict, after what stays and what is refused.
fn select(
    pods: Vec<PodInv>,
    rules: DrainRules,
    facts: &mut Facts,
) -> Result<Vec<PodInv>, PortError> {
    let (mut daemonsets, mut mirrors) = (0, 0);
    let mut unmanaged = Vec::new();
    let mut local = Vec::new();
    let mut evict = Vec::new();
    for p in pods {
        if p.mirror {
            mirrors += 1;
        } else if p.is_daemonset() && !p.is_finished() {
            daemonsets += 1;
        } else {
            if p.is_unmanaged() && !p.is_finished() && !rules.evict_unmanaged {
                unmanaged.push(key(&p));
            }
            if p.empty_dir && !p.is_finished() && !rules.delete_empty_dir_data {
                local.push(key(&p));
            }
            evict.push(p);
        }
    }
    facts.insert("skipped_daemonset".into(), daemonsets.to_string());
    facts.insert("skipped_mirror".into(), mirrors.to_string());
    if !unmanaged.is_empty() {
        return Err(PortError::fatal(format!(
            "refusing to drain: {} pod(s) have no controller and would not come back: {} \
             (recreate them under a controller, delete them, or set drain.evictUnmanagedPods)",
            unmanaged.len(),
            unmanaged.join(", ")
        ))
        .with_fact("refused_unmanaged", unmanaged.join(",")));
    }
    if !local.is_empty() {
        return Err(PortError::fatal(format!(
            "refusing to drain: {} pod(s) keep emptyDir data that eviction deletes: {} \
             (set drain.deleteEmptyDirData once that data may go)",
            local.len(),
            local.join(", ")
        ))
        .with_fact("refused_empty_dir", local.join(",")));
    }
    Ok(evict)
}

/// Drains `node` (the Kubernetes node name); `entry` is the plan entry events name.
pub async fn drain(
    cluster: &dyn ClusterApi,
    clock: &dyn Clock,
    notes: &dyn Notes,
    entry: &str,
    node: &str,
    rules: DrainRules,
) -> Result<Facts, PortError> {
    let mut facts = Facts::new();
    let deadline = clock.now().plus_secs(rules.timeout_secs);
    let mut pending = select(cluster.pods_on(node).await?, rules, &mut facts)?;
    // Evicted pods, by key, with the uid of the incarnation evicted.
    let mut evicted: BTreeMap<String, String> = BTreeMap::new();
    let mut reported: BTreeMap<String, String> = BTreeMap::new();
    let mut backoff = FIRST_BACKOFF;
    let mut refusals = 0u64;
    loop {
        let mut still = Vec::new();
        let mut blocked_now = Vec::new();
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
                                node: entry.to_string(),
                                pod: key(&p),
                                pdb: label.clone(),
                                disruptions_allowed: allowed,
                            })
                            .await?;
                        reported.insert(key(&p), label.clone());
                    }
                    blocked_now.push(format!("{} by {label}", key(&p)));
                    still.push(p);
                }
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        let now = clock.now();
        if now >= deadline {
            facts.insert("eviction_refusals".into(), refusals.to_string());
            let what = blocked_now.join("; ");
            return Err(PortError::retryable(format!(
                "drain timed out after {}s: eviction refused for {}",
                rules.timeout_secs, what
            ))
            .with_fact("eviction_blocked", what)
            .with_fact("evicted", evicted.len().to_string()));
        }
        let wake = now.plus_millis(backoff.as_millis() as u64).min(deadline);
        clock.sleep_until(wake).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    // Wait until the evicted incarnations are gone (terminated and deleted).
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
        if now >= deadline {
            return Err(PortError::retryable(format!(
                "drain timed out after {}s: {} evicted pod(s) still terminating: {}",
                rules.timeout_secs,
                left.len(),
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
