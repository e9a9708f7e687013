//! The command line: every verb, flag and environment variable `upgradectl` accepts.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use upgraded_ctl::default_socket;

#[derive(Debug, Parser)]
#[command(name = "upgradectl", version, about = "Drive and observe upgraded")]
pub struct Cli {
    /// The daemon's API socket.
    #[arg(long, global = true, env = "UPGRADED_SOCKET", default_value_os_t = default_socket())]
    pub socket: PathBuf,
    /// Seconds to wait for the daemon to connect and answer (a followed stream, once it
    /// has begun, is not bounded).
    #[arg(long, global = true, env = "UPGRADECTL_TIMEOUT", default_value_t = 60.0, value_parser = positive_secs)]
    pub timeout: f64,
    #[command(subcommand)]
    pub cmd: Cmd,
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds above 0 and at most 86400"
        )),
    }
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Plan an upgrade offline from a cluster snapshot; no daemon, no cluster.
    ///
    /// The snapshot is what `kubectl get nodes,pods,pdb,deploy,sts,ds -A -o json` prints.
    /// Exits 2 when the plan has blockers.
    Plan(PlanArgs),
    /// Plan and start an upgrade to a version (e.g. v1.35.3).
    Start {
        #[arg(long)]
        to: String,
        /// Print the plan without recording or starting anything.
        #[arg(long)]
        dry_run: bool,
        /// Start although the plan has blockers (recorded in the log as forced).
        #[arg(long)]
        force: bool,
    },
    /// Live progress: the run, each batch and each node under way, with blocked reasons.
    Watch {
        /// Redraw interval in milliseconds.
        #[arg(long, default_value_t = 500)]
        interval_ms: u64,
    },
    /// The active (or last) run, node by node.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        offline: Offline,
    },
    /// Stop starting new steps; steps in flight finish.
    Pause {
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Continue a paused or halted run (a halted step gets fresh attempts).
    Resume,
    /// Stop the run, uncordoning every node it cordoned.
    Abort {
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Roll nodes, or the cluster by one minor, back as the last run recorded them.
    ///
    /// Derived from the run's log. `--node`: each node is cordoned and drained, its kubelet,
    /// kubectl (and kubeadm, if the run changed it) go back with the kubelet config it had,
    /// then it is verified and uncordoned. `--to`: every kubelet newer than the target the
    /// same way, then kube-proxy, then the control plane one node at a time through the
    /// target's kubeadm; etcd stays as it is unless `--etcd restore-snapshot
    /// --confirm-data-loss`. `--all`: the whole run, one minor at a time.
    /// The run must be finished (abort it first).
    #[command(group(clap::ArgGroup::new("scope").required(true).args(["nodes", "to", "all"])))]
    Rollback {
        /// A node to roll back (repeat for several).
        #[arg(long = "node", value_name = "NAME", conflicts_with_all = ["to", "all"])]
        nodes: Vec<String>,
        /// Take the cluster back to this release, one minor below its control plane.
        #[arg(long, conflicts_with = "all")]
        to: Option<String>,
        /// Take the whole run back: the control plane one minor at a time to where the run
        /// started, then every node it changed to its recorded versions (etcd kept).
        #[arg(long)]
        all: bool,
        /// The run to undo (default: the newest).
        #[arg(long)]
        run: Option<String>,
        /// Print what would be done, in order, and why; start nothing.
        #[arg(long)]
        plan: bool,
        /// `keep` (default: etcd stays at its newer version with its data, as kubeadm
        /// leaves it) or `restore-snapshot` (with `--to` only: every apiserver stopped,
        /// every member restored from the snapshot taken before the control plane went past
        /// the target, as a new cluster, then everything restarted).
        #[arg(long, default_value = "keep", value_parser = ["keep", "restore-snapshot"])]
        etcd: String,
        /// Needed by `--etcd restore-snapshot`: every write made since the snapshot is lost.
        #[arg(long)]
        confirm_data_loss: bool,
        /// `table` (default) or `json`.
        #[arg(long, short = 'o', default_value = "table")]
        output: String,
    },
    /// A run's records as JSON lines.
    Events {
        /// Run id (default: the active run).
        #[arg(long)]
        run: Option<String>,
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Keep streaming until the run ends.
        #[arg(long, short, conflicts_with_all = ["file", "data_dir"])]
        follow: bool,
        #[command(flatten)]
        offline: Offline,
    },
    /// Write runs' records to one self-checking file (for an incident ticket; replay it
    /// anywhere with `replay --file`), or check one with `--verify`; or send a run's trace
    /// to an OpenTelemetry collector with `--otlp URL RUN` (the spans the daemon sends, with
    /// the same ids: a collector keeps one copy).
    Export {
        /// The run to export (default: every run; with --otlp, the last run).
        #[arg(long, conflicts_with = "verify")]
        run: Option<String>,
        /// The run, as `export --otlp URL RUN` names it.
        #[arg(value_name = "RUN", conflicts_with_all = ["run", "verify"])]
        run_id: Option<String>,
        /// Export from a (stopped) daemon's data dir, changing nothing in it.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["verify", "file"])]
        data_dir: Option<std::path::PathBuf>,
        /// With --otlp: read the run from an export file instead of the daemon.
        #[arg(long, value_name = "FILE", requires = "otlp")]
        file: Option<std::path::PathBuf>,
        /// The file to write (created 0600; never over an existing file).
        #[arg(
            long = "output",
            short = 'o',
            required_unless_present_any = ["verify", "otlp"],
            conflicts_with = "otlp"
        )]
        output: Option<std::path::PathBuf>,
        /// Check an export instead: intact, or where it is damaged.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["output", "otlp"])]
        verify: Option<std::path::PathBuf>,
        /// Send the run's trace to this collector over OTLP/HTTP (`http://127.0.0.1:4318`).
        #[arg(long, value_name = "URL")]
        otlp: Option<String>,
        /// With --otlp: the cluster's name in the spans (the daemon's `--cluster-name`).
        #[arg(long, default_value = "cluster", requires = "otlp")]
        cluster_name: String,
        /// With --otlp: the daemon's `--timeline-url` (`{run}` for the run id).
        #[arg(long, requires = "otlp")]
        timeline_url: Option<String>,
    },
    /// The run as it stood at an instant, folded from its log: phase and who paused or
    /// aborted it, each node's step and attempt, what was blocked or in flight, scale-ups not
    /// yet restored, where the daemon was down.
    Replay {
        /// `2026-11-30T03:12:00Z`, `+1h30m` (after the run's start) or `seq N`.
        #[arg(long)]
        at: String,
        /// Run id (default: the active run; offline, the last run).
        #[arg(long)]
        run: Option<String>,
        #[command(flatten)]
        offline: Offline,
        /// `table` (default) or `json`.
        #[arg(long, short = 'o', default_value = "table")]
        output: String,
    },
    /// A run's timeline: a Gantt chart of every node pass and step attempt, the waits,
    /// the daemon's down stretches and the operators' actions, in real time.
    Timeline {
        /// Run id (default: the active run; offline, the last run).
        #[arg(long)]
        run: Option<String>,
        #[command(flatten)]
        offline: Offline,
        /// Also write a self-contained HTML page (SVG, no script) to this new file.
        #[arg(long, value_name = "FILE")]
        html: Option<std::path::PathBuf>,
        /// `text` (default) or `chrome-trace` (Trace Event JSON for Perfetto).
        #[arg(long, default_value = "text", value_parser = ["text", "chrome-trace"])]
        format: String,
        /// Columns (default: $COLUMNS, else 100).
        #[arg(long)]
        width: Option<usize>,
    },
    /// The run history: kind (upgrade, or rollback of which run), from and to, how it
    /// ended, when it started, ended and was last active, who started it, steps and retries.
    Runs {
        #[command(flatten)]
        offline: Offline,
    },
    /// Rehearse an upgrade on a simulated copy of a cluster: the daemon's engine, planner to
    /// completion, in virtual time; nothing runs against the cluster. Runs
    /// `upgraded-rehearse` (installed beside upgradectl); `upgradectl rehearse --help` lists
    /// its options: --snapshot F [--policy P] [--to V] [-o table|json] [--timeline-html F]
    /// [--fault ...] [--assume-fixed] [--no-compare].
    #[command(disable_help_flag = true)]
    Rehearse {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// The daemon's notification sinks (policy `notifications:`).
    Notify {
        #[command(subcommand)]
        cmd: NotifyCmd,
    },
    /// A simulated cluster behind the Kubernetes API, to point kubectl at and rehearse drains.
    Sim {
        #[command(subcommand)]
        cmd: SimCmd,
    },
    /// Upgrade a built-in fake cluster (1 control plane + 5 workers, v1.32 → v1.35), live.
    Demo {
        #[arg(long, default_value = "v1.35.3")]
        to: String,
        /// `upgrade` (to the end); `rollback`: one hardware generation cannot run the new
        /// kubelet; its canary is rolled back by the daemon, then the operator rolls the
        /// control plane back one minor; `network`: the oldest generation's pod network
        /// breaks with the new kubelet; the canary's network check fails before its
        /// uncordon, the daemon rolls it back, parks it and halts.
        #[arg(long, default_value = "upgrade", value_parser = ["upgrade", "rollback", "network"])]
        scenario: String,
        /// Keep the demo's data directory afterwards.
        #[arg(long)]
        keep: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NotifyCmd {
    /// Send one synthetic event to the sink and print its answer.
    Test {
        /// The sink's `name` in the daemon's policy.
        sink: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SimCmd {
    /// Serve a built-in scenario until interrupted (Ctrl-C).
    Serve {
        /// seed (3 control planes + 12 workers), kind (the guide's 1 + 2 at v1.34.0), lab (1 + 3),
        /// lab-ha (3 + 2) or large-N (N nodes).
        #[arg(long, default_value = "seed")]
        scenario: String,
        /// Port on 127.0.0.1 (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Address to listen on; only loopback unless you mean it.
        #[arg(long, default_value = "127.0.0.1")]
        address: std::net::IpAddr,
        /// Where to write a kubeconfig for kubectl (`kubectl --kubeconfig FILE get nodes`).
        #[arg(long)]
        kubeconfig: PathBuf,
        /// Seed of the sim's randomness (pod names, uids).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How much faster than real time the sim's clock runs.
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
    },
    /// Write a built-in scenario as `kubectl get nodes,pods,pdb,deploy,sts,ds -A -o json`
    /// prints it: a snapshot for `plan` and `rehearse`.
    Snapshot {
        /// seed, kind, lab, lab-ha or large-N.
        #[arg(long, default_value = "seed")]
        scenario: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// First do what the plan's usual blockers ask: delete pods without a controller,
        /// move cgroup v1 machines to v2.
        #[arg(long)]
        assume_fixed: bool,
        /// The file to write (new, 0600); `-` for stdout.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

/// Where a read-only verb reads the log when not from the daemon.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Offline {
    /// Read an export (`upgradectl export`) instead of asking the daemon.
    #[arg(long, conflicts_with = "data_dir")]
    pub file: Option<std::path::PathBuf>,
    /// Read a (stopped) daemon's data dir, changing nothing in it, instead of asking the
    /// daemon.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<std::path::PathBuf>,
}

/// What `upgradectl plan` is given.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The kubectl List (JSON); `-` reads standard input.
    #[arg(long)]
    pub snapshot: PathBuf,
    /// Target version (default: the policy's `target`).
    #[arg(long)]
    pub to: Option<String>,
    /// Policy file (YAML); built-in defaults without it.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// `table` (default) or `json`.
    #[arg(long, short = 'o', default_value = "table")]
    pub output: String,
    /// Print the plan as a Markdown runbook instead.
    #[arg(long)]
    pub runbook: bool,
    /// Planned start, RFC 3339 (default: now); places batches in the maintenance windows.
    #[arg(long)]
    pub start: Option<String>,
    /// One apiserver instance's `/metrics`, captured (`kubectl get --raw /metrics
    /// --server https://NODE:6443 > NODE.txt`), as `[NAME=]FILE`; once per instance. Its
    /// deprecated-API series block the hop whose target removes them; the file's
    /// modification time is when it was read.
    #[arg(long = "apiserver-metrics", value_name = "[NAME=]FILE")]
    pub apiserver_metrics: Vec<String>,
    /// Helm 3 release Secrets (`kubectl get secrets -A -l owner=helm,status=deployed -o
    /// json`): their objects at removed API versions warn.
    #[arg(long = "helm-secrets", value_name = "FILE")]
    pub helm_secrets: Option<PathBuf>,
}
