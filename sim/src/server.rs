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

// ----- responses -------------------------------------------------------------------------------

fn json_response(status: StatusCode, v: &impl Serialize) -> Response {
    match serde_json::to_vec(v) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn ok(v: &impl Serialize) -> Response {
    json_response(StatusCode::OK, v)
}

/// A `Status` failure as the apiserver writes it.
fn status(
    code: StatusCode,
    reason: &str,
    message: String,
    details: Option<meta::StatusDetails>,
) -> Response {
    let s = meta::Status {
        code: Some(i32::from(code.as_u16())),
        details,
        message: Some(message),
        metadata: meta::ListMeta::default(),
        reason: Some(reason.into()),
        status: Some("Failure".into()),
    };
    json_response(code, &s)
}

fn not_found(kind: &str, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{kind} \"{name}\" not found"),
        Some(meta::StatusDetails {
            name: Some(name.into()),
            kind: Some(kind.into()),
            ..Default::default()
        }),
    )
}

fn bad_request(message: String) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

fn method_not_allowed() -> Response {
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource".into(),
        None,
    )
}

fn model_error(e: ModelError) -> Response {
    match e {
        ModelError::NotFound { kind, name } => not_found(kind, &name),
        ModelError::Invalid(m) => status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", m, None),
    }
}

// ----- discovery -------------------------------------------------------------------------------

struct Res {
    name: &'static str,
    kind: &'static str,
    namespaced: bool,
    verbs: &'static [&'static str],
    short: &'static [&'static str],
    /// For subresources served from another group (pods/eviction is policy/v1).
    group_version: Option<(&'static str, &'static str)>,
}

const READ: &[&str] = &["get", "list"];
const CORE: &[Res] = &[
    Res {
        name: "nodes",
        kind: "Node",
        namespaced: false,
        verbs: &["get", "list", "patch"],
        short: &["no"],
        group_version: None,
    },
    Res {
        name: "nodes/status",
        kind: "Node",
        namespaced: false,
        verbs: &["get"],
        short: &[],
        group_version: None,
    },
    Res {
        name: "pods",
        kind: "Pod",
        namespaced: true,
        verbs: &["delete", "get", "list"],
        short: &["po"],
        group_version: None,
    },
    Res {
        name: "pods/eviction",
        kind: "Eviction",
        namespaced: true,
        verbs: &["create"],
        short: &[],
        group_version: Some(("policy", "v1")),
    },
    Res {
        name: "pods/status",
        kind: "Pod",
        namespaced: true,
        verbs: &["get"],
        short: &[],
        group_version: None,
    },
];
const APPS: &[Res] = &[
    Res {
        name: "daemonsets",
        kind: "DaemonSet",
        namespaced: true,
        verbs: &["get", "list", "patch"],
        short: &["ds"],
        group_version: None,
    },
    Res {
        name: "deployments",
        kind: "Deployment",
        namespaced: true,
        verbs: READ,
        short: &["deploy"],
        group_version: None,
    },
    Res {
        name: "deployments/scale",
        kind: "Scale",
        namespaced: true,
        verbs: &["get", "patch", "update"],
        short: &[],
        group_version: Some(("autoscaling", "v1")),
    },
    Res {
        name: "replicasets",
        kind: "ReplicaSet",
        namespaced: true,
        verbs: READ,
        short: &["rs"],
        group_version: None,
    },
    Res {
        name: "statefulsets",
        kind: "StatefulSet",
        namespaced: true,
        verbs: READ,
        short: &["sts"],
        group_version: None,
    },
    Res {
        name: "statefulsets/scale",
        kind: "Scale",
        namespaced: true,
        verbs: &["get", "patch", "update"],
        short: &[],
        group_version: Some(("autoscaling", "v1")),
    },
];
const POLICY: &[Res] = &[
    Res {
        name: "poddisruptionbudgets",
        kind: "PodDisruptionBudget",
        namespaced: true,
        verbs: READ,
        short: &["pdb"],
        group_version: None,
    },
    Res {
        name: "poddisruptionbudgets/status",
        kind: "PodDisruptionBudget",
        namespaced: true,
        verbs: &["get"],
        short: &[],
        group_version: None,
    },
];

fn resource_list(group_version: &str, resources: &[Res]) -> meta::APIResourceList {
    meta::APIResourceList {
        group_version: group_version.into(),
        resources: resources
            .iter()
            .map(|r| meta::APIResource {
                name: r.name.into(),
                kind: r.kind.into(),
                namespaced: r.namespaced,
                singular_name: if r.name.contains('/') {
                    String::new()
                } else {
                    r.kind.to_ascii_lowercase()
                },
                verbs: r.verbs.iter().map(|v| v.to_string()).collect(),
                short_names: (!r.short.is_empty())
                    .then(|| r.short.iter().map(|s| s.to_string()).collect()),
                group: r.group_version.map(|(g, _)| g.to_string()),
                version: r.group_version.map(|(_, v)| v.to_string()),
                ..Default::default()
            })
            .collect(),
    }
}

fn group(name: &str) -> meta::APIGroup {
    let v = meta::GroupVersionForDiscovery {
        group_version: format!("{name}/v1"),
        version: "v1".into(),
    };
    meta::APIGroup {
        name: name.into(),
        preferred_version: Some(v.clone()),
        server_address_by_client_cidrs: None,
        versions: vec![v],
    }
}

fn discovery(path: &[&str], apiserver: impl FnOnce() -> Option<Version>) -> Option<Response> {
    Some(match path {
        ["version"] => {
            let git = apiserver().map_or_else(|| GIT_VERSION.to_string(), |v| v.to_string());
            ok(&json!({
                "major": "1", "minor": git.split('.').nth(1).unwrap_or("33"),
                "gitVersion": git, "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.24.0", "compiler": "gc", "platform": "linux/amd64",
                "emulationMajor": "1", "minCompatibilityMajor": "1",
            }))
        }
        ["api"] => ok(&meta::APIVersions {
            versions: vec!["v1".into()],
            server_address_by_client_cidrs: vec![meta::ServerAddressByClientCIDR {
                client_cidr: "0.0.0.0/0".into(),
                server_address: String::new(),
            }],
        }),
        ["apis"] => ok(&meta::APIGroupList {
            groups: vec![group("apps"), group("policy")],
        }),
        ["api", "v1"] => ok(&resource_list("v1", CORE)),
        ["apis", "apps", "v1"] => ok(&resource_list("apps/v1", APPS)),
        ["apis", "policy", "v1"] => ok(&resource_list("policy/v1", POLICY)),
        ["healthz" | "readyz" | "livez"] => "ok".into_response(),
        _ => return None,
    })
}

// ----- selectors -------------------------------------------------------------------------------

/// One term of a label or field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

/// Splits on commas outside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = vec![];
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

fn parse_selector(s: &str) -> Result<Vec<Term>, String> {
    split_terms(s)
        .into_iter()
        .map(|t| {
            let set = |rest: &str| -> Result<Vec<String>, String> {
                let inner = rest
                    .trim()
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("invalid selector term {t:?}"))?;
                Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
            };
            if let Some((k, v)) = t.split_once("!=") {
                Ok(Term::Ne(k.trim().into(), v.trim().into()))
            } else if let Some((k, v)) = t.split_once("==").or_else(|| t.split_once('=')) {
                Ok(Term::Eq(k.trim().into(), v.trim().into()))
            } else if let Some((k, rest)) = t.split_once(" notin ") {
                Ok(Term::NotIn(k.trim().into(), set(rest)?))
            } else if let Some((k, rest)) = t.split_once(" in ") {
                Ok(Term::In(k.trim().into(), set(rest)?))
            } else if let Some(k) = t.strip_prefix('!') {
                Ok(Term::Absent(k.trim().into()))
            } else if t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
            {
                Ok(Term::Exists(t.into()))
            } else {
                Err(format!("unable to parse requirement: {t:?}"))
            }
        })
        .collect()
}

fn matches(terms: &[Term], get: impl Fn(&str) -> Option<String>) -> bool {
    terms.iter().all(|t| match t {
        Term::Eq(k, v) => get(k).as_deref() == Some(v.as_str()),
        Term::Ne(k, v) => get(k).as_deref() != Some(v.as_str()),
        Term::In(k, vs) => get(k).is_some_and(|x| vs.contains(&x)),
        Term::NotIn(k, vs) => !get(k).is_some_and(|x| vs.contains(&x)),
        Term::Exists(k) => get(k).is_some(),
        Term::Absent(k) => get(k).is_none(),
    })
}

/// `labelSelector` and `fieldSelector` of a list request.
struct Filter {
    labels: Vec<Term>,
    fields: Vec<Term>,
}

impl Filter {
    fn parse(q: &BTreeMap<String, String>) -> Result<Filter, Response> {
        let labels = parse_selector(q.get("labelSelector").map(String::as_str).unwrap_or(""))
            .map_err(bad_request)?;
        let fields = parse_selector(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
            .map_err(bad_request)?;
        for f in &fields {
            let key = match f {
                Term::Eq(k, _) | Term::Ne(k, _) => k,
                _ => return Err(bad_request("field selectors support only = and !=".into())),
            };
            const KNOWN: &[&str] = &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "status.phase",
                "spec.unschedulable",
            ];
            if !KNOWN.contains(&key.as_str()) {
                return Err(bad_request(format!("field label not supported: {key}")));
            }
        }
        Ok(Filter { labels, fields })
    }

    fn keep(&self, labels: &Labels, field: impl Fn(&str) -> Option<String>) -> bool {
        matches(&self.labels, |k| labels.get(k).cloned()) && matches(&self.fields, field)
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

fn nodes(
    w: &mut World,
    method: &Method,
    t: &Target,
    q: &BTreeMap<String, String>,
    table: bool,
    content_type: &str,
    body: &[u8],
) -> Response {
    let now = w.now();
    match (method.clone(), &t.name, t.sub.as_deref()) {
        (Method::GET, None, None) => {
            let filter = match Filter::parse(q) {
                Ok(f) => f,
                Err(r) => return r,
            };
            let nodes: Vec<_> = w
                .nodes
                .values()
                .filter(|n| {
                    filter.keep(&n.labels, |k| match k {
                        "metadata.name" => Some(n.name.clone()),
                        "spec.unschedulable" => Some(n.unschedulable.to_string()),
                        _ => None,
                    })
                })
                .map(|n| kube::node(n, now))
                .collect();
            if table {
                return ok(&crate::table::nodes(&nodes, now, w.resource_version(), q));
            }
            let items = nodes
                .iter()
                .filter_map(|n| serde_json::to_value(n).ok())
                .collect();
            ok(&list_json("NodeList", "v1", w.resource_version(), items))
        }
        (Method::GET, Some(name), None | Some("status")) => match w.nodes.get(name) {
            Some(n) => {
                let n = kube::node(n, now);
                if table {
                    ok(&crate::table::nodes(&[n], now, w.resource_version(), q))
                } else {
                    ok(&n)
                }
            }
            None => not_found("nodes", name),
        },
        (Method::PATCH, Some(name), None) => {
            let Some(n) = w.nodes.get(name) else {
                return not_found("nodes", name);
            };
            let mut doc = match serde_json::to_value(kube::node(n, now)) {
                Ok(v) => v,
                Err(e) => return bad_request(e.to_string()),
            };
            if let Err(r) = apply_patch(&mut doc, content_type, body) {
                return r;
            }
            let patched: k8s_openapi::api::core::v1::Node = match serde_json::from_value(doc) {
                Ok(n) => n,
                Err(e) => return bad_request(format!("the patched node is invalid: {e}")),
            };
            let e = kube::node_edits(&patched);
            let r = w
                .set_node_meta(name, e.labels, e.annotations, e.taints)
                .and_then(|()| w.set_unschedulable(name, e.unschedulable));
            if let Err(e) = r {
                return model_error(e);
            }
            match w.nodes.get(name) {
                Some(n) => ok(&kube::node(n, w.now())),
                None => not_found("nodes", name),
            }
        }
        _ => method_not_allowed(),
    }
}

fn pod_fields(p: &SimPod) -> impl Fn(&str) -> Option<String> + '_ {
    move |k| match k {
        "metadata.name" => Some(p.name.clone()),
        "metadata.namespace" => Some(p.namespace.clone()),
        // Unscheduled pods have an empty nodeName, which `spec.nodeName=` selects.
        "spec.nodeName" => Some(p.node.clone().unwrap_or_default()),
        "status.phase" => Some(p.phase.as_str().to_string()),
        _ => None,
    }
}

fn pods(
    w: &mut World,
    method: &Method,
    t: &Target,
    q: &BTreeMap<String, String>,
    table: bool,
    body: &[u8],
) -> Response {
    match (method.clone(), &t.name, t.sub.as_deref()) {
        (Method::GET, None, None) => {
            let filter = match Filter::parse(q) {
                Ok(f) => f,
                Err(r) => return r,
            };
            let selected: Vec<&SimPod> = w
                .pods
                .values()
                .filter(|p| t.namespace.as_ref().is_none_or(|ns| &p.namespace == ns))
                .filter(|p| filter.keep(&p.spec.labels, pod_fields(p)))
                .collect();
            if table {
                let objects: Vec<_> = selected.iter().map(|p| kube::pod(p, w)).collect();
                return ok(&crate::table::pods(&objects, selected.as_slice(), w, q));
            }
            let keys: Vec<(String, String)> = selected.iter().map(|p| p.key()).collect();
            let body = kube::pods_json(w, &keys);
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response()
        }
        (Method::GET, Some(name), None | Some("status")) => {
            let ns = t.namespace.clone().unwrap_or_default();
            match w.pods.get(&(ns, name.clone())) {
                Some(p) if table => ok(&crate::table::pods(&[kube::pod(p, w)], &[p], w, q)),
                Some(p) => ok(&kube::pod(p, w)),
                None => not_found("pods", name),
            }
        }
        (Method::DELETE, Some(name), None) => {
            let ns = t.namespace.clone().unwrap_or_default();
            let grace = query_grace(q).or_else(|| body_grace(body));
            match w.delete_pod(&ns, name, grace) {
                Ok(p) => ok(&kube::pod(&p, w)),
                Err(e) => model_error(e),
            }
        }
        (Method::POST, Some(name), Some("eviction")) => {
            let ns = t.namespace.clone().unwrap_or_default();
            evict(w, &ns, name, body)
        }
        _ => method_not_allowed(),
    }
}

fn query_grace(q: &BTreeMap<String, String>) -> Option<Millis> {
    q.get("gracePeriodSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| s * 1000)
}

fn body_grace(body: &[u8]) -> Option<Millis> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v["gracePeriodSeconds"].as_u64().map(|s| s * 1000)
}

/// `POST .../pods/NAME/eviction` with an `Eviction` body, answered as the apiserver does.
fn evict(w: &mut World, ns: &str, name: &str, body: &[u8]) -> Response {
    let eviction: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad_request(format!("the eviction is not JSON: {e}")),
    };
    if eviction["kind"].as_str().is_some_and(|k| k != "Eviction") {
        return bad_request(format!("expected an Eviction, got {}", eviction["kind"]));
    }
    if let Some(n) = eviction["metadata"]["name"].as_str()
        && n != name
    {
        return bad_request("name in URL does not match name in Eviction object".into());
    }
    // kube 5's `Api::evict` sends `delete_options` (unknown to a real apiserver, which ignores
    // it); we are strict so that such a client is noticed here rather than in production.
    if eviction.get("delete_options").is_some() {
        return bad_request(
            "unknown field \"delete_options\" in policy/v1, Kind=Eviction (did you mean deleteOptions?)"
                .into(),
        );
    }
    match w.evict(ns, name) {
        Ok(()) => json_response(
            StatusCode::CREATED,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ),
        Err(EvictError::NotFound(n)) => not_found("pods", &n),
        Err(e @ EvictError::MultiplePdbs(_)) => status(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("Internal error occurred: {e}"),
            Some(meta::StatusDetails {
                causes: Some(vec![meta::StatusCause {
                    message: Some(e.to_string()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        ),
        Err(e @ EvictError::Blocked { .. }) => {
            let EvictError::Blocked { pdb, status: s } = &e else {
                return method_not_allowed();
            };
            status(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                e.to_string(),
                Some(meta::StatusDetails {
                    causes: Some(vec![meta::StatusCause {
                        reason: Some("DisruptionBudget".into()),
                        message: Some(format!(
                            "The disruption budget {pdb} needs {} healthy pods and has {} currently",
                            s.desired_healthy, s.current_healthy
                        )),
                        field: None,
                    }]),
                    ..Default::default()
                }),
            )
        }
    }
}

fn pdbs(w: &World, method: &Method, t: &Target, q: &BTreeMap<String, String>) -> Response {
    if method != Method::GET {
        return method_not_allowed();
    }
    match &t.name {
        None => {
            let filter = match Filter::parse(q) {
                Ok(f) => f,
                Err(r) => return r,
            };
            let items = w
                .pdbs
                .values()
                .filter(|b| t.namespace.as_ref().is_none_or(|ns| &b.namespace == ns))
                .filter(|b| {
                    filter.keep(&Labels::new(), |k| match k {
                        "metadata.name" => Some(b.name.clone()),
                        "metadata.namespace" => Some(b.namespace.clone()),
                        _ => None,
                    })
                })
                .filter_map(|b| serde_json::to_value(kube::pdb(b, w)).ok())
                .collect();
            ok(&list_json(
                "PodDisruptionBudgetList",
                "policy/v1",
                w.resource_version(),
                items,
            ))
        }
        Some(name) => {
            let ns = t.namespace.clone().unwrap_or_default();
            match w.pdbs.get(&(ns, name.clone())) {
                Some(b) => ok(&kube::pdb(b, w)),
                None => not_found("poddisruptionbudgets.policy", name),
            }
        }
    }
}

fn workloads(
    w: &mut World,
    method: &Method,
    t: &Target,
    q: &BTreeMap<String, String>,
    content_type: &str,
    body: &[u8],
) -> Response {
    let kind = match t.resource.as_str() {
        "deployments" => Some(Kind::Deployment),
        "statefulsets" => Some(Kind::StatefulSet),
        "daemonsets" => Some(Kind::DaemonSet),
        _ => None,
    };
    let resource = format!("{}.apps", t.resource);
    let filter = match Filter::parse(q) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let in_ns = |ns: &String| t.namespace.as_ref().is_none_or(|n| n == ns);
    match (method.clone(), &t.name, t.sub.as_deref(), kind) {
        // ReplicaSets are derived from their Deployments.
        (Method::GET, None, None, None) => {
            let items = w
                .workloads
                .values()
                .filter(|d| d.kind == Kind::Deployment && in_ns(&d.namespace))
                .filter(|d| filter.keep(&d.template.labels, |_| None))
                .filter_map(|d| kube::replica_set(d, w))
                .filter_map(|r| serde_json::to_value(r).ok())
                .collect();
            ok(&list_json(
                "ReplicaSetList",
                "apps/v1",
                w.resource_version(),
                items,
            ))
        }
        (Method::GET, Some(name), None, None) => w
            .workloads
            .values()
            .filter(|d| d.kind == Kind::Deployment && in_ns(&d.namespace))
            .find_map(|d| {
                kube::replica_set(d, w).filter(|r| r.metadata.name.as_deref() == Some(name))
            })
            .map(|r| ok(&r))
            .unwrap_or_else(|| not_found(&resource, name)),
        (Method::GET, None, None, Some(kind)) => {
            let items = w
                .workloads
                .values()
                .filter(|d| d.kind == kind && in_ns(&d.namespace))
                .filter(|d| {
                    filter.keep(&d.template.labels, |k| match k {
                        "metadata.name" => Some(d.name.clone()),
                        "metadata.namespace" => Some(d.namespace.clone()),
                        _ => None,
                    })
                })
                .filter_map(|d| kube::workload_json(d, w).ok())
                .collect();
            let list_kind = format!("{}List", kind.as_str());
            ok(&list_json(
                &list_kind,
                "apps/v1",
                w.resource_version(),
                items,
            ))
        }
        (_, Some(name), sub, Some(kind)) => {
            let key = (kind, t.namespace.clone().unwrap_or_default(), name.clone());
            let Some(d) = w.workloads.get(&key).cloned() else {
                return not_found(&resource, name);
            };
            match (method.clone(), sub) {
                (Method::GET, None) => match kube::workload_json(&d, w) {
                    Ok(v) => ok(&v),
                    Err(e) => bad_request(e.to_string()),
                },
                (Method::GET, Some("scale")) if kind != Kind::DaemonSet => ok(&kube::scale(&d, w)),
                // A DaemonSet's pod image (kube-proxy's, in a rollback).
                (Method::PATCH, None) if kind == Kind::DaemonSet => {
                    let mut doc = match kube::workload_json(&d, w) {
                        Ok(v) => v,
                        Err(e) => return bad_request(e.to_string()),
                    };
                    if let Err(r) = apply_patch(&mut doc, content_type, body) {
                        return r;
                    }
                    let Some(image) = doc["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .map(str::to_string)
                    else {
                        return bad_request("the patched DaemonSet has no container image".into());
                    };
                    if let Err(e) = w.set_image(kind, &key.1, name, &image) {
                        return model_error(e);
                    }
                    match w.workloads.get(&key).map(|d| kube::workload_json(d, w)) {
                        Some(Ok(v)) => ok(&v),
                        Some(Err(e)) => bad_request(e.to_string()),
                        None => not_found(&resource, name),
                    }
                }
                (Method::PATCH | Method::PUT, Some("scale")) if kind != Kind::DaemonSet => {
                    let mut doc = match serde_json::to_value(kube::scale(&d, w)) {
                        Ok(v) => v,
                        Err(e) => return bad_request(e.to_string()),
                    };
                    if method == Method::PUT {
                        doc = match serde_json::from_slice(body) {
                            Ok(v) => v,
                            Err(e) => return bad_request(format!("the Scale is not JSON: {e}")),
                        };
                    } else if let Err(r) = apply_patch(&mut doc, content_type, body) {
                        return r;
                    }
                    // Optimistic concurrency, as the apiserver: a stale resourceVersion
                    // in the body is a conflict.
                    if let Some(rv) = doc["metadata"]["resourceVersion"].as_str()
                        && rv != d.resource_version.to_string()
                    {
                        return status(
                            StatusCode::CONFLICT,
                            "Conflict",
                            format!(
                                "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                            ),
                            None,
                        );
                    }
                    let Some(replicas) = doc["spec"]["replicas"].as_u64() else {
                        return bad_request("spec.replicas must be a non-negative integer".into());
                    };
                    if let Err(e) =
                        w.scale(kind, &key.1, name, replicas.min(u64::from(u32::MAX)) as u32)
                    {
                        return model_error(e);
                    }
                    match w.workloads.get(&key) {
                        Some(d) => ok(&kube::scale(d, w)),
                        None => not_found(&resource, name),
                    }
                }
                _ => method_not_allowed(),
            }
        }
        _ => method_not_allowed(),
    }
}

// ----- /sim/v1: node agents, time and faults -------------------------------------------------

#[derive(Debug, Deserialize)]
struct VersionBody {
    version: String,
    #[serde(default)]
    etcd: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PackageBody {
    package: String,
    version: String,
}

#[derive(Debug, Deserialize)]
struct AdvanceBody {
    seconds: u64,
}

fn control(sim: &Sim, method: &Method, path: &[String], body: &[u8]) -> Response {
    let parts: Vec<&str> = path.iter().map(String::as_str).collect();
    let parse_version = |body: &[u8]| -> Result<(Version, Option<String>), Response> {
        let b: VersionBody = serde_json::from_slice(body)
            .map_err(|e| bad_request(format!("expected {{\"version\": \"v1.35.3\"}}: {e}")))?;
        let v = b
            .version
            .parse()
            .map_err(|e: upgraded_events::version::VersionError| bad_request(e.to_string()))?;
        Ok((v, b.etcd))
    };
    let done = |r: Result<(), ModelError>| match r {
        Ok(()) => ok(&json!({"ok": true})),
        Err(e) => model_error(e),
    };
    match (method.clone(), parts.as_slice()) {
        (Method::GET, ["v1", "state"]) => ok(&summary(&sim.world())),
        (Method::GET, ["v1", "audit", "user-agents"]) => ok(&sim.user_agents()),
        (Method::POST, ["v1", "advance"]) => {
            let b: AdvanceBody = match serde_json::from_slice(body) {
                Ok(b) => b,
                Err(e) => return bad_request(format!("expected {{\"seconds\": N}}: {e}")),
            };
            let mut w = sim.world();
            if !w.clock().is_virtual() {
                return bad_request("this sim runs on a real clock".into());
            }
            w.advance(b.seconds.saturating_mul(1000));
            ok(&json!({"now": kube::time(w.now())}))
        }
        (Method::POST, ["v1", "nodes", node, "kubelet-restart"]) => match parse_version(body) {
            Ok((v, _)) => done(sim.world().restart_kubelet(node, v)),
            Err(r) => r,
        },
        (Method::POST, ["v1", "nodes", node, "control-plane"]) => match parse_version(body) {
            Ok((v, etcd)) => done(sim.world().upgrade_control_plane(node, v, etcd)),
            Err(r) => r,
        },
        (Method::GET, ["v1", "nodes", node, "packages"]) => match sim.world().nodes.get(*node) {
            Some(n) => ok(&n.packages),
            None => not_found("nodes", node),
        },
        (Method::POST, ["v1", "nodes", node, "packages"]) => {
            let b: PackageBody = match serde_json::from_slice(body) {
                Ok(b) => b,
                Err(e) => {
                    return bad_request(format!(
                        "expected {{\"package\": \"kubelet\", \"version\": \"v1.35.3\"}}: {e}"
                    ));
                }
            };
            match b.version.parse() {
                Ok(v) => done(sim.world().install_package(node, &b.package, v)),
                Err(e) => bad_request(format!("{e}")),
            }
        }
        (Method::POST, ["v1", "nodes", node, "down"]) => {
            done(sim.world().set_node_down(node, true))
        }
        (Method::POST, ["v1", "nodes", node, "up"]) => done(sim.world().set_node_down(node, false)),
        (Method::GET, ["v1", "faults"]) => ok(&sim.world().faults),
        (Method::PUT, ["v1", "faults"]) => match serde_json::from_slice::<Faults>(body) {
            Ok(f) => {
                sim.world().faults = f;
                ok(&json!({"ok": true}))
            }
            Err(e) => bad_request(format!("invalid faults: {e}")),
        },
        (Method::POST, ["v1", "api-faults"]) => match serde_json::from_slice::<ApiFault>(body) {
            Ok(f) => {
                sim.add_api_fault(f);
                ok(&json!({"ok": true}))
            }
            Err(e) => bad_request(format!("invalid API fault: {e}")),
        },
        _ => not_found("sim endpoint", &parts.join("/")),
    }
}

/// A compact view of the world for tests and `sim serve`'s log.
pub fn summary(w: &World) -> Value {
    let nodes: Vec<Value> = w
        .nodes
        .values()
        .map(|n| {
            json!({
                "name": n.name, "kubelet": n.kubelet.to_string(), "ready": n.ready && !n.down,
                "unschedulable": n.unschedulable,
                "controlPlane": n.control_plane.as_ref().map(|c| c.apiserver.to_string()),
            })
        })
        .collect();
    let pending = w.pending_pods();
    let pdbs: Vec<Value> = w
        .pdbs
        .values()
        .map(|b| {
            let s = w.pdb_status(b);
            json!({"name": format!("{}/{}", b.namespace, b.name), "disruptionsAllowed": s.disruptions_allowed,
                   "currentHealthy": s.current_healthy, "desiredHealthy": s.desired_healthy})
        })
        .collect();
    json!({ "now": kube::time(w.now()), "nodes": nodes, "pods": w.pods.len(), "pending": pending, "pdbs": pdbs })
}
