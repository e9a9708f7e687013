//! The operator's policy file (YAML, shaped like kubeadm's own config files), its validation
//! with errors that name the field, and the defaults that apply without one.
//!
//! ```yaml
//! apiVersion: upgraded.dev/v1alpha1
//! kind: UpgradePolicy
//! target: v1.35.3
//! packageManager: apt
//! generations: { label: node.kubernetes.io/instance-type, maxUnavailable: 2, canaries: 1 }
//! maintenanceWindows:
//!   - { days: [tue, wed, thu], start: "22:00", end: "04:00", timezone: Europe/Berlin }
//! ```

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use upgraded_events::Version;
use upgraded_events::check::{self, ChecksPolicy};
use upgraded_events::policy::{OnDrainBlocked, OnGateFailure, Policy};
use upgraded_events::quantity::duration_secs;
use upgraded_events::window::Window;

pub const API_VERSION: &str = "upgraded.dev/v1alpha1";
pub const KIND: &str = "UpgradePolicy";
pub use upgraded_events::check::DEFAULT_GENERATION_LABEL;

/// The policy file as written. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyFile {
    /// Must be `upgraded.dev/v1alpha1` when present.
    pub api_version: Option<String>,
    /// Must be `UpgradePolicy` when present.
    pub kind: Option<String>,
    /// Target version, like `v1.35.3` (the command line's `--to` wins).
    pub target: Option<String>,
    /// `apt` (default) or `dnf`.
    pub package_manager: Option<String>,
    pub catalog: Option<CatalogFile>,
    pub generations: Option<GenerationsFile>,
    /// How long a canary is watched before the rest of its generation (default `30m`).
    pub canary_soak: Option<String>,
    /// Pause after each batch before the next (default `5m`).
    pub wait_between_batches: Option<String>,
    /// `kubectl drain --timeout` (default `5m`).
    pub drain_timeout: Option<String>,
    /// `all` (default): a worker takes every pending minor inside one drain; `one`: one
    /// drain per minor.
    pub hops_per_drain: Option<String>,
    /// A node that differs from its generation in a field that must match (cgroup,
    /// container runtime): `block` (default) refuses the plan; `subgroup` upgrades the
    /// nodes alike in those fields after a canary of their own.
    pub drift: Option<String>,
    /// Kubelet config keys (as `/configz` names them) that must also agree within a
    /// generation, besides cgroupDriver, cpuManagerPolicy, topologyManagerPolicy,
    /// reservedSystemCPUs, evictionHard, maxPods and featureGates.
    pub drift_keys: Vec<String>,
    /// A node waiting for a reboot (`/var/run/reboot-required`, or a newer kernel installed
    /// than the one running): `block` (default) refuses the plan; `warn` only says so.
    pub pending_reboot: Option<String>,
    pub maintenance_windows: Vec<WindowFile>,
    pub gates: Option<GatesFile>,
    /// Per-step duration estimates, overriding the defaults (`drain: 3m`, `drainPerPod: 5s`).
    pub durations: BTreeMap<String, String>,
    /// How patient the daemon is with failing steps.
    pub retries: Option<RetriesFile>,
    /// What a drain may evict, and what happens when a PodDisruptionBudget refuses.
    pub drain: Option<DrainFile>,
    /// What an outage around a step (the API server refusing, 5xx, 429) may last: such
    /// failures are retried without using the step's attempts, and after `pauseAfter`
    /// (default `10m`) the run pauses with the reason.
    pub outage: Option<OutageFile>,
    /// How the node-side commands are carried out: package repository, etcd, backups.
    pub node: Option<NodeFile>,
    /// The checks that prove each upgraded node works before it is uncordoned: probe
    /// images, StorageClasses, Prometheus, checks turned off or changed, the operator's own.
    pub checks: Option<ChecksPolicy>,
    /// Who is told about runs: webhooks (CloudEvents 1.0, signed) and Slack incoming
    /// webhooks, each with the classes of events it gets.
    pub notifications: Vec<NotificationFile>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct OutageFile {
    /// How long before the run pauses (`10m`).
    pub pause_after: Option<String>,
    /// `auto` (default): the paused run resumes by itself once what did not answer answers
    /// again; `manual`: it waits for `upgradectl resume`.
    pub resume: Option<String>,
}

/// A notification sink as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NotificationFile {
    /// `[a-z0-9-]`, unique; `upgradectl notify test NAME` uses it.
    pub name: String,
    /// `webhook` or `slack`.
    pub kind: String,
    /// `https://…` (or `http://` on loopback and private networks).
    pub url: String,
    /// Webhook only: a file holding the HMAC-SHA256 key for `X-Upgraded-Signature`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// Webhook only: an environment variable of the daemon holding that key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// Classes: `run`, `canary`, `rollback`, `node` (default: all but `node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeFile {
    /// The package repository file on every node, rewritten for each minor hop.
    pub repository: Option<RepositoryFile>,
    pub etcd: Option<EtcdFile>,
    /// Where each control-plane node keeps its copies of `/etc/kubernetes/manifests` and
    /// `/etc/kubernetes/*.conf`, one folder per hop (default `/var/lib/upgraded/backup`).
    pub backup_dir: Option<String>,
    /// Preflight refuses a node whose `/var/lib/kubelet` file system is fuller than this
    /// (default 85).
    pub max_disk_used_percent: Option<u32>,
    /// A directory on every node of kubeadm patches (`kubeletconfiguration+strategic.yaml`,
    /// `kube-apiserver0+merge.yaml`, ...), passed to `kubeadm upgrade` as `--patches`: the
    /// way a node's own kubelet settings survive kubeadm regenerating its config.
    pub kubeadm_patches: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RepositoryFile {
    /// Default `/etc/apt/sources.list.d/kubernetes.list` (apt) or
    /// `/etc/yum.repos.d/kubernetes.repo` (dnf).
    pub file: Option<String>,
    /// The file's content, `{minor}` standing for `1.35` (pkgs.k8s.io has one repository
    /// per minor).
    pub template: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct EtcdFile {
    /// Default `https://127.0.0.1:2379`.
    pub endpoints: Option<String>,
    /// kubeadm's paths by default; an empty string leaves the flag out (plain-http etcd).
    pub cacert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    /// Where snapshots are written on the node (default `/var/lib/upgraded/etcd`).
    pub snapshot_dir: Option<String>,
    /// The etcd member's data dir on a control-plane node, as its manifest's `--data-dir`
    /// (default `/var/lib/etcd`): where a restore swaps the restored data in.
    pub data_dir: Option<String>,
    /// A snapshot older than this is taken again when the control-plane step begins
    /// (default `1h`).
    pub max_snapshot_age: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DrainFile {
    /// `park` (default): set the node aside, go on with the others and halt at the end;
    /// `pause`: pause the run at once.
    pub on_blocked: Option<String>,
    /// A parked node is uncordoned (default true) or left cordoned.
    pub uncordon_parked: Option<bool>,
    /// Evict pods that no controller will recreate (default false: the node is refused).
    pub evict_unmanaged_pods: Option<bool>,
    /// Evict pods with emptyDir volumes, losing their data (default true, as the runbook's
    /// `kubectl drain --delete-emptydir-data`; the plan warns about each such pod). False:
    /// such pods are refused, and the plan says so as a blocker.
    pub delete_empty_dir_data: Option<bool>,
    /// When a budget allows no eviction although all its pods are healthy, scale the pod's
    /// Deployment or StatefulSet up by one, drain, and restore the replicas (default false).
    pub scale_up_to_unblock: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CatalogFile {
    /// Latest patch to use per minor: `{"1.33": 7, "1.34": 6}`. Added to the built-in list.
    pub patches: BTreeMap<String, u16>,
    /// Package version string, `{version}` standing for `1.35.3`: `{version}-1.1` (apt,
    /// default) or `{version}-150500.1.1` (dnf).
    pub package_format: Option<String>,
    /// Only these patches, not the built-in list.
    pub replace_builtin: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CountOrPercent {
    Count(u32),
    /// Like `"25%"`.
    Percent(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct GenerationsFile {
    /// The node label naming the hardware generation.
    pub label: Option<String>,
    /// Generations oldest first; unlisted ones follow, oldest `creationTimestamp` first.
    pub order: Vec<String>,
    /// Nodes of one generation drained at once (number or percentage; default 1), always
    /// capped by what the rest of the cluster can absorb.
    pub max_unavailable: Option<CountOrPercent>,
    /// Canary nodes per generation, each soaked alone (default 1).
    pub canaries: Option<u32>,
    /// Per generation: `{hp-dl380: {maxUnavailable: 3}}`.
    pub overrides: BTreeMap<String, GenerationOverride>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct GenerationOverride {
    pub max_unavailable: Option<CountOrPercent>,
    pub canaries: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct WindowFile {
    /// `mon`…`sun`.
    pub days: Vec<String>,
    /// `HH:MM`, local to `timezone`.
    pub start: String,
    /// `HH:MM`; earlier than `start` means the window ends the next day.
    pub end: String,
    /// IANA name (`Europe/Berlin`) or `UTC` (default).
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct GatesFile {
    /// Roll back when pods in CrashLoopBackOff rise this many percentage points over the
    /// pre-upgrade baseline (default 5).
    pub crash_loop_increase_percent: Option<u32>,
    /// A node that is not Ready this long after its kubelet restart fails its verify step;
    /// a node whose agent has not answered this long (down, rebooting, cut off) is parked
    /// as it is, still cordoned, and the run goes on without it (a control-plane node halts
    /// the run instead) (default `10m`).
    pub node_ready_timeout: Option<String>,
    /// A control-plane node whose apiserver is not healthy this long after kubeadm fails
    /// the hop (default `10m`).
    pub control_plane_rejoin_timeout: Option<String>,
    /// What a node failing its verify gate (or a canary its soak) after `retries.maxAttempts`
    /// attempts in a row does: `rollback-node` (default; workers: back to its recorded
    /// versions, parked, the run halted; a control-plane node halts), `halt`, or
    /// `rollback-run` (any node: the run is aborted, then the whole run rolled back, the
    /// control plane one minor at a time, etcd kept).
    pub on_failure: Option<OnGateFailure>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RetriesFile {
    pub max_attempts: Option<u32>,
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    Apt,
    Dnf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MaxUnavailable {
    Count(u32),
    Percent(u32),
}

impl MaxUnavailable {
    /// Nodes at once for a generation of `size` nodes: a percentage rounds down, never
    /// below one.
    pub fn of(self, size: usize) -> usize {
        match self {
            MaxUnavailable::Count(n) => n as usize,
            MaxUnavailable::Percent(p) => (size * p as usize / 100).max(1),
        }
        .max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GenerationRule {
    pub max_unavailable: MaxUnavailable,
    pub canaries: u32,
}

/// Per-step duration estimates, seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Durations {
    pub preflight: u64,
    pub etcd_snapshot: u64,
    pub kubeadm_apply: u64,
    pub kubeadm_node: u64,
    pub cordon: u64,
    pub drain: u64,
    pub drain_per_pod: u64,
    pub upgrade_packages: u64,
    pub restart_kubelet: u64,
    pub verify: u64,
    pub uncordon: u64,
    /// How long an evicted pod's replacement takes to become Ready: the wait between two
    /// rounds of evictions a budget lets through (drains of a batch share its allowance).
    pub pod_ready: u64,
    /// A node's checks before its uncordon (probe pods scheduled, run and read).
    pub checks: u64,
}

impl Default for Durations {
    fn default() -> Self {
        Durations {
            preflight: 60,
            etcd_snapshot: 120,
            kubeadm_apply: 600,
            kubeadm_node: 180,
            cordon: 5,
            drain: 60,
            drain_per_pod: 5,
            upgrade_packages: 120,
            restart_kubelet: 60,
            verify: 120,
            uncordon: 5,
            pod_ready: 60,
            checks: 60,
        }
    }
}

/// The validated policy the planner works from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanPolicy {
    pub target: Option<Version>,
    pub package_manager: PackageManager,
    pub catalog: Catalog,
    pub generation_label: String,
    pub generation_order: Vec<String>,
    pub default_generation: GenerationRule,
    pub generation_overrides: BTreeMap<String, GenerationRule>,
    pub canary_soak_secs: u64,
    pub wait_between_batches_secs: u64,
    pub drain_timeout_secs: u64,
    pub all_hops_in_one_drain: bool,
    pub windows: Vec<Window>,
    pub crash_loop_increase_percent: u32,
    pub node_ready_timeout_secs: u64,
    pub control_plane_rejoin_timeout_secs: u64,
    /// What a worker's failed gate does (`gates.onFailure`).
    pub on_gate_failure: OnGateFailure,
    pub durations: Durations,
    pub max_attempts: u32,
    pub retry_backoff_secs: u64,
    pub retry_backoff_max_secs: u64,
    pub on_drain_blocked: OnDrainBlocked,
    pub uncordon_parked: bool,
    pub evict_unmanaged_pods: bool,
    pub delete_empty_dir_data: bool,
    pub scale_up_to_unblock: bool,
    /// `drift: subgroup`: a must-match outlier gets its own canary instead of blocking.
    pub drift_subgroups: bool,
    /// The kubelet config keys the agents read for drift: the built-in ones and `driftKeys`.
    pub drift_keys: Vec<String>,
    /// `pendingReboot: warn`: a pending reboot warns instead of blocking.
    pub pending_reboot_warns: bool,
    pub node: NodeCommands,
    pub checks: ChecksPolicy,
    /// How long an outage around a step may last before the run pauses (`outage.pauseAfter`).
    pub outage_pause_secs: u64,
    /// `outage.resume: auto`: a run paused for an outage resumes once it is over.
    pub outage_resume: bool,
    /// Notification sinks (the daemon's; not part of a run's recorded policy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<upgraded_events::notify::Sink>,
}

/// How node-side commands are rendered (validated values; the daemon quotes every one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCommands {
    pub repository_file: String,
    /// `{minor}` stands for `1.35`.
    pub repository_template: String,
    pub etcd_endpoints: String,
    /// Empty: the flag is left out.
    pub etcd_cacert: String,
    pub etcd_cert: String,
    pub etcd_key: String,
    pub etcd_snapshot_dir: String,
    pub etcd_data_dir: String,
    pub etcd_max_snapshot_age_secs: u64,
    pub backup_dir: String,
    pub max_disk_used_percent: u32,
    /// `kubeadm upgrade --patches DIR` (none: no patches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeadm_patches: Option<String>,
}

pub const APT_REPOSITORY_FILE: &str = "/etc/apt/sources.list.d/kubernetes.list";
pub const APT_REPOSITORY_TEMPLATE: &str = "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v{minor}/deb/ /";
pub const DNF_REPOSITORY_FILE: &str = "/etc/yum.repos.d/kubernetes.repo";
pub const DNF_REPOSITORY_TEMPLATE: &str = "[kubernetes]\nname=Kubernetes\nbaseurl=https://pkgs.k8s.io/core:/stable:/v{minor}/rpm/\nenabled=1\ngpgcheck=1\ngpgkey=https://pkgs.k8s.io/core:/stable:/v{minor}/rpm/repodata/repomd.xml.key\nexclude=kubelet kubeadm kubectl cri-tools kubernetes-cni";

impl NodeCommands {
    pub fn defaults(pm: PackageManager) -> NodeCommands {
        let (file, template) = match pm {
            PackageManager::Apt => (APT_REPOSITORY_FILE, APT_REPOSITORY_TEMPLATE),
            PackageManager::Dnf => (DNF_REPOSITORY_FILE, DNF_REPOSITORY_TEMPLATE),
        };
        NodeCommands {
            repository_file: file.into(),
            repository_template: template.into(),
            etcd_endpoints: "https://127.0.0.1:2379".into(),
            etcd_cacert: "/etc/kubernetes/pki/etcd/ca.crt".into(),
            etcd_cert: "/etc/kubernetes/pki/etcd/server.crt".into(),
            etcd_key: "/etc/kubernetes/pki/etcd/server.key".into(),
            etcd_snapshot_dir: "/var/lib/upgraded/etcd".into(),
            etcd_data_dir: "/var/lib/etcd".into(),
            etcd_max_snapshot_age_secs: 3600,
            backup_dir: "/var/lib/upgraded/backup".into(),
            max_disk_used_percent: 85,
            kubeadm_patches: None,
        }
    }

    /// The repository file's content for `minor` (`1.35`).
    pub fn repository(&self, major: u16, minor: u16) -> String {
        self.repository_template
            .replace("{minor}", &format!("{major}.{minor}"))
    }
}

impl Default for PlanPolicy {
    fn default() -> Self {
        PlanPolicy {
            target: None,
            package_manager: PackageManager::Apt,
            catalog: Catalog::builtin(),
            generation_label: DEFAULT_GENERATION_LABEL.into(),
            generation_order: Vec::new(),
            default_generation: GenerationRule {
                max_unavailable: MaxUnavailable::Count(1),
                canaries: 1,
            },
            generation_overrides: BTreeMap::new(),
            canary_soak_secs: 1800,
            wait_between_batches_secs: 300,
            drain_timeout_secs: 300,
            all_hops_in_one_drain: true,
            windows: Vec::new(),
            crash_loop_increase_percent: 5,
            node_ready_timeout_secs: 600,
            control_plane_rejoin_timeout_secs: 600,
            durations: Durations::default(),
            max_attempts: 3,
            retry_backoff_secs: 10,
            retry_backoff_max_secs: 300,
            on_drain_blocked: OnDrainBlocked::Park,
            on_gate_failure: OnGateFailure::RollbackNode,
            uncordon_parked: true,
            evict_unmanaged_pods: false,
            delete_empty_dir_data: true,
            scale_up_to_unblock: false,
            drift_subgroups: false,
            drift_keys: upgraded_events::drift::KUBELET_KEYS
                .iter()
                .map(|k| k.to_string())
                .collect(),
            pending_reboot_warns: false,
            node: NodeCommands::defaults(PackageManager::Apt),
            checks: ChecksPolicy::default(),
            notifications: Vec::new(),
            outage_pause_secs: 600,
            outage_resume: true,
        }
    }
}

impl NotificationFile {
    fn validate(&self, at: &str) -> Result<upgraded_events::notify::Sink, PolicyError> {
        use upgraded_events::notify::{Class, Secret, Sink, SinkKind};
        let field = |f: &str| format!("{at}.{f}");
        if self.name.is_empty()
            || self.name.len() > 40
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(err(
                field("name"),
                format!(
                    "{:?}: 1 to 40 of a-z, 0-9 and - (it names files and metrics)",
                    self.name
                ),
            ));
        }
        let kind = match self.kind.as_str() {
            "webhook" => SinkKind::Webhook,
            "slack" => SinkKind::Slack,
            o => {
                return Err(err(
                    field("kind"),
                    format!("{o:?}: expected webhook or slack"),
                ));
            }
        };
        let url = self.url.trim();
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        match rest {
            Some(r)
                if !r.is_empty() && !r.starts_with('/') && !url.contains(char::is_whitespace) => {}
            _ => {
                return Err(err(
                    field("url"),
                    format!("{:?}: expected an http:// or https:// URL", self.url),
                ));
            }
        }
        let secret = match (&self.secret_file, &self.secret_env) {
            (Some(_), Some(_)) => {
                return Err(err(
                    field("secretFile"),
                    "give secretFile or secretEnv, not both",
                ));
            }
            (Some(f), None) if f.starts_with('/') => Some(Secret::File(f.clone())),
            (Some(f), None) => {
                return Err(err(field("secretFile"), format!("{f:?}: an absolute path")));
            }
            (None, Some(e)) if !e.is_empty() => Some(Secret::Env(e.clone())),
            (None, Some(_)) => return Err(err(field("secretEnv"), "empty")),
            (None, None) => None,
        };
        if secret.is_some() && kind == SinkKind::Slack {
            return Err(err(
                field("secretFile"),
                "a Slack incoming webhook is not signed by us (its URL is the secret); \
                 secretFile and secretEnv are for webhooks",
            ));
        }
        let classes = match &self.events {
            None => Class::defaults(),
            Some(names) if names.is_empty() => {
                return Err(err(field("events"), "empty: leave it out for the default"));
            }
            Some(names) => names
                .iter()
                .map(|n| {
                    Class::ALL
                        .into_iter()
                        .find(|c| c.name() == n)
                        .ok_or_else(|| {
                            err(
                                field("events"),
                                format!("{n:?}: expected run, canary, rollback or node"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Sink {
            name: self.name.clone(),
            kind,
            url: url.to_string(),
            secret,
            classes,
        })
    }
}

impl PlanPolicy {
    pub fn generation_rule(&self, generation: &str) -> GenerationRule {
        self.generation_overrides
            .get(generation)
            .copied()
            .unwrap_or(self.default_generation)
    }

    /// Whether a node gets a checks step at `boundary`: some node check runs there as a
    /// probe (the daemon leaves out, at run time, those the cluster has no subject for).
    pub fn runs_node_checks(&self, boundary: check::Boundary) -> bool {
        check::catalog(&self.checks, &check::ClusterHas::everything(&self.checks))
            .is_ok_and(|(on, _)| !check::node_probe_checks(&on, boundary).is_empty())
    }

    /// Whether some generation- or cluster-scope check runs at `boundary`.
    pub fn runs_run_checks(&self, boundary: check::Boundary) -> bool {
        check::catalog(&self.checks, &check::ClusterHas::everything(&self.checks))
            .is_ok_and(|(on, _)| !check::run::run_scope_checks(&on, boundary).is_empty())
    }

    /// Whether a checks step at `boundary` has anything to run.
    pub fn runs_checks(&self, boundary: check::Boundary) -> bool {
        self.runs_node_checks(boundary) || self.runs_run_checks(boundary)
    }

    /// The part of the policy the engine needs while running.
    pub fn run_policy(&self) -> Policy {
        Policy {
            max_attempts: self.max_attempts,
            retry_backoff_secs: self.retry_backoff_secs,
            retry_backoff_max_secs: self.retry_backoff_max_secs,
            wait_between_batches_secs: self.wait_between_batches_secs,
            soak_secs: self.canary_soak_secs,
            drain_timeout_secs: self.drain_timeout_secs,
            on_drain_blocked: self.on_drain_blocked,
            uncordon_parked: self.uncordon_parked,
            evict_unmanaged_pods: self.evict_unmanaged_pods,
            delete_empty_dir_data: self.delete_empty_dir_data,
            scale_up_to_unblock: self.scale_up_to_unblock,
            crash_loop_increase_percent: self.crash_loop_increase_percent,
            node_ready_timeout_secs: self.node_ready_timeout_secs,
            etcd_snapshot_max_age_secs: self.node.etcd_max_snapshot_age_secs,
            windows: self.windows.clone(),
            on_gate_failure: self.on_gate_failure,
            checks: self.checks.clone(),
            generation_label: Some(self.generation_label.clone()),
            drift_keys: self.drift_keys.clone(),
            outage_pause_secs: self.outage_pause_secs,
            outage_resume: self.outage_resume,
            ..Policy::default()
        }
    }

    /// Parses and validates a policy file.
    pub fn from_yaml(text: &str) -> Result<PlanPolicy, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(err(
                "",
                format!(
                    "the file is {} bytes; a policy is at most {MAX_POLICY_BYTES}",
                    text.len()
                ),
            ));
        }
        let aliases = yaml_aliases(text);
        if aliases > MAX_YAML_ALIASES {
            return Err(err(
                "",
                format!(
                    "{aliases} YAML aliases (*name); a policy may use at most {MAX_YAML_ALIASES}, \
                     since each is expanded in full"
                ),
            ));
        }
        let de = serde_yaml::Deserializer::from_str(text);
        let file: PolicyFile = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            PolicyError {
                field: if path == "." { String::new() } else { path },
                problem: clean_yaml_error(&inner),
            }
        })?;
        file.validate()
    }
}

/// serde's messages name Rust-side things; keep what helps a person.
fn clean_yaml_error(msg: &str) -> String {
    msg.replace(
        "data did not match any variant of untagged enum CountOrPercent",
        "expected a number of nodes or a percentage like \"25%\"",
    )
}

/// A problem in the policy file: which field, and what is allowed there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy{}: {problem}", if field.is_empty() { String::new() } else { format!(" field `{field}`") })]
pub struct PolicyError {
    pub field: String,
    pub problem: String,
}

fn err(field: impl Into<String>, problem: impl Into<String>) -> PolicyError {
    PolicyError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// The longest duration a policy may name: a week. Soaks, waits, timeouts and step
/// estimates beyond it are typing mistakes, and they would push a plan's times past what a
/// timestamp holds.
pub const MAX_DURATION_SECS: u64 = 7 * 86_400;

/// A policy duration, bounded by [`MAX_DURATION_SECS`].
fn bounded_secs(field: &str, s: &str) -> Result<u64, PolicyError> {
    let n = duration_secs(s).map_err(|e| err(field, e))?;
    if n > MAX_DURATION_SECS {
        return Err(err(
            field,
            format!("{s:?} is longer than the 7d (168h) a policy duration may be"),
        ));
    }
    Ok(n)
}

fn secs(field: &str, v: &Option<String>, default: u64) -> Result<u64, PolicyError> {
    match v {
        None => Ok(default),
        Some(s) => bounded_secs(field, s),
    }
}

/// At most this many YAML aliases (`*name`) in a policy file: each is expanded in full, so a
/// few lines of nested aliases can ask for gigabytes ("billion laughs").
pub const MAX_YAML_ALIASES: usize = 64;
/// The largest policy file read.
pub const MAX_POLICY_BYTES: usize = 1 << 20;

/// Counts alias tokens (`*name` where a value starts), outside quotes and comments. An
/// over-count only refuses a strange file; it never lets one through.
fn yaml_aliases(text: &str) -> usize {
    let mut n = 0;
    for line in text.lines() {
        let mut quote: Option<char> = None;
        let mut prev = ' ';
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '#' && prev.is_whitespace() => break,
                None if c == '\'' || c == '"' => quote = Some(c),
                None if c == '*'
                    && (prev.is_whitespace() || "[{,:-".contains(prev))
                    && chars.peek().is_some_and(|d| !d.is_whitespace()) =>
                {
                    n += 1
                }
                None => {}
            }
            prev = c;
        }
    }
    n
}

fn max_unavailable(field: &str, v: &CountOrPercent) -> Result<MaxUnavailable, PolicyError> {
    match v {
        CountOrPercent::Count(0) => Err(err(field, "must be at least 1 (a node at a time)")),
        CountOrPercent::Count(n) => Ok(MaxUnavailable::Count(*n)),
        CountOrPercent::Percent(s) => {
            let p = s
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<u32>().ok())
                .filter(|p| (1..=100).contains(p))
                .ok_or_else(|| {
                    err(
                        field,
                        format!(
                            "{s:?}: expected a number of nodes or a percentage from 1% to 100%"
                        ),
                    )
                })?;
            Ok(MaxUnavailable::Percent(p))
        }
    }
}

fn hh_mm(field: &str, s: &str) -> Result<u16, PolicyError> {
    let bad = || {
        err(
            field,
            format!("{s:?}: expected a time of day as HH:MM (00:00 to 24:00)"),
        )
    };
    let (h, m) = s.split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_NAMES: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

impl PolicyFile {
    pub fn validate(&self) -> Result<PlanPolicy, PolicyError> {
        let mut p = PlanPolicy::default();
        if let Some(v) = self.api_version.as_deref().filter(|v| *v != API_VERSION) {
            return Err(err("apiVersion", format!("{v:?}: expected {API_VERSION}")));
        }
        if let Some(k) = self.kind.as_deref().filter(|k| *k != KIND) {
            return Err(err("kind", format!("{k:?}: expected {KIND}")));
        }
        if let Some(t) = &self.target {
            p.target =
                Some(upgraded_events::Version::parse_release(t).map_err(|e| {
                    err("target", format!("{e} (expected a version like v1.35.3)"))
                })?);
        }
        match self.package_manager.as_deref() {
            None | Some("apt") => {}
            Some("dnf") => {
                p.package_manager = PackageManager::Dnf;
                p.catalog.package_format = "{version}-150500.1.1".into();
                p.node = NodeCommands::defaults(PackageManager::Dnf);
            }
            Some(o) => return Err(err("packageManager", format!("{o:?}: expected apt or dnf"))),
        }
        if let Some(c) = &self.catalog {
            if c.replace_builtin {
                p.catalog.patches.clear();
            }
            for (minor, patch) in &c.patches {
                let key = format!("catalog.patches.{minor}");
                let m = Catalog::parse_minor(minor).map_err(|e| err(&key, e))?;
                p.catalog.patches.insert(m, *patch);
            }
            if let Some(f) = &c.package_format {
                Catalog::check_format(f).map_err(|e| err("catalog.packageFormat", e))?;
                p.catalog.package_format = f.clone();
            }
            if p.catalog.patches.is_empty() {
                return Err(err(
                    "catalog.patches",
                    "is empty: list at least the target's minor",
                ));
            }
        }
        if let Some(g) = &self.generations {
            if let Some(l) = &g.label {
                if l.is_empty() || l.chars().any(|c| c.is_whitespace()) {
                    return Err(err(
                        "generations.label",
                        format!("{l:?}: expected a label key"),
                    ));
                }
                p.generation_label = l.clone();
            }
            let mut seen = std::collections::BTreeSet::new();
            for (i, name) in g.order.iter().enumerate() {
                if !seen.insert(name) {
                    return Err(err(
                        format!("generations.order[{i}]"),
                        format!("{name:?} is listed twice"),
                    ));
                }
            }
            p.generation_order = g.order.clone();
            if let Some(m) = &g.max_unavailable {
                p.default_generation.max_unavailable =
                    max_unavailable("generations.maxUnavailable", m)?;
            }
            if let Some(c) = g.canaries {
                p.default_generation.canaries = c;
            }
            for (name, o) in &g.overrides {
                let mut rule = p.default_generation;
                if let Some(m) = &o.max_unavailable {
                    rule.max_unavailable = max_unavailable(
                        &format!("generations.overrides.{name}.maxUnavailable"),
                        m,
                    )?;
                }
                if let Some(c) = o.canaries {
                    rule.canaries = c;
                }
                p.generation_overrides.insert(name.clone(), rule);
            }
        }
        p.canary_soak_secs = secs("canarySoak", &self.canary_soak, p.canary_soak_secs)?;
        p.wait_between_batches_secs = secs(
            "waitBetweenBatches",
            &self.wait_between_batches,
            p.wait_between_batches_secs,
        )?;
        p.drain_timeout_secs = secs("drainTimeout", &self.drain_timeout, p.drain_timeout_secs)?;
        if p.drain_timeout_secs == 0 {
            return Err(err(
                "drainTimeout",
                "must be finite and above zero (a drain without a timeout can hang forever)",
            ));
        }
        p.all_hops_in_one_drain = match self.hops_per_drain.as_deref() {
            None | Some("all") => true,
            Some("one") => false,
            Some(o) => return Err(err("hopsPerDrain", format!("{o:?}: expected all or one"))),
        };
        p.drift_subgroups = match self.drift.as_deref() {
            None | Some("block") => false,
            Some("subgroup") => true,
            Some(o) => return Err(err("drift", format!("{o:?}: expected block or subgroup"))),
        };
        for (i, k) in self.drift_keys.iter().enumerate() {
            // A KubeletConfiguration field name (camelCase), nothing a shell or a path
            // could read otherwise.
            if k.is_empty() || k.len() > 64 || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(err(
                    format!("driftKeys[{i}]"),
                    format!("{k:?}: expected a kubelet config field name like podPidsLimit"),
                ));
            }
            if !p.drift_keys.contains(k) {
                p.drift_keys.push(k.clone());
            }
        }
        p.pending_reboot_warns = match self.pending_reboot.as_deref() {
            None | Some("block") => false,
            Some("warn") => true,
            Some(o) => {
                return Err(err(
                    "pendingReboot",
                    format!("{o:?}: expected block or warn"),
                ));
            }
        };
        for (i, w) in self.maintenance_windows.iter().enumerate() {
            let f = |k: &str| format!("maintenanceWindows[{i}].{k}");
            if w.days.is_empty() {
                return Err(err(f("days"), "is empty: list weekdays like [tue, wed]"));
            }
            let mut days = Vec::new();
            for (j, d) in w.days.iter().enumerate() {
                let lower = d.to_ascii_lowercase();
                let idx = DAYS
                    .iter()
                    .zip(DAY_NAMES)
                    .position(|(short, long)| lower == *short || lower == long)
                    .ok_or_else(|| {
                        err(
                            format!("maintenanceWindows[{i}].days[{j}]"),
                            format!(
                                "{d:?}: expected mon, tue, wed, thu, fri, sat or sun (or the \
                                 day's full name)"
                            ),
                        )
                    })?;
                days.push(idx as u8);
            }
            let start = hh_mm(&f("start"), &w.start)?;
            let end = hh_mm(&f("end"), &w.end)?;
            if start == end {
                return Err(err(f("end"), "equals start: the window would be empty"));
            }
            let tz = w.timezone.clone().unwrap_or_else(|| "UTC".into());
            if jiff::tz::TimeZone::get(&tz).is_err() {
                return Err(err(
                    f("timezone"),
                    format!("{tz:?} is not a known IANA time zone (like Europe/Berlin or UTC)"),
                ));
            }
            p.windows.push(Window {
                days,
                start_minute: start,
                end_minute: end,
                timezone: tz,
            });
        }
        if let Some(d) = &self.drain {
            p.on_drain_blocked = match d.on_blocked.as_deref() {
                None | Some("park") => OnDrainBlocked::Park,
                Some("pause") => OnDrainBlocked::Pause,
                Some(o) => {
                    return Err(err(
                        "drain.onBlocked",
                        format!("{o:?}: expected park or pause"),
                    ));
                }
            };
            p.uncordon_parked = d.uncordon_parked.unwrap_or(p.uncordon_parked);
            p.evict_unmanaged_pods = d.evict_unmanaged_pods.unwrap_or(false);
            p.delete_empty_dir_data = d.delete_empty_dir_data.unwrap_or(p.delete_empty_dir_data);
            p.scale_up_to_unblock = d.scale_up_to_unblock.unwrap_or(false);
        }
        if let Some(g) = &self.gates {
            if let Some(c) = g.crash_loop_increase_percent {
                if c > 100 {
                    return Err(err("gates.crashLoopIncreasePercent", "must be 0 to 100"));
                }
                p.crash_loop_increase_percent = c;
            }
            p.node_ready_timeout_secs = secs(
                "gates.nodeReadyTimeout",
                &g.node_ready_timeout,
                p.node_ready_timeout_secs,
            )?;
            p.control_plane_rejoin_timeout_secs = secs(
                "gates.controlPlaneRejoinTimeout",
                &g.control_plane_rejoin_timeout,
                p.control_plane_rejoin_timeout_secs,
            )?;
            p.on_gate_failure = g.on_failure.unwrap_or(p.on_gate_failure);
        }
        for (k, v) in &self.durations {
            let field = format!("durations.{k}");
            let s = bounded_secs(&field, v)?;
            let d = &mut p.durations;
            let slot = match k.as_str() {
                "preflight" => &mut d.preflight,
                "etcdSnapshot" => &mut d.etcd_snapshot,
                "kubeadmApply" => &mut d.kubeadm_apply,
                "kubeadmNode" => &mut d.kubeadm_node,
                "cordon" => &mut d.cordon,
                "drain" => &mut d.drain,
                "drainPerPod" => &mut d.drain_per_pod,
                "upgradePackages" => &mut d.upgrade_packages,
                "restartKubelet" => &mut d.restart_kubelet,
                "verify" => &mut d.verify,
                "uncordon" => &mut d.uncordon,
                "podReady" => &mut d.pod_ready,
                "checks" => &mut d.checks,
                _ => {
                    return Err(err(
                        field,
                        "unknown step: expected preflight, etcdSnapshot, kubeadmApply, kubeadmNode, cordon, drain, drainPerPod, upgradePackages, restartKubelet, verify, uncordon, podReady or checks",
                    ));
                }
            };
            *slot = s;
        }
        if let Some(n) = &self.node {
            n.apply(&mut p.node)?;
        }
        if let Some(c) = &self.checks {
            // Every subject present: a check the cluster turns off at run time is no error,
            // an id the catalog does not know is.
            check::catalog(c, &check::ClusterHas::everything(c))
                .map_err(|e| err("checks", e.to_string()))?;
            let mut c = c.clone();
            let http_only = |field: String, url: &str| {
                if url.starts_with("http://") {
                    Ok(())
                } else {
                    Err(err(
                        field,
                        format!(
                            "{url:?}: the daemon probes plain http:// URLs; for https use a command check (curl)"
                        ),
                    ))
                }
            };
            if let Some(u) = &c.prometheus_url {
                http_only("checks.prometheusUrl".into(), u)?;
            }
            if let Some(u) = &c.ingress_url {
                http_only("checks.ingressUrl".into(), u)?;
            }
            for (i, user) in c.user.iter_mut().enumerate() {
                if let Some(h) = &user.http {
                    http_only(format!("checks.user[{i}].http.url"), &h.url)?;
                }
                // A Job manifest is YAML (JSON is YAML too); the engine gets it as JSON, and
                // one that is no usable Job is refused here, not at its first boundary.
                if let Some(text) = &user.job {
                    let field = format!("checks.user[{i}].job");
                    let value: serde_json::Value = serde_yaml::from_str(text)
                        .map_err(|e| err(field.clone(), format!("not YAML: {e}")))?;
                    check::run::user_job(&value, "x", "x", &user.id, 0, None)
                        .map_err(|e| err(field.clone(), e.to_string()))?;
                    user.job = Some(value.to_string());
                }
            }
            p.checks = c;
        }
        if let Some(r) = &self.retries {
            if let Some(m) = r.max_attempts {
                if m == 0 {
                    return Err(err("retries.maxAttempts", "must be at least 1"));
                }
                p.max_attempts = m;
            }
            p.retry_backoff_secs = secs("retries.backoff", &r.backoff, p.retry_backoff_secs)?;
            p.retry_backoff_max_secs = secs(
                "retries.maxBackoff",
                &r.max_backoff,
                p.retry_backoff_max_secs,
            )?;
        }
        if let Some(o) = &self.outage {
            p.outage_pause_secs = secs("outage.pauseAfter", &o.pause_after, p.outage_pause_secs)?;
            p.outage_resume = match o.resume.as_deref() {
                None | Some("auto") => true,
                Some("manual") => false,
                Some(other) => {
                    return Err(err(
                        "outage.resume",
                        format!("{other:?}: expected auto or manual"),
                    ));
                }
            };
        }
        for (i, n) in self.notifications.iter().enumerate() {
            let sink = n.validate(&format!("notifications[{i}]"))?;
            if p.notifications.iter().any(|o| o.name == sink.name) {
                return Err(err(
                    format!("notifications[{i}].name"),
                    format!("{:?} is used twice; sink names are unique", sink.name),
                ));
            }
            p.notifications.push(sink);
        }
        Ok(p)
    }
}

/// A path on a node: absolute, printable, no `..` (it is quoted, but should also be sane).
fn node_path(field: &str, v: &str) -> Result<String, PolicyError> {
    if !v.starts_with('/')
        || v.split('/').any(|c| c == "..")
        || v.chars().any(|c| c.is_control())
        || v.len() > 200
    {
        return Err(err(
            field,
            format!("{v:?}: expected an absolute path without `..` or control characters"),
        ));
    }
    let trimmed = v.trim_end_matches('/');
    Ok(if trimmed.is_empty() { "/" } else { trimmed }.to_string())
}

impl NodeFile {
    fn apply(&self, n: &mut NodeCommands) -> Result<(), PolicyError> {
        if let Some(r) = &self.repository {
            if let Some(f) = &r.file {
                n.repository_file = node_path("node.repository.file", f)?;
            }
            if let Some(t) = &r.template {
                if !t.contains("{minor}") {
                    return Err(err(
                        "node.repository.template",
                        "must contain {minor}: pkgs.k8s.io has one repository per minor",
                    ));
                }
                if t.chars().any(|c| c.is_control() && c != '\n') {
                    return Err(err(
                        "node.repository.template",
                        "contains control characters other than line breaks",
                    ));
                }
                n.repository_template = t.clone();
            }
        }
        if let Some(e) = &self.etcd {
            if let Some(ep) = &e.endpoints {
                let ok = !ep.is_empty()
                    && ep.split(',').all(|u| {
                        (u.starts_with("https://") || u.starts_with("http://"))
                            && u.chars().all(|c| c.is_ascii_graphic())
                    });
                if !ok {
                    return Err(err(
                        "node.etcd.endpoints",
                        format!("{ep:?}: expected comma-separated http(s):// URLs"),
                    ));
                }
                n.etcd_endpoints = ep.clone();
            }
            for (field, v, slot) in [
                ("node.etcd.cacert", &e.cacert, &mut n.etcd_cacert),
                ("node.etcd.cert", &e.cert, &mut n.etcd_cert),
                ("node.etcd.key", &e.key, &mut n.etcd_key),
            ] {
                match v.as_deref() {
                    None => {}
                    Some("") => slot.clear(),
                    Some(p) => *slot = node_path(field, p)?,
                }
            }
            if let Some(d) = &e.snapshot_dir {
                n.etcd_snapshot_dir = node_path("node.etcd.snapshotDir", d)?;
            }
            if let Some(d) = &e.data_dir {
                n.etcd_data_dir = node_path("node.etcd.dataDir", d)?;
                if n.etcd_data_dir.matches('/').count() < 2 {
                    return Err(err(
                        "node.etcd.dataDir",
                        format!(
                            "{d:?}: a restore swaps this directory out; expected a directory below a top-level one"
                        ),
                    ));
                }
            }
            n.etcd_max_snapshot_age_secs = secs(
                "node.etcd.maxSnapshotAge",
                &e.max_snapshot_age,
                n.etcd_max_snapshot_age_secs,
            )?;
        }
        if let Some(b) = &self.backup_dir {
            n.backup_dir = node_path("node.backupDir", b)?;
        }
        if let Some(p) = &self.kubeadm_patches {
            n.kubeadm_patches = Some(node_path("node.kubeadmPatches", p)?);
        }
        if let Some(d) = self.max_disk_used_percent {
            if !(1..=100).contains(&d) {
                return Err(err("node.maxDiskUsedPercent", "must be 1 to 100"));
            }
            n.max_disk_used_percent = d;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(yaml: &str, field: &str, contains: &str) {
        let e = PlanPolicy::from_yaml(yaml).expect_err("must be refused");
        assert_eq!(e.field, field, "{e}");
        assert!(e.to_string().contains(contains), "{e}");
    }

    #[test]
    fn an_outage_pauses_after_the_policys_time() {
        assert_eq!(PlanPolicy::default().outage_pause_secs, 600);
        let p = PlanPolicy::from_yaml("outage: {pauseAfter: 30m}").expect("ok");
        assert_eq!(p.outage_pause_secs, 1800);
        assert_eq!(p.run_policy().outage_pause_secs, 1800);
        check_err("outage: {pauseAfter: soon}", "outage.pauseAfter", "soon");
        assert!(
            PlanPolicy::default().outage_resume,
            "resumes by itself by default"
        );
        let p = PlanPolicy::from_yaml("outage: {resume: manual}").expect("ok");
        assert!(!p.run_policy().outage_resume);
        assert!(
            PlanPolicy::from_yaml("outage: {resume: auto}")
                .expect("ok")
                .outage_resume
        );
        check_err("outage: {resume: sometimes}", "outage.resume", "sometimes");
        check_err(
            "outage: {pauseAftr: 1m}",
            "outage.pauseAftr",
            "unknown field",
        );
    }

    #[test]
    fn notification_sinks_are_read_and_their_mistakes_named() {
        use upgraded_events::notify::{Class, Secret, SinkKind};
        let p = PlanPolicy::from_yaml(
            "notifications:
  - name: ops
    kind: webhook
    url: https://hooks.example.org/upgrades
    secretFile: /etc/upgraded/ops.key
    events: [run, canary, rollback, node]
  - name: chat
    kind: slack
    url: https://hooks.slack.com/services/T/B/X
",
        )
        .expect("ok");
        assert_eq!(p.notifications.len(), 2);
        let ops = &p.notifications[0];
        assert_eq!(ops.kind, SinkKind::Webhook);
        assert_eq!(
            ops.secret,
            Some(Secret::File("/etc/upgraded/ops.key".into()))
        );
        assert!(ops.classes.contains(&Class::Node));
        assert_eq!(p.notifications[1].classes, Class::defaults());
        let sink = |rest: &str| format!("notifications:\n  - {{name: ops, {rest}}}");
        for (yaml, field, says) in [
            (sink("kind: webhook"), "notifications[0]", "missing field `url`"),
            (sink("kind: email, url: 'https://x'"), "notifications[0].kind", "webhook or slack"),
            (sink("kind: webhook, url: 'hooks.example.org'"), "notifications[0].url", "http"),
            (
                sink("kind: webhook, url: 'https://x', secretFile: /k, secretEnv: K"),
                "notifications[0].secretFile",
                "not both",
            ),
            (
                sink("kind: webhook, url: 'https://x', secretFile: k.key"),
                "notifications[0].secretFile",
                "absolute",
            ),
            (
                sink("kind: slack, url: 'https://x', secretEnv: K"),
                "notifications[0].secretFile",
                "URL is the secret",
            ),
            (
                sink("kind: webhook, url: 'https://x', events: [runs]"),
                "notifications[0].events",
                "\"runs\"",
            ),
            (
                sink("kind: webhook, url: 'https://x', evnets: [run]"),
                "notifications[0].evnets",
                "evnets",
            ),
            (
                "notifications: [{name: 'Ops Team', kind: slack, url: 'https://x'}]".to_string(),
                "notifications[0].name",
                "a-z",
            ),
            (
                "notifications: [{name: a, kind: slack, url: 'https://x'}, {name: a, kind: slack, url: 'https://y'}]".to_string(),
                "notifications[1].name",
                "twice",
            ),
        ] {
            check_err(&yaml, field, says);
        }
    }

    #[test]
    fn drift_keys_and_pending_reboots_are_read_and_their_mistakes_named() {
        let p = PlanPolicy::from_yaml("driftKeys: [podPidsLimit, maxPods]\npendingReboot: warn")
            .expect("ok");
        assert!(p.drift_keys.iter().any(|k| k == "podPidsLimit"));
        assert_eq!(
            p.drift_keys.iter().filter(|k| *k == "maxPods").count(),
            1,
            "a built-in key named again is read once"
        );
        assert!(p.pending_reboot_warns);
        let d = PlanPolicy::default();
        assert!(!d.pending_reboot_warns);
        assert_eq!(
            d.drift_keys.len(),
            upgraded_events::drift::KUBELET_KEYS.len()
        );
        check_err(
            "driftKeys: ['max pods']",
            "driftKeys[0]",
            "kubelet config field",
        );
        check_err(
            "driftKeys: ['$(reboot)']",
            "driftKeys[0]",
            "kubelet config field",
        );
        check_err("pendingReboot: later", "pendingReboot", "block or warn");
    }

    #[test]
    fn the_checks_section_is_read_and_its_mistakes_named() {
        // The README's example.
        let p = PlanPolicy::from_yaml(
            "checks:
  images: {probe: registry.example/agnhost:2.53}
  disable: [dns]
  overrides: {pod-network: {timeoutSecs: 300}}
",
        )
        .expect("ok");
        assert_eq!(p.checks.images.probe, "registry.example/agnhost:2.53");
        assert_eq!(p.run_policy().checks, p.checks);
        assert!(p.runs_node_checks(check::Boundary::AfterBatch));
        let with_job = PlanPolicy::from_yaml(
            "checks:
  user:
  - id: smoke
    job: |
      kind: Job
      spec: {template: {spec: {containers: [{name: t, image: curl}]}}}
",
        )
        .expect("ok");
        let job = with_job.checks.user[0].job.as_deref().expect("job");
        assert!(job.starts_with('{'), "kept as JSON: {job}");
        check_err(
            "checks: {user: [{id: smoke, job: 'kind: Pod'}]}",
            "checks.user[0].job",
            "its kind is not Job",
        );
        check_err(
            "checks: {prometheusUrl: 'https://prom:9090'}",
            "checks.prometheusUrl",
            "command check (curl)",
        );
        check_err(
            "checks: {disable: [pod-netwrok]}",
            "checks",
            "\"pod-netwrok\"",
        );
        check_err(
            "checks: {user: [{id: smoke, http: {url: 'http://x'}, command: [true]}]}",
            "checks",
            "exactly one of job, http, command",
        );
        assert!(PlanPolicy::from_yaml("checks: {prometheusURL: x}").is_err());
        // Every node check off: no checks step, and no rights asked for probes.
        let off =
            PlanPolicy::from_yaml("checks: {disable: [pod-network, dns, devices]}").expect("ok");
        assert!(!off.runs_node_checks(check::Boundary::AfterBatch));
    }

    #[test]
    fn empty_file_gives_defaults() {
        let p = PlanPolicy::from_yaml("{}").expect("ok");
        assert_eq!(p, PlanPolicy::default());
    }

    #[test]
    fn full_file_parses() {
        let p = PlanPolicy::from_yaml(
            r#"
apiVersion: upgraded.dev/v1alpha1
kind: UpgradePolicy
target: v1.35.3
packageManager: dnf
catalog: { patches: { "1.36": 1 } }
generations:
  label: example.com/generation
  order: [dell-r640, dell-r740]
  maxUnavailable: 25%
  overrides: { hp-dl380: { maxUnavailable: 3 } }
canarySoak: 1h
maintenanceWindows:
  - { days: [tue, thu], start: "22:00", end: "04:00", timezone: Europe/Berlin }
durations: { drain: 3m }
"#,
        )
        .expect("ok");
        assert_eq!(p.package_manager, PackageManager::Dnf);
        assert_eq!(
            p.default_generation.max_unavailable,
            MaxUnavailable::Percent(25)
        );
        assert_eq!(
            p.generation_rule("hp-dl380").max_unavailable,
            MaxUnavailable::Count(3)
        );
        assert_eq!(p.canary_soak_secs, 3600);
        assert_eq!(p.windows[0].start_minute, 22 * 60);
        assert_eq!(p.durations.drain, 180);
        assert_eq!(p.catalog.latest(1, 36), Some(Version::new(1, 36, 1)));
    }

    #[test]
    fn node_commands_default_per_package_manager_and_validate() {
        let apt = PlanPolicy::default().node;
        assert_eq!(
            apt.repository(1, 35),
            "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v1.35/deb/ /"
        );
        let dnf = PlanPolicy::from_yaml("packageManager: dnf")
            .expect("ok")
            .node;
        assert_eq!(dnf.repository_file, DNF_REPOSITORY_FILE);
        assert!(
            dnf.repository(1, 34)
                .contains("baseurl=https://pkgs.k8s.io/core:/stable:/v1.34/rpm/\n")
        );
        let p = PlanPolicy::from_yaml(
            "node: { etcd: { endpoints: 'http://127.0.0.1:2379', cacert: '', cert: '', key: '', maxSnapshotAge: 30m }, backupDir: /srv/backup/, kubeadmPatches: /etc/kubernetes/patches }",
        )
        .expect("ok");
        assert_eq!(p.node.etcd_cacert, "");
        assert_eq!(p.node.etcd_max_snapshot_age_secs, 1800);
        assert_eq!(p.node.backup_dir, "/srv/backup");
        assert_eq!(
            p.node.kubeadm_patches.as_deref(),
            Some("/etc/kubernetes/patches")
        );
        assert!(PlanPolicy::default().node.kubeadm_patches.is_none());
        check_err(
            "node: { kubeadmPatches: patches }",
            "node.kubeadmPatches",
            "absolute path",
        );
        check_err(
            "node: { repository: { template: 'deb https://x/v1.35/ /' } }",
            "node.repository.template",
            "{minor}",
        );
        check_err(
            "node: { backupDir: ../etc }",
            "node.backupDir",
            "absolute path",
        );
        check_err(
            "node: { etcd: { endpoints: '127.0.0.1:2379; reboot' } }",
            "node.etcd.endpoints",
            "http(s)://",
        );
        check_err(
            "node: { maxDiskUsedPercent: 0 }",
            "node.maxDiskUsedPercent",
            "1 to 100",
        );
    }

    #[test]
    fn limits_have_names_and_bounds() {
        check_err("canarySoak: 999999999999h", "canarySoak", "7d");
        check_err("durations: { drain: 8d }", "durations.drain", "7d");
        assert_eq!(
            PlanPolicy::from_yaml("canarySoak: 7d")
                .expect("a week is allowed")
                .canary_soak_secs,
            7 * 86_400
        );
        check_err(
            "maintenanceWindows: [{days: [monkey], start: '22:00', end: '02:00'}]",
            "maintenanceWindows[0].days[0]",
            "\"monkey\"",
        );
        let w = PlanPolicy::from_yaml(
            "maintenanceWindows: [{days: [Monday, tue], start: '22:00', end: '02:00'}]",
        )
        .expect("full names and short names");
        assert_eq!(w.windows[0].days, vec![0, 1]);
        check_err("target: v1.35.3-rc.1+abc", "target", "suffixes");
        // A billion laughs: refused before anything is expanded.
        let mut laughs = String::from("a: &a [lol]\n");
        for i in 0..200 {
            laughs.push_str(&format!("b{i}: &b{i} [*a, *a, *a]\n"));
        }
        let started = std::time::Instant::now();
        let e = PlanPolicy::from_yaml(&laughs).expect_err("aliases");
        assert!(e.to_string().contains("600 YAML aliases"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        // Quoted and commented stars are no aliases.
        assert_eq!(
            yaml_aliases("a: '*x'\nb: \"*y\" # *z\nc: [*w, *v]\nd: 2*3"),
            2
        );
    }

    #[test]
    fn errors_name_the_field_and_what_is_allowed() {
        check_err(
            "generations: { maxUnavailable: 0 }",
            "generations.maxUnavailable",
            "at least 1",
        );
        check_err(
            "generations: { maxUnavailable: 150% }",
            "generations.maxUnavailable",
            "1% to 100%",
        );
        check_err(
            "generations: { maxUnavailabel: 2 }",
            "generations.maxUnavailabel",
            "unknown field `maxUnavailabel`, expected one of",
        );
        check_err("packageManager: yum", "packageManager", "apt or dnf");
        check_err("target: 1.35", "target", "v1.35.3");
        check_err("canarySoak: soon", "canarySoak", "like 90s");
        check_err(
            "maintenanceWindows: [{days: [tue], start: '25:00', end: '02:00'}]",
            "maintenanceWindows[0].start",
            "HH:MM",
        );
        check_err(
            "maintenanceWindows: [{days: [someday], start: '22:00', end: '02:00'}]",
            "maintenanceWindows[0].days[0]",
            "mon, tue",
        );
        check_err(
            "maintenanceWindows: [{days: [tue], start: '22:00', end: '02:00', timezone: Mars/Olympus}]",
            "maintenanceWindows[0].timezone",
            "IANA",
        );
        check_err(
            "catalog: { packageFormat: '$(reboot)' }",
            "catalog.packageFormat",
            "{version}",
        );
        check_err("kind: ClusterConfiguration", "kind", "UpgradePolicy");
        check_err("drainTimeout: 0s", "drainTimeout", "finite");
        check_err(
            "durations: { coffee: 5m }",
            "durations.coffee",
            "unknown step",
        );
        check_err("- not a map", "", "");
    }
}
