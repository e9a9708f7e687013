//! The daemon's API for `upgradectl`: HTTP/1.1 + JSON over a Unix socket (mode 0600).
//!
//! The kernel tells us the peer's uid on each connection; it is recorded on every operator
//! event. `GET /v1/runs/{id}/events?follow=true` streams a run's records as JSON lines, the
//! stored ones first, then live ones as they are committed.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::stream;
use tokio::net::UnixListener;
use upgraded_api::{
    ErrorBody, EventsQuery, ReasonRequest, RollbackRequest, RollbackResponse, RunAck, RunEntry,
    StartRequest, StartResponse, Status, path,
};
use upgraded_events::{Actor, Event, RunId, RunState, Version};
use upgraded_planner::rollback::{self as rollback_plan, RollbackError};

use crate::engine::{Daemon, RequestError};
use crate::log::EventLog;
use upgraded_events::request::{Rejection, Request};

/// The peer of an API connection, from `SO_PEERCRED`.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: Option<u32>,
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Peer {
            uid: stream.io().peer_cred().ok().map(|c| c.uid()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "the API socket {socket} is inside the data dir {data_dir}; choose a path outside it \
         (e.g. /run/upgraded/api.sock), so a socket can never replace a file of the log"
    )]
    InsideDataDir { socket: PathBuf, data_dir: PathBuf },
    #[error(
        "{socket} exists and is not a socket; refusing to remove it (choose another --socket \
         or move the file away)"
    )]
    NotASocket { socket: PathBuf },
    #[error(
        "another daemon is already listening on {socket}; stop it first, or give this one \
         another --socket"
    )]
    InUse { socket: PathBuf },
    #[error("API socket {socket}: {source}")]
    Io {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The bound API socket; the socket file is removed when this is dropped.
#[derive(Debug)]
pub struct ApiSocket {
    listener: Option<UnixListener>,
    path: PathBuf,
    /// (device, inode) of the socket we bound.
    id: (u64, u64),
}

fn file_id(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl Drop for ApiSocket {
    fn drop(&mut self) {
        // Only our own socket: one that replaced it meanwhile has another inode.
        if file_id(&self.path) == Some(self.id) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The absolute form of `p` with its existing parent resolved (the file may not exist yet).
fn resolved(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map(|d| d.join(name))
            .unwrap_or(abs.clone()),
        _ => abs,
    }
}

/// Claims the API socket: refuses a path inside `data_dir`, a path that holds anything but a
/// socket, and a socket another process still answers on; removes only a dead socket; binds
/// and restricts it to `mode`. Call it before anything else starts, so a second daemon fails
/// before it touches a log.
pub fn claim_socket(socket: &Path, data_dir: &Path, mode: u32) -> Result<ApiSocket, SocketError> {
    use std::os::unix::fs::FileTypeExt;
    let io = |source| SocketError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    let data = data_dir
        .canonicalize()
        .unwrap_or_else(|_| resolved(data_dir));
    if resolved(socket).starts_with(&data) {
        return Err(SocketError::InsideDataDir {
            socket: socket.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
        });
    }
    if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    match std::fs::symlink_metadata(socket) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
        Ok(m) if !m.file_type().is_socket() => {
            return Err(SocketError::NotASocket {
                socket: socket.to_path_buf(),
            });
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(socket) {
            Ok(_) => {
                return Err(SocketError::InUse {
                    socket: socket.to_path_buf(),
                });
            }
            // Nobody listens: a socket left by a daemon that was killed.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                tracing::info!(socket = %socket.display(), "removing a stale API socket");
                std::fs::remove_file(socket).map_err(io)?;
            }
            Err(e) => return Err(io(e)),
        },
    }
    let listener = UnixListener::bind(socket).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            SocketError::InUse {
                socket: socket.to_path_buf(),
            }
        } else {
            io(e)
        }
    })?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    Ok(ApiSocket {
        listener: Some(listener),
        path: socket.to_path_buf(),
        id: file_id(socket).unwrap_or_default(),
    })
}

/// Serves the API on a claimed socket until the future is dropped.
pub async fn serve<L: EventLog + Clone>(
    daemon: Arc<Daemon<L>>,
    socket: &mut ApiSocket,
) -> std::io::Result<()> {
    let listener = socket
        .listener
        .take()
        .ok_or_else(|| std::io::Error::other("the API socket is already being served"))?;
    tracing::info!(socket = %socket.path.display(), "API listening");
    axum::serve(
        listener,
        router(daemon).into_make_service_with_connect_info::<Peer>(),
    )
    .await
}

pub use upgraded_api::{MAX_BODY_BYTES, MAX_REASON_BYTES};

pub fn router<L: EventLog + Clone>(daemon: Arc<Daemon<L>>) -> Router {
    Router::new()
        .route(path::STATUS, get(status::<L>))
        .route(path::RUNS, get(list_runs::<L>).post(start::<L>))
        .route("/v1/runs/{id}", get(run_status::<L>))
        .route("/v1/runs/{id}/events", get(events::<L>))
        .route(path::PAUSE, post(pause::<L>))
        .route(path::RESUME, post(resume::<L>))
        .route(path::ABORT, post(abort::<L>))
        .route(path::ROLLBACKS, post(rollback::<L>))
        .route(path::NOTIFY_TEST, post(notify_test::<L>))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such API path".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this API path".into(),
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(daemon)
}

/// A JSON body whose rejection (bad JSON, unknown field, wrong type, too large) is a JSON
/// error like every other.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError(e.status(), e.body_text()))?;
        parse_body(&bytes).map(Body)
    }
}

/// An optional body: none (or empty) is the default.
fn parse_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("request body: {e}")))
}

/// A query string whose rejection is a JSON error.
struct Q<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Q(q.0))
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

/// A path parameter whose rejection (e.g. bad percent-encoding) is a JSON error.
struct P<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<S>
    for P<T>
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        UrlPath::<T>::from_request_parts(parts, state)
            .await
            .map(|p| P(p.0))
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

/// A reason as recorded: bounded, one line, no control characters.
fn reason(r: String) -> Result<String, ApiError> {
    if r.len() > MAX_REASON_BYTES {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "the reason is {} bytes; at most {MAX_REASON_BYTES} are recorded",
                r.len()
            ),
        ));
    }
    if r.chars().any(char::is_control) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the reason must be one line without control characters".into(),
        ));
    }
    Ok(r)
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let code = match &e {
            RequestError::Rejected(r) => match r {
                Rejection::Busy { .. } | Rejection::WrongPhase(..) => StatusCode::CONFLICT,
                Rejection::NoRun => StatusCode::NOT_FOUND,
                Rejection::Blocked { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                Rejection::Forbidden { .. } => StatusCode::FORBIDDEN,
            },
            RequestError::Plan(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RequestError::Rollback(r) => match r {
                RollbackError::NoRun
                | RollbackError::UnknownRun(_)
                | RollbackError::UnknownNode { .. } => StatusCode::NOT_FOUND,
                RollbackError::NotFinished { .. } => StatusCode::CONFLICT,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            },
            RequestError::Inventory(_) => StatusCode::BAD_GATEWAY,
            RequestError::Log(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The operator: the uid the kernel reports for the connection, and that uid's name in the
/// system's user database. Nothing the client says about itself is believed.
fn actor(peer: Peer) -> Actor {
    let name = match peer.uid {
        Some(uid) => user_name(uid),
        None => "unknown".into(),
    };
    Actor {
        uid: peer.uid,
        name,
    }
}

/// `uid`'s login name (`getpwuid`), or `uid N` when the system has no such user.
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {uid}"),
    }
}

async fn status<L: EventLog + Clone>(State(d): State<Arc<Daemon<L>>>) -> Response {
    let active = d.status().borrow().clone();
    Json(Status { active, ha: d.ha() }).into_response()
}

/// `--ha`: a write is taken only by the leader that may act; anyone else refuses it with
/// the leader's name (the core's words: `events::lease::write_refusal`).
fn writable<L: EventLog + Clone>(d: &Daemon<L>) -> Result<(), ApiError> {
    let Some(h) = d.ha() else { return Ok(()) };
    let leader = h
        .leader
        .clone()
        .zip(h.leader_epoch)
        .map(|(instance, epoch)| upgraded_events::lease::Holder { instance, epoch });
    match upgraded_events::lease::write_refusal(&h.instance, h.acting, leader.as_ref()) {
        None => Ok(()),
        Some(why) => Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, why)),
    }
}

async fn list_runs<L: EventLog + Clone>(
    State(d): State<Arc<Daemon<L>>>,
) -> Result<Response, ApiError> {
    // One fold per run, for its entry and its history alike.
    let mut out = Vec::new();
    let mut history = Vec::new();
    for run in d.log().runs().map_err(internal)? {
        let records = d.log().read(run, 0).map_err(internal)?;
        let state = RunState::replay(&records);
        let Some(run) = state.id else { continue };
        history.extend(upgraded_events::history::entry_of(&state, &records));
        out.push(RunEntry {
            run,
            phase: state.phase(),
            target: state.target.map(|v| v.to_string()),
            records: state.next_seq,
            history: None,
        });
    }
    upgraded_events::history::mark_undone(&mut history);
    for (e, h) in out.iter_mut().zip(history) {
        e.history = Some(h);
    }
    Ok(Json(out).into_response())
}

fn parse_run(id: &str) -> Result<RunId, ApiError> {
    id.parse()
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("{id:?} is not a run id")))
}

async fn run_status<L: EventLog + Clone>(
    State(d): State<Arc<Daemon<L>>>,
    P(id): P<String>,
) -> Result<Response, ApiError> {
    let run = parse_run(&id)?;
    let records = d.log().read(run, 0).map_err(internal)?;
    if records.is_empty() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no run {run}")));
    }
    Ok(Json(RunState::replay(&records).summary()).into_response())
}

async fn start<L: EventLog + Clone>(
    State(d): State<Arc<Daemon<L>>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Body(body): Body<StartRequest>,
) -> Result<Response, ApiError> {
    let target: Version = Version::parse_release(&body.target).map_err(
        |e: upgraded_events::version::VersionError| {
            ApiError(StatusCode::BAD_REQUEST, e.to_string())
        },
    )?;
    if !body.dry_run {
        writable(&d)?;
    }
    let (run, plan) = d
        .start(target, actor(peer), body.dry_run, body.force)
        .await?;
    Ok(Json(StartResponse { run, plan }).into_response())
}

/// `upgradectl notify test SINK`: one synthetic notice to the sink, and its answer.
async fn notify_test<L: EventLog + Clone>(
    State(d): State<Arc<Daemon<L>>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Body(body): Body<upgraded_api::NotifyTestRequest>,
) -> Result<Response, ApiError> {
    let Some(n) = d.notify() else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "the daemon's policy has no notifications".into(),
        ));
    };
    let by = actor(peer).name;
    let (event_type, a) = n
        .test(&body.sink, &by, d.now())
        .await
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))?;
    Ok(Json(upgraded_api::NotifyTestResponse {
        sink: body.sink,
        event_type,
        status: a.status,
        detail: a.detail,
    })
    .into_response())
}

async fn rollback<L: EventLog + Clone>(
    State(d): State<Arc<Daemon<L>>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Body(body): Body<RollbackRequest>,
) -> Result<Response, ApiError> {
    if !body.plan_only {
        writable(&d)?;
    }
    let mut nodes = Vec::new();
    for n in &body.nodes {
        upgraded_events::inventory::check_node_name(n).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("node {}: {e}", n.escape_debug()),
            )
        })?;
        nodes.push(upgraded_events::Host::new(n.as_str()));
    }
    let to = body
        .to
        .as_deref()
        .map(Version::parse_release)
        .transpose()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("to: {e}")))?;
    let (run, planned) = d
        .rollback(
            rollback_plan::RollbackRequest {
                nodes,
                to,
                all: body.all,
                etcd: match body.etcd {
                    upgraded_api::EtcdMode::Keep => rollback_plan::EtcdChoice::Keep,
                    upgraded_api::EtcdMode::RestoreSnapshot => {
                        rollback_plan::EtcdChoice::RestoreSnapshot {
                            confirm_data_loss: body.confirm_data_loss,
                        }
                    }
                },
                now: None,
                preview: body.plan_only,
            },
            body.run,
            actor(peer),
            body.plan_only,
        )
        .await?;
    Ok(Json(RollbackResponse {
        run,
        undoes: planned.undoes,
        plan: planned.plan,
        why: planned.why,
        etcd: planned.etcd,
    })
    .into_response())
}

/// Records an operator action on the active run.
async fn act<L: EventLog + Clone>(d: &Daemon<L>, req: Request) -> Result<Response, ApiError> {
    writable(d)?;
    let run = d.operator(req).await?;
    Ok(Json(RunAck { run }).into_response())
}

async fn pause<L: EventLog + Clone>(
    State(d): State<Arc<Daemon<L>>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let reason = reason(optional_reason(&body)?)?;
    act(
        &d,
        Request::Pause {
            by: actor(peer),
            reason,
        },
    )
    .await
}

async fn resume<L: EventLog + Clone>(
    State(d): State<Arc<Daemon<L>>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
) -> Result<Response, ApiError> {
    act(&d, Request::Resume { by: actor(peer) }).await
}

async fn abort<L: EventLog + Clone>(
    State(d): State<Arc<Daemon<L>>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let reason = reason(optional_reason(&body)?)?;
    act(
        &d,
        Request::Abort {
            by: actor(peer),
            reason,
        },
    )
    .await
}

/// The reason of a pause or abort body, which may be absent.
fn optional_reason(body: &[u8]) -> Result<String, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(String::new());
    }
    parse_body::<ReasonRequest>(body).map(|b| b.reason)
}

fn line(r: &upgraded_events::Record) -> Bytes {
    let mut v =
        serde_json::to_vec(r).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    v.push(b'\n');
    Bytes::from(v)
}

fn ends_run(e: &Event) -> bool {
    matches!(e, Event::RunCompleted | Event::RunAborted)
}

async fn events<L: EventLog + Clone>(
    State(d): State<Arc<Daemon<L>>>,
    P(id): P<String>,
    Q(q): Q<EventsQuery>,
) -> Result<Response, ApiError> {
    let run = parse_run(&id)?;
    // Subscribe before reading, so nothing falls between the stored part and the live part.
    let sub = d.log().subscribe();
    let stored = d.log().read(run, q.from).map_err(internal)?;
    let finished = stored.iter().any(|r| ends_run(&r.event));
    let next = stored.last().map_or(q.from, |r| r.seq + 1);
    let head = stream::iter(
        stored
            .iter()
            .map(line)
            .map(Ok::<_, Infallible>)
            .collect::<Vec<_>>(),
    );
    if !q.follow || finished {
        return Ok(axum::body::Body::from_stream(head).into_response());
    }
    let log = d.log().clone();
    let tail = stream::unfold((sub, next, false), move |(mut sub, mut next, done)| {
        let log = log.clone();
        async move {
            if done {
                return None;
            }
            loop {
                match sub.recv().await {
                    Ok(r) if r.run == run && r.seq >= next => {
                        next = r.seq + 1;
                        let end = ends_run(&r.event);
                        return Some((Ok::<_, Infallible>(line(&r)), (sub, next, end)));
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        // Fall back to storage for what the channel dropped.
                        let missed = log.read(run, next).ok()?;
                        if let Some(r) = missed.first() {
                            next = r.seq + 1;
                            let end = ends_run(&r.event);
                            return Some((Ok(line(r)), (sub, next, end)));
                        }
                    }
                    Err(_) => return None,
                }
            }
        }
    });
    use futures_util::StreamExt;
    Ok(axum::body::Body::from_stream(head.chain(tail)).into_response())
}

#[cfg(test)]
mod socket_tests {
    use super::*;

    #[tokio::test]
    async fn only_a_dead_socket_outside_the_data_dir_is_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");

        // Inside the data dir: refused, the log's file untouched.
        std::fs::write(data.join("db"), b"log").expect("write");
        let err = claim_socket(&data.join("db"), &data, 0o600).expect_err("inside");
        assert!(matches!(err, SocketError::InsideDataDir { .. }), "{err}");
        assert_eq!(std::fs::read(data.join("db")).expect("kept"), b"log");

        // A regular file: refused and kept.
        let file = dir.path().join("file.sock");
        std::fs::write(&file, b"not a socket").expect("write");
        let err = claim_socket(&file, &data, 0o600).expect_err("file");
        assert!(matches!(err, SocketError::NotASocket { .. }), "{err}");
        assert!(file.exists());

        // A live socket: refused, still answering.
        let path = dir.path().join("api.sock");
        let first = claim_socket(&path, &data, 0o600).expect("claim");
        let err = claim_socket(&path, &data, 0o600).expect_err("in use");
        assert!(err.to_string().contains("another daemon"), "{err}");
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());

        // Dropping it removes it; a stale socket (nobody listening) is replaced.
        drop(first);
        assert!(!path.exists());
        let stale = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        drop(stale);
        assert!(path.exists(), "a closed listener leaves its file");
        // A child another test forks in this process holds the listener until its exec
        // closes it (close-on-exec): nobody listens once every such copy is gone.
        for _ in 0..500 {
            if std::os::unix::net::UnixStream::connect(&path).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let again = claim_socket(&path, &data, 0o600).expect("stale replaced");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(again);
    }
}
