//! Rollback, derived from a run's log. What the run changed is read from its records, never
//! guessed: the versions and files each node had before it was touched come from the facts
//! its preflight recorded, and what changed from the steps that were started. A rollback
//! plan takes back exactly that, in an order whose every intermediate state keeps the skew
//! rules (checked with the planner's own simulator), and names any input it lacks.
//!
//! Two scopes:
//! - `--node`: each named node's kubelet and kubectl (and kubeadm) go back to the versions
//!   recorded before the run, with the kubelet config the node had then. A kubelet may be
//!   older than the apiserver, so this is legal whenever the skew rules hold for the result,
//!   which the plan checks.
//! - `--to`: the cluster goes back exactly one minor, as kubeadm allows. First every kubelet
//!   newer than the target (workers, then control-plane nodes), each cordoned, drained,
//!   downgraded with its config from when it ran the target, verified and uncordoned; then
//!   kube-proxy's image; then the control plane one node at a time through the target's
//!   kubeadm (`upgrade apply` on the first, `upgrade node` on the others), which also puts
//!   the addons and kubeadm's ConfigMaps back and leaves etcd at its newer version. kubeadm
//!   is the way rather than restoring the manifest backups because it also takes back what
//!   those do not hold (ConfigMaps, CoreDNS, certificates' settings); the backups (ours and
//!   kubeadm's, recorded by the forward run) are the by-hand fallback the runbook names.

use std::collections::BTreeMap;

use upgraded_events::inventory::Inventory;
use upgraded_events::plan::{Batch, NodePlan, Plan, Role};
use upgraded_events::{Entry, Event, Facts, Host, Record, RunId, RunState, Step, Version};

use crate::skew::ClusterVersions;
use crate::stages::versions_now;

mod etcd;
pub use etcd::{EtcdChoice, parse_members};

/// What an operator asks to roll back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RollbackRequest {
    /// Nodes (hosts) to take back to the versions recorded before the run.
    pub nodes: Vec<Host>,
    /// The version to take the whole cluster back to: one minor below the control plane.
    pub to: Option<Version>,
    /// The whole run back: the control plane one minor at a time to where it started, then
    /// every node it changed to its recorded versions.
    pub all: bool,
    /// What happens to etcd (only `--to` may restore the snapshot).
    pub etcd: EtcdChoice,
    /// When the request is made (the snapshot's age is stated from it).
    pub now: Option<upgraded_events::Timestamp>,
    /// Only show the plan: a restore needs no confirmation to be shown.
    pub preview: bool,
}

/// What a rollback will do, in order, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackPlan {
    /// The run it undoes.
    pub undoes: RunId,
    /// The plan the engine executes (linked to `undoes`).
    pub plan: Plan,
    /// One sentence per node, in the plan's order: from what, to what, and why.
    pub why: Vec<String>,
    /// What happens to etcd.
    pub etcd: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    #[error("the log holds no run to roll back")]
    NoRun,
    #[error("the log holds no run {0} (see `upgradectl runs`)")]
    UnknownRun(RunId),
    #[error(
        "run {run} is still {phase}: abort it first (`upgradectl abort`; nodes it cordoned are \
         uncordoned), then roll back"
    )]
    NotFinished { run: RunId, phase: &'static str },
    #[error(
        "say what to roll back: --node NAME (nodes), --to VERSION (the cluster, one minor) or --all (the whole run)"
    )]
    NothingAsked,
    #[error(
        "--all rolls the whole run back, --to the cluster one minor, --node single nodes: choose one"
    )]
    BothScopes,
    #[error("--to {to}: the control plane runs {current}; a rollback goes to an older version")]
    NotOlder { to: Version, current: Version },
    #[error(
        "--to {to}: the control plane runs {current}, and a rollback goes back exactly one minor \
         (kubeadm can downgrade only one minor at a time): roll back to v{major}.{minor}.x \
         first, then repeat"
    )]
    NotOneMinor {
        to: Version,
        current: Version,
        major: u16,
        minor: u16,
    },
    #[error(
        "--to {to}: run {run} started with the control plane at {before}; a rollback undoes the \
         run and does not go below where it started"
    )]
    BelowRun {
        to: Version,
        before: Version,
        run: RunId,
    },
    #[error(
        "node {node} runs {what} {version}, newer than {to}, but run {run} did not put it there: \
         a rollback only takes back what the run changed"
    )]
    NotByThisRun {
        node: String,
        what: &'static str,
        version: Version,
        to: Version,
        run: RunId,
    },
    #[error(
        "run {run} is itself the rollback of run {undoes}: a rollback is not rolled back (start \
         an upgrade to go forward again)"
    )]
    IsRollback { run: RunId, undoes: RunId },
    #[error("node {node:?} is not in run {run}'s plan")]
    UnknownNode { node: String, run: RunId },
    #[error("run {run} never changed node {node}'s packages: there is nothing to roll back on it")]
    Untouched { node: String, run: RunId },
    #[error(
        "node {node}'s control plane was upgraded by run {run}: rolling it back takes the whole \
         control plane back one minor, which a rollback of single nodes does not do"
    )]
    ControlPlane { node: String, run: RunId },
    #[error(
        "run {run} recorded no {what} for node {node} before touching it, so a rollback cannot \
         know what to put back (runs recorded by an older upgraded lack it; roll that node back \
         by hand: see the runbook)"
    )]
    MissingInput {
        node: String,
        run: RunId,
        what: &'static str,
    },
    #[error("after rolling back {node}, the cluster would break the version-skew policy: {why}")]
    Skew { node: String, why: String },
    #[error(
        "--etcd restore-snapshot goes with --to (the control plane back one minor, then its data): \
         a rollback of nodes or of the whole run keeps etcd"
    )]
    RestoreNeedsTo,
    #[error(
        "--etcd restore-snapshot: run {run} recorded no verified etcd snapshot taken before the \
         control plane went past {to}, so there is nothing to restore"
    )]
    NoSnapshot { to: Version, run: RunId },
    #[error("--etcd restore-snapshot: run {run} recorded etcd's members unreadably: {why}")]
    Members { why: String, run: RunId },
    #[error(
        "--etcd restore-snapshot: etcd member {member} is on no control-plane node of run {run}; \
         every member must be restored from the same snapshot, so restore by hand (see the runbook)"
    )]
    MemberElsewhere { member: String, run: RunId },
    #[error(
        "--etcd restore-snapshot loses every write made to the cluster since the snapshot \
         ({snapshot}): add --confirm-data-loss to go ahead, or use --plan to see the plan first"
    )]
    Unconfirmed { snapshot: String },
}

/// What the log says about one host.
#[derive(Debug, Default)]
struct HostHistory {
    role: Option<Role>,
    /// Facts of the first successful preflight: the host before the run touched it.
    before: Option<Facts>,
    /// Kubelet config backups the preflights recorded, by the kubelet version they belong to.
    configs: BTreeMap<String, String>,
    /// The kubelet files the preflights kept, as the step that puts them back, by the
    /// kubelet version they belong to.
    files: BTreeMap<Version, Step>,
    /// Packages changed (an install was started, whatever its outcome).
    packages_changed: bool,
    /// kubeadm installed at another version (`kubeadm upgrade node` on a worker too).
    kubeadm_changed: bool,
    /// kubeadm upgrade started on its control plane.
    control_plane_changed: bool,
}

/// The forward run in `records`: its state, each host's history, and the versions the
/// cluster is at after it (from `ClusterObserved`, moved by every version step started).
struct Forward {
    state: RunState,
    hosts: BTreeMap<Host, HostHistory>,
    versions: ClusterVersions,
    /// Hosts in the order the run first touched them.
    order: Vec<Host>,
    /// Verified etcd snapshots the run took, in order.
    snapshots: Vec<Snapshot>,
    /// When each control-plane hop's kubeadm first started, by its version.
    hops_started: Vec<(Version, upgraded_events::Timestamp)>,
}

/// A verified etcd snapshot the run recorded.
#[derive(Debug, Clone)]
struct Snapshot {
    at: upgraded_events::Timestamp,
    host: Host,
    path: String,
    revision: Option<String>,
    sha256: Option<String>,
    /// The daemon's copy, kept off the node.
    local_copy: Option<String>,
    /// etcd's members then, `name=peerURL,…`.
    members: Option<String>,
}

impl Forward {
    /// The forward run in `records`, then what the rollbacks already made of it did
    /// (`rollbacks`, each a run's records, oldest first): the versions they set count.
    fn read(records: &[Record], rollbacks: &[Vec<Record>]) -> Result<Forward, RollbackError> {
        let state = RunState::replay(records);
        let run = state.id.ok_or(RollbackError::NoRun)?;
        if let Some(undoes) = state.plan.undoes {
            return Err(RollbackError::IsRollback { run, undoes });
        }
        if !state.phase().is_terminal() {
            return Err(RollbackError::NotFinished {
                run,
                phase: state.phase().as_str(),
            });
        }
        let host_of: BTreeMap<&Entry, (Host, Role)> = state
            .plan
            .nodes()
            .map(|(_, n)| (&n.name, (n.host(), n.role)))
            .collect();
        let mut inventory = Inventory::default();
        let mut hosts: BTreeMap<Host, HostHistory> = BTreeMap::new();
        let mut order = Vec::new();
        let mut changes: Vec<(Host, Step)> = Vec::new();
        let mut snapshots = Vec::new();
        let mut hops_started: Vec<(Version, upgraded_events::Timestamp)> = Vec::new();
        for r in records {
            match &r.event {
                Event::ClusterObserved { inventory: i, .. } => inventory = i.0.clone(),
                Event::StepStarted { node, step, .. } => {
                    let Some((host, role)) = host_of.get(node) else {
                        continue;
                    };
                    let h = hosts.entry(host.clone()).or_default();
                    h.role = Some(*role);
                    if !order.contains(host) {
                        order.push(host.clone());
                    }
                    match step {
                        Step::UpgradePackages { .. } | Step::DowngradePackages { .. } => {
                            h.packages_changed = true;
                        }
                        Step::KubeadmUpgrade { .. } => {
                            h.kubeadm_changed = true;
                            h.control_plane_changed |= *role == Role::ControlPlane;
                        }
                        _ => {}
                    }
                    if ClusterVersions::changes_versions(step) {
                        changes.push((host.clone(), step.clone()));
                    }
                    if let Step::KubeadmUpgrade { version, .. } = step
                        && !hops_started.iter().any(|(v, _)| v == version)
                    {
                        hops_started.push((*version, r.at));
                    }
                }
                // A snapshot, on its own or re-taken at `kubeadm upgrade apply` (`snapshot_*`).
                Event::StepSucceeded {
                    node,
                    step: step @ (Step::EtcdSnapshot | Step::KubeadmUpgrade { .. }),
                    facts,
                    ..
                } => {
                    let prefix = if *step == Step::EtcdSnapshot {
                        ""
                    } else {
                        "snapshot_"
                    };
                    let get = |k: &str| facts.get(&format!("{prefix}{k}")).cloned();
                    if let (Some((host, _)), Some(path)) = (host_of.get(node), get("path"))
                        && get("reused").as_deref() != Some("true")
                    {
                        snapshots.push(Snapshot {
                            at: r.at,
                            host: host.clone(),
                            path,
                            revision: get("revision"),
                            sha256: get("sha256"),
                            local_copy: get("local_copy"),
                            members: get("members"),
                        });
                    }
                }
                Event::StepSucceeded {
                    node,
                    step: Step::Preflight,
                    facts,
                    ..
                } => {
                    let Some((host, role)) = host_of.get(node) else {
                        continue;
                    };
                    let h = hosts.entry(host.clone()).or_default();
                    h.role = Some(*role);
                    if h.before.is_none() {
                        h.before = Some(facts.clone());
                    }
                    if let (Some(v), Some(path)) = (
                        facts.get("kubelet_installed"),
                        facts.get("kubelet_config_backup"),
                    ) {
                        h.configs.entry(v.clone()).or_insert_with(|| path.clone());
                    }
                    if let Some((v, restore)) = upgraded_events::undo::restore_files(facts) {
                        h.files.entry(v).or_insert(restore);
                    }
                }
                _ => {}
            }
        }
        let mut versions = versions_now(&inventory);
        for (host, step) in &changes {
            versions.apply(host.as_str(), step);
        }
        for earlier in rollbacks {
            let r = RunState::replay(earlier);
            if r.plan.undoes != state.id {
                continue;
            }
            let hosts_of: BTreeMap<&Entry, Host> =
                r.plan.nodes().map(|(_, n)| (&n.name, n.host())).collect();
            for rec in earlier {
                if let Event::StepStarted { node, step, .. } = &rec.event
                    && let Some(host) = hosts_of.get(node)
                    && ClusterVersions::changes_versions(step)
                {
                    versions.apply(host.as_str(), step);
                }
            }
        }
        Ok(Forward {
            state,
            hosts,
            versions,
            order,
            snapshots,
            hops_started,
        })
    }

    fn run(&self) -> RunId {
        self.state.id.unwrap_or_default()
    }
}

/// The steps that take a node back to `version` (kubeadm too when the run changed it), with
/// the kubelet config recorded for it and the kubelet files kept with it (`files`).
fn node_steps(
    version: Version,
    kubelet_config: String,
    kubeadm: bool,
    files: Option<Step>,
) -> Vec<Step> {
    let mut steps = vec![
        Step::Preflight,
        Step::Cordon,
        Step::Drain,
        Step::DowngradePackages {
            version,
            kubelet_config: Some(kubelet_config),
            kubeadm,
        },
    ];
    steps.extend(files);
    steps.extend([Step::RestartKubelet, Step::Verify, Step::Uncordon]);
    steps
}

/// Plans the rollback `req` asks for of the (finished) run in `records`, after the
/// rollbacks of it already recorded (`rollbacks`: their records, oldest first).
pub fn plan(
    records: &[Record],
    rollbacks: &[Vec<Record>],
    req: &RollbackRequest,
) -> Result<RollbackPlan, RollbackError> {
    if req.all {
        if req.to.is_some() || !req.nodes.is_empty() {
            return Err(RollbackError::BothScopes);
        }
        if req.etcd != EtcdChoice::Keep {
            return Err(RollbackError::RestoreNeedsTo);
        }
        return whole_run(records, rollbacks);
    }
    let fwd = Forward::read(records, rollbacks)?;
    let run = fwd.run();
    match (req.to, req.nodes.is_empty()) {
        (Some(_), false) => return Err(RollbackError::BothScopes),
        (Some(to), true) => return plan_to(&fwd, to, req),
        (None, true) => return Err(RollbackError::NothingAsked),
        (None, false) => {}
    }
    if req.etcd != EtcdChoice::Keep {
        return Err(RollbackError::RestoreNeedsTo);
    }
    // Workers first, then control-plane nodes; each group in the order the run took them.
    let mut chosen: Vec<(&Host, &HostHistory)> = Vec::new();
    for host in &req.nodes {
        let Some(h) = fwd.hosts.get(host) else {
            let in_plan = fwd.state.plan.nodes().any(|(_, n)| n.host() == *host);
            return Err(if in_plan {
                RollbackError::Untouched {
                    node: host.to_string(),
                    run,
                }
            } else {
                RollbackError::UnknownNode {
                    node: host.to_string(),
                    run,
                }
            });
        };
        if h.control_plane_changed {
            return Err(RollbackError::ControlPlane {
                node: host.to_string(),
                run,
            });
        }
        if !h.packages_changed {
            return Err(RollbackError::Untouched {
                node: host.to_string(),
                run,
            });
        }
        chosen.push((host, h));
    }
    chosen.sort_by_key(|(host, h)| {
        (
            h.role == Some(Role::ControlPlane),
            fwd.order.iter().position(|o| o == *host),
        )
    });
    chosen.dedup_by_key(|(host, _)| (*host).clone());

    let mut out = Rollback::new(&fwd);
    for (host, h) in chosen {
        let missing = |what| RollbackError::MissingInput {
            node: host.to_string(),
            run,
            what,
        };
        let version: Version = h
            .before
            .as_ref()
            .ok_or(missing("preflight facts"))?
            .get("kubelet_before")
            .and_then(|v| v.parse().ok())
            .ok_or(missing("kubelet version (kubelet_before)"))?;
        out.kubelet(
            host,
            h,
            version,
            h.kubeadm_changed,
            "recorded before the run",
        )?;
    }
    Ok(out.finish(
        "etcd is not touched: a rollback of nodes leaves the control plane and its data as they are".into(),
    ))
}

/// A rollback plan being built: batches in order, the versions after each, and why.
struct Rollback<'a> {
    fwd: &'a Forward,
    versions: ClusterVersions,
    batches: Vec<Batch>,
    why: Vec<String>,
    /// Entries carry the version they go to (a host may then have several).
    tagged: bool,
}

impl<'a> Rollback<'a> {
    fn new(fwd: &'a Forward) -> Self {
        Rollback {
            fwd,
            versions: fwd.versions.clone(),
            batches: Vec::new(),
            why: Vec::new(),
            tagged: false,
        }
    }

    /// `name`, or `name@vMAJOR.MINOR` in a plan where a host may have several passes.
    fn entry(&self, name: String, to: Version) -> Entry {
        if self.tagged {
            Entry::new(format!("{name}-v{}.{}", to.major, to.minor))
        } else {
            Entry::new(name)
        }
    }

    /// Applies `steps` of `entry` on `host` and checks the skew rules after each.
    fn push(&mut self, label: String, node: NodePlan, why: String) -> Result<(), RollbackError> {
        let host = node.host();
        for s in &node.steps {
            self.versions.apply(host.as_str(), s);
            if let Some(v) = self.versions.violations().into_iter().next() {
                return Err(RollbackError::Skew {
                    node: host.to_string(),
                    why: v,
                });
            }
        }
        let phase = if node
            .steps
            .iter()
            .any(|s| matches!(s, Step::KubeadmDowngrade { .. }))
        {
            "rollback: control plane"
        } else {
            "rollback: kubelets"
        };
        self.batches.push(Batch {
            label,
            phase: phase.into(),
            nodes: vec![node],
        });
        self.why.push(why);
        Ok(())
    }

    /// The batch that takes `host`'s kubelet and kubectl (and kubeadm with `kubeadm`) to
    /// `version`, with the kubelet config the node had when it ran `version`.
    fn kubelet(
        &mut self,
        host: &Host,
        h: &HostHistory,
        version: Version,
        kubeadm: bool,
        source: &str,
    ) -> Result<(), RollbackError> {
        let run = self.fwd.run();
        let missing = |what| RollbackError::MissingInput {
            node: host.to_string(),
            run,
            what,
        };
        let before = h.before.as_ref().ok_or(missing("preflight facts"))?;
        if before.get("pkg_kubelet").is_none_or(String::is_empty) {
            return Err(missing("installed kubelet package (pkg_kubelet)"));
        }
        if kubeadm && before.get("pkg_kubeadm").is_none_or(String::is_empty) {
            return Err(missing("installed kubeadm package (pkg_kubeadm)"));
        }
        // The config the node had at `version`; a node that never ran it (all hops in one
        // drain) gets the newest it had below it: a kubelet reads older configs.
        let (config_version, config) = h
            .configs
            .iter()
            .filter_map(|(v, path)| v.parse::<Version>().ok().map(|v| (v, path)))
            .filter(|(v, _)| *v <= version)
            .max_by_key(|(v, _)| *v)
            .map(|(v, path)| (v, path.clone()))
            .ok_or(missing(
                "kubelet config backup (kubelet_config_backup) of that version or older",
            ))?;
        let now = self
            .versions
            .nodes
            .get(host.as_str())
            .map_or(version, |(k, _)| *k);
        // The flags file, instance config, kubelet.conf.d and CRI-socket annotation kubeadm
        // rewrote, from the same version as the config.
        let files = h.files.get(&config_version).cloned();
        let mut config_note = if config_version == version {
            "the kubelet config it had then put back".to_string()
        } else {
            format!("its kubelet config from {config_version} put back (it never ran {version})")
        };
        if let Some(Step::RestoreKubeletFiles { cri_socket, .. }) = &files {
            config_note.push_str(
                ", with kubeadm-flags.env, instance-config.yaml and kubelet.conf.d as they were",
            );
            if cri_socket.is_some() {
                config_note.push_str(" and its CRI-socket annotation");
            }
        }
        let why = format!(
            "{host}: kubelet and kubectl {now} → {version} ({source}{}), {config_note}; cordoned and drained first{}",
            // The package the preflight saw installed, when that is where it goes back to.
            match before.get("pkg_kubelet") {
                Some(p) if before.get("kubelet_before") == Some(&version.to_string()) => {
                    format!(", package {p}")
                }
                _ => String::new(),
            },
            if before.get("unschedulable").map(String::as_str) == Some("true") {
                ", left cordoned (it was cordoned before the run)"
            } else {
                ", uncordoned after"
            }
        );
        let name = self.entry(format!("{host}@kubelet"), version);
        let node = NodePlan {
            name: if self.tagged {
                name
            } else {
                Entry::new(host.as_str())
            },
            host: Some(host.clone()).filter(|_| self.tagged),
            role: h.role.unwrap_or(Role::Worker),
            from: now,
            steps: node_steps(version, config, kubeadm, files),
            estimate_secs: 0,
        };
        self.push(format!("rollback {host} to {version}"), node, why)
    }

    fn finish(self, etcd: String) -> RollbackPlan {
        let run = self.fwd.run();
        RollbackPlan {
            undoes: run,
            plan: Plan {
                target: self.versions.newest_apiserver(),
                batches: self.batches,
                undoes: Some(run),
            },
            why: self.why,
            etcd,
        }
    }
}

/// `--to`: the whole cluster one minor back (see the module doc for the order and why).
fn plan_to(
    fwd: &Forward,
    to: Version,
    req: &RollbackRequest,
) -> Result<RollbackPlan, RollbackError> {
    let run = fwd.run();
    let current = fwd
        .versions
        .newest_apiserver()
        .ok_or(RollbackError::NoRun)?;
    if to >= current {
        return Err(RollbackError::NotOlder { to, current });
    }
    if to.major != current.major || to.minor + 1 != current.minor {
        return Err(RollbackError::NotOneMinor {
            to,
            current,
            major: current.major,
            minor: current.minor.saturating_sub(1),
        });
    }
    if let Some(before) = fwd.state.apiserver_before.filter(|b| to < *b) {
        return Err(RollbackError::BelowRun { to, before, run });
    }
    let mut out = Rollback::new(fwd);
    one_minor_back(&mut out, to)?;
    // The snapshot taken before the control plane went past `to`.
    let past = fwd
        .hops_started
        .iter()
        .filter(|(v, _)| *v > to)
        .map(|(_, at)| *at)
        .min();
    let snapshot = fwd
        .snapshots
        .iter()
        .rfind(|s| past.is_none_or(|p| s.at <= p));
    if let EtcdChoice::RestoreSnapshot { confirm_data_loss } = req.etcd {
        let etcd = etcd::restore(
            &mut out,
            fwd,
            to,
            snapshot,
            req.now,
            confirm_data_loss || req.preview,
        )?;
        return Ok(out.finish(etcd));
    }
    let mut etcd = "etcd stays at its newer version, with its data: kubeadm does not downgrade \
                    etcd (\"won't downgrade etcd\"), so the older apiservers talk to the newer \
                    etcd, as after kubeadm's own one-minor downgrade (1.34 ships etcd 3.6, 1.33 \
                    ships 3.5)."
        .to_string();
    // Named, kept, not restored.
    if let Some(s) = snapshot {
        etcd.push_str(&format!(
            " The snapshot taken before the upgrade past {to} ({} on {}, {}{}) is kept; \
             restoring it would lose every write since, and a rollback never chooses it by itself.",
            s.path,
            s.host,
            upgraded_events::window::rfc3339(s.at),
            s.revision
                .as_deref()
                .map(|r| format!(", revision {r}"))
                .unwrap_or_default()
        ));
    } else {
        etcd.push_str(" A rollback never restores an etcd snapshot by itself.");
    }
    Ok(out.finish(etcd))
}

/// The whole run back (policy `gates.onFailure: rollback-run`): the control plane down one
/// minor at a time to where the run started (each minor as `--to` does it), then every node
/// the run changed to the versions its preflight recorded. etcd is kept.
pub fn whole_run(
    records: &[Record],
    rollbacks: &[Vec<Record>],
) -> Result<RollbackPlan, RollbackError> {
    let fwd = Forward::read(records, rollbacks)?;
    let run = fwd.run();
    let before = fwd
        .state
        .apiserver_before
        .ok_or(RollbackError::MissingInput {
            node: "the cluster".into(),
            run,
            what: "apiserver version before the run (ClusterObserved)",
        })?;
    let hops: Vec<Version> = fwd
        .state
        .plan
        .nodes()
        .flat_map(|(_, n)| &n.steps)
        .filter_map(|s| match s {
            Step::KubeadmUpgrade { version, .. } => Some(*version),
            _ => None,
        })
        .collect();
    let mut out = Rollback::new(&fwd);
    out.tagged = true;
    while let Some(current) = out.versions.newest_apiserver().filter(|c| *c > before) {
        let next = if current.major == before.major && current.minor <= before.minor + 1 {
            before
        } else {
            hops.iter()
                .copied()
                .filter(|v| v.major == current.major && v.minor + 1 == current.minor)
                .max()
                .ok_or(RollbackError::MissingInput {
                    node: "the cluster".into(),
                    run,
                    what: "the release of the minor between (a kubeadm hop through it)",
                })?
        };
        one_minor_back(&mut out, next)?;
    }
    // Then every node the run changed, back to what its preflight recorded.
    let mut rest: Vec<(&Host, &HostHistory, Version)> = Vec::new();
    for (host, h) in &fwd.hosts {
        let Some(was) = h
            .before
            .as_ref()
            .and_then(|b| b.get("kubelet_before"))
            .and_then(|v| v.parse::<Version>().ok())
        else {
            if h.packages_changed {
                return Err(RollbackError::MissingInput {
                    node: host.to_string(),
                    run,
                    what: "kubelet version (kubelet_before)",
                });
            }
            continue;
        };
        let now = out.versions.nodes.get(host.as_str()).map(|(k, _)| *k);
        if h.packages_changed && now != Some(was) {
            rest.push((host, h, was));
        }
    }
    rest.sort_by_key(|(host, h, _)| {
        (
            h.role == Some(Role::ControlPlane),
            fwd.order.iter().position(|o| o == *host),
        )
    });
    for (host, h, was) in rest {
        let kubeadm = h.kubeadm_changed && h.role != Some(Role::ControlPlane);
        out.kubelet(host, h, was, kubeadm, "recorded before the run")?;
    }
    Ok(out.finish(
        "etcd stays at its newer version, with its data: the whole run goes back through \
         kubeadm one minor at a time, and kubeadm does not downgrade etcd"
            .into(),
    ))
}

/// Every kubelet newer than `to` (workers, then control-plane nodes), then kube-proxy, then
/// the control plane one node at a time through `to`'s kubeadm; from the versions `out` has
/// reached so far.
fn one_minor_back(out: &mut Rollback<'_>, to: Version) -> Result<(), RollbackError> {
    let fwd = out.fwd;
    let run = fwd.run();
    let versions = out.versions.clone();
    // 1. Every kubelet newer than the target: workers, then control-plane nodes.
    let mut kubelets: Vec<(&Host, Version)> = Vec::new();
    for (name, (kubelet, _)) in &versions.nodes {
        if *kubelet > to {
            let host = fwd
                .hosts
                .keys()
                .find(|h| h.as_str() == name)
                .ok_or_else(|| RollbackError::NotByThisRun {
                    node: name.clone(),
                    what: "kubelet",
                    version: *kubelet,
                    to,
                    run,
                })?;
            kubelets.push((host, *kubelet));
        }
    }
    let rank = |host: &Host| {
        let h = &fwd.hosts[host];
        (
            h.role == Some(Role::ControlPlane),
            fwd.order.iter().position(|o| o == host),
        )
    };
    kubelets.sort_by_key(|(host, _)| rank(host));
    for (host, version) in kubelets {
        let h = &fwd.hosts[host];
        if !h.packages_changed {
            return Err(RollbackError::NotByThisRun {
                node: host.to_string(),
                what: "kubelet",
                version,
                to,
                run,
            });
        }
        // A control-plane node's kubeadm goes back with its control plane, below.
        let worker_kubeadm = h.kubeadm_changed && h.role != Some(Role::ControlPlane);
        out.kubelet(
            host,
            h,
            to,
            worker_kubeadm,
            "the version it ran during the run",
        )?;
    }
    // 2. kube-proxy, so it is never newer than an apiserver on the way down.
    let mut cps: Vec<(&String, Version)> = versions
        .control_plane
        .iter()
        .filter(|(_, c)| c[0] > to)
        .map(|(n, c)| (n, c[0]))
        .collect();
    cps.sort();
    let proxy_newer = versions.nodes.values().any(|(_, p)| *p > to);
    // 3. The control plane, one node at a time, through the target's kubeadm.
    for (i, (name, version)) in cps.iter().enumerate() {
        let host = fwd
            .hosts
            .keys()
            .find(|h| h.as_str() == name.as_str())
            .filter(|h| fwd.hosts[*h].control_plane_changed)
            .ok_or_else(|| RollbackError::NotByThisRun {
                node: name.to_string(),
                what: "kube-apiserver",
                version: *version,
                to,
                run,
            })?;
        let mut steps = Vec::new();
        if i == 0 && proxy_newer {
            steps.push(Step::KubeProxy { version: to });
        }
        steps.push(Step::KubeadmDowngrade {
            version: to,
            apply: i == 0,
        });
        steps.push(Step::Verify);
        // The control plane's checks (each apiserver, the mirror pods, etcd's quorum)
        // before the next node goes back.
        steps.push(Step::Checks {
            boundary: upgraded_events::check::Boundary::AfterControlPlaneNode,
        });
        let how = if i == 0 {
            format!(
                "kubeadm {to} then `kubeadm upgrade apply {to}`{}",
                if proxy_newer {
                    ", after kube-proxy's image goes to the same version"
                } else {
                    ""
                }
            )
        } else {
            format!("kubeadm {to} then `kubeadm upgrade node`")
        };
        let node = NodePlan {
            name: out.entry(format!("{host}@control-plane"), to),
            host: Some(host.clone()),
            role: Role::ControlPlane,
            from: *version,
            steps,
            estimate_secs: 0,
        };
        out.push(
            format!("rollback control plane {host} to {to}"),
            node,
            format!("{host}: control plane {version} → {to}: {how}; etcd stays as it is"),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PlanPolicy;
    use crate::{PlanInput, plan as forward_plan};
    use upgraded_events::event::Json;
    use upgraded_events::plan::{EtcdRestore, EtcdRestoreStage};
    use upgraded_events::{Actor, Timestamp};

    fn seed() -> (Inventory, PlanPolicy) {
        let inv = Inventory::from_kubectl_json(include_str!("../tests/fixtures/seed-cluster.json"))
            .expect("seed inventory");
        let policy = PlanPolicy::from_yaml(include_str!("../tests/fixtures/seed-policy.yaml"))
            .expect("seed policy");
        (inv, policy)
    }

    /// A forward run of the seed cluster to v1.35.3, as its log would hold it when every
    /// step succeeds; the node agents' preflight facts are what a node reports.
    fn forward(legacy: bool) -> Vec<Record> {
        let (inv, policy) = seed();
        let target = Version::new(1, 35, 3);
        let report = forward_plan(PlanInput {
            inventory: &inv,
            policy: &policy,
            target: Some(target),
            start: Timestamp(0),
        })
        .expect("plan");
        let plan = report.execution_plan();
        let run = RunId::from_u128(42);
        let mut events = vec![
            Event::ClusterObserved {
                apiserver: inv
                    .nodes
                    .iter()
                    .filter_map(|n| n.control_plane.as_ref().map(|c| c.apiserver))
                    .max()
                    .expect("apiserver"),
                inventory: Json(inv.clone()),
            },
            Event::RunPlanned {
                target,
                plan: Json(plan.clone()),
                policy: Json(Default::default()),
                by: Actor::daemon(),
            },
            Event::RunStarted {
                by: Actor::daemon(),
            },
        ];
        let mut kubelet: BTreeMap<String, Version> = inv
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.kubelet))
            .collect();
        for (_, n) in plan.nodes() {
            let host = n.host().to_string();
            for step in &n.steps {
                events.push(Event::StepStarted {
                    node: n.name.clone(),
                    step: step.clone(),
                    attempt: 1,
                });
                let mut facts = Facts::new();
                if *step == Step::Preflight {
                    let k = kubelet[&host].to_string();
                    facts.insert("kubelet_before".into(), k.clone());
                    facts.insert("unschedulable".into(), "false".into());
                    if !legacy {
                        facts.insert("kubelet_installed".into(), k.clone());
                        facts.insert("pkg_kubelet".into(), format!("{}-1.1", &k[1..]));
                        facts.insert("pkg_kubeadm".into(), format!("{}-1.1", &k[1..]));
                        facts.insert(
                            "kubelet_config_backup".into(),
                            format!("/var/lib/upgraded/kubelet-config/{k}.yaml"),
                        );
                    }
                }
                if let Step::UpgradePackages { version } = step {
                    kubelet.insert(host.clone(), *version);
                }
                if *step == Step::EtcdSnapshot {
                    let hop = n.steps.iter().find_map(|s| match s {
                        Step::KubeadmUpgrade { version, .. } => Some(*version),
                        _ => None,
                    });
                    if let Some(hop) = hop {
                        facts.insert(
                            "path".into(),
                            format!("/var/lib/etcd-snapshots/before-{hop}.db"),
                        );
                        facts.insert("revision".into(), format!("{}", hop.minor * 100));
                        if !legacy {
                            facts.insert("sha256".into(), format!("{:064x}", hop.minor));
                            facts.insert(
                                "local_copy".into(),
                                format!("/var/lib/upgraded/snapshots/{host}/before-{hop}.db"),
                            );
                            facts.insert(
                                "members".into(),
                                "cp-1=https://10.0.0.11:2380,cp-2=https://10.0.0.12:2380,cp-3=https://10.0.0.13:2380".into(),
                            );
                        }
                    }
                }
                events.push(Event::StepSucceeded {
                    node: n.name.clone(),
                    step: step.clone(),
                    attempt: 1,
                    facts,
                });
            }
        }
        events.push(Event::RunCompleted);
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| Record {
                run,
                seq: i as u64,
                at: Timestamp(i as i64 * 1000),
                epoch: 0,
                event,
            })
            .collect()
    }

    /// The first `n` records of `records`, then an abort (what an operator does before a
    /// rollback of a run that stopped there).
    fn stopped_at(records: &[Record], n: usize) -> Vec<Record> {
        let mut out: Vec<Record> = records[..n].to_vec();
        let last = out.last().map_or(0, |r| r.seq + 1);
        for (i, event) in [
            Event::AbortRequested {
                by: Actor::daemon(),
                reason: "stop".into(),
            },
            Event::RunAborted,
        ]
        .into_iter()
        .enumerate()
        {
            out.push(Record {
                run: records[0].run,
                seq: last + i as u64,
                at: Timestamp((last + i as u64) as i64 * 1000),
                epoch: 0,
                event,
            });
        }
        out
    }

    fn hosts(names: &[&str]) -> RollbackRequest {
        RollbackRequest {
            nodes: names.iter().map(|n| Host::new(*n)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_worker_goes_back_to_what_its_preflight_recorded_with_its_config() {
        let records = forward(false);
        let r = plan(&records, &[], &hosts(&["r640-01"])).expect("rollback");
        assert_eq!(r.undoes, RunId::from_u128(42));
        assert_eq!(r.plan.undoes, Some(RunId::from_u128(42)));
        assert_eq!(r.plan.batches.len(), 1);
        let n = &r.plan.batches[0].nodes[0];
        assert_eq!(n.host(), "r640-01");
        assert_eq!(n.from, Version::new(1, 35, 3));
        assert!(
            n.steps.contains(&Step::DowngradePackages {
                version: Version::new(1, 32, 4),
                kubelet_config: Some("/var/lib/upgraded/kubelet-config/v1.32.4.yaml".into()),
                kubeadm: true,
            }),
            "{:?}",
            n.steps
        );
        assert_eq!(
            n.steps.iter().position(|s| *s == Step::Drain),
            Some(2),
            "cordoned and drained before the downgrade"
        );
        assert!(r.why[0].contains("v1.35.3 → v1.32.4"), "{:?}", r.why);
        assert!(r.etcd.contains("not touched"));
    }

    #[test]
    fn what_a_rollback_cannot_do_is_refused_by_name() {
        let records = forward(false);
        let run = RunId::from_u128(42);
        // Still running: abort first.
        let running: Vec<Record> = records[..records.len() - 1].to_vec();
        assert!(matches!(
            plan(&running, &[], &hosts(&["r640-01"])),
            Err(RollbackError::NotFinished {
                phase: "running",
                ..
            })
        ));
        assert_eq!(
            plan(&records, &[], &hosts(&["nope"])),
            Err(RollbackError::UnknownNode {
                node: "nope".into(),
                run
            })
        );
        assert_eq!(
            plan(&records, &[], &RollbackRequest::default()),
            Err(RollbackError::NothingAsked)
        );
        let cp = plan(&records, &[], &hosts(&["cp-1"])).expect_err("control plane");
        assert!(matches!(cp, RollbackError::ControlPlane { .. }), "{cp}");
        // A run stopped before it reached a worker: nothing changed there.
        let early = stopped_at(&records, 10);
        assert!(matches!(
            plan(&early, &[], &hosts(&["r640-01"])),
            Err(RollbackError::Untouched { .. })
        ));
        // A run recorded before the preflight recorded packages: never a guess.
        let legacy = forward(true);
        let e = plan(&legacy, &[], &hosts(&["r640-01"])).expect_err("legacy");
        assert_eq!(
            e,
            RollbackError::MissingInput {
                node: "r640-01".into(),
                run,
                what: "installed kubelet package (pkg_kubelet)"
            }
        );
        assert!(
            e.to_string()
                .contains("recorded no installed kubelet package"),
            "{e}"
        );
    }

    fn to(v: &str) -> RollbackRequest {
        RollbackRequest {
            nodes: Vec::new(),
            to: Some(v.parse().expect("version")),
            ..Default::default()
        }
    }

    #[test]
    fn the_cluster_goes_back_one_minor_kubelets_first_then_kube_proxy_then_the_control_plane() {
        let records = forward(false);
        let r = plan(&records, &[], &to("v1.34.6")).expect("rollback --to");
        assert_eq!(r.plan.target, Some(Version::new(1, 34, 6)));
        let order: Vec<(String, Vec<String>)> = r
            .plan
            .nodes()
            .map(|(_, n)| {
                (
                    n.name.to_string(),
                    n.steps.iter().map(|s| s.name().to_string()).collect(),
                )
            })
            .collect();
        let first_cp_pass = order
            .iter()
            .position(|(n, _)| n.ends_with("@control-plane"))
            .expect("control plane passes");
        // Every kubelet pass comes before the control plane, workers before control planes.
        assert!(
            order[..first_cp_pass]
                .iter()
                .all(|(_, s)| s.contains(&"downgrade-packages".to_string()))
        );
        let first_cp_kubelet = order[..first_cp_pass]
            .iter()
            .position(|(n, _)| n.starts_with("cp-"))
            .expect("control-plane kubelets");
        assert!(
            order[first_cp_kubelet..first_cp_pass]
                .iter()
                .all(|(n, _)| n.starts_with("cp-"))
        );
        assert_eq!(
            order.len() - first_cp_pass,
            3,
            "three control-plane nodes: {order:?}"
        );
        assert_eq!(
            order[first_cp_pass].1,
            [
                "kube-proxy-image",
                "kubeadm-downgrade-apply",
                "verify",
                "checks"
            ],
            "{order:?}"
        );
        assert_eq!(
            order[first_cp_pass + 1].1,
            ["kubeadm-downgrade-node", "verify", "checks"]
        );
        assert!(r.etcd.contains("won't downgrade etcd"), "{}", r.etcd);
        // The snapshot taken before the control plane went past the target is named, kept.
        assert!(
            r.etcd
                .contains("/var/lib/etcd-snapshots/before-v1.35.3.db on cp-1")
                && r.etcd.contains("revision 3500")
                && r.etcd.contains("never chooses it by itself"),
            "{}",
            r.etcd
        );
        // Each state was checked; the end state is the target everywhere.
        let fwd = Forward::read(&records, &[]).expect("forward");
        let mut v = fwd.versions.clone();
        for (_, n) in r.plan.nodes() {
            for s in &n.steps {
                v.apply(n.host().as_str(), s);
                assert_eq!(v.violations(), Vec::<String>::new(), "after {} {s}", n.name);
            }
        }
        assert!(
            v.control_plane
                .values()
                .all(|c| c[0] == Version::new(1, 34, 6))
        );
        assert!(
            v.nodes
                .values()
                .all(|(k, p)| *k <= Version::new(1, 34, 6) && *p <= Version::new(1, 34, 6))
        );
    }

    fn restore(confirm: bool, preview: bool) -> RollbackRequest {
        RollbackRequest {
            etcd: EtcdChoice::RestoreSnapshot {
                confirm_data_loss: confirm,
            },
            // 2 h 5 min after the run's first record.
            now: Some(Timestamp(7_500_000)),
            preview,
            ..to("v1.34.6")
        }
    }

    #[test]
    fn a_restore_stops_every_apiserver_restores_every_member_then_restarts_in_order() {
        let records = forward(false);
        let r = plan(&records, &[], &restore(true, false)).expect("restore");
        // The kubeadm rollback first, unchanged; then the four stages, each over the
        // control-plane nodes.
        let kept = plan(&records, &[], &to("v1.34.6")).expect("keep");
        assert_eq!(
            r.plan.batches[..kept.plan.batches.len()],
            kept.plan.batches[..]
        );
        let stages: Vec<(String, Vec<String>)> = r.plan.batches[kept.plan.batches.len()..]
            .iter()
            .map(|b| {
                (
                    b.label.clone(),
                    b.nodes.iter().map(|n| n.name.to_string()).collect(),
                )
            })
            .collect();
        let on = |tag: &str| -> Vec<String> {
            ["cp-1", "cp-2", "cp-3"]
                .iter()
                .map(|h| format!("{h}@etcd-{tag}"))
                .collect()
        };
        assert_eq!(
            stages,
            vec![
                (
                    "etcd restore: stop every apiserver".to_string(),
                    on("stop-apiserver")
                ),
                (
                    "etcd restore: restore every member".to_string(),
                    on("restore")
                ),
                ("etcd restore: start every member".to_string(), on("start")),
                (
                    "etcd restore: restart the control plane".to_string(),
                    on("restart")
                ),
            ]
        );
        // Every member from the same snapshot, as a new cluster, each with its own name and
        // peer URL.
        let restores: Vec<&EtcdRestore> = r
            .plan
            .nodes()
            .flat_map(|(_, n)| &n.steps)
            .filter_map(|s| match s {
                Step::EtcdRestore(EtcdRestoreStage::Restore(x)) => Some(x),
                _ => None,
            })
            .collect();
        assert_eq!(restores.len(), 3);
        for (i, x) in restores.iter().enumerate() {
            assert_eq!(x.member, format!("cp-{}", i + 1));
            assert_eq!(x.peer_url, format!("https://10.0.0.1{}:2380", i + 1));
            assert_eq!(x.snapshot_sha256, format!("{:064x}", 35));
            assert_eq!(
                x.snapshot_copy,
                "/var/lib/upgraded/snapshots/cp-1/before-v1.35.3.db"
            );
            assert_eq!(x.token, restores[0].token);
            assert!(
                x.initial_cluster
                    .starts_with("cp-1=https://10.0.0.11:2380,cp-2=")
            );
        }
        assert!(
            restores[0].token.starts_with("upgraded-restore-"),
            "{}",
            restores[0].token
        );
        assert!(
            r.etcd.contains("EVERY WRITE MADE SINCE IS LOST")
                && r.etcd
                    .contains("/var/lib/etcd-snapshots/before-v1.35.3.db on cp-1")
                && r.etcd.contains("ago"),
            "{}",
            r.etcd
        );
        // The control plane is verified after its restart.
        let last = r.plan.batches.last().expect("stages");
        assert!(
            last.nodes
                .iter()
                .all(|n| n.steps.last() == Some(&Step::Verify))
        );
    }

    #[test]
    fn a_restore_needs_confirmation_names_its_age_and_goes_only_with_to() {
        let records = forward(false);
        let e = plan(&records, &[], &restore(false, false)).expect_err("unconfirmed");
        let text = e.to_string();
        assert!(
            matches!(e, RollbackError::Unconfirmed { .. })
                && text.contains("--confirm-data-loss")
                && text.contains("before-v1.35.3.db on cp-1"),
            "{text}"
        );
        // The snapshot is the last before the hop past v1.34.6; its age from `now`.
        let at = records
            .iter()
            .rfind(|r| {
                matches!(&r.event, Event::StepSucceeded { step: Step::EtcdSnapshot, facts, .. }
                    if facts.get("path").is_some_and(|p| p.contains("v1.35.3")))
            })
            .expect("snapshot")
            .at;
        let age = upgraded_events::quantity::human_secs(((7_500_000 - at.0) / 1000) as u64);
        assert!(text.contains(&format!("{age} ago")), "{text} / {age}");
        // --plan shows it without the confirmation.
        assert!(plan(&records, &[], &restore(false, true)).is_ok());
        // Only with --to.
        for req in [
            RollbackRequest {
                etcd: EtcdChoice::RestoreSnapshot {
                    confirm_data_loss: true,
                },
                ..hosts(&["r640-01"])
            },
            RollbackRequest {
                etcd: EtcdChoice::RestoreSnapshot {
                    confirm_data_loss: true,
                },
                all: true,
                ..Default::default()
            },
        ] {
            assert_eq!(
                plan(&records, &[], &req),
                Err(RollbackError::RestoreNeedsTo)
            );
        }
        // A run that recorded no member list: named, never guessed.
        let with_snapshots = |f: &dyn Fn(&mut Facts)| {
            let mut out = forward(false);
            for r in &mut out {
                if let Event::StepSucceeded {
                    step: Step::EtcdSnapshot,
                    facts,
                    ..
                } = &mut r.event
                {
                    f(facts);
                }
            }
            out
        };
        let e = plan(
            &with_snapshots(&|f| {
                f.remove("members");
            }),
            &[],
            &restore(true, false),
        )
        .expect_err("no members");
        assert!(
            matches!(e, RollbackError::MissingInput { what, .. } if what.contains("(members)")),
            "{e}"
        );
        // A member on a machine the run does not know: every member or none.
        let odd = with_snapshots(&|f| {
            if let Some(m) = f.get_mut("members") {
                *m = m.replace("cp-3=", "etcd-9=");
            }
        });
        assert_eq!(
            plan(&odd, &[], &restore(true, false)),
            Err(RollbackError::MemberElsewhere {
                member: "etcd-9".into(),
                run: RunId::from_u128(42)
            })
        );
    }

    #[test]
    fn member_lists_hold_only_names_and_plain_urls() {
        assert_eq!(
            parse_members("cp-1=https://10.0.0.1:2380,cp-2=http://[fd00::2]:2380"),
            Ok(vec![
                ("cp-1".into(), "https://10.0.0.1:2380".into()),
                ("cp-2".into(), "http://[fd00::2]:2380".into())
            ])
        );
        for bad in [
            "",
            "cp-1",
            "cp-1=https://a:2380;reboot",
            "$(reboot)=https://a:2380",
            "cp-1=https://a:2380,cp-1=https://b:2380",
            "cp-1=ftp://a",
            "CP=https://a:2380",
            "cp-1=https://a b",
        ] {
            assert!(parse_members(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn more_than_one_minor_or_below_the_run_is_refused_as_kubeadm_would() {
        let records = forward(false);
        let e = plan(&records, &[], &to("v1.33.7")).expect_err("two minors");
        assert!(
            e.to_string()
                .contains("kubeadm can downgrade only one minor at a time")
                && e.to_string().contains("roll back to v1.34.x first"),
            "{e}"
        );
        assert!(matches!(
            plan(&records, &[], &to("v1.35.1")),
            Err(RollbackError::NotOneMinor { .. })
        ));
        assert!(matches!(
            plan(&records, &[], &to("v1.35.3")),
            Err(RollbackError::NotOlder { .. })
        ));
        let both = RollbackRequest {
            nodes: vec![Host::new("r640-01")],
            to: Some(Version::new(1, 34, 6)),
            ..Default::default()
        };
        assert_eq!(plan(&records, &[], &both), Err(RollbackError::BothScopes));
    }

    #[test]
    fn the_whole_run_goes_back_one_minor_at_a_time_to_where_it_started() {
        let records = forward(false);
        let r = whole_run(&records, &[]).expect("whole run");
        let fwd = Forward::read(&records, &[]).expect("forward");
        let mut v = fwd.versions.clone();
        let mut downgrades = Vec::new();
        for (_, n) in r.plan.nodes() {
            for s in &n.steps {
                v.apply(n.host().as_str(), s);
                assert_eq!(v.violations(), Vec::<String>::new(), "after {} {s}", n.name);
                if let Step::KubeadmDowngrade {
                    version,
                    apply: true,
                } = s
                {
                    downgrades.push(version.to_string());
                }
            }
        }
        // The automatic rollback (`rollback-run`) never restores etcd by itself: it has no
        // way to ask, and its plan holds no restore stage.
        assert!(
            r.plan
                .nodes()
                .all(|(_, n)| !n.steps.iter().any(|s| matches!(s, Step::EtcdRestore(_)))),
            "{:#?}",
            r.why
        );
        assert!(
            r.etcd.contains("etcd stays at its newer version"),
            "{}",
            r.etcd
        );
        // 1.35 → 1.34 → 1.33 → where it started, 1.32.4.
        assert_eq!(
            downgrades,
            ["v1.34.6", "v1.33.7", "v1.32.4"],
            "{:#?}",
            r.why
        );
        // Everything is where the run found it.
        let (inv, _) = seed();
        let start = versions_now(&inv);
        for (n, c) in &start.control_plane {
            assert_eq!(v.control_plane[n][0], c[0], "{n}");
        }
        for (n, (k, _)) in &start.nodes {
            assert_eq!(v.nodes[n].0, *k, "{n}");
        }
        // Entry names stay unique though hosts have several passes.
        let mut names: Vec<String> = r.plan.nodes().map(|(_, n)| n.name.to_string()).collect();
        let all = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

        /// Stopped anywhere, the derived rollback of every worker the run changed keeps the
        /// skew rules in every state and touches nothing the log does not show changed.
        #[test]
        fn a_rollback_of_a_run_stopped_anywhere_keeps_skew_and_touches_only_what_changed(
            cut in 3usize..2000,
        ) {
            let records = forward(false);
            let cut = cut % records.len();
            let stopped = stopped_at(&records, cut.max(3));
            let fwd = Forward::read(&stopped, &[]).expect("a finished run");
            let changed: Vec<Host> = fwd
                .hosts
                .iter()
                .filter(|(_, h)| h.packages_changed && !h.control_plane_changed)
                .map(|(host, _)| host.clone())
                .collect();
            if changed.is_empty() {
                return Ok(());
            }
            let r = plan(&stopped, &[], &RollbackRequest { nodes: changed.clone(), ..Default::default() })
                .map_err(|e| proptest::test_runner::TestCaseError::fail(e.to_string()))?;
            let mut v = fwd.versions.clone();
            let mut seen = Vec::new();
            for (_, n) in r.plan.nodes() {
                proptest::prop_assert!(changed.contains(&n.host()), "{} was not changed", n.host());
                seen.push(n.host());
                for s in &n.steps {
                    v.apply(n.host().as_str(), s);
                    proptest::prop_assert_eq!(v.violations(), Vec::<String>::new());
                }
            }
            seen.sort();
            let mut want = changed.clone();
            want.sort();
            proptest::prop_assert_eq!(seen, want);
        }

        /// Stopped anywhere after its control plane moved on, the cluster rolled back one
        /// minor keeps skew in every state, touches only what the run changed, and ends with
        /// every apiserver at the target and nothing newer: or it is refused by name.
        #[test]
        fn a_rollback_to_one_minor_back_of_a_run_stopped_anywhere_keeps_skew(
            cut in 3usize..2000,
        ) {
            let records = forward(false);
            let cut = cut % records.len();
            let stopped = stopped_at(&records, cut.max(3));
            let fwd = Forward::read(&stopped, &[]).expect("a finished run");
            let Some(current) = fwd.versions.newest_apiserver() else {
                return Ok(());
            };
            // The release of the previous minor the run passed through, if it did.
            let Some(to) = fwd.state.plan.batches.iter()
                .flat_map(|b| &b.nodes)
                .flat_map(|n| &n.steps)
                .filter_map(|s| match s {
                    Step::KubeadmUpgrade { version, .. } if version.minor + 1 == current.minor => Some(*version),
                    _ => None,
                })
                .next()
            else {
                return Ok(());
            };
            match plan(&stopped, &[], &RollbackRequest { to: Some(to), ..Default::default() }) {
                Ok(r) => {
                    let mut v = fwd.versions.clone();
                    for (_, n) in r.plan.nodes() {
                        let h = fwd.hosts.get(&n.host());
                        proptest::prop_assert!(
                            h.is_some_and(|h| h.packages_changed || h.control_plane_changed),
                            "{} was not changed by the run", n.host()
                        );
                        for s in &n.steps {
                            v.apply(n.host().as_str(), s);
                            proptest::prop_assert_eq!(v.violations(), Vec::<String>::new());
                        }
                    }
                    proptest::prop_assert!(v.control_plane.values().all(|c| c[0] == to));
                    proptest::prop_assert!(v.nodes.values().all(|(k, p)| *k <= to && *p <= to));
                }
                // A run stopped where something it did not change is newer than the target,
                // or before it recorded a needed input: refused by name, never guessed.
                Err(RollbackError::NotByThisRun { .. } | RollbackError::MissingInput { .. }) => {}
                Err(e) => return Err(proptest::test_runner::TestCaseError::fail(e.to_string())),
            }
        }
    }
}
