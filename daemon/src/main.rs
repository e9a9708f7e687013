//! `upgraded`: the long-running upgrade daemon.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use upgraded_daemon::engine::{Daemon, RunDefaults};
use upgraded_daemon::fake::{FakeWorld, Inventory};
use upgraded_daemon::kube::KubeCluster;
use upgraded_daemon::log::SledLog;
use upgraded_daemon::outbox::{Outbox, OutboxConfig};
use upgraded_daemon::ports::{Clock, ClockAnchor, NodeExecutor, SystemClock};
use upgraded_daemon::remote::Scripts;
use upgraded_daemon::simagent::SimAgents;
use upgraded_daemon::ssh::{SshNodes, SshOptions};
use upgraded_daemon::steps::Ports;
use upgraded_events::planner::policy::PlanPolicy;
use upgraded_events::{Timestamp, Version};

#[derive(Debug, Parser)]
#[command(
    name = "upgraded",
    version,
    about = "Upgrades a kubeadm cluster one minor at a time, node by node, from a durable event log"
)]
struct Args {
    /// Where the event log lives.
    #[arg(long, env = "UPGRADED_DATA_DIR", default_value = "/var/lib/upgraded")]
    data_dir: PathBuf,
    /// The API socket (created with mode 0600).
    #[arg(
        long,
        env = "UPGRADED_SOCKET",
        default_value = "/run/upgraded/api.sock"
    )]
    socket: PathBuf,
    /// The policy file (YAML, `kind: UpgradePolicy`); without one, the defaults apply.
    #[arg(long, env = "UPGRADED_POLICY")]
    policy: Option<PathBuf>,
    /// The cluster's kubeconfig; without one, `$KUBECONFIG`, `~/.kube/config` or the
    /// in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long)]
    context: Option<String>,
    /// Run node commands through the node agents of a simulated cluster at this URL (the
    /// demo and rehearsals) instead of SSH.
    #[arg(long, conflicts_with = "fake_world")]
    sim_agents: Option<String>,
    /// Act on the file-backed fake world in this directory instead of a cluster.
    #[arg(long)]
    fake_world: Option<PathBuf>,
    /// Nodes of a newly created fake world: control-plane count and worker count.
    #[arg(long, default_value_t = 1)]
    fake_control_planes: usize,
    #[arg(long, default_value_t = 5)]
    fake_workers: usize,
    #[arg(long, default_value = "v1.32.4")]
    fake_version: Version,
    /// Real milliseconds each fake effect takes.
    #[arg(long, default_value_t = 20)]
    fake_delay_ms: u64,
    /// Virtual seconds per real second (demos run hours of soaks in seconds).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Upper bound of one remote command (it is also wrapped in `timeout` on the node).
    #[arg(long, default_value_t = 900)]
    command_timeout_secs: u64,
    /// SSH to the nodes (used unless --sim-agents or --fake-world): an ssh_config file
    /// instead of `~/.ssh/config`. Node names are the SSH destinations, so `Host` entries
    /// map them to addresses, users, ports and `ProxyJump` bastions.
    #[arg(long)]
    ssh_config: Option<PathBuf>,
    #[arg(long)]
    ssh_user: Option<String>,
    /// The private key to use (and only that one).
    #[arg(long)]
    ssh_identity: Option<PathBuf>,
    #[arg(long)]
    ssh_known_hosts: Option<PathBuf>,
    /// Trust and remember host keys not seen before (a changed key is still refused).
    #[arg(long)]
    ssh_accept_new_host_keys: bool,
    /// Where SSH control sockets live (default: `ssh/` next to the API socket).
    #[arg(long)]
    ssh_control_dir: Option<PathBuf>,
    /// An idle SSH master exits after this long (also after a `kill -9` of the daemon).
    #[arg(long, default_value_t = 60)]
    ssh_control_persist_secs: u64,
    /// Concurrent commands per node, below sshd's MaxSessions (10).
    #[arg(long, default_value_t = 4)]
    ssh_max_sessions: usize,
    #[arg(long, default_value_t = 10)]
    ssh_connect_timeout_secs: u64,
    #[arg(long, default_value_t = 5)]
    ssh_alive_interval_secs: u64,
    /// Publish progress to this NATS server's JetStream (optional; without it `watch` reads
    /// the daemon's own stream).
    #[arg(long, env = "UPGRADED_NATS_URL")]
    nats_url: Option<String>,
    /// The cluster's name in subjects: `upgrades.<cluster>.<run>.<node>.<event>`.
    #[arg(long, default_value = "cluster")]
    cluster_name: String,
    /// The JetStream stream (created on `upgrades.>` when missing).
    #[arg(long, default_value = upgraded_daemon::outbox::DEFAULT_STREAM)]
    nats_stream: String,
    #[arg(long, default_value_t = 5)]
    nats_ack_timeout_secs: u64,
    /// Move an unreadable tail of a run's log to the quarantine tree and open anyway.
    #[arg(long)]
    repair_tail: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let (log, report) = SledLog::open(&args.data_dir, args.repair_tail)
        .with_context(|| format!("opening the event log in {}", args.data_dir.display()))?;
    for (run, seq) in &report.quarantined {
        tracing::warn!(%run, seq, "quarantined an unreadable record at the tail of the run");
    }
    tracing::info!(
        runs = report.runs,
        records = report.records,
        "event log verified"
    );
    let policy = match &args.policy {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the policy {}", path.display()))?;
            PlanPolicy::from_yaml(&text)
                .map_err(|e| anyhow::anyhow!("policy {}: {e}", path.display()))?
        }
        None => PlanPolicy::default(),
    };
    let last_at = log_last_time(&log)?;
    let clock: Arc<dyn Clock> = Arc::new(clock(&args, last_at)?);
    let command_timeout = Duration::from_secs(args.command_timeout_secs);
    let mut ssh_for_shutdown: Option<Arc<SshNodes>> = None;
    let ports = if let Some(dir) = &args.fake_world {
        let inventory = Inventory::generate(
            args.fake_control_planes,
            args.fake_workers,
            args.fake_version,
        );
        let world = Arc::new(
            FakeWorld::open(
                dir,
                Some(&inventory),
                Duration::from_millis(args.fake_delay_ms),
            )
            .context("opening the fake world")?,
        );
        Ports {
            cluster: world.clone(),
            nodes: world,
            command_timeout,
        }
    } else {
        let cluster = KubeCluster::connect(args.kubeconfig.as_deref(), args.context.as_deref())
            .await
            .context("connecting to the Kubernetes API")?;
        let nodes: Arc<dyn NodeExecutor> = match &args.sim_agents {
            Some(url) => Arc::new(SimAgents::new(url).context("--sim-agents")?),
            None => {
                let ssh = Arc::new(ssh_nodes(&args, &policy)?);
                ssh_for_shutdown = Some(ssh.clone());
                ssh
            }
        };
        Ports {
            cluster: Arc::new(cluster),
            nodes,
            command_timeout,
        }
    };
    if let Some(url) = &args.nats_url {
        let cfg = OutboxConfig {
            url: url.clone(),
            cluster: args.cluster_name.clone(),
            stream: args.nats_stream.clone(),
            ack_timeout: Duration::from_secs(args.nats_ack_timeout_secs.max(1)),
            cursor_path: args.data_dir.join("outbox-cursor.json"),
            duplicate_window: Duration::from_secs(3600),
        };
        Outbox::new(log.clone(), cfg)
            .context("starting the NATS outbox")?
            .spawn();
    }
    let defaults = RunDefaults { policy };
    let (daemon, mut fatal) = Daemon::new(log, clock, ports, defaults);
    daemon
        .recover()
        .await
        .context("resuming the unfinished run")?;
    let api = upgraded_daemon::api::serve(daemon.clone(), &args.socket, 0o600);
    tokio::select! {
        r = api => r.with_context(|| format!("serving the API on {}", args.socket.display()))?,
        Some(e) = fatal.recv() => return Err(anyhow::Error::new(e).context("the engine stopped")),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; in-flight steps will be resolved on the next start"),
    }
    if let Some(ssh) = ssh_for_shutdown {
        ssh.close().await;
    }
    Ok(())
}

fn ssh_nodes(args: &Args, policy: &PlanPolicy) -> anyhow::Result<SshNodes> {
    let control_root = match &args.ssh_control_dir {
        Some(d) => d.clone(),
        None => args
            .socket
            .parent()
            .map(|p| p.join("ssh"))
            .unwrap_or_else(|| PathBuf::from("/run/upgraded/ssh")),
    };
    let mut o = SshOptions::new(control_root, args.data_dir.join("etcd-snapshots"));
    o.config_file = args.ssh_config.clone();
    o.user = args.ssh_user.clone();
    o.identity = args.ssh_identity.clone();
    o.known_hosts = args.ssh_known_hosts.clone();
    o.accept_new_host_keys = args.ssh_accept_new_host_keys;
    o.control_persist_secs = args.ssh_control_persist_secs;
    o.max_sessions = args.ssh_max_sessions;
    o.connect_timeout_secs = args.ssh_connect_timeout_secs;
    o.alive_interval_secs = args.ssh_alive_interval_secs;
    SshNodes::new(o, Scripts::of(policy)).context("setting up SSH to the nodes")
}

/// Real time, or an accelerated clock anchored in the data dir (so virtual time keeps
/// passing while the daemon is down, as real time would).
fn clock(args: &Args, last_at: Timestamp) -> anyhow::Result<SystemClock> {
    if args.time_scale == 1.0 {
        return Ok(SystemClock::new(1.0, last_at));
    }
    let path = args.data_dir.join("clock-anchor.json");
    let anchor = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice::<ClockAnchor>(&b).with_context(|| {
            format!(
                "{} is unreadable; remove it to restart the accelerated clock",
                path.display()
            )
        })?,
        Err(_) => {
            let a = SystemClock::new_anchor(last_at);
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&a)?)
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            a
        }
    };
    Ok(SystemClock::anchored(
        args.time_scale,
        last_at,
        Some(anchor),
    ))
}

/// The newest record time, so an accelerated clock never restarts in the past.
fn log_last_time(log: &SledLog) -> anyhow::Result<Timestamp> {
    use upgraded_daemon::log::EventLog;
    let mut last = Timestamp(0);
    for run in log.runs()? {
        if let Some(r) = log.read(run, 0)?.last() {
            last = last.max(r.at);
        }
    }
    Ok(last)
}
