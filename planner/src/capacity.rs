//! Where the pods of drained nodes can go: a bin-packing model of the cluster's spare
//! capacity that honours node selectors, taints and tolerations, cordoned nodes and
//! PodDisruptionBudget headroom. The planner sizes batches with it.
//!
//! The model places each evicted pod on the eligible node with the most free CPU (the
//! default scheduler's spreading, roughly), largest pods first. Placements are carried from
//! batch to batch: pods that moved stay where they went, and an upgraded node comes back
//! empty but for its DaemonSet and static pods.

use std::collections::{BTreeMap, BTreeSet};

use upgraded_events::inventory::{Inventory, Labels, Taint, Toleration};
use upgraded_events::quantity::{human_bytes, human_cpu};

#[derive(Debug, Clone)]
struct CapNode {
    name: String,
    labels: Labels,
    taints: Vec<Taint>,
    schedulable: bool,
    free_cpu: i64,
    free_mem: i64,
    /// Pods a drain evicts and their controllers recreate elsewhere.
    movable: Vec<usize>,
    /// Requests that stay with the node through a drain (DaemonSets, static pods).
    fixed_cpu: i64,
    fixed_mem: i64,
    alloc_cpu: i64,
    alloc_mem: i64,
    unmanaged: Vec<usize>,
}

#[derive(Debug, Clone)]
struct CapPod {
    cpu: i64,
    mem: i64,
    sig: usize,
    pdbs: Vec<usize>,
}

/// What a pod needs from a node beyond room: its selector and tolerations.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Signature {
    selector: Labels,
    tolerations: Vec<(String, String, String, String)>,
}

/// Why a node cannot be drained (even alone) at this point of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Pods that would find no room.
    NoRoom {
        pods: usize,
        missing_cpu_millis: u64,
        missing_memory_bytes: u64,
        /// Where those pods may go, for people.
        where_: String,
    },
    /// A PodDisruptionBudget allows no eviction (nothing the plan does unblocks it).
    Pdb {
        pdb: String,
        need: u32,
        allowed: u32,
    },
    /// The batch's drains would pass a budget's evictions through in more rounds (each
    /// waiting for replacements to become Ready) than the drain timeout leaves room for.
    Rounds {
        pdb: String,
        need: u32,
        allowed: u32,
        rounds: u32,
        max_rounds: u32,
    },
}

impl Refusal {
    pub fn describe(&self) -> String {
        match self {
            Refusal::NoRoom {
                pods,
                missing_cpu_millis,
                missing_memory_bytes,
                where_,
            } => format!(
                "{pods} evicted pod(s) would not fit: {} CPU and {} memory missing on {where_}",
                human_cpu(*missing_cpu_millis),
                human_bytes(*missing_memory_bytes)
            ),
            Refusal::Pdb {
                pdb, allowed: 0, ..
            } => {
                format!("PodDisruptionBudget {pdb} allows no eviction")
            }
            Refusal::Pdb { pdb, need, allowed } => format!(
                "PodDisruptionBudget {pdb} allows {allowed} eviction(s) at once, {need} needed"
            ),
            Refusal::Rounds {
                pdb,
                need,
                allowed,
                rounds,
                max_rounds,
            } => format!(
                "PodDisruptionBudget {pdb} lets {allowed} of its {need} evictions through at a \
                 time: {rounds} rounds, more than the drain timeout leaves room for ({max_rounds})"
            ),
        }
    }
}

/// A tentative set of placements, undone unless committed.
#[derive(Debug, Default)]
struct Trial {
    moves: Vec<(usize, usize, usize)>, // (pod, from, to)
}

#[derive(Debug, Clone)]
pub struct Capacity {
    nodes: Vec<CapNode>,
    pods: Vec<CapPod>,
    sigs: Vec<Signature>,
    /// Per signature, eligible schedulable nodes ordered by (free CPU, index).
    by_free: Vec<BTreeSet<(i64, usize)>>,
    node_sigs: Vec<Vec<usize>>,
    pdb_allowed: Vec<u32>,
    pdb_names: Vec<String>,
    index: BTreeMap<String, usize>,
}

fn tolerated(taints: &[Taint], tol: &[(String, String, String, String)]) -> bool {
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| {
            tol.iter().any(|(k, op, v, e)| {
                Toleration {
                    key: k.clone(),
                    operator: op.clone(),
                    value: v.clone(),
                    effect: e.clone(),
                }
                .tolerates(t)
            })
        })
}

impl Capacity {
    pub fn new(inv: &Inventory) -> Capacity {
        let index: BTreeMap<String, usize> = inv
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let mut nodes: Vec<CapNode> = inv
            .nodes
            .iter()
            .map(|n| CapNode {
                name: n.name.clone(),
                labels: n.labels.clone(),
                taints: n.taints.clone(),
                schedulable: !n.unschedulable && n.ready,
                free_cpu: n.allocatable.cpu_millis as i64,
                free_mem: n.allocatable.memory_bytes as i64,
                movable: Vec::new(),
                fixed_cpu: 0,
                fixed_mem: 0,
                alloc_cpu: n.allocatable.cpu_millis as i64,
                alloc_mem: n.allocatable.memory_bytes as i64,
                unmanaged: Vec::new(),
            })
            .collect();
        let mut pdbs_by_ns: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, p) in inv.pdbs.iter().enumerate() {
            pdbs_by_ns.entry(p.namespace.as_str()).or_default().push(i);
        }
        let mut sig_ids: BTreeMap<Signature, usize> = BTreeMap::new();
        let mut sigs = Vec::new();
        let mut pods = Vec::with_capacity(inv.pods.len());
        for (pi, p) in inv.pods.iter().enumerate() {
            let sig = Signature {
                selector: p.node_selector.clone(),
                tolerations: p
                    .tolerations
                    .iter()
                    .map(|t| {
                        (
                            t.key.clone(),
                            t.operator.clone(),
                            t.value.clone(),
                            t.effect.clone(),
                        )
                    })
                    .collect(),
            };
            let next = sig_ids.len();
            let sid = *sig_ids.entry(sig.clone()).or_insert_with(|| {
                sigs.push(sig);
                next
            });
            let pdbs = pdbs_by_ns
                .get(p.namespace.as_str())
                .map(|v| {
                    v.iter()
                        .copied()
                        .filter(|&i| inv.pdbs[i].selector.matches(&p.labels))
                        .collect()
                })
                .unwrap_or_default();
            pods.push(CapPod {
                cpu: p.requests.cpu_millis as i64,
                mem: p.requests.memory_bytes as i64,
                sig: sid,
                pdbs,
            });
            let Some(&ni) = p.node.as_ref().and_then(|n| index.get(n)) else {
                continue;
            };
            if p.is_finished() {
                continue;
            }
            let n = &mut nodes[ni];
            n.free_cpu -= pods[pi].cpu;
            n.free_mem -= pods[pi].mem;
            if p.is_evicted_and_replaced() {
                n.movable.push(pi);
            } else {
                n.fixed_cpu += pods[pi].cpu;
                n.fixed_mem += pods[pi].mem;
                if p.is_unmanaged() {
                    n.unmanaged.push(pi);
                }
            }
        }
        let mut by_free = vec![BTreeSet::new(); sigs.len()];
        let mut node_sigs = vec![Vec::new(); nodes.len()];
        for (ni, n) in nodes.iter().enumerate() {
            for (si, s) in sigs.iter().enumerate() {
                let selected = s.selector.iter().all(|(k, v)| n.labels.get(k) == Some(v));
                if selected && tolerated(&n.taints, &s.tolerations) {
                    node_sigs[ni].push(si);
                    if n.schedulable {
                        by_free[si].insert((n.free_cpu, ni));
                    }
                }
            }
        }
        Capacity {
            nodes,
            pods,
            sigs,
            by_free,
            node_sigs,
            pdb_allowed: inv.pdbs.iter().map(|p| p.disruptions_allowed).collect(),
            pdb_names: inv
                .pdbs
                .iter()
                .map(|p| format!("{}/{}", p.namespace, p.name))
                .collect(),
            index,
        }
    }

    pub fn node_index(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// Pods a drain of this node evicts (that must be placed elsewhere).
    pub fn evicted(&self, node: usize) -> usize {
        self.nodes[node].movable.len()
    }

    /// Per PodDisruptionBudget, evictions a drain of these nodes needs.
    pub fn pdb_need(&self, nodes: &[usize]) -> BTreeMap<usize, u32> {
        let mut need = BTreeMap::new();
        for &n in nodes {
            for &p in &self.nodes[n].movable {
                for &b in &self.pods[p].pdbs {
                    *need.entry(b).or_insert(0) += 1;
                }
            }
        }
        need
    }

    /// Plans as if budget `pdb` allowed `n` evictions at once (the drain makes room).
    pub fn assume_allowed(&mut self, pdb: usize, n: u32) {
        if let Some(a) = self.pdb_allowed.get_mut(pdb) {
            *a = (*a).max(n);
        }
    }

    pub fn pdb_allowed(&self, pdb: usize) -> u32 {
        self.pdb_allowed[pdb]
    }

    pub fn pdb_name(&self, pdb: usize) -> &str {
        &self.pdb_names[pdb]
    }

    fn set_free(&mut self, node: usize, cpu: i64, mem: i64) {
        let old = self.nodes[node].free_cpu;
        let schedulable = self.nodes[node].schedulable;
        for &s in &self.node_sigs[node] {
            if schedulable {
                self.by_free[s].remove(&(old, node));
                self.by_free[s].insert((cpu, node));
            }
        }
        self.nodes[node].free_cpu = cpu;
        self.nodes[node].free_mem = mem;
    }

    /// The eligible node with the most free CPU that has room for `pod`, outside `exclude`.
    fn best(&self, pod: usize, exclude: &[usize]) -> Option<usize> {
        let p = &self.pods[pod];
        for &(free_cpu, n) in self.by_free[p.sig].iter().rev() {
            if free_cpu < p.cpu {
                return None;
            }
            if exclude.contains(&n) {
                continue;
            }
            if self.nodes[n].free_mem >= p.mem {
                return Some(n);
            }
        }
        None
    }

    /// Places the evicted pods of `node`, not on any of `exclude` (which includes `node`).
    /// On failure the partial placements are undone and the refusal says what is missing.
    fn place_node(
        &mut self,
        node: usize,
        exclude: &[usize],
        trial: &mut Trial,
    ) -> Result<(), Refusal> {
        let mut pods = self.nodes[node].movable.clone();
        pods.sort_by_key(|&p| {
            (
                std::cmp::Reverse(self.pods[p].cpu),
                std::cmp::Reverse(self.pods[p].mem),
                p,
            )
        });
        let mark = trial.moves.len();
        let mut unplaced = Vec::new();
        for p in pods {
            match self.best(p, exclude) {
                Some(to) => {
                    let (c, m) = (self.pods[p].cpu, self.pods[p].mem);
                    let (fc, fm) = (self.nodes[to].free_cpu - c, self.nodes[to].free_mem - m);
                    self.set_free(to, fc, fm);
                    trial.moves.push((p, node, to));
                }
                None => unplaced.push(p),
            }
        }
        if unplaced.is_empty() {
            return Ok(());
        }
        let refusal = self.shortfall(&unplaced, exclude);
        self.undo(trial, mark);
        Err(refusal)
    }

    fn shortfall(&self, unplaced: &[usize], exclude: &[usize]) -> Refusal {
        let (mut cpu, mut mem) = (0u64, 0u64);
        let mut wheres = BTreeSet::new();
        for &p in unplaced {
            let pod = &self.pods[p];
            let best = self.by_free[pod.sig]
                .iter()
                .rev()
                .filter(|(_, n)| !exclude.contains(n))
                .map(|&(c, n)| (c, self.nodes[n].free_mem))
                .next()
                .unwrap_or((0, 0));
            cpu += (pod.cpu - best.0.max(0)).max(0) as u64;
            mem += (pod.mem - best.1.max(0)).max(0) as u64;
            wheres.insert(self.describe_sig(pod.sig, exclude));
        }
        // A pod refused for lack of room on one dimension may show no gap on either
        // when the free CPU and memory sit on different nodes.
        Refusal::NoRoom {
            pods: unplaced.len(),
            missing_cpu_millis: cpu,
            missing_memory_bytes: mem,
            where_: wheres.into_iter().collect::<Vec<_>>().join("; "),
        }
    }

    fn describe_sig(&self, sig: usize, exclude: &[usize]) -> String {
        let s = &self.sigs[sig];
        let eligible: Vec<&str> = self.by_free[sig]
            .iter()
            .rev()
            .filter(|(_, n)| !exclude.contains(n))
            .map(|&(_, n)| self.nodes[n].name.as_str())
            .collect();
        let what = if s.selector.is_empty() {
            "the schedulable nodes".to_string()
        } else {
            let sel: Vec<String> = s.selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("nodes labelled {}", sel.join(","))
        };
        let shown: Vec<&str> = eligible.iter().take(3).copied().collect();
        match eligible.len() {
            0 => format!("{what} (none left: all cordoned, draining or tainted)"),
            n if n <= 3 => format!("{what} ({})", shown.join(", ")),
            n => format!("{what} ({}, … {n} in all)", shown.join(", ")),
        }
    }

    fn undo(&mut self, trial: &mut Trial, mark: usize) {
        while trial.moves.len() > mark {
            let Some((p, _, to)) = trial.moves.pop() else {
                break;
            };
            let (c, m) = (self.pods[p].cpu, self.pods[p].mem);
            let (fc, fm) = (self.nodes[to].free_cpu + c, self.nodes[to].free_mem + m);
            self.set_free(to, fc, fm);
        }
    }

    /// Can `batch` plus `candidate` be drained at once? Places the candidate's pods into
    /// `trial` when yes. Pods of earlier members already placed on the candidate make it
    /// ineligible for this batch (it was somebody's destination).
    fn try_add(
        &mut self,
        batch: &[usize],
        candidate: usize,
        trial: &mut Trial,
    ) -> Result<(), Refusal> {
        if trial.moves.iter().any(|&(_, _, to)| to == candidate) {
            return Err(Refusal::NoRoom {
                pods: 0,
                missing_cpu_millis: 0,
                missing_memory_bytes: 0,
                where_: "it already receives pods of this batch".into(),
            });
        }
        let mut exclude = batch.to_vec();
        exclude.push(candidate);
        self.place_node(candidate, &exclude, trial)
    }

    /// Moves placed pods for good; the drained nodes come back with only their fixed pods.
    fn commit(&mut self, batch: &[usize], trial: Trial) {
        for (p, from, to) in trial.moves {
            self.nodes[from].movable.retain(|&x| x != p);
            self.nodes[to].movable.push(p);
            // `to`'s free space was already reduced by the trial.
        }
        for &n in batch {
            let node = &self.nodes[n];
            let (c, m) = (
                node.alloc_cpu - node.fixed_cpu,
                node.alloc_mem - node.fixed_mem,
            );
            self.set_free(n, c, m);
        }
    }

    /// The budgets `batch`'s drains touch: none may allow no eviction. Evictions beyond what
    /// a budget allows at once are serialised by the Eviction API, as `kubectl drain` relies
    /// on: the budget holds at every moment and the drains take longer, one round per
    /// replacement becoming Ready. A batch (not a lone node) may need at most `max_rounds`.
    pub fn check_pdbs(&self, batch: &[usize], max_rounds: u32) -> Result<(), Refusal> {
        for (b, need) in self.pdb_need(batch) {
            let allowed = self.pdb_allowed[b];
            if allowed == 0 {
                return Err(Refusal::Pdb {
                    pdb: self.pdb_names[b].clone(),
                    need,
                    allowed,
                });
            }
            let rounds = need.div_ceil(allowed);
            if batch.len() > 1 && rounds > max_rounds.max(1) {
                return Err(Refusal::Rounds {
                    pdb: self.pdb_names[b].clone(),
                    need,
                    allowed,
                    rounds,
                    max_rounds: max_rounds.max(1),
                });
            }
        }
        Ok(())
    }

    /// Rounds of evictions beyond the first that `batch`'s drains wait through: for the
    /// slowest budget, ⌈need / allowed⌉ − 1.
    pub fn extra_rounds(&self, batch: &[usize]) -> u32 {
        self.pdb_need(batch)
            .into_iter()
            .map(|(b, need)| need.div_ceil(self.pdb_allowed[b].max(1)).saturating_sub(1))
            .max()
            .unwrap_or(0)
    }

    /// Can `node` be drained alone right now? Does not change the model.
    pub fn check_alone(&mut self, node: usize) -> Result<(), Refusal> {
        self.check_pdbs(&[node], u32::MAX)?;
        let mut trial = Trial::default();
        let r = self.try_add(&[], node, &mut trial);
        self.undo(&mut trial, 0);
        r
    }

    /// Drains `node` alone in the model, whether or not it fits (what does not fit stays).
    pub fn drain_alone(&mut self, node: usize) -> Result<(), Refusal> {
        let mut trial = Trial::default();
        match self.try_add(&[], node, &mut trial) {
            Ok(()) => {
                self.commit(&[node], trial);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Greedily builds the next batch from `candidates` (in order), at most `max` nodes,
    /// and commits it. Returns the batch (possibly empty when the first candidate does not
    /// fit alone), the refusal of the first candidate if any, and the first refusal that kept
    /// the batch from growing.
    pub fn next_batch(
        &mut self,
        candidates: &[usize],
        max: usize,
        max_rounds: u32,
    ) -> (Vec<usize>, Option<Refusal>, Option<Refusal>) {
        let mut batch: Vec<usize> = Vec::new();
        let mut trial = Trial::default();
        let mut first_refusal = None;
        let mut limit = None;
        let mut misses = 0;
        for &c in candidates {
            if batch.len() >= max || misses > 16 {
                break;
            }
            let mut with = batch.clone();
            with.push(c);
            let pdb = self.check_pdbs(&with, max_rounds);
            let fit = pdb.and_then(|()| self.try_add(&batch, c, &mut trial));
            match fit {
                Ok(()) => batch.push(c),
                Err(e) => {
                    if batch.is_empty() && first_refusal.is_none() {
                        first_refusal = Some(e);
                        // The first candidate must go first: it does not fit alone.
                        break;
                    }
                    limit.get_or_insert(e);
                    misses += 1;
                }
            }
        }
        self.commit(&batch, trial);
        (batch, first_refusal, limit)
    }

    pub fn unmanaged_pods(&self, node: usize) -> &[usize] {
        &self.nodes[node].unmanaged
    }
}
