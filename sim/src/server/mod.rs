//! The sim over HTTP: the part of the Kubernetes REST API that kubectl get/cordon/drain and our
//! daemon use (legacy discovery, nodes, pods, evictions, PDBs, apps workloads and their scale),
//! plus `/sim/v1/...` for node agents and tests (kubelet restarts, control-plane upgrades, time,
//! faults).
//!
//! One handler parses the path itself: the API's URL grammar (`/api/v1/namespaces/NS/pods/N/
//! eviction`) is regular, and a single match keeps each resource's verbs side by side.

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

use crate::clock::Millis;
use crate::kube;
use crate::model::{EvictError, Faults, Kind, ModelError, SimPod, World};

mod control;
mod discovery;
mod resources;
mod response;
mod selector;

use control::control;
pub use control::summary;
use discovery::discovery;
use resources::{nodes, pdbs, pods, workloads};
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
    api_faults: Mutex<Vec<ApiFault>>,
    /// Like an apiserver's audit log, in short: changing requests per User-Agent.
    audit: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Sim {
    pub fn new(world: World) -> Arc<Sim> {
        Arc::new(Sim {
            world: Mutex::new(world),
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
        let mut w = self.world.lock().unwrap_or_else(|e| e.into_inner());
        w.sync();
        w
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

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// A resource request: `[group, version]`, namespace, resource, name, subresource.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    group: String,
    namespace: Option<String>,
    resource: String,
    name: Option<String>,
    sub: Option<String>,
}

fn target(path: &[String]) -> Option<Target> {
    let (group, rest) = match path {
        [a, v, rest @ ..] if a == "api" && v == "v1" => (String::new(), rest),
        [a, g, v, rest @ ..] if a == "apis" && v == "v1" => (g.clone(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        [ns, n, rest @ ..] if ns == "namespaces" && !rest.is_empty() => (Some(n.clone()), rest),
        _ => (None, rest),
    };
    let (resource, name, sub) = match rest {
        [r] => (r.clone(), None, None),
        [r, n] => (r.clone(), Some(n.clone()), None),
        [r, n, s] => (r.clone(), Some(n.clone()), Some(s.clone())),
        _ => return None,
    };
    Some(Target {
        group,
        namespace,
        resource,
        name,
        sub,
    })
}

async fn handle(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    if method != Method::GET && raw.first() != Some(&"sim") {
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
    let path: Vec<String> = raw.iter().map(|s| decode(s)).collect();
    if path.first().map(String::as_str) == Some("sim") {
        return control(&sim, &method, &path[1..], &body);
    }
    let Some(t) = target(&path) else {
        return not_found("path", uri.path());
    };
    let q = query(&uri);
    let table = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"));
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let mut w = sim.world();
    match (t.group.as_str(), t.resource.as_str()) {
        ("", "nodes") => nodes(&mut w, &method, &t, &q, table, &content_type, &body),
        ("", "pods") => pods(&mut w, &method, &t, &q, table, &body),
        ("policy", "poddisruptionbudgets") => pdbs(&w, &method, &t, &q),
        ("apps", "deployments" | "statefulsets" | "daemonsets" | "replicasets") => {
            workloads(&mut w, &method, &t, &q, &content_type, &body)
        }
        ("authorization.k8s.io", "selfsubjectaccessreviews") if method == Method::POST => {
            access_review(&w, &body)
        }
        _ => not_found("resource", &t.resource),
    }
}

/// `SelfSubjectAccessReview`: allowed unless the world's faults deny that verb on that
/// resource (`verb resource[/subresource]`).
fn access_review(w: &World, body: &[u8]) -> Response {
    let mut review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("the review is not JSON: {e}")),
    };
    let a = &review["spec"]["resourceAttributes"];
    let (verb, resource) = (str_at(&a["verb"]), str_at(&a["resource"]));
    let sub = str_at(&a["subresource"]);
    let key = if sub.is_empty() {
        format!("{verb} {resource}")
    } else {
        format!("{verb} {resource}/{sub}")
    };
    let allowed = !w.faults.denied.contains(&key);
    review["status"] = if allowed {
        json!({"allowed": true, "reason": "the sim allows it"})
    } else {
        json!({"allowed": false, "reason": format!("the sim's faults deny {key}")})
    };
    json_response(StatusCode::CREATED, &review)
}

fn str_at(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn list_json(kind: &str, api_version: &str, rv: u64, items: Vec<Value>) -> Value {
    json!({
        "kind": kind, "apiVersion": api_version,
        "metadata": { "resourceVersion": rv.to_string() },
        "items": items,
    })
}

/// RFC 7386 merge patch for JSON/strategic-merge content types (the fields we store are scalars
/// and maps, where the two agree), RFC 6902 for json-patch; server-side apply is not served.
fn apply_patch(doc: &mut Value, content_type: &str, body: &[u8]) -> Result<(), Response> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("the patch is not JSON: {e}")))?;
    if content_type.starts_with("application/json-patch+json") {
        let ops: json_patch::Patch = serde_json::from_value(patch)
            .map_err(|e| bad_request(format!("invalid JSON patch: {e}")))?;
        json_patch::patch(doc, &ops).map_err(|e| {
            status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                e.to_string(),
                None,
            )
        })
    } else if content_type.starts_with("application/merge-patch+json")
        || content_type.starts_with("application/strategic-merge-patch+json")
    {
        json_patch::merge(doc, &patch);
        Ok(())
    } else {
        Err(status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the sim does not serve patches of type {content_type:?}"),
            None,
        ))
    }
}
