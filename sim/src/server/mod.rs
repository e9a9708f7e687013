//! The sim over HTTP: the Kubernetes REST API for every resource in `resource::RESOURCES`
//! (get, list, watch, create, update, patch, delete, as kubectl and kube-rs use them), server-side
//! Tables, the Eviction and scale subresources, SelfSubjectAccessReviews, `metrics.k8s.io`,
//! discovery and OpenAPI v3, plus `/sim/v1/...` for node agents and tests (kubelet restarts,
//! control-plane upgrades, time, faults).
//!
//! Rooms: `mod.rs` the server's life and the handler that routes a request; `rest.rs` the
//! verbs; `subresources.rs` eviction, scale and access reviews; `watch.rs` watch streams;
//! `discovery.rs` and `openapi.rs` what clients read first; `metrics.rs` the metrics API;
//! `selector.rs` label and field selectors; `response.rs` answers and `Status` failures;
//! `control.rs` the side door.

// A ready `Response` is the error value of the helpers below (it is what the handler returns);
// boxing it would only add an allocation to the error path.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use upgraded_events::inventory::Labels;
use upgraded_events::version::Version;

use crate::admission::ApiError;
use crate::clock::Clock;
use crate::clock::Millis;
use crate::kube;
use crate::model::{Faults, ModelError, World};
use crate::resource::Res;

mod control;
mod discovery;
mod metrics;
mod openapi;
mod response;
mod rest;
mod selector;
mod subresources;
mod watch;

use control::control;
pub use control::summary;
use discovery::discovery;
use response::*;
use selector::Filter;

/// The apiserver version the sim reports at `/version` when it has no control plane.
pub const GIT_VERSION: &str = "v1.33.5";

/// An injected API failure: requests whose method and path match get `status` (429, 500,
/// 503…) instead of an answer; 504 waits `delay_ms` first (a timeout). `remaining` counts down;
/// the fault is gone at zero.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiFault {
    #[serde(default)]
    pub method: Option<String>,
    pub path_contains: String,
    pub status: u16,
    #[serde(default)]
    pub delay_ms: u64,
    pub remaining: u32,
}

/// The shared state behind the server.
#[derive(Debug)]
pub struct Sim {
    world: Mutex<World>,
    /// Woken at every change a request made, so watches send it without waiting.
    changed: tokio::sync::Notify,
    api_faults: Mutex<Vec<ApiFault>>,
    /// Like an apiserver's audit log, in short: changing requests per User-Agent.
    audit: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Sim {
    pub fn new(world: World) -> Arc<Sim> {
        Arc::new(Sim {
            world: Mutex::new(world),
            changed: tokio::sync::Notify::new(),
            api_faults: Mutex::new(vec![]),
            audit: Mutex::new(Default::default()),
        })
    }

    /// Changing requests (not GET) counted by their User-Agent (`-` when none was sent).
    pub fn user_agents(&self) -> std::collections::BTreeMap<String, u64> {
        self.audit.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// The world, brought up to the clock's time. A poisoned lock (a panic elsewhere) still
    /// yields the data: the model has no invariants a half-done request can break.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.synced(true)
    }

    /// The world for a reader that only needs what has changed: brought to the clock's time
    /// if that moved, without another pass of the controllers at an instant already passed.
    pub(crate) fn world_as_is(&self) -> MutexGuard<'_, World> {
        self.synced(false)
    }

    /// The world brought to the clock's time (at an instant already passed, only when
    /// `same_instant`); what changed by itself (a pod Ready, a kubelet back) goes out to the
    /// watches.
    fn synced(&self, same_instant: bool) -> MutexGuard<'_, World> {
        let mut w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        if same_instant || w.clock().now() > w.now() {
            let before = w.resource_version();
            w.sync();
            if w.resource_version() != before {
                self.changed.notify_waiters();
            }
        }
        w
    }

    /// When a waiting watch should look again if nothing wakes it: on tokio's clock (virtual
    /// in the harness), when the world next changes by itself; on a real clock, soon.
    fn look_again(&self, now: tokio::time::Instant, poll: Duration) -> tokio::time::Instant {
        let w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        match w.next_due().and_then(|t| w.clock().tokio_instant(t)) {
            Some(t) => t.max(now),
            None if matches!(w.clock(), Clock::Tokio { .. }) => now + Duration::from_secs(3600),
            None => now + poll,
        }
    }

    pub fn add_api_fault(&self, f: ApiFault) {
        self.api_faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(f);
    }

    fn take_api_fault(&self, method: &Method, path: &str) -> Option<ApiFault> {
        let mut faults = self.api_faults.lock().unwrap_or_else(|e| e.into_inner());
        let i = faults.iter().position(|f| {
            f.remaining > 0
                && f.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
                && path.contains(&f.path_contains)
        })?;
        faults[i].remaining -= 1;
        let f = faults[i].clone();
        faults.retain(|f| f.remaining > 0);
        Some(f)
    }
}

/// The router serving `sim`.
pub fn router(sim: Arc<Sim>) -> Router {
    Router::new().fallback(handle).with_state(sim)
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sim: Arc<Sim>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A kubeconfig for clients of a sim at `url` (plain HTTP on loopback or a lab bridge).
pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster:\n    server: {url}\ncontexts:\n- name: sim\n  context:\n    cluster: sim\n    user: sim\n    namespace: default\ncurrent-context: sim\nusers:\n- name: sim\n  user: {{}}\npreferences: {{}}\n"
    )
}

/// A sim served from its own thread and runtime, for tests and tools that are not async.
/// Dropping it stops the server.
#[derive(Debug)]
pub struct SimServer {
    pub sim: Arc<Sim>,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimServer {
    /// Binds `addr` (port 0: any free port) and serves `world` there.
    pub fn start(world: World, addr: SocketAddr) -> std::io::Result<SimServer> {
        let sim = Sim::new(world);
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = sim.clone();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("sim-server".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(std_listener) else {
                        return;
                    };
                    let _ = serve(listener, served, async {
                        let _ = stopped.await;
                    })
                    .await;
                });
            })?;
        Ok(SimServer {
            sim,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ----- the handler -----------------------------------------------------------------------------

fn decode_segment(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// A resource request: group, version, namespace, resource, name, subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) group: String,
    pub(super) version: String,
    pub(super) namespace: Option<String>,
    pub(super) resource: String,
    pub(super) name: Option<String>,
    pub(super) sub: Option<String>,
}

fn target(path: &[String]) -> Option<Target> {
    let (group, version, rest) = match path {
        [a, v, rest @ ..] if a == "api" => (String::new(), v.clone(), rest),
        [a, g, v, rest @ ..] if a == "apis" => (g.clone(), v.clone(), rest),
        _ => return None,
    };
    // `namespaces/NAME/status` is the namespace's subresource, not a resource in it.
    let (namespace, rest) = match rest {
        [ns, _, sub] if ns == "namespaces" && (sub == "status" || sub == "finalize") => {
            (None, rest)
        }
        [ns, n, rest @ ..] if ns == "namespaces" && !rest.is_empty() => (Some(n.clone()), rest),
        _ => (None, rest),
    };
    let (resource, name, sub) = match rest {
        [r] => (r.clone(), None, None),
        [r, n] => (r.clone(), Some(n.clone()), None),
        [r, n, s] => (r.clone(), Some(n.clone()), Some(s.clone())),
        // The apiserver's proxy to a node's kubelet (`nodes/NAME/proxy/configz`).
        [r, n, s, p] if s == "proxy" => (r.clone(), Some(n.clone()), Some(format!("proxy/{p}"))),
        _ => return None,
    };
    Some(Target {
        group,
        version,
        namespace,
        resource,
        name,
        sub,
    })
}

/// What a request asks, read from its headers and query.
#[derive(Debug, Clone)]
pub(super) struct Ask {
    pub(super) method: Method,
    pub(super) query: BTreeMap<String, String>,
    /// `Accept: application/json;as=Table;...`: a server-side Table.
    pub(super) table: bool,
    pub(super) content_type: String,
    pub(super) body: Bytes,
}

impl Ask {
    /// The body as JSON: parsed, or read from the Kubernetes protobuf encoding.
    pub(super) fn json(&self) -> Result<Value, ApiError> {
        if self.content_type.starts_with(crate::proto::CONTENT_TYPE) {
            return crate::proto::decode(&self.body)
                .map_err(|e| ApiError::BadRequest(e.to_string()));
        }
        if self.content_type.contains("yaml") {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, {}",
                crate::proto::CONTENT_TYPE
            )));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::BadRequest(format!("the body of the request is not JSON: {e}")))
    }
}

/// The answer to a request that failed as the apiserver fails it.
pub(super) fn refused(e: &ApiError) -> Response {
    let code = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &e.status())
}

async fn handle(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let changing = method != Method::GET && raw.first() != Some(&"sim");
    if changing {
        let agent = headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        if let Ok(mut a) = sim.audit.lock() {
            *a.entry(agent).or_default() += 1;
        }
    }
    if let Some(f) = sim.take_api_fault(&method, uri.path()) {
        if f.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(f.delay_ms)).await;
        }
        let code = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let reason = match f.status {
            429 => "TooManyRequests",
            504 => "Timeout",
            503 => "ServiceUnavailable",
            _ => "InternalError",
        };
        return status(
            code,
            reason,
            format!("injected fault: {} {}", method, uri.path()),
            None,
        );
    }
    if method == Method::GET
        && let Some(r) = discovery(&raw, || sim.world().apiserver_version())
    {
        return r;
    }
    let path: Vec<String> = raw.iter().map(|s| decode_segment(s)).collect();
    match path.first().map(String::as_str) {
        Some("sim") => return control(&sim, &method, &path[1..], &body),
        Some("openapi") if method == Method::GET => return openapi::serve(&path[1..]),
        _ => {}
    }
    let Some(t) = target(&path) else {
        return refused(&ApiError::NotFound {
            resource: String::new(),
            name: uri.path().to_string(),
        });
    };
    let ask = Ask {
        method: method.clone(),
        query: query(&uri),
        table: headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("as=Table")),
        content_type: headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_string(),
        body,
    };
    if t.group == "metrics.k8s.io" {
        return metrics::serve(&sim.world(), &t, &ask);
    }
    if t.group == "authorization.k8s.io" && t.resource == "selfsubjectaccessreviews" {
        return match method {
            Method::POST => subresources::access_review(&sim.world(), &ask.body),
            _ => refused(&ApiError::MethodNotAllowed),
        };
    }
    let Some(res) = Res::at(&t.group, &t.version, &t.resource) else {
        return not_served(&t);
    };
    if method == Method::GET && t.name.is_none() && is_watch(&ask.query) {
        return watch::serve(sim.clone(), res, t.namespace.clone(), ask).await;
    }
    let answer = {
        // An eviction is answered from the world as it is: the controllers' pass after the
        // previous eviction of a drain's burst waits for the next reader (see
        // `World::evict_deferred`).
        let eviction = method == Method::POST && t.sub.as_deref() == Some("eviction");
        let mut w = if eviction {
            sim.world_as_is()
        } else {
            sim.world()
        };
        let r = rest::serve(&mut w, res, &t, &ask);
        if changing {
            w.write_journal();
        }
        r
    };
    if changing {
        sim.changed.notify_waiters();
    }
    answer
}

/// A resource the sim does not serve, as the apiserver answers it.
fn not_served(t: &Target) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource".into(),
        Some(meta::StatusDetails {
            kind: Some(t.resource.clone()),
            group: (!t.group.is_empty()).then(|| t.group.clone()),
            ..Default::default()
        }),
    )
}

fn is_watch(q: &BTreeMap<String, String>) -> bool {
    q.get("watch").is_some_and(|v| v == "true" || v == "1")
}
