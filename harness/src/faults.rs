//! Faults between the daemon and the sim's API server, on a schedule in virtual time: what a
//! Saturday night does to an upgrade (an etcd leader election, an apiserver being upgraded
//! by this very run). While a window is open, every request the daemon's kube client sends
//! meets its fault: the connection refused, a 500/503 (with or without `Retry-After`) or a
//! 429 as the apiserver writes them, or a hang until the window closes. Outside the windows
//! the sim answers. Each fault met is counted, by kind.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use hyper::{Request, Response};
use tower::ServiceExt;
use upgraded_daemon::ports::Clock;
use upgraded_events::Timestamp;

/// What a request meets while its window is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFault {
    /// The connection is refused (the apiserver's process is gone).
    Refused,
    /// The apiserver answers with `code` (500, 503, 429), with `Retry-After` when given.
    Status { code: u16, retry_after: Option<u32> },
    /// No answer: the client gives up after its read timeout (the daemon's
    /// `kube::READ_TIMEOUT`), or at the window's end, then the connection is refused.
    Hang,
    /// The apiserver does the request, then the connection drops halfway through its
    /// answer's first chunk: a list or a watch cut mid-stream, a write done whose answer
    /// was lost.
    Cut,
    /// Reads that accept a cached answer (`resourceVersion=0`, as an informer's list asks)
    /// are answered from the apiserver's view `secs` ago, as a lagging apiserver's watch
    /// cache answers them. Reads without it are consistent on a real apiserver (from etcd,
    /// or a cache proven fresh) and stay live, as do writes and watches.
    Stale { secs: u32 },
}

impl ApiFault {
    pub fn kind(self) -> &'static str {
        match self {
            ApiFault::Refused => "api-refused",
            ApiFault::Status { code: 429, .. } => "api-429",
            ApiFault::Status {
                retry_after: Some(_),
                ..
            } => "api-5xx-retry-after",
            ApiFault::Status { .. } => "api-5xx",
            ApiFault::Hang => "api-hang",
            ApiFault::Cut => "api-cut",
            ApiFault::Stale { .. } => "api-stale",
        }
    }
}

/// A fault from `from` until `until` (virtual time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: Timestamp,
    pub until: Timestamp,
    pub fault: ApiFault,
}

/// Scheduled windows of one kind of fault, and what met them: by kind, and per window.
#[derive(Debug)]
struct Windows<W> {
    inner: Mutex<Met<W>>,
}

#[derive(Debug)]
struct Met<W> {
    list: Vec<W>,
    /// What each window met, in the order added.
    hits: Vec<u64>,
    by_kind: BTreeMap<&'static str, u64>,
}

impl<W> Default for Windows<W> {
    fn default() -> Self {
        Windows {
            inner: Mutex::new(Met {
                list: Vec::new(),
                hits: Vec::new(),
                by_kind: BTreeMap::new(),
            }),
        }
    }
}

impl<W: Clone> Windows<W> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Met<W>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, w: W) -> usize {
        let mut m = self.lock();
        m.list.push(w);
        m.hits.push(0);
        m.list.len() - 1
    }

    /// The first window `open` (given what it met so far) says is open, counted as met
    /// under `kind`'s name.
    fn hit(&self, open: impl Fn(&W, u64) -> bool, kind: impl Fn(&W) -> &'static str) -> Option<W> {
        let mut m = self.lock();
        let i = (0..m.list.len()).find(|i| open(&m.list[*i], m.hits[*i]))?;
        m.hits[i] += 1;
        let w = m.list[i].clone();
        *m.by_kind.entry(kind(&w)).or_default() += 1;
        Some(w)
    }

    fn count(&self, what: &'static str) {
        *self.lock().by_kind.entry(what).or_default() += 1;
    }

    fn hits(&self) -> Vec<u64> {
        self.lock().hits.clone()
    }

    fn met(&self) -> BTreeMap<&'static str, u64> {
        self.lock().by_kind.clone()
    }
}

/// The schedule, and what the daemon met of it.
#[derive(Debug, Default)]
pub struct ApiFaults {
    windows: Windows<Window>,
    /// Answers to reads, by URI, newest last (kept once a `Stale` window is scheduled).
    reads: Mutex<Option<std::collections::HashMap<String, std::collections::VecDeque<Read>>>>,
}

/// A read's answer as the apiserver gave it, and when.
#[derive(Debug, Clone)]
struct Read {
    at: Timestamp,
    status: hyper::StatusCode,
    content_type: Option<hyper::header::HeaderValue>,
    body: bytes::Bytes,
}

/// How many answers are kept per URI for stale reads.
const READS_KEPT: usize = 64;

impl ApiFaults {
    pub fn new(windows: Vec<Window>) -> Arc<ApiFaults> {
        let f = Arc::new(ApiFaults::default());
        for w in windows {
            f.add(w);
        }
        f
    }

    /// Adds a window; its index for [`ApiFaults::hits`].
    pub fn add(&self, w: Window) -> usize {
        if matches!(w.fault, ApiFault::Stale { .. }) {
            self.reads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(Default::default);
        }
        self.windows.add(w)
    }

    /// The open window at `now` (the first scheduled, when several overlap), counted as met.
    fn hit(&self, now: Timestamp) -> Option<Window> {
        self.windows
            .hit(|w, _| w.from <= now && now < w.until, |w| w.fault.kind())
    }

    /// Requests each window met, by the index [`ApiFaults::add`] returned.
    pub fn hits(&self) -> Vec<u64> {
        self.windows.hits()
    }

    fn keeps_reads(&self) -> bool {
        self.reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    fn keep_read(&self, uri: String, read: Read) {
        if let Some(reads) = self
            .reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            let kept = reads.entry(uri).or_default();
            kept.push_back(read);
            if kept.len() > READS_KEPT {
                kept.pop_front();
            }
        }
    }

    /// The newest answer to `uri` given at or before `at`.
    fn read_at(&self, uri: &str, at: Timestamp) -> Option<Read> {
        self.reads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()?
            .get(uri)?
            .iter()
            .rev()
            .find(|r| r.at <= at)
            .cloned()
    }

    /// Requests that met a fault, by kind (and `api-stale-answered`: reads answered from
    /// the past).
    pub fn met(&self) -> BTreeMap<&'static str, u64> {
        self.windows.met()
    }
}

/// The kube client's transport in a harness with faults: the sim's router, or the fault.
#[derive(Clone)]
pub struct FaultyApi {
    pub router: axum::Router,
    pub faults: Arc<ApiFaults>,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for FaultyApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyApi").finish_non_exhaustive()
    }
}

fn refused() -> tower::BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "connection refused (an injected fault)",
    ))
}

/// The apiserver's own answer for `code` (a `Status` object).
fn status(code: u16, retry_after: Option<u32>) -> Response<axum::body::Body> {
    let reason = match code {
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("an injected fault: {code}"), "reason": reason, "code": code,
    });
    let mut b = Response::builder()
        .status(code)
        .header("content-type", "application/json");
    if let Some(s) = retry_after {
        b = b.header("retry-after", s.to_string());
    }
    b.body(axum::body::Body::from(body.to_string()))
        .unwrap_or_else(|_| Response::new(axum::body::Body::empty()))
}

impl<B> tower::Service<Request<B>> for FaultyApi
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    type Response = Response<axum::body::Body>;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let now = me.clock.now();
            // A read (not a watch), answerable from the past by a stale window.
            let query = req.uri().query().unwrap_or("");
            let read = (req.method() == hyper::Method::GET && !query.contains("watch=true"))
                .then(|| req.uri().to_string());
            let cached_ok = query.split('&').any(|kv| kv == "resourceVersion=0");
            let fault = me.faults.hit(now);
            if let (Some(w), Some(uri)) = (&fault, &read)
                && let ApiFault::Stale { secs } = w.fault
                && cached_ok
                && let Some(old) = me
                    .faults
                    .read_at(uri, Timestamp(now.0 - i64::from(secs) * 1000))
            {
                me.faults.windows.count("api-stale-answered");
                let mut resp = Response::new(axum::body::Body::from(old.body));
                *resp.status_mut() = old.status;
                if let Some(ct) = old.content_type {
                    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, ct);
                }
                return Ok(resp);
            }
            let live = |req: Request<B>| async {
                let resp = me
                    .router
                    .clone()
                    .oneshot(req.map(axum::body::Body::new))
                    .await
                    .map_err(|e| -> tower::BoxError { Box::new(e) })?;
                match read.clone().filter(|_| me.faults.keeps_reads()) {
                    None => Ok::<_, tower::BoxError>(resp),
                    Some(uri) => {
                        use http_body_util::BodyExt;
                        let (parts, body) = resp.into_parts();
                        let body = body.collect().await?.to_bytes();
                        me.faults.keep_read(
                            uri,
                            Read {
                                at: now,
                                status: parts.status,
                                content_type: parts
                                    .headers
                                    .get(hyper::header::CONTENT_TYPE)
                                    .cloned(),
                                body: body.clone(),
                            },
                        );
                        Ok(Response::from_parts(parts, axum::body::Body::from(body)))
                    }
                }
            };
            match fault {
                None => live(req).await,
                Some(w) => match w.fault {
                    ApiFault::Stale { .. } => live(req).await,
                    ApiFault::Cut => {
                        let resp = live(req).await?;
                        let (parts, body) = resp.into_parts();
                        Ok(Response::from_parts(parts, cut(body)))
                    }
                    ApiFault::Refused => Err(refused()),
                    ApiFault::Status { code, retry_after } => Ok(status(code, retry_after)),
                    ApiFault::Hang => {
                        let gives_up = me
                            .clock
                            .now()
                            .plus_millis(upgraded_daemon::kube::READ_TIMEOUT.as_millis() as u64);
                        me.clock.sleep_until(w.until.min(gives_up)).await;
                        if gives_up < w.until {
                            return Err(Box::new(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "read timed out (an injected hang)",
                            )) as tower::BoxError);
                        }
                        Err(refused())
                    }
                },
            }
        })
    }
}

/// `body` cut halfway through its first chunk: the connection reset there.
fn cut(body: axum::body::Body) -> axum::body::Body {
    use futures_util::StreamExt;
    enum At {
        First(axum::body::BodyDataStream),
        Reset,
        Done,
    }
    let reset = || {
        std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset mid-answer (an injected cut)",
        )
    };
    axum::body::Body::from_stream(futures_util::stream::unfold(
        At::First(body.into_data_stream()),
        move |at| async move {
            match at {
                At::First(mut s) => match s.next().await {
                    Some(Ok(b)) if b.len() > 1 => Some((Ok(b.slice(..b.len() / 2)), At::Reset)),
                    _ => Some((Err(reset()), At::Done)),
                },
                At::Reset => Some((Err(reset()), At::Done)),
                At::Done => None,
            }
        },
    ))
}

/// What a node command meets while its window is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeFault {
    /// The connection drops before the command reaches the node: nothing happens there,
    /// and the daemon cannot know it.
    DropBefore,
    /// The command runs to its end, and the connection drops before its answer comes back.
    DropAfter,
    /// The agent hangs: no answer until the window closes, nothing done.
    Hang,
    /// The machine reboots in the middle of the command: a package install gets as far
    /// as its first package, anything else runs; the machine is down (NotReady, its agent
    /// refusing connections) for `down_secs`, then comes back with what is installed.
    Reboot { down_secs: u64 },
    /// As a reboot, but the machine never comes back.
    Gone,
}

impl NodeFault {
    pub fn kind(self) -> &'static str {
        match self {
            NodeFault::DropBefore => "node-drop-before",
            NodeFault::DropAfter => "node-drop-after",
            NodeFault::Hang => "node-hang",
            NodeFault::Reboot { .. } => "node-reboot",
            NodeFault::Gone => "node-gone",
        }
    }
}

/// A node fault on `node` (every node when `None`) from `from` until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeWindow {
    pub node: Option<String>,
    pub from: Timestamp,
    pub until: Timestamp,
    pub fault: NodeFault,
    /// Only the first command that changes the node (an install, a restart, an upgrade)
    /// from `from` on meets it, once: a connection lost around the commands that matter,
    /// whenever they come (`until` is then the time it waits for one).
    pub next_change: bool,
    /// Only commands whose name (`RemoteCommand`'s variant, `InstallPackages`) starts so.
    pub only: Option<&'static str>,
}

/// The node faults' schedule, and what the daemon met of it.
#[derive(Debug, Default)]
pub struct NodeFaults {
    windows: Windows<NodeWindow>,
    /// Machines down (rebooting, or gone), until when.
    down: Mutex<BTreeMap<String, Timestamp>>,
}

impl NodeFaults {
    pub fn new() -> Arc<NodeFaults> {
        Arc::default()
    }

    /// Adds a window; its index for [`NodeFaults::hits`].
    pub fn add(&self, w: NodeWindow) -> usize {
        self.windows.add(w)
    }

    /// The window open for `node` at `now` (for a command that changes the node when
    /// `changes`), counted as met.
    fn hit(&self, node: &str, now: Timestamp, changes: bool, what: &str) -> Option<NodeWindow> {
        self.windows.hit(
            |w, met| {
                w.node.as_deref().is_none_or(|n| n == node)
                    && w.only.is_none_or(|o| what.starts_with(o))
                    && w.from <= now
                    && now < w.until
                    && (!w.next_change || (changes && met == 0))
            },
            |w| w.fault.kind(),
        )
    }

    /// Commands each window met, by the index [`NodeFaults::add`] returned.
    pub fn hits(&self) -> Vec<u64> {
        self.windows.hits()
    }

    /// Commands that met a fault, by kind.
    pub fn met(&self) -> BTreeMap<&'static str, u64> {
        self.windows.met()
    }

    /// Whether `node`'s machine is down at `now` (its agent refuses connections).
    fn is_down(&self, node: &str, now: Timestamp) -> bool {
        self.down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(node)
            .is_some_and(|until| now < *until)
    }

    fn set_down(&self, node: &str, until: Timestamp) {
        self.down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(node.to_string(), until);
    }
}

/// The node executor in a harness with node faults: the real one, or the fault.
pub struct FaultyNodes {
    pub inner: Arc<dyn upgraded_daemon::ports::NodeExecutor>,
    pub faults: Arc<NodeFaults>,
    pub clock: Arc<dyn Clock>,
    /// The machines a reboot takes down and brings back.
    pub sim: Arc<upgraded_sim::server::Sim>,
}

impl FaultyNodes {
    /// The command as far as it got when the machine went down: a package install's first
    /// package (the package manager killed before the next), anything else in full.
    async fn as_far_as_it_got(
        &self,
        node: &upgraded_events::Host,
        cmd: &upgraded_daemon::ports::RemoteCommand,
        timeout: std::time::Duration,
    ) {
        use upgraded_daemon::ports::RemoteCommand;
        let (version, kubeadm) = match cmd {
            RemoteCommand::InstallPackages { version } => (*version, false),
            RemoteCommand::DowngradePackages {
                version, kubeadm, ..
            } => (*version, *kubeadm),
            _ => {
                let _ = self.inner.run(node, cmd, timeout).await;
                return;
            }
        };
        if let Some(first) = upgraded_events::plan::node_packages(kubeadm).first() {
            let _ = self
                .sim
                .world()
                .install_package(node.as_str(), first, version);
        }
    }

    /// Takes `node`'s machine down until `until` (`None`: for good), and brings it back then.
    fn go_down(&self, node: &str, until: Option<Timestamp>) {
        self.faults
            .set_down(node, until.unwrap_or(Timestamp(i64::MAX)));
        let _ = self.sim.world().set_node_down(node, true);
        if let Some(until) = until {
            let (sim, clock, node) = (
                Arc::clone(&self.sim),
                Arc::clone(&self.clock),
                node.to_string(),
            );
            tokio::spawn(async move {
                clock.sleep_until(until).await;
                let _ = sim.world().set_node_down(&node, false);
            });
        }
    }
}

impl std::fmt::Debug for FaultyNodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyNodes").finish_non_exhaustive()
    }
}

impl upgraded_daemon::ports::NodeExecutor for FaultyNodes {
    fn run<'a>(
        &'a self,
        node: &'a upgraded_events::Host,
        cmd: &'a upgraded_daemon::ports::RemoteCommand,
        timeout: std::time::Duration,
    ) -> upgraded_daemon::ports::BoxFut<
        'a,
        Result<upgraded_daemon::ports::CommandOutput, upgraded_daemon::ports::PortError>,
    > {
        use upgraded_daemon::ports::PortError;
        Box::pin(async move {
            let now = self.clock.now();
            if self.faults.is_down(node.as_str(), now) {
                // As the SSH adapter reports a connection refused.
                return Err(PortError::retryable(format!(
                    "node {node}: cannot connect over SSH: Connection refused (the machine is down, an injected fault)"
                ))
                .with_kind(upgraded_events::fault::FailureKind::Unreachable));
            }
            let changes = !upgraded_daemon::remote::Scripts::read_only(cmd);
            let what = format!("{cmd:?}");
            let Some(w) = self.faults.hit(node.as_str(), now, changes, &what) else {
                return self.inner.run(node, cmd, timeout).await;
            };
            // What the SSH adapter makes of a lost answer, for this command.
            let kind = upgraded_daemon::remote::Scripts::lost_answer(cmd);
            let lost = |what: &str| {
                PortError::retryable(format!(
                    "node {node}: the SSH connection was lost ({what}, an injected fault)"
                ))
                .with_kind(kind)
            };
            match w.fault {
                NodeFault::DropBefore => Err(lost("before the command")),
                NodeFault::DropAfter => {
                    let _ = self.inner.run(node, cmd, timeout).await;
                    Err(lost("before its answer"))
                }
                NodeFault::Hang => {
                    self.clock.sleep_until(w.until).await;
                    Err(lost("the agent hung"))
                }
                NodeFault::Reboot { down_secs } => {
                    self.as_far_as_it_got(node, cmd, timeout).await;
                    self.go_down(node.as_str(), Some(self.clock.now().plus_secs(down_secs)));
                    Err(lost("the machine rebooted"))
                }
                NodeFault::Gone => {
                    self.as_far_as_it_got(node, cmd, timeout).await;
                    self.go_down(node.as_str(), None);
                    Err(lost("the machine went down"))
                }
            }
        })
    }
}

/// The log's disk full from `from` until `until`: every append in between fails as sled
/// fails on `ENOSPC` (the daemon exits on it, and its restarts fail until there is room).
#[derive(Debug, Default)]
pub struct LogFaults {
    windows: Windows<(Timestamp, Timestamp)>,
}

impl LogFaults {
    pub fn new() -> Arc<LogFaults> {
        Arc::default()
    }

    /// Adds a window; its index for [`LogFaults::hits`].
    pub fn add(&self, from: Timestamp, until: Timestamp) -> usize {
        self.windows.add((from, until))
    }

    /// Whether the disk is full at `now`; counts the append that met it.
    pub fn full(&self, now: Timestamp) -> bool {
        self.windows
            .hit(
                |(from, until), _| *from <= now && now < *until,
                |_| "disk-full",
            )
            .is_some()
    }

    /// Appends each window failed, by the index [`LogFaults::add`] returned.
    pub fn hits(&self) -> Vec<u64> {
        self.windows.hits()
    }
}
