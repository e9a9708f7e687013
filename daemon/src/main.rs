//! `upgraded`: the long-running upgrade daemon.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use opentelemetry_sdk::trace::SpanData;
use upgraded_daemon::cursor::Turn;
use upgraded_daemon::engine::{Daemon, EngineError, RunDefaults};
use upgraded_daemon::ha::{HaConfig, Term, supervise};
use upgraded_daemon::kube::KubeCluster;
use upgraded_daemon::log::ha::HaLog;
use upgraded_daemon::log::replica::ReplicaConfig;
use upgraded_daemon::log::{EventLog, OpenReport, Recovery, SledLog, witness};
use upgraded_daemon::notify::{Notify, NotifyConfig};
use upgraded_daemon::outbox::{Outbox, OutboxConfig};
use upgraded_daemon::ports::{Clock, ClockAnchor, NodeExecutor, SystemClock};
use upgraded_daemon::remote::Scripts;
use upgraded_daemon::simagent::SimAgents;
use upgraded_daemon::ssh::{SshNodes, SshOptions};
use upgraded_daemon::steps::Adapters;
use upgraded_daemon::traces::{TraceConfig, Traces};
use upgraded_events::lease::LeaseConfig;
use upgraded_events::trace::TraceContext;
use upgraded_events::{Timestamp, Version};
use upgraded_planner::policy::PlanPolicy;

const DEFAULT_SOCKET: &str = "/run/upgraded/api.sock";

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
    /// The daemon's own log on stderr: `text` for people, `json` (one object per line, with
    /// the run, entry, step and attempt it is about) for a log pipeline. `RUST_LOG` sets the
    /// level.
    #[arg(long, env = "UPGRADED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Serve `/metrics` (Prometheus text), `/healthz` and `/readyz` on this TCP address
    /// (`127.0.0.1:9464`); off when not given.
    #[arg(long, env = "UPGRADED_METRICS_ADDRESS")]
    metrics_address: Option<std::net::SocketAddr>,
    /// Send each run's trace to this OpenTelemetry collector over OTLP/HTTP (protobuf):
    /// `http://127.0.0.1:4318` (`/v1/traces` is added). Off when not given.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Upper bound of one request to the collector.
    #[arg(long, default_value_t = 10)]
    otlp_timeout_secs: u64,
    /// Where a run's HTML timeline is published (`upgradectl timeline RUN --html F`), with
    /// `{run}` for its id: spans and notifications link to it (a step: its `#step-…` anchor).
    /// Default: `file://<data dir>/timelines/{run}.html`.
    #[arg(long, env = "UPGRADED_TIMELINE_URL")]
    timeline_url: Option<String>,
    /// The API socket (created with mode 0600).
    #[arg(
        long,
        env = "UPGRADED_SOCKET",
        default_value = DEFAULT_SOCKET
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
    /// Act on the file-backed fake world in this directory instead of a cluster (test
    /// builds only: the `fake-world` feature, which scripts/test turns on).
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
    /// Accept the loss of records that neither sled nor the witness holds intact at the
    /// *end* of a run: their damaged bytes go to the quarantine tree and the run goes on from
    /// its last intact record (the daemon refuses to start until told so).
    #[arg(long)]
    repair_tail: bool,
    /// Rebuild one copy of the log from the other: sled's files, when sled cannot open them,
    /// are moved to `<data-dir>/damaged-<time>/` and the log rebuilt from the witness; a
    /// missing witness is written anew from sled's records.
    #[arg(long)]
    rebuild_log: bool,
    /// Open and check the log (restoring from one copy what the other lost, as a start
    /// would), print every record as a JSON line on stdout and exit.
    #[arg(long)]
    check_log: bool,
    /// Run as one of two or three instances on different hosts that share the NATS
    /// JetStream cluster at `--nats-url`: the one holding the lease leads, the others follow
    /// the replicated log and take over when it stops renewing. See README "High
    /// availability".
    #[arg(long, requires = "nats_url")]
    ha: bool,
    /// This instance's name in the lease, the log and `status` (default: the host's name).
    #[arg(long, env = "UPGRADED_INSTANCE")]
    instance: Option<String>,
    /// The lease's time to live: a leader that has not renewed it for this long has lost it.
    /// Every instance must use the same.
    #[arg(long, default_value_t = 15)]
    lease_ttl_secs: u64,
    /// How long a new leader waits before acting, so that the old one has stood down.
    #[arg(long, default_value_t = 5)]
    lease_campaign_secs: u64,
    /// A leader stops acting this long before its lease could pass to another (TTL minus
    /// this after its last renewal).
    #[arg(long, default_value_t = 3)]
    lease_margin_secs: u64,
    /// Copies JetStream keeps of the replicated log and the lease (3 on a three-server
    /// cluster).
    #[arg(long, default_value_t = 3)]
    ha_replicas: usize,
    /// The replicated log's stream (created on `upgraded.log.>` when missing).
    #[arg(long, default_value = "UPGRADED_LOG")]
    ha_stream: String,
    /// The lease's KV bucket (its key is the cluster's name).
    #[arg(long, default_value = "upgraded_lease")]
    ha_bucket: String,
}

#[tokio::main]
async fn main() {
    // `upgraded rehearse ...` is `upgraded-rehearse ...` (the engine on a simulated copy of a
    // cluster; its own binary, as the harness it runs on links this crate).
    if std::env::args_os().nth(1).is_some_and(|a| a == "rehearse") {
        use std::os::unix::process::CommandExt;
        let beside = std::env::current_exe()
            .map(|p| p.with_file_name("upgraded-rehearse"))
            .unwrap_or_else(|_| "upgraded-rehearse".into());
        let err = std::process::Command::new(&beside)
            .args(std::env::args_os().skip(2))
            .exec();
        eprintln!("upgraded: running {}: {err}", beside.display());
        std::process::exit(1);
    }
    // One line an operator can read (with its causes), not a Debug dump with a backtrace.
    if let Err(e) = run().await {
        eprintln!("upgraded: {e:#}");
        std::process::exit(1);
    }
}

/// How the daemon's own log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let own_spans = init_logging(&args);
    // Before anything is created or opened.
    if args.fake_world.is_some() && !cfg!(feature = "fake-world") {
        anyhow::bail!(NO_FAKE_WORLD);
    }
    // Everything the daemon writes (log, witness, snapshots, exports) is private to its user.
    private_files();
    if args.check_log
        && !args.data_dir.join("db").exists()
        && !args.data_dir.join(witness::FILE).exists()
    {
        anyhow::bail!(
            "{} holds no event log (neither sled's db nor {}); nothing to check",
            args.data_dir.display(),
            witness::FILE
        );
    }
    private_dir(&args.data_dir)?;
    let recovery = Recovery {
        repair_tail: args.repair_tail,
        rebuild: args.rebuild_log,
    };
    if args.check_log {
        let (log, report) = SledLog::open(&args.data_dir, recovery)?;
        report_open(&report);
        return print_log(&log);
    }
    let instance = match &args.instance {
        Some(i) => i.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .and_then(|h| h.trim().split('.').next().map(str::to_string))
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "upgraded".into()),
    };
    let lease = LeaseConfig {
        ttl_ms: args.lease_ttl_secs.saturating_mul(1000),
        campaign_delay_ms: args.lease_campaign_secs.saturating_mul(1000),
        margin_ms: args.lease_margin_secs.saturating_mul(1000),
    };
    if args.ha {
        upgraded_events::lease::check_instance(&instance)
            .map_err(|e| anyhow::anyhow!("--instance: {e}"))?;
        lease
            .validate()
            .map_err(|e| anyhow::anyhow!("--lease-ttl-secs/--lease-margin-secs: {e}"))?;
    }
    // Before the log: a second daemon on a live socket stops here, having touched nothing.
    let mut socket = upgraded_daemon::api::claim_socket(&args.socket, &args.data_dir, 0o600)?;
    let (log, report) = SledLog::open(&args.data_dir, recovery)?;
    report_open(&report);
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
    let mut ports = if let Some(dir) = &args.fake_world {
        fake_world(&args, dir, command_timeout)?
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
        Adapters {
            cluster: Arc::new(cluster),
            nodes,
            host: Arc::new(upgraded_daemon::host::Host::new()),
            command_timeout,
        }
    };
    let stopped = if args.ha {
        let cfg = HaConfig {
            instance: instance.clone(),
            url: args.nats_url.clone().unwrap_or_default(),
            lease,
            stream: ReplicaConfig {
                stream: args.ha_stream.clone(),
                replicas: args.ha_replicas,
                ack_timeout: Duration::from_secs(args.nats_ack_timeout_secs.max(1)),
                duplicate_window: Duration::from_secs(120),
            },
            bucket: args.ha_bucket.clone(),
            // Any cluster name makes a valid key (KV keys take `[-/_=.a-zA-Z0-9]`).
            key: upgraded_daemon::outbox::token(&args.cluster_name),
            cursor_bucket: format!("{}_cursors", args.ha_bucket),
            replicas: args.ha_replicas,
        };
        let ha = upgraded_daemon::ha::open(cfg, log)?;
        let fence = upgraded_daemon::fence::Fence(ha.leading.clone());
        ports.cluster = Arc::new(upgraded_daemon::fence::FencedCluster {
            inner: ports.cluster,
            fence: fence.clone(),
        });
        ports.nodes = Arc::new(upgraded_daemon::fence::FencedNodes {
            inner: ports.nodes,
            fence,
        });
        let log = ha.log.clone();
        let (stop_lease, keeper) = (ha.stop_lease.clone(), ha.keeper);
        let parts = (ha.instance, ha.log, ha.leading, ha.changes, ha.outranked);
        let (waiting, misconfigured) = (ha.waiting, ha.misconfigured);
        // What `status` shows of this instance; the consumers deliver only while it acts.
        let (view, seen) =
            tokio::sync::watch::channel(upgraded_daemon::ha::first_view(&instance, &waiting));
        let turn = Turn {
            acting: seen.clone(),
            store: ha.cursors,
            cluster: upgraded_daemon::outbox::token(&args.cluster_name),
        };
        let start = move |d: Arc<Daemon<HaLog>>, fatal| -> StartEngine {
            Box::pin(async move {
                let (instance, log, leading, changes, outranked) = parts;
                d.set_ha(seen);
                d.spawn_status_fold();
                let term = Term {
                    instance,
                    daemon: d,
                    log,
                    leading,
                    changes,
                    fatal,
                    view,
                    outranked,
                    waiting,
                };
                let run: EngineRun = Box::pin(async move {
                    // A misconfiguration first: the keeper's task says it, then ends (which
                    // ends the supervisor too).
                    tokio::select! {
                        biased;
                        Ok(e) = misconfigured => Err(anyhow::Error::new(e)),
                        r = supervise(term) => match r {
                            Ok(()) => Err(anyhow::anyhow!(
                                "the lease's keeper ended (see the log above); stopping"
                            )),
                            Err(e) => Err(anyhow::Error::new(e).context("the engine stopped")),
                        },
                    }
                });
                Ok(run)
            })
        };
        let stopped = serve(
            &args,
            log,
            clock,
            ports,
            policy,
            own_spans,
            &mut socket,
            Some(turn),
            start,
        )
        .await;
        // The window closes, then the lease is released: a standby takes over at once.
        let _ = stop_lease.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), keeper).await;
        stopped
    } else {
        let start = |d: Arc<Daemon<SledLog>>, mut fatal: Fatal| -> StartEngine {
            Box::pin(async move {
                d.recover().await.context("resuming the unfinished run")?;
                let run: EngineRun = Box::pin(async move {
                    match fatal.recv().await {
                        Some(e) => Err(anyhow::Error::new(e).context("the engine stopped")),
                        None => std::future::pending().await,
                    }
                });
                Ok(run)
            })
        };
        serve(
            &args,
            log,
            clock,
            ports,
            policy,
            own_spans,
            &mut socket,
            None,
            start,
        )
        .await
    };
    if let Some(ssh) = ssh_for_shutdown {
        ssh.close().await;
    }
    drop(socket);
    stopped
}

/// The engine's fatal errors.
type Fatal = tokio::sync::mpsc::UnboundedReceiver<EngineError>;
/// The engine running: ends with its fatal error.
type EngineRun = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;
/// Starting the engine (a failure to resume ends the start); then it runs.
type StartEngine =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<EngineRun>> + Send>>;

/// The consumers, the engine (or, under `--ha`, the supervisor of its terms), `/metrics`
/// and the API, until a signal or a fatal error.
#[allow(clippy::too_many_arguments)]
async fn serve<L: EventLog + Clone>(
    args: &Args,
    log: L,
    clock: Arc<dyn Clock>,
    ports: Adapters,
    policy: PlanPolicy,
    own_spans: Option<tokio::sync::mpsc::Receiver<SpanData>>,
    socket: &mut upgraded_daemon::api::ApiSocket,
    turn: Option<Turn>,
    start: impl FnOnce(Arc<Daemon<L>>, Fatal) -> StartEngine,
) -> anyhow::Result<()> {
    if let Some(url) = &args.nats_url {
        let cfg = OutboxConfig {
            url: url.clone(),
            cluster: args.cluster_name.clone(),
            stream: args.nats_stream.clone(),
            ack_timeout: Duration::from_secs(args.nats_ack_timeout_secs.max(1)),
            cursor_path: args.data_dir.join("outbox-cursor.json"),
            duplicate_window: Duration::from_secs(3600),
            turn: turn.clone(),
        };
        Outbox::new(log.clone(), cfg)
            .context("starting the NATS outbox")?
            .spawn();
    }
    if let (Some(endpoint), Some(own)) = (&args.otlp_endpoint, own_spans) {
        let cfg = TraceConfig {
            endpoint: endpoint.clone(),
            ctx: trace_context(args),
            cursor_path: args.data_dir.join("traces-cursor.json"),
            timeout: Duration::from_secs(args.otlp_timeout_secs.max(1)),
            turn: turn.clone(),
        };
        Traces::new(log.clone(), cfg, own)
            .context("starting the trace exporter (--otlp-endpoint)")?
            .spawn();
    }
    let notify = if policy.notifications.is_empty() {
        None
    } else {
        let ctl = if args.socket == std::path::Path::new(DEFAULT_SOCKET) {
            "upgradectl".to_string()
        } else {
            format!("upgradectl --socket {}", args.socket.display())
        };
        let cfg = NotifyConfig {
            cluster: args.cluster_name.clone(),
            timeline_url: trace_context(args).timeline_url,
            ctl,
            data_dir: args.data_dir.clone(),
            timeout: Duration::from_secs(10),
            slack_interval: Duration::from_secs(1),
            turn,
        };
        let n = Arc::new(
            Notify::new(cfg, &policy.notifications).context("the policy's notifications")?,
        );
        n.spawn(&log).context("starting the notification sinks")?;
        Some(n)
    };
    let defaults = RunDefaults { policy };
    let (daemon, fatal) = Daemon::new(log, clock, ports, defaults);
    if let Some(n) = notify {
        daemon.set_notify(n);
    }
    let engine = start(daemon.clone(), fatal).await?;
    if let Some(addr) = args.metrics_address {
        let (d, sock) = (daemon.clone(), args.socket.clone());
        tokio::spawn(async move {
            if let Err(e) = upgraded_daemon::metrics::serve(addr, d, sock).await {
                tracing::error!(%addr, error = %e, "the metrics endpoint stopped");
            }
        });
    }
    let api = upgraded_daemon::api::serve(daemon.clone(), socket);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let stopped = tokio::select! {
        r = api => r.with_context(|| format!("serving the API on {}", args.socket.display())),
        r = engine => r,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted (SIGINT); in-flight steps will be resolved on the next start");
            Ok(())
        }
        _ = sigterm.recv() => {
            tracing::info!("stopping (SIGTERM); in-flight steps will be resolved on the next start");
            Ok(())
        }
    };
    daemon.stop();
    stopped
}

/// The daemon's own log on stderr; with `--otlp-endpoint`, its `run` spans go to the
/// collector too (returned: where they arrive).
fn init_logging(args: &Args) -> Option<tokio::sync::mpsc::Receiver<SpanData>> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let fmt = match args.log_format {
        // Colours only on a terminal, not in a journal or a file.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        // The spans' fields (run, entry, step, attempt) on every line, as fields a pipeline
        // indexes, not text it has to parse.
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let (otel, own) = match &args.otlp_endpoint {
        Some(_) => {
            use opentelemetry::trace::TracerProvider as _;
            let (provider, own) = upgraded_daemon::traces::own_spans();
            let tracer = provider.tracer("upgraded");
            // Only the engine's `run` span: the steps are in the log's own spans already.
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(tracing_subscriber::filter::filter_fn(|m| {
                    m.is_span() && m.name() == "run"
                }));
            // The provider lives as long as the process.
            std::mem::forget(provider);
            (Some(layer), Some(own))
        }
        None => (None, None),
    };
    tracing_subscriber::registry().with(fmt).with(otel).init();
    own
}

fn trace_context(args: &Args) -> TraceContext {
    TraceContext {
        cluster: args.cluster_name.clone(),
        timeline_url: args.timeline_url.clone().unwrap_or_else(|| {
            format!("file://{}/timelines/{{run}}.html", args.data_dir.display())
        }),
    }
}

/// The file-backed fake world (`--fake-world`).
#[cfg(feature = "fake-world")]
fn fake_world(
    args: &Args,
    dir: &std::path::Path,
    command_timeout: Duration,
) -> anyhow::Result<Adapters> {
    use upgraded_daemon::fake::{FakeWorld, WorldSpec};
    let spec = WorldSpec::generate(
        args.fake_control_planes,
        args.fake_workers,
        args.fake_version,
    );
    let world = Arc::new(
        FakeWorld::open(dir, Some(&spec), Duration::from_millis(args.fake_delay_ms))
            .context("opening the fake world")?,
    );
    Ok(Adapters {
        cluster: world.clone(),
        nodes: world,
        host: Arc::new(upgraded_daemon::host::Host::new()),
        command_timeout,
    })
}

#[cfg(not(feature = "fake-world"))]
fn fake_world(
    _args: &Args,
    _dir: &std::path::Path,
    _command_timeout: Duration,
) -> anyhow::Result<Adapters> {
    anyhow::bail!(NO_FAKE_WORLD)
}

const NO_FAKE_WORLD: &str = "this build of upgraded has no fake world: --fake-world is for the \
     tests (build with `cargo build --features upgraded-daemon/fake-world`, as scripts/test does)";

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

/// New files get mode 0600 and directories 0700, whoever creates them (sled, snapshots).
fn private_files() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Creates the data dir, or tightens an existing one, to 0700.
fn private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the data dir {}", dir.display()))?;
    let mode = std::fs::metadata(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making the data dir {} private (0700)", dir.display()))?;
        tracing::warn!(dir = %dir.display(), was = format!("{mode:o}"), "the data dir was readable by others; it is 0700 now");
    }
    Ok(())
}

/// More records than sled's flusher lags behind by at a stop (`SLED_FLUSH_MS` of appends).
const UNFLUSHED_EXPECTED: usize = 32;

/// Logs what opening the log found and did, loudly when it repaired something.
fn report_open(report: &OpenReport) {
    if let Some(aside) = &report.moved_aside {
        tracing::warn!(aside = %aside.display(), "sled's unreadable files were moved aside; the log was rebuilt from the witness");
    }
    if report.restored_damage > 0 {
        let first = report.restored[0];
        tracing::warn!(
            count = report.restored_damage,
            first_run = %first.0,
            first_seq = first.1,
            "records damaged or lost in sled's files were restored from the witness; check the disk"
        );
    }
    // At the end of a run, sled may lack what its flusher had not written before a stop
    // (100 ms of records); many more than that at the end means sled lost flushed data.
    let tail = report.restored.len() - report.restored_damage;
    if tail > UNFLUSHED_EXPECTED {
        tracing::warn!(
            count = tail,
            "sled lacked the last records of a run, more than a stop leaves unflushed; they were restored from the witness; check the disk"
        );
    } else if tail > 0 {
        tracing::info!(
            count = tail,
            "the last records before the stop, not yet flushed by sled, were taken from the witness"
        );
    }
    if let Some(d) = &report.witness_damage {
        tracing::warn!(damage = %d, "the witness was damaged; it was made whole from sled's records");
    }
    for (run, seq) in &report.quarantined {
        tracing::warn!(%run, seq, "quarantined a lost record at the tail of the run (--repair-tail)");
    }
    if report.stray_keys > 0 {
        tracing::warn!(
            count = report.stray_keys,
            "keys that are no record's were moved to the quarantine tree"
        );
    }
    if report.witnessed > 0 {
        tracing::info!(
            records = report.witnessed,
            "records written to the witness that it did not hold yet"
        );
    }
    tracing::info!(
        runs = report.runs,
        records = report.records,
        "event log verified against its witness"
    );
}

/// `--check-log`: every record as a JSON line.
fn print_log(log: &SledLog) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for run in log.runs()? {
        for r in log.read(run, 0)? {
            serde_json::to_writer(&mut out, &r)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// The newest record time, so an accelerated clock never restarts in the past.
fn log_last_time(log: &SledLog) -> anyhow::Result<Timestamp> {
    let mut last = Timestamp(0);
    for run in log.runs()? {
        if let Some(r) = log.read(run, 0)?.last() {
            last = last.max(r.at);
        }
    }
    Ok(last)
}
