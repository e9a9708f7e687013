//! A rehearsal: the real engine upgrading a simulated copy of a cluster, start to finish, in
//! virtual time. What `upgradectl rehearse` (through `upgraded-rehearse`) and the upgrade
//! benchmark run.
//!
//! The cluster is a snapshot rebuilt by `sim::import` (or a built-in scenario), faults
//! applied. The engine is the daemon's own: planner, sled log, `decide`, the fold, steps,
//! drains through the Eviction API with the sim's budgets, gates. Node commands take the
//! policy's estimated durations (`durations`) in virtual time, then go to the sim's node
//! agents, as the demo's daemon sends them ([`Timed`]); drains, kubelet restarts and readiness take what the sim's pods and
//! kubelets take. The same cluster is rehearsed a second time one node at a time (the same
//! policy with `maxUnavailable: 1` everywhere), on another thread, for the ratio.
//!
//! Nothing here talks to a real cluster: the only network is the sim's router, in process.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use upgraded_daemon::log::EventLog;
use upgraded_daemon::ports::{BoxFut, CommandOutput, NodeExecutor, PortError, RemoteCommand};
use upgraded_daemon::simagent::SimAgents;
use upgraded_events::inventory::{Inventory, LabelSelector};
use upgraded_events::{Actor, Event, Host, Record, Role, Step, Timestamp, Version};
use upgraded_planner::bounds::LowerBound;
use upgraded_planner::policy::{Durations, MaxUnavailable, PlanPolicy};
use upgraded_sim::model::CrashLoopFault;
use upgraded_sim::{Sim, World};

use crate::{Harness, Options};

/// The sim's node agents (what `--sim-agents` runs: the same facts, the same refusals), each
/// command first taking the policy's estimated duration in virtual time.
pub struct Timed {
    pub agents: Arc<dyn NodeExecutor>,
    pub durations: Durations,
}

impl std::fmt::Debug for Timed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timed")
            .field("durations", &self.durations)
            .finish_non_exhaustive()
    }
}

impl Timed {
    /// The sim's own agents, in process, timed by `durations`.
    pub fn on(sim: &Arc<Sim>, durations: Durations) -> Timed {
        let router = upgraded_sim::server::router(Arc::clone(sim));
        Timed {
            agents: Arc::new(SimAgents::in_process(crate::exchange(router))),
            durations,
        }
    }

    fn secs(&self, cmd: &RemoteCommand) -> u64 {
        let d = &self.durations;
        match cmd {
            RemoteCommand::Preflight { .. } => d.preflight,
            RemoteCommand::RestoreKubeletFiles { .. } => d.uncordon,
            RemoteCommand::Fingerprint => 0,
            RemoteCommand::InstallPackages { .. } | RemoteCommand::DowngradePackages { .. } => {
                d.upgrade_packages
            }
            RemoteCommand::KubeadmUpgrade { apply: true, .. }
            | RemoteCommand::KubeadmDowngrade { apply: true, .. } => d.kubeadm_apply,
            RemoteCommand::KubeadmUpgrade { apply: false, .. }
            | RemoteCommand::KubeadmDowngrade { apply: false, .. } => d.kubeadm_node,
            RemoteCommand::EtcdSnapshot { .. } | RemoteCommand::EtcdRestore(_) => d.etcd_snapshot,
            RemoteCommand::InstalledKubelet
            | RemoteCommand::RestartKubelet
            | RemoteCommand::EtcdHealth
            | RemoteCommand::ApiserverReadyz
            | RemoteCommand::ApiserverMetrics => 0,
        }
    }
}

impl NodeExecutor for Timed {
    fn run<'a>(
        &'a self,
        host: &'a Host,
        cmd: &'a RemoteCommand,
        timeout: Duration,
    ) -> BoxFut<'a, Result<CommandOutput, PortError>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(self.secs(cmd))).await;
            self.agents.run(host, cmd, timeout).await
        })
    }
}

/// Where the rehearsed cluster comes from.
#[derive(Debug, Clone)]
pub enum Cluster {
    /// A snapshot (`kubectl get nodes,pods,pdb,deploy,sts,ds -A -o json`), parsed.
    Snapshot(Box<Inventory>),
    /// A built-in scenario (`seed`, `lab`, `large-N`).
    Scenario(String),
}

impl Cluster {
    /// The cluster at `start` (ms since the Unix epoch), on tokio's (paused) time.
    fn build(&self, start: u64) -> Result<World, String> {
        let clock = upgraded_sim::Clock::tokio_at(start);
        match self {
            Cluster::Snapshot(inv) => {
                upgraded_sim::import::world(inv, clock, 1).map_err(|e| e.to_string())
            }
            Cluster::Scenario(name) => {
                upgraded_sim::scenario::build(name, clock, 1).map_err(|e| e.to_string())
            }
        }
    }
}

/// Something broken on purpose, as the sim can break it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// `kubelet-fails:GENERATION@VERSION`: no machine of the generation runs a kubelet from
    /// VERSION on (an old kernel): restarted into one, it never becomes Ready.
    KubeletFails { generation: String, from: Version },
    /// `never-ready:NODE`: the node's kubelet never comes back after a restart.
    NeverReady(String),
    /// `crash-loop:KEY=VALUE@VERSION`: pods labelled KEY=VALUE crash-loop on kubelets at or
    /// above VERSION.
    CrashLoop {
        key: String,
        value: String,
        from: Version,
    },
    /// `blocking-pdb:NAMESPACE/NAME`: the budget refuses every eviction.
    BlockingPdb(String),
    /// `slow-drain:NODE=SECONDS`: the node's evicted pods take that long to terminate.
    SlowDrain { node: String, secs: u64 },
    /// `net-broken:GENERATION@VERSION`: the pod network of the generation's machines breaks
    /// once they run a kubelet at or above VERSION (a CNI that fails on their old kernel).
    NetBroken { generation: String, from: Version },
    /// `dns-broken@VERSION`: CoreDNS stops answering once the control plane is at VERSION.
    DnsBroken { from: Version },
    /// `storage-broken:GENERATION@VERSION`: volumes no longer mount on the generation's
    /// machines once they run a kubelet at or above VERSION.
    StorageBroken { generation: String, from: Version },
    /// `devices-lost:NODE@VERSION`: the node's device plugins no longer register once it runs
    /// a kubelet at or above VERSION (its extended resources read 0).
    DevicesLost { node: String, from: Version },
    /// `apiserver-broken:NODE@VERSION`: the control-plane node's kube-apiserver does not
    /// start from VERSION on (its static pod crash-loops); the others keep the API up.
    ApiserverBroken { node: String, from: Version },
    /// `drift:NODE:FIELD=VALUE`: the machine differs from its generation in one field
    /// (`kernel`, `os-image`, `container-runtime`, `cgroup` v1/v2; on the machine:
    /// `containerd-config`, `swap` on/off, `reboot-required`, `kernel-installed`, a
    /// `kubelet-flag`, a kubelet config key `kubelet.KEY`).
    Drift {
        node: String,
        field: String,
        value: String,
    },
    /// `deprecated-api:NODE:GROUP/VERSION/RESOURCE`: a client keeps calling that API
    /// version through the control-plane node's apiserver (its `/metrics` shows the
    /// series, with the release the table says removes it).
    DeprecatedApi {
        node: String,
        group: String,
        version: String,
        resource: String,
    },
}

impl std::str::FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Fault, String> {
        let usage = "expected kubelet-fails:GENERATION@VERSION, never-ready:NODE, \
                     crash-loop:KEY=VALUE@VERSION, blocking-pdb:NAMESPACE/NAME, slow-drain:NODE=SECONDS, \
                     net-broken:GENERATION@VERSION, storage-broken:GENERATION@VERSION, \
                     devices-lost:NODE@VERSION, apiserver-broken:NODE@VERSION, \
                     deprecated-api:NODE:GROUP/VERSION/RESOURCE, drift:NODE:FIELD=VALUE \
                     or dns-broken@VERSION";
        if let Some(v) = s.strip_prefix("dns-broken@") {
            let from = Version::parse_release(v)
                .map_err(|e| format!("fault {s:?}: {v:?} is not a version: {e}"))?;
            return Ok(Fault::DnsBroken { from });
        }
        let (kind, arg) = s
            .split_once(':')
            .ok_or_else(|| format!("fault {s:?}: {usage}"))?;
        let at = |arg: &str| -> Result<(String, Version), String> {
            let (what, v) = arg
                .rsplit_once('@')
                .ok_or_else(|| format!("fault {s:?}: no @VERSION"))?;
            let v = Version::parse_release(v)
                .map_err(|e| format!("fault {s:?}: {v:?} is not a version: {e}"))?;
            Ok((what.to_string(), v))
        };
        let nonempty = |x: &str| -> Result<String, String> {
            if x.is_empty() {
                Err(format!("fault {s:?}: {usage}"))
            } else {
                Ok(x.to_string())
            }
        };
        match kind {
            "kubelet-fails" => {
                let (generation, from) = at(arg)?;
                Ok(Fault::KubeletFails {
                    generation: nonempty(&generation)?,
                    from,
                })
            }
            "never-ready" => Ok(Fault::NeverReady(nonempty(arg)?)),
            "net-broken" => {
                let (generation, from) = at(arg)?;
                Ok(Fault::NetBroken {
                    generation: nonempty(&generation)?,
                    from,
                })
            }
            "storage-broken" => {
                let (generation, from) = at(arg)?;
                Ok(Fault::StorageBroken {
                    generation: nonempty(&generation)?,
                    from,
                })
            }
            "devices-lost" => {
                let (node, from) = at(arg)?;
                Ok(Fault::DevicesLost {
                    node: nonempty(&node)?,
                    from,
                })
            }
            "drift" => {
                let bad = || {
                    format!(
                        "fault {s:?}: expected drift:NODE:FIELD=VALUE, FIELD one of kernel, os-image, container-runtime, cgroup (v1|v2), containerd-config, swap (on|off), reboot-required (true), kernel-installed, kubelet-flag, kubelet.KEY (a kubelet config key; VALUE as JSON or text)"
                    )
                };
                let (node, rest) = arg.split_once(':').ok_or_else(bad)?;
                let (field, value) = rest.split_once('=').ok_or_else(bad)?;
                let known = [
                    "kernel",
                    "os-image",
                    "container-runtime",
                    "cgroup",
                    "containerd-config",
                    "swap",
                    "reboot-required",
                    "kernel-installed",
                    "kubelet-flag",
                ];
                let kubelet_key = field
                    .strip_prefix("kubelet.")
                    .is_some_and(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()));
                if !(known.contains(&field) || kubelet_key)
                    || value.is_empty()
                    || (field == "cgroup" && value != "v1" && value != "v2")
                    || (field == "swap" && value != "on" && value != "off")
                    || (field == "reboot-required" && value != "true")
                    || (field == "kubelet-flag" && !value.starts_with("--"))
                {
                    return Err(bad());
                }
                Ok(Fault::Drift {
                    node: nonempty(node)?,
                    field: field.to_string(),
                    value: value.to_string(),
                })
            }
            "deprecated-api" => {
                let bad = || {
                    format!(
                        "fault {s:?}: expected deprecated-api:NODE:GROUP/VERSION/RESOURCE (e.g. cp-2:flowcontrol.apiserver.k8s.io/v1beta3/flowschemas)"
                    )
                };
                let (node, api) = arg.split_once(':').ok_or_else(bad)?;
                let mut parts = api.rsplitn(3, '/');
                let (resource, version, group) = (parts.next(), parts.next(), parts.next());
                match (resource, version) {
                    (Some(r), Some(v)) if !r.is_empty() && !v.is_empty() => {
                        Ok(Fault::DeprecatedApi {
                            node: nonempty(node)?,
                            group: group.unwrap_or_default().to_string(),
                            version: v.to_string(),
                            resource: r.to_string(),
                        })
                    }
                    _ => Err(bad()),
                }
            }
            "apiserver-broken" => {
                let (node, from) = at(arg)?;
                Ok(Fault::ApiserverBroken {
                    node: nonempty(&node)?,
                    from,
                })
            }
            "crash-loop" => {
                let (sel, from) = at(arg)?;
                let (key, value) = sel
                    .split_once('=')
                    .ok_or_else(|| format!("fault {s:?}: expected KEY=VALUE@VERSION"))?;
                Ok(Fault::CrashLoop {
                    key: nonempty(key)?,
                    value: value.to_string(),
                    from,
                })
            }
            "blocking-pdb" => {
                if !arg.contains('/') {
                    return Err(format!("fault {s:?}: expected blocking-pdb:NAMESPACE/NAME"));
                }
                Ok(Fault::BlockingPdb(arg.to_string()))
            }
            "slow-drain" => {
                let (node, secs) = arg
                    .split_once('=')
                    .ok_or_else(|| format!("fault {s:?}: expected slow-drain:NODE=SECONDS"))?;
                let secs = secs
                    .parse()
                    .map_err(|_| format!("fault {s:?}: {secs:?} is not a number of seconds"))?;
                Ok(Fault::SlowDrain {
                    node: nonempty(node)?,
                    secs,
                })
            }
            _ => Err(format!("fault {s:?}: unknown kind {kind:?}; {usage}")),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::KubeletFails { generation, from } => {
                write!(f, "kubelet-fails:{generation}@{from}")
            }
            Fault::NeverReady(n) => write!(f, "never-ready:{n}"),
            Fault::CrashLoop { key, value, from } => write!(f, "crash-loop:{key}={value}@{from}"),
            Fault::BlockingPdb(b) => write!(f, "blocking-pdb:{b}"),
            Fault::SlowDrain { node, secs } => write!(f, "slow-drain:{node}={secs}"),
            Fault::NetBroken { generation, from } => write!(f, "net-broken:{generation}@{from}"),
            Fault::DnsBroken { from } => write!(f, "dns-broken@{from}"),
            Fault::StorageBroken { generation, from } => {
                write!(f, "storage-broken:{generation}@{from}")
            }
            Fault::DevicesLost { node, from } => write!(f, "devices-lost:{node}@{from}"),
            Fault::ApiserverBroken { node, from } => {
                write!(f, "apiserver-broken:{node}@{from}")
            }
            Fault::Drift { node, field, value } => write!(f, "drift:{node}:{field}={value}"),
            Fault::DeprecatedApi {
                node,
                group,
                version,
                resource,
            } if group.is_empty() => write!(f, "deprecated-api:{node}:{version}/{resource}"),
            Fault::DeprecatedApi {
                node,
                group,
                version,
                resource,
            } => write!(f, "deprecated-api:{node}:{group}/{version}/{resource}"),
        }
    }
}

impl Fault {
    fn apply(&self, w: &mut World) -> Result<(), String> {
        let node = |w: &World, n: &str| {
            if w.nodes.contains_key(n) {
                Ok(())
            } else {
                Err(format!("fault on node {n:?}: the cluster has no such node"))
            }
        };
        match self {
            Fault::KubeletFails { generation, from } => {
                let hit = upgraded_sim::scenario::kubelet_fails_in_generation(w, generation, *from);
                if hit.is_empty() {
                    return Err(format!(
                        "fault kubelet-fails:{generation}: no node of that generation"
                    ));
                }
            }
            Fault::NetBroken { generation, from } | Fault::StorageBroken { generation, from } => {
                let hit = upgraded_sim::scenario::machines_of_generation(w, generation);
                if hit.is_empty() {
                    return Err(format!("fault {self}: no node of that generation"));
                }
                let faults = if matches!(self, Fault::NetBroken { .. }) {
                    &mut w.faults.net_broken_from
                } else {
                    &mut w.faults.storage_broken_from
                };
                for m in hit {
                    faults.insert(m, *from);
                }
            }
            Fault::DnsBroken { from } => w.faults.dns_broken_from = Some(*from),
            Fault::DevicesLost { node: n, from } => {
                node(w, n)?;
                if w.nodes.get(n).is_some_and(|m| m.extended.is_empty()) {
                    return Err(format!(
                        "fault {self}: the node advertises no extended resources; nothing would notice"
                    ));
                }
                w.faults.devices_lost_from.insert(n.clone(), *from);
            }
            Fault::ApiserverBroken { node: n, from } => {
                node(w, n)?;
                if w.nodes.get(n).is_some_and(|m| m.control_plane.is_none()) {
                    return Err(format!("fault {self}: the node runs no control plane"));
                }
                w.faults.apiserver_fails_from.insert(n.clone(), *from);
            }
            Fault::NeverReady(n) => {
                node(w, n)?;
                w.faults.never_ready.insert(n.clone());
            }
            Fault::Drift {
                node: n,
                field,
                value,
            } => {
                node(w, n)?;
                let m = &w.nodes[n];
                let (labels, mut annotations, taints) =
                    (m.labels.clone(), m.annotations.clone(), m.taints.clone());
                if field == "cgroup" {
                    annotations.insert(upgraded_sim::scenario::CGROUP_KEY.into(), value.clone());
                }
                w.set_node_meta(n, labels, annotations, taints)
                    .map_err(|e| format!("fault {self}: {e}"))?;
                if let Some(m) = w.nodes.get_mut(n) {
                    match field.as_str() {
                        "kernel" => m.kernel.clone_from(value),
                        "os-image" => m.os_image.clone_from(value),
                        "container-runtime" => m.runtime.clone_from(value),
                        _ => {}
                    }
                }
                // What only the machine's agent sees.
                w.edit_host(n, |h| match field.as_str() {
                    "containerd-config" => h.containerd_config.clone_from(value),
                    "swap" => h.swap = value == "on",
                    "reboot-required" => h.reboot_required = true,
                    "kernel-installed" => h.installed_kernel = Some(value.clone()),
                    "kubelet-flag" => h.files.flags.push(value.clone()),
                    // As the machine's agent reports it too.
                    "container-runtime" => {
                        h.containerd_version = value
                            .strip_prefix("containerd://")
                            .unwrap_or_default()
                            .to_string();
                    }
                    f => {
                        if let Some(key) = f.strip_prefix("kubelet.") {
                            let v = serde_json::from_str(value)
                                .unwrap_or_else(|_| serde_json::Value::String(value.clone()));
                            h.files.config.insert(key.to_string(), v);
                        }
                    }
                })
                .map_err(|e| format!("fault {self}: {e}"))?;
            }
            Fault::DeprecatedApi {
                node: n,
                group,
                version,
                resource,
            } => {
                node(w, n)?;
                if w.nodes.get(n).is_some_and(|m| m.control_plane.is_none()) {
                    return Err(format!("fault {self}: the node runs no kube-apiserver"));
                }
                let removed = upgraded_events::apis::removed_resource(group, version, resource)
                    .map(|r| format!("1.{}", r.removed_in))
                    .unwrap_or_default();
                w.faults
                    .deprecated_apis
                    .push(upgraded_sim::model::DeprecatedCalls {
                        node: n.clone(),
                        group: group.clone(),
                        version: version.clone(),
                        resource: resource.clone(),
                        removed_release: removed,
                        requests: 120,
                    });
            }
            Fault::CrashLoop { key, value, from } => {
                w.faults.crash_loops.push(CrashLoopFault {
                    selector: LabelSelector {
                        match_labels: [(key.clone(), value.clone())].into_iter().collect(),
                        match_expressions: vec![],
                    },
                    from: *from,
                });
            }
            Fault::BlockingPdb(b) => {
                let known = w
                    .pdbs
                    .values()
                    .any(|p| format!("{}/{}", p.namespace, p.name) == *b);
                if !known {
                    return Err(format!("fault blocking-pdb:{b}: no such budget"));
                }
                w.faults.blocking_pdbs.insert(b.clone());
            }
            Fault::SlowDrain { node: n, secs } => {
                node(w, n)?;
                w.faults
                    .slow_termination_ms
                    .insert(n.clone(), secs.saturating_mul(1000));
            }
        }
        Ok(())
    }
}

/// The plan's warnings a rehearsal's report repeats (by code prefix).
const REHEARSED_WARNINGS: &[&str] = &[
    "drift-",
    "pending-reboot",
    "host-facts-",
    "helm-",
    "last-applied-",
    "apiserver-",
    "api-usage-",
    "kube-proxy-",
];

/// What to rehearse.
#[derive(Debug, Clone)]
pub struct Rehearsal {
    pub cluster: Cluster,
    pub policy: PlanPolicy,
    pub target: Version,
    pub faults: Vec<Fault>,
    /// Before the run, do what the plan's usual blockers ask of an operator: delete pods
    /// without a controller, move cgroup v1 machines to v2.
    pub assume_fixed: bool,
    /// Also rehearse one node at a time, for the ratio.
    pub compare: bool,
    /// When the run starts (its maintenance windows are met from then on).
    pub start: Timestamp,
    /// Helm 3's release Secrets to put in the rehearsed cluster (`kubectl get secrets -A -l
    /// owner=helm,status=deployed -o json`), which the start reads as the daemon reads a
    /// real cluster's.
    pub helm_secrets: Vec<serde_json::Value>,
}

/// One phase of the rehearsed run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseTime {
    pub phase: String,
    pub batches: usize,
    pub nodes: usize,
    pub largest_batch: usize,
    pub secs: u64,
}

/// A budget whose healthy pods went below what it requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub budget: String,
    /// Healthy minus desired, at its lowest (negative: a violation).
    pub lowest_slack: i64,
}

/// Evictions one budget refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Blocked {
    pub budget: String,
    pub refusals: usize,
    pub nodes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Parked {
    pub node: String,
    pub reason: String,
}

/// What a rehearsed run did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunMeasure {
    /// `completed`, or `halted: <why>`, or `did not finish within <days> days`.
    pub outcome: String,
    pub makespan_secs: u64,
    pub phases: Vec<PhaseTime>,
    pub batches: usize,
    /// Most nodes cordoned at once.
    pub most_unavailable: usize,
    pub budget_violations: Vec<Violation>,
    /// Pods without a node when the run ended, `namespace/name`.
    pub pending_pods: Vec<String>,
    pub blocked_evictions: Vec<Blocked>,
    pub parked: Vec<Parked>,
    pub control_plane_secs: u64,
    pub worker_median_secs: u64,
    pub steps: usize,
    pub records: usize,
    /// Wall time of the engine's run, and the share of it inside the sim.
    pub wall_ms: u64,
    pub sim_ms: u64,
}

/// A rehearsal's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub target: Version,
    /// When the rehearsed run started (RFC 3339, UTC).
    pub start: String,
    pub nodes: usize,
    pub workers: usize,
    pub pods: usize,
    /// The plan's blockers (a rehearsal runs a blocked plan anyway, as `start --force`).
    pub blockers: Vec<String>,
    /// The plan's warnings about the machines and the APIs: drift, pending reboots,
    /// machines not read, removed APIs in Helm releases and last-applied objects, an
    /// apiserver seen briefly, kube-proxy's mode.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The canaries, as the plan labels their batches (`canary dell-r640: r640-02`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub canaries: Vec<String>,
    /// What `--assume-fixed` changed.
    pub fixed: Vec<String>,
    pub faults: Vec<String>,
    pub planned: RunMeasure,
    pub one_at_a_time: Option<RunMeasure>,
    pub lower_bound: LowerBound,
    /// One node at a time's makespan / this one's.
    pub speedup: Option<f64>,
    /// This makespan / the lower bound.
    pub to_lower_bound: f64,
}

/// The longest a rehearsal may run in virtual time before it is called stuck.
const HORIZON: Duration = Duration::from_secs(60 * 86_400);

/// Rehearses `r`: the planned run and, with `compare`, one node at a time on another
/// thread. The planned run's records come back too (for a timeline).
pub fn rehearse(r: &Rehearsal) -> Result<(Report, Vec<Record>), String> {
    let one = r.compare.then(|| {
        let mut r1 = r.clone();
        r1.policy = one_at_a_time(&r.policy);
        std::thread::spawn(move || run(&r1))
    });
    let (planned, records, start) = run(r)?;
    let one = match one {
        Some(h) => Some(
            h.join()
                .map_err(|_| "the one-at-a-time rehearsal panicked".to_string())??
                .0,
        ),
        None => None,
    };
    let bound = upgraded_planner::bounds::lower_bound(
        &start.inventory,
        &r.policy,
        planned.control_plane_secs,
        planned.worker_median_secs,
    );
    let speedup = one
        .as_ref()
        .map(|o| o.makespan_secs as f64 / planned.makespan_secs.max(1) as f64);
    let to_lower_bound = planned.makespan_secs as f64 / bound.total_secs.max(1) as f64;
    let inv = &start.inventory;
    Ok((
        Report {
            target: r.target,
            start: r.start.to_string(),
            nodes: inv.nodes.len(),
            workers: inv.nodes.iter().filter(|n| n.role == Role::Worker).count(),
            pods: inv.pods.len(),
            blockers: start.blockers,
            warnings: start.warnings,
            canaries: start.canaries,
            fixed: start.fixed,
            faults: r.faults.iter().map(ToString::to_string).collect(),
            planned,
            one_at_a_time: one,
            lower_bound: bound,
            speedup,
            to_lower_bound,
        },
        records,
    ))
}

/// The same policy, every generation one node at a time.
pub fn one_at_a_time(p: &PlanPolicy) -> PlanPolicy {
    let mut p = p.clone();
    p.default_generation.max_unavailable = MaxUnavailable::Count(1);
    for g in p.generation_overrides.values_mut() {
        g.max_unavailable = MaxUnavailable::Count(1);
    }
    p
}

/// What the run started from.
struct Start {
    inventory: Inventory,
    blockers: Vec<String>,
    warnings: Vec<String>,
    canaries: Vec<String>,
    fixed: Vec<String>,
}

/// One rehearsed run, in a runtime of its own with paused time.
fn run(r: &Rehearsal) -> Result<(RunMeasure, Vec<Record>, Start), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| format!("a runtime: {e}"))?;
    rt.block_on(async move {
        let start = u64::try_from(r.start.0).map_err(|_| "a start before 1970")?;
        let mut world = r.cluster.build(start)?;
        let fixed = if r.assume_fixed {
            upgraded_sim::scenario::fix_blockers(&mut world).map_err(|e| e.to_string())?
        } else {
            vec![]
        };
        for (i, s) in r.helm_secrets.iter().enumerate() {
            let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(s.clone())
                .map_err(|e| format!("Helm release Secret {i}: {e}"))?;
            world.add_secret(secret);
        }
        for f in &r.faults {
            // A fault no check of the policy looks at would be rehearsed as nothing at all.
            if matches!(f, Fault::StorageBroken { .. }) && r.policy.checks.storage_classes.is_empty() {
                return Err(format!(
                    "fault {f}: the policy names no StorageClass to check (checks.storageClasses), so nothing would notice it"
                ));
            }
            f.apply(&mut world)?;
        }
        world.watch_budgets();
        // The daemon watches pods (its health gate's cache) and nothing else: only pods'
        // changes are kept for watches.
        world.journal_only(&[upgraded_sim::resource::Res::Pod]);
        // Nor does it read Events: none are recorded (at 1,000 nodes the recorder's
        // bookkeeping cost a twentieth of the rehearsal).
        world.set_events(false);
        let start_slack = world.budget_low_water.clone().unwrap_or_default();
        let in_sim = Arc::new(AtomicU64::new(0));
        let timed = Arc::clone(&in_sim);
        let durations = r.policy.durations.clone();
        let options = Options {
            nodes: Some(Box::new(move |sim: &Arc<Sim>| {
                Arc::new(Timed::on(sim, durations.clone())) as Arc<dyn NodeExecutor>
            })),
            kube_layer: Some(Box::new(move |router: axum::Router| {
                let timed = Arc::clone(&timed);
                router.layer(axum::middleware::from_fn(
                    move |req: axum::extract::Request, next: axum::middleware::Next| {
                        let timed = Arc::clone(&timed);
                        async move {
                            let t = Instant::now();
                            let resp = next.run(req).await;
                            timed.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                            resp
                        }
                    },
                ))
            })),
            api_faults: None,
            node_faults: None,
            log_faults: None,
        };
        let h = Harness::try_with(world, r.policy.clone(), options).await?;
        let daemon = h.daemon();
        let wall = Instant::now();
        let mut status = daemon.status();
        let (run, report) = daemon
            .start(r.target, Actor::daemon(), false, true)
            .await
            .map_err(|e| e.to_string())?;
        let run = run.ok_or("the planner left nothing to do: every node is at the target")?;
        let blockers = report
            .findings
            .iter()
            .filter(|f| f.severity == upgraded_planner::Severity::Blocker)
            .map(|f| format!("{}: {}", f.code, f.message))
            .collect();
        let warnings = report
            .findings
            .iter()
            .filter(|f| {
                f.severity != upgraded_planner::Severity::Blocker
                    && REHEARSED_WARNINGS.iter().any(|p| f.code.starts_with(p))
            })
            .map(|f| format!("{}: {}", f.code, f.message))
            .collect();
        let canaries = report
            .phases
            .iter()
            .flat_map(|p| &p.batches)
            .filter(|b| b.label.starts_with("canary"))
            .map(|b| b.label.clone())
            .collect();
        let ended = tokio::time::timeout(HORIZON, async {
            loop {
                let phase = status.borrow_and_update().as_ref().map(|s| s.phase);
                if phase
                    .is_some_and(|p| p.is_terminal() || p == upgraded_events::run::RunPhase::Halted)
                {
                    return;
                }
                if status.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
        .is_ok();
        let wall = wall.elapsed();
        let records = daemon.log().read(run, 0).map_err(|e| e.to_string())?;
        let mut m = measure(&records);
        if !ended {
            m.outcome = format!("did not finish within {} days", HORIZON.as_secs() / 86_400);
        }
        m.wall_ms = wall.as_millis() as u64;
        m.sim_ms = in_sim.load(Ordering::Relaxed) / 1_000_000;
        {
            let w = h.sim.world();
            let low = w.budget_low_water.clone().unwrap_or_default();
            m.budget_violations = low
                .iter()
                .filter(|(b, low)| **low < start_slack.get(*b).copied().unwrap_or(0).min(0))
                .map(|(b, low)| Violation {
                    budget: b.clone(),
                    lowest_slack: *low,
                })
                .collect();
            m.pending_pods = w.pending_pods();
        }
        let inventory = records
            .iter()
            .find_map(|r| match &r.event {
                Event::ClusterObserved { inventory, .. } => Some(inventory.0.clone()),
                _ => None,
            })
            .unwrap_or_default();
        Ok((
            m,
            records,
            Start {
                inventory,
                blockers,
                warnings,
                canaries,
                fixed,
            },
        ))
    })
}

/// The run's numbers, from its records.
pub fn measure(records: &[Record]) -> RunMeasure {
    let mut roles: BTreeMap<String, Role> = BTreeMap::new();
    let mut phase_of: BTreeMap<String, String> = BTreeMap::new();
    let mut phases: Vec<PhaseTime> = Vec::new();
    let mut batches = 0;
    let (mut started, mut ended) = (None, None);
    let mut outcome = "did not finish".to_string();
    let mut first: BTreeMap<&str, i64> = BTreeMap::new();
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    let mut span: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut cordoned: BTreeSet<&str> = BTreeSet::new();
    let mut most_unavailable = 0;
    let mut blocked: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
    let mut parked = Vec::new();
    let mut steps = 0;
    for r in records {
        match &r.event {
            Event::RunPlanned { plan, .. } => {
                batches = plan.0.batches.len();
                for b in &plan.0.batches {
                    let name = b.phase_name().to_string();
                    let p = match phases.iter_mut().find(|p| p.phase == name) {
                        Some(p) => p,
                        None => {
                            phases.push(PhaseTime {
                                phase: name.clone(),
                                batches: 0,
                                nodes: 0,
                                largest_batch: 0,
                                secs: 0,
                            });
                            phases.last_mut().expect("just pushed")
                        }
                    };
                    p.batches += 1;
                    p.nodes += b.nodes.len();
                    p.largest_batch = p.largest_batch.max(b.nodes.len());
                    for n in &b.nodes {
                        roles.insert(n.name.to_string(), n.role);
                        phase_of.insert(n.name.to_string(), name.clone());
                    }
                }
            }
            Event::RunStarted { .. } => started = Some(r.at.0),
            Event::RunCompleted => {
                ended = Some(r.at.0);
                outcome = "completed".into();
            }
            Event::RunHalted { reason } => {
                ended = Some(r.at.0);
                outcome = format!("halted: {reason}");
            }
            Event::RunAborted => {
                ended = Some(r.at.0);
                outcome = "aborted".into();
            }
            Event::StepStarted { node, .. } => {
                steps += 1;
                first.entry(node.as_str()).or_insert(r.at.0);
                if let Some(p) = phase_of.get(node.as_str()) {
                    let s = span.entry(p.clone()).or_insert((r.at.0, r.at.0));
                    s.0 = s.0.min(r.at.0);
                }
            }
            Event::StepSucceeded { node, step, .. } => {
                if *step != Step::Soak {
                    last.insert(node.as_str(), r.at.0);
                }
                if let Some(p) = phase_of.get(node.as_str()) {
                    let s = span.entry(p.clone()).or_insert((r.at.0, r.at.0));
                    s.1 = s.1.max(r.at.0);
                }
                match step {
                    Step::Cordon => {
                        cordoned.insert(node.as_str());
                        most_unavailable = most_unavailable.max(cordoned.len());
                    }
                    Step::Uncordon => {
                        cordoned.remove(node.as_str());
                    }
                    _ => {}
                }
            }
            Event::EvictionBlocked { node, pdb, .. } => {
                let b = blocked.entry(pdb.clone()).or_default();
                b.0 += 1;
                b.1.insert(node.to_string());
            }
            Event::NodeParked { node, reason, .. } => parked.push(Parked {
                node: node.to_string(),
                reason: reason.clone(),
            }),
            // A worker whose gate failed is rolled back, then parked.
            Event::NodeRollingBack { node, reason, .. } => parked.push(Parked {
                node: node.to_string(),
                reason: format!("rolled back and parked: {reason}"),
            }),
            _ => {}
        }
    }
    for p in &mut phases {
        if let Some((a, b)) = span.get(&p.phase) {
            p.secs = u64::try_from((b - a) / 1000).unwrap_or(0);
        }
    }
    let start = started.unwrap_or(0);
    let makespan = ended
        .or_else(|| records.last().map(|r| r.at.0))
        .unwrap_or(start)
        .saturating_sub(start);
    let mut worker = Vec::new();
    let mut control_plane = 0;
    for (node, end) in &last {
        let begin = first.get(node).copied().unwrap_or(*end);
        match roles.get(*node) {
            Some(Role::Worker) => worker.push(end - begin),
            _ => control_plane = control_plane.max(end - start),
        }
    }
    worker.sort_unstable();
    let median = worker.get(worker.len() / 2).copied().unwrap_or(0);
    RunMeasure {
        outcome,
        makespan_secs: u64::try_from(makespan / 1000).unwrap_or(0),
        phases,
        batches,
        most_unavailable,
        budget_violations: vec![],
        pending_pods: vec![],
        blocked_evictions: blocked
            .into_iter()
            .map(|(budget, (refusals, nodes))| Blocked {
                budget,
                refusals,
                nodes: nodes.into_iter().collect(),
            })
            .collect(),
        parked,
        control_plane_secs: u64::try_from(control_plane / 1000).unwrap_or(0),
        worker_median_secs: u64::try_from(median / 1000).unwrap_or(0),
        steps,
        records: records.len(),
        wall_ms: 0,
        sim_ms: 0,
    }
}

/// A duration for people: `3h25m`, `12m30s`, `45s` (the planner's tables' wording).
pub fn human(secs: u64) -> String {
    upgraded_events::quantity::human_secs(secs)
}

/// The report as a table, for a terminal.
pub fn table(r: &Report) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let p = &r.planned;
    let _ = writeln!(
        o,
        "Rehearsal: {} nodes ({} workers), {} pods → {} from {}, in virtual time; nothing ran against a cluster",
        r.nodes, r.workers, r.pods, r.target, r.start
    );
    for b in &r.blockers {
        let _ = writeln!(o, "plan blocker (rehearsed anyway): {b}");
    }
    for d in &r.warnings {
        let _ = writeln!(o, "plan warning: {d}");
    }
    for f in &r.fixed {
        let _ = writeln!(o, "assumed fixed: {f}");
    }
    for f in &r.faults {
        let _ = writeln!(o, "fault: {f}");
    }
    if !r.canaries.is_empty() {
        let _ = writeln!(o, "canaries           {}", r.canaries.join("; "));
    }
    let _ = writeln!(o, "outcome            {}", p.outcome);
    let _ = writeln!(
        o,
        "makespan           {}  ({} batches)",
        human(p.makespan_secs),
        p.batches
    );
    let _ = writeln!(
        o,
        "most unavailable   {} node(s) at once",
        p.most_unavailable
    );
    let _ = writeln!(
        o,
        "budget violations  {}",
        if p.budget_violations.is_empty() {
            "0".to_string()
        } else {
            p.budget_violations
                .iter()
                .map(|v| format!("{} (slack {})", v.budget, v.lowest_slack))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let _ = writeln!(
        o,
        "pods Pending       {}",
        if p.pending_pods.is_empty() {
            "0".to_string()
        } else {
            format!("{}: {}", p.pending_pods.len(), p.pending_pods.join(", "))
        }
    );
    match &r.one_at_a_time {
        Some(one) => {
            let _ = writeln!(
                o,
                "one at a time      {} ({}): this run is {:.2}x faster",
                human(one.makespan_secs),
                one.outcome,
                r.speedup.unwrap_or(0.0)
            );
        }
        None => {
            let _ = writeln!(o, "one at a time      not rehearsed (--no-compare)");
        }
    }
    let b = &r.lower_bound;
    let _ = writeln!(
        o,
        "lower bound        {} (control plane {}, canaries {}): this run is {:.2}x of it",
        human(b.total_secs),
        human(b.control_plane_secs),
        human(b.canaries_secs),
        r.to_lower_bound
    );
    for g in &b.generations {
        let _ = writeln!(
            o,
            "  {:<16} {:>4} workers: capacity {} (k = {}), budgets {} ({})",
            g.generation,
            g.workers,
            human(g.capacity_secs),
            g.capacity_k,
            human(g.budget_secs),
            g.budget.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(
        o,
        "\nPHASE                                    BATCHES  NODES  LARGEST  TIME"
    );
    for ph in &p.phases {
        let _ = writeln!(
            o,
            "{:<40} {:>7}  {:>5}  {:>7}  {}",
            ph.phase,
            ph.batches,
            ph.nodes,
            ph.largest_batch,
            human(ph.secs)
        );
    }
    let _ = writeln!(o, "\nBLOCKED EVICTIONS");
    if p.blocked_evictions.is_empty() {
        let _ = writeln!(o, "none");
    }
    for b in &p.blocked_evictions {
        let _ = writeln!(
            o,
            "{}: {} refusal(s), on {}",
            b.budget,
            b.refusals,
            b.nodes.join(", ")
        );
    }
    let _ = writeln!(o, "\nPARKED NODES");
    if p.parked.is_empty() {
        let _ = writeln!(o, "none");
    }
    for n in &p.parked {
        let _ = writeln!(o, "{}: {}", n.node, n.reason);
    }
    let _ = writeln!(
        o,
        "\nengine: {} steps, {} records in {:.1} s of wall time ({:.2} ms per step, {:.2} ms of it in the daemon)",
        p.steps,
        p.records,
        p.wall_ms as f64 / 1000.0,
        p.wall_ms as f64 / p.steps.max(1) as f64,
        p.wall_ms.saturating_sub(p.sim_ms) as f64 / p.steps.max(1) as f64,
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_or_say_why() {
        assert_eq!(
            "kubelet-fails:dell-r640@v1.35.0".parse::<Fault>(),
            Ok(Fault::KubeletFails {
                generation: "dell-r640".into(),
                from: Version::new(1, 35, 0)
            })
        );
        assert_eq!(
            "slow-drain:w-1=90".parse::<Fault>(),
            Ok(Fault::SlowDrain {
                node: "w-1".into(),
                secs: 90
            })
        );
        assert_eq!(
            "net-broken:dell-r640@v1.35.0".parse::<Fault>(),
            Ok(Fault::NetBroken {
                generation: "dell-r640".into(),
                from: Version::new(1, 35, 0)
            })
        );
        assert_eq!(
            "dns-broken@v1.35.0".parse::<Fault>(),
            Ok(Fault::DnsBroken {
                from: Version::new(1, 35, 0)
            })
        );
        for f in [
            "net-broken:dell-r640@v1.35.0",
            "storage-broken:dell-r640@v1.35.0",
            "devices-lost:dl380-01@v1.35.0",
            "apiserver-broken:cp-2@v1.34.0",
            "dns-broken@v1.35.0",
        ] {
            assert_eq!(f.parse::<Fault>().map(|f| f.to_string()), Ok(f.to_string()));
        }
        for bad in [
            "kubelet-fails:dell-r640",
            "net-broken:@v1.35.0",
            "devices-lost:@v1.35.0",
            "devices-lost:dl380-01",
            "apiserver-broken:cp-2",
            "apiserver-broken:@v1.34.0",
            "dns-broken@soon",
            "never-ready:",
            "crash-loop:app@v1.35.0",
            "slow-drain:w-1=soon",
            "explode:w-1",
            "nothing",
        ] {
            let e = bad.parse::<Fault>().expect_err(bad);
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn one_at_a_time_keeps_everything_but_the_batch_size() {
        let p = PlanPolicy::from_yaml(
            "apiVersion: upgraded.dev/v1alpha1\nkind: UpgradePolicy\ngenerations: {maxUnavailable: 20%, canaries: 1}\ncanarySoak: 10m\n",
        )
        .expect("policy");
        let one = one_at_a_time(&p);
        assert_eq!(
            one.default_generation.max_unavailable,
            MaxUnavailable::Count(1)
        );
        assert_eq!(one.canary_soak_secs, p.canary_soak_secs);
        assert_eq!(one.default_generation.canaries, 1);
    }
}
