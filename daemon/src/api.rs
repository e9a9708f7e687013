//! The daemon's API for `upgradectl`: HTTP/1.1 + JSON over a Unix socket (mode 0600).
//!
//! The kernel tells us the peer's uid on each connection; it is recorded on every operator
//! event. `GET /v1/runs/{id}/events?follow=true` streams a run's records as JSON lines, the
//! stored ones first, then live ones as they are committed.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use bytes::Bytes;
use futures_util::stream;
use serde::Deserialize;
use serde_json::json;
use tokio::net::UnixListener;
use upgraded_events::{Actor, Event, RunId, RunState, Version};

use crate::engine::{Daemon, RequestError};
use crate::log::EventLog;

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

/// Binds the socket (replacing a stale one), restricts it to its owner, and serves.
pub async fn serve<L: EventLog + Clone>(
    daemon: Arc<Daemon<L>>,
    socket: &Path,
    mode: u32,
) -> std::io::Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(socket) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))?;
    tracing::info!(socket = %socket.display(), "API listening");
    axum::serve(
        listener,
        router(daemon).into_make_service_with_connect_info::<Peer>(),
    )
    .await
}

pub fn router<L: EventLog + Clone>(daemon: Arc<Daemon<L>>) -> Router {
    Router::new()
        .route("/v1/status", get(status::<L>))
        .route("/v1/runs", get(list_runs::<L>).post(start::<L>))
        .route("/v1/runs/{id}", get(run_status::<L>))
        .route("/v1/runs/{id}/events", get(events::<L>))
        .route("/v1/run/pause", post(pause::<L>))
        .route("/v1/run/resume", post(resume::<L>))
        .route("/v1/run/abort", post(abort::<L>))
        .with_state(daemon)
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let code = match e {
            RequestError::Busy { .. } | RequestError::WrongPhase(..) => StatusCode::CONFLICT,
            RequestError::NoRun => StatusCode::NOT_FOUND,
            RequestError::Plan(_) | RequestError::Blocked { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            RequestError::Inventory(_) => StatusCode::BAD_GATEWAY,
            RequestError::Log(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(code, e.to_string())
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

/// The operator: the kernel-reported uid, and the name the client claims (bounded, printable).
fn actor(peer: Peer, headers: &HeaderMap) -> Actor {
    let name = headers
        .get("x-upgradectl-user")
        .and_then(|v| v.to_str().ok())
        .map(|s| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(64)
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    Actor {
        uid: peer.uid,
        name,
    }
}

async fn status<L: EventLog + Clone>(State(d): State<Arc<Daemon<L>>>) -> Response {
    let s = d.status().borrow().clone();
    Json(json!({ "active": s })).into_response()
}

async fn list_runs<L: EventLog + Clone>(
    State(d): State<Arc<Daemon<L>>>,
) -> Result<Response, ApiError> {
    let mut out = Vec::new();
    for run in d.log().runs().map_err(internal)? {
        let s = RunState::replay(&d.log().read(run, 0).map_err(internal)?).summary();
        out.push(
            json!({ "run": run, "phase": s.phase, "target": s.target, "records": s.next_seq }),
        );
    }
    Ok(Json(out).into_response())
}

fn parse_run(id: &str) -> Result<RunId, ApiError> {
    id.parse()
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, format!("{id:?} is not a run id")))
}

async fn run_status<L: EventLog + Clone>(
    State(d): State<Arc<Daemon<L>>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let run = parse_run(&id)?;
    let records = d.log().read(run, 0).map_err(internal)?;
    if records.is_empty() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no run {run}")));
    }
    Ok(Json(RunState::replay(&records).summary()).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StartBody {
    target: String,
    #[serde(default)]
    dry_run: bool,
    /// Start despite blockers in the plan.
    #[serde(default)]
    force: bool,
}

async fn start<L: EventLog + Clone>(
    State(d): State<Arc<Daemon<L>>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    Json(body): Json<StartBody>,
) -> Result<Response, ApiError> {
    let target: Version =
        body.target
            .parse()
            .map_err(|e: upgraded_events::version::VersionError| {
                ApiError(StatusCode::BAD_REQUEST, e.to_string())
            })?;
    let (run, plan) = d
        .start(target, actor(peer, &headers), body.dry_run, body.force)
        .await?;
    Ok(Json(json!({ "run": run, "plan": plan })).into_response())
}

/// Records an operator action on the active run.
async fn act<L: EventLog + Clone>(d: &Daemon<L>, event: Event) -> Result<Response, ApiError> {
    let run = d.operator(event).await?;
    Ok(Json(json!({ "run": run })).into_response())
}

#[derive(Debug, Deserialize, Default)]
struct ReasonBody {
    #[serde(default)]
    reason: String,
}

async fn pause<L: EventLog + Clone>(
    State(d): State<Arc<Daemon<L>>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Option<Json<ReasonBody>>,
) -> Result<Response, ApiError> {
    let reason = body.map(|b| b.0.reason).unwrap_or_default();
    act(
        &d,
        Event::RunPaused {
            by: actor(peer, &headers),
            reason,
        },
    )
    .await
}

async fn resume<L: EventLog + Clone>(
    State(d): State<Arc<Daemon<L>>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    act(
        &d,
        Event::RunResumed {
            by: actor(peer, &headers),
        },
    )
    .await
}

async fn abort<L: EventLog + Clone>(
    State(d): State<Arc<Daemon<L>>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: Option<Json<ReasonBody>>,
) -> Result<Response, ApiError> {
    let reason = body.map(|b| b.0.reason).unwrap_or_default();
    act(
        &d,
        Event::AbortRequested {
            by: actor(peer, &headers),
            reason,
        },
    )
    .await
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    #[serde(default)]
    from: u64,
    #[serde(default)]
    follow: bool,
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
    UrlPath(id): UrlPath<String>,
    Query(q): Query<EventsQuery>,
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
