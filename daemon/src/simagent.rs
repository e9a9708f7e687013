//! Node agents for the simulated cluster: the node-side commands (packages, kubeadm, kubelet,
//! etcd) carried out on the sim's machines through its `/sim/v1` endpoints, over plain HTTP
//! on loopback or a lab bridge. The demo and rehearsals use them where a real cluster uses
//! SSH; everything on the Kubernetes side still goes through the real API adapter.
//!
//! The machines' package state lives in the sim, so a restarted daemon finds it as it was
//! left, like a real node's package database.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};
use upgraded_events::Host;
use upgraded_events::Version;
use upgraded_events::inventory::CGROUP_KEY;

use crate::ports::{BoxFut, CommandOutput, NodeExecutor, PortError, RemoteCommand};

/// Where the sim's agents say the preflight keeps the kubelet files (as the node script).
const SIM_FILES: &str = "/var/lib/upgraded/kubelet-files";

/// The sim at `http://HOST:PORT`, or reached in process.
#[derive(Clone)]
pub struct SimAgents {
    authority: String,
    via: Via,
}

impl std::fmt::Debug for SimAgents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimAgents")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

/// One HTTP exchange with the sim: the request in, the status and body out (an `Err` is a
/// transport failure). The in-process harness passes the sim's router as one.
pub type Exchange = Arc<
    dyn Fn(Request<Full<Bytes>>) -> BoxFut<'static, Result<(hyper::StatusCode, Bytes), String>>
        + Send
        + Sync,
>;

#[derive(Clone)]
enum Via {
    Tcp,
    InProcess(Exchange),
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a plain http://HOST:PORT URL")]
pub struct BadUrl(String);

/// One HTTP/1 request to `authority` over a new TCP connection: its status and body.
pub(crate) async fn tcp_exchange(
    authority: &str,
    req: Request<Full<Bytes>>,
) -> Result<(hyper::StatusCode, Bytes), String> {
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    status_and_body(resp).await
}

/// A response's status and whole body (an [`Exchange`]'s answer).
pub async fn status_and_body<B>(
    resp: hyper::Response<B>,
) -> Result<(hyper::StatusCode, Bytes), String>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Display,
{
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

impl SimAgents {
    pub fn new(url: &str) -> Result<SimAgents, BadUrl> {
        let authority = url
            .strip_prefix("http://")
            .map(|r| r.trim_end_matches('/'))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| BadUrl(url.to_string()))?;
        Ok(SimAgents {
            authority: authority.to_string(),
            via: Via::Tcp,
        })
    }

    /// Agents whose requests go to `exchange` (the sim's router, in process) instead of TCP.
    pub fn in_process(exchange: Exchange) -> SimAgents {
        SimAgents {
            authority: "sim.in-process".into(),
            via: Via::InProcess(exchange),
        }
    }

    async fn exchange(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(hyper::StatusCode, Bytes), String> {
        match &self.via {
            Via::InProcess(f) => f(req).await,
            Via::Tcp => tcp_exchange(&self.authority, req).await,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, PortError> {
        let unreachable = |e: &dyn std::fmt::Display| {
            PortError::retryable(format!("sim node agent at {}: {e}", self.authority))
                .with_kind(upgraded_events::fault::FailureKind::Unreachable)
        };
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| PortError::fatal(e.to_string()))?;
        let (status, body) = self.exchange(req).await.map_err(|e| unreachable(&e))?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(v)
        } else {
            let msg = v["message"].as_str().unwrap_or("no message").to_string();
            let what = format!("{path}: {status}: {msg}");
            Err(if status.is_server_error() {
                PortError::retryable(what)
            } else {
                PortError::fatal(what)
            })
        }
    }

    fn node_path(node: &str, what: &str) -> String {
        let seg: String = percent_encode(node);
        format!("/sim/v1/nodes/{seg}/{what}")
    }

    async fn packages(&self, node: &str) -> Result<BTreeMap<String, Version>, PortError> {
        let v = self
            .call(Method::GET, &Self::node_path(node, "packages"), None)
            .await?;
        serde_json::from_value(v)
            .map_err(|e| PortError::retryable(format!("node {node}: package list unreadable: {e}")))
    }

    /// What the node agent finds on the machine (`sim::model::host::NodeHost`).
    async fn host(&self, node: &str) -> Result<Value, PortError> {
        self.call(Method::GET, &Self::node_path(node, "host"), None)
            .await
    }

    async fn installed_kubelet(&self, node: &str) -> Result<Version, PortError> {
        self.packages(node)
            .await?
            .get("kubelet")
            .copied()
            .ok_or_else(|| PortError::retryable(format!("node {node}: no kubelet package")))
    }

    async fn install(&self, node: &str, package: &str, version: Version) -> Result<(), PortError> {
        self.call(
            Method::POST,
            &Self::node_path(node, "packages"),
            Some(json!({ "package": package, "version": version.to_string() })),
        )
        .await
        .map(|_| ())
    }

    async fn run_command(
        &self,
        node: &str,
        cmd: &RemoteCommand,
    ) -> Result<CommandOutput, PortError> {
        let mut facts = upgraded_events::Facts::new();
        match cmd {
            RemoteCommand::Preflight { target } => {
                let path = format!("/api/v1/nodes/{}", percent_encode(node));
                let n = self.call(Method::GET, &path, None).await?;
                let cgroup = n["metadata"]["annotations"][CGROUP_KEY]
                    .as_str()
                    .or_else(|| n["metadata"]["labels"][CGROUP_KEY].as_str())
                    .unwrap_or("v2")
                    .to_string();
                // As the node script reports it (`stat -fc %T /sys/fs/cgroup`), for the
                // version-change rules.
                let fs = if cgroup == "v1" { "tmpfs" } else { "cgroup2fs" };
                let mut seen = upgraded_events::Facts::new();
                seen.insert("cgroup".into(), fs.into());
                crate::remote::rules_verdict(node, *target, &seen)
                    .map_err(|e| e.with_fact("cgroup", cgroup.clone()))?;
                facts.insert("cgroup".into(), cgroup);
                facts.insert("runtime".into(), "containerd answering".into());
                facts.insert("swap".into(), "off".into());
                // What a rollback needs, as the node script records it: packages, holds
                // (the sim's machines hold all three) and the kubelet config's backup.
                let packages = self.packages(node).await?;
                for p in ["kubeadm", "kubelet", "kubectl"] {
                    let v = packages.get(p).map(ToString::to_string).unwrap_or_default();
                    facts.insert(format!("pkg_{p}"), v);
                }
                facts.insert("held".into(), "kubeadm,kubectl,kubelet".into());
                if let Some(kv) = packages.get("kubelet") {
                    facts.insert("kubelet_installed".into(), kv.to_string());
                    facts.insert(
                        "kubelet_config_backup".into(),
                        format!("/var/lib/upgraded/kubelet-config/{kv}.yaml"),
                    );
                    // The files kubeadm rewrites, kept once under the kubelet version.
                    self.call(
                        Method::POST,
                        &Self::node_path(node, "kubelet-files/save"),
                        Some(json!({ "name": kv.to_string() })),
                    )
                    .await?;
                    let host = self.host(node).await?;
                    let kept = &host["saved"][kv.to_string()];
                    facts.insert("kubelet_files_backup".into(), format!("{SIM_FILES}/{kv}"));
                    facts.insert(
                        "kubelet_conf_server".into(),
                        kept["kubeletConfServer"]
                            .as_str()
                            .unwrap_or_default()
                            .into(),
                    );
                }
            }
            RemoteCommand::DowngradePackages {
                version,
                kubelet_config,
                kubeadm,
            } => {
                for p in upgraded_events::plan::node_packages(*kubeadm) {
                    self.install(node, p, *version).await?;
                }
                if let Some(path) = kubelet_config {
                    facts.insert("kubelet_config_restored".into(), path.clone());
                }
                facts.insert("installed".into(), version.to_string());
            }
            RemoteCommand::Fingerprint => {
                // What the node script reads, from the machine's host state.
                let host = self.host(node).await?;
                let path = format!("/api/v1/nodes/{}", percent_encode(node));
                let n = self.call(Method::GET, &path, None).await?;
                let info = &n["status"]["nodeInfo"];
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                let sha = |v: &str| {
                    use sha2::Digest;
                    format!("{:x}", sha2::Sha256::digest(v.as_bytes()))
                };
                let running = text(&info["kernelVersion"]);
                let installed = host["installedKernel"]
                    .as_str()
                    .map_or(running.clone(), str::to_string);
                let cgroup = n["metadata"]["annotations"][CGROUP_KEY]
                    .as_str()
                    .or_else(|| n["metadata"]["labels"][CGROUP_KEY].as_str())
                    .unwrap_or("v2");
                let flags: Vec<&str> = host["files"]["flags"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut kept: Vec<String> = flags
                    .iter()
                    .filter(|f| {
                        let name = f.split('=').next().unwrap_or_default();
                        !crate::remote::VOLATILE_FLAGS.contains(&name)
                    })
                    .map(|f| format!("{f}\n"))
                    .collect();
                kept.sort();
                kept.dedup();
                let held: Vec<&str> = host["held"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let swap = host["swap"].as_bool().unwrap_or(false);
                let kubelet = self
                    .packages(node)
                    .await?
                    .get("kubelet")
                    .map(ToString::to_string)
                    .unwrap_or_default();
                for (k, v) in [
                    ("kubelet_version", kubelet),
                    ("kernel", running),
                    ("kernel_installed", installed),
                    (
                        "reboot_required",
                        host["rebootRequired"]
                            .as_bool()
                            .unwrap_or(false)
                            .to_string(),
                    ),
                    ("os_image", text(&info["osImage"])),
                    ("containerd_version", text(&host["containerdVersion"])),
                    (
                        "containerd_config_sha256",
                        sha(host["containerdConfig"].as_str().unwrap_or_default()),
                    ),
                    (
                        "cgroup",
                        if cgroup == "v1" { "tmpfs" } else { "cgroup2fs" }.to_string(),
                    ),
                    ("swap_devices", if swap { "1" } else { "0" }.to_string()),
                    ("held", held.join(",")),
                    ("kubelet_flags_sha256", sha(&kept.concat())),
                ] {
                    facts.insert(k.to_string(), v);
                }
            }
            RemoteCommand::RestoreKubeletFiles { dir, .. } => {
                // The copy's name is the folder's, as the preflight reported it.
                let name = dir.strip_prefix(&format!("{SIM_FILES}/")).ok_or_else(|| {
                    PortError::fatal(format!("node {node}: no kubelet files kept at {dir}"))
                })?;
                self.call(
                    Method::POST,
                    &Self::node_path(node, "kubelet-files/restore"),
                    Some(json!({ "name": name })),
                )
                .await?;
                facts.insert("kubelet_files_restored".into(), dir.clone());
            }
            RemoteCommand::InstallPackages { version } => {
                for p in upgraded_events::plan::node_packages(false) {
                    self.install(node, p, *version).await?;
                }
                facts.insert("installed".into(), version.to_string());
            }
            // The sim's machines take a control plane to any version, up or down.
            RemoteCommand::KubeadmUpgrade { version, apply }
            | RemoteCommand::KubeadmDowngrade { version, apply } => {
                let up = matches!(cmd, RemoteCommand::KubeadmUpgrade { .. });
                // The kubelet config before this hop's kubeadm, kept once, as the node
                // script keeps it.
                let copy = format!("before-kubeadm-{version}");
                if up {
                    self.call(
                        Method::POST,
                        &Self::node_path(node, "kubelet-files/save"),
                        Some(json!({ "name": copy })),
                    )
                    .await?;
                }
                self.install(node, "kubeadm", *version).await?;
                let path = Self::node_path(node, "control-plane");
                let body = json!({ "version": version.to_string() });
                match self.call(Method::POST, &path, Some(body.clone())).await {
                    Ok(_) => {
                        facts.insert("control_plane".into(), version.to_string());
                    }
                    // `kubeadm upgrade node` on a worker only runs its kubelet phase.
                    Err(e) if !*apply && e.what.contains("runs no control plane") => {
                        let path = Self::node_path(node, "kubeadm-node");
                        self.call(Method::POST, &path, Some(body)).await?;
                        facts.insert("kubelet_config".into(), version.to_string());
                    }
                    Err(e) => return Err(e),
                }
                if up {
                    let host = self.host(node).await?;
                    let b64 =
                        |v: &Value| base64::engine::general_purpose::STANDARD.encode(v.to_string());
                    facts.insert(
                        "kubelet_config_before_b64".into(),
                        b64(&host["saved"][&copy]["config"]),
                    );
                    facts.insert(
                        "kubelet_config_after_b64".into(),
                        b64(&host["files"]["config"]),
                    );
                }
            }
            RemoteCommand::EtcdSnapshot { .. } => {
                // The sim has no etcd; the lab's nodes run a real one.
                facts.insert("snapshot".into(), "simulated".into());
            }
            // Its snapshots have no path, so no rollback plans a restore here; should one
            // come anyway, it is refused, never pretended.
            RemoteCommand::EtcdRestore(_) => {
                return Err(PortError::fatal(format!(
                    "node {node}: the simulated cluster has no etcd to restore (the lab's nodes run a real one)"
                )));
            }
            RemoteCommand::EtcdHealth => {
                // The etcd static pods stand for the members.
                let pods = self
                    .call(
                        Method::GET,
                        "/api/v1/namespaces/kube-system/pods?labelSelector=component%3Detcd",
                        None,
                    )
                    .await?;
                let items = pods["items"].as_array().cloned().unwrap_or_default();
                let healthy = items
                    .iter()
                    .filter(|p| {
                        p["status"]["conditions"].as_array().is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                    })
                    .count();
                facts.insert("members".into(), items.len().to_string());
                facts.insert("healthy".into(), healthy.to_string());
            }
            RemoteCommand::ApiserverReadyz => {
                // The node's kube-apiserver answers on its loopback once its static pod is
                // Ready (kubeadm's readiness probe is this same /readyz); a crash-looping
                // one leaves nothing listening (curl's 000).
                let path = format!(
                    "/api/v1/namespaces/kube-system/pods/{}",
                    percent_encode(&format!("kube-apiserver-{node}"))
                );
                let ready = match self.call(Method::GET, &path, None).await {
                    Ok(pod) => pod["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    }),
                    Err(e) if e.what.contains("404") || e.what.contains("not found") => false,
                    Err(e) => return Err(e),
                };
                facts.insert(
                    "readyz_status".into(),
                    if ready { "200" } else { "000" }.into(),
                );
            }
            RemoteCommand::ApiserverMetrics => {
                // The node's instance's counters, as the sim keeps them per apiserver.
                let m = self
                    .call(
                        Method::GET,
                        &Self::node_path(node, "apiserver-metrics"),
                        None,
                    )
                    .await?;
                let text = m["metrics"].as_str().unwrap_or_default();
                facts.insert(
                    "metrics_b64".into(),
                    base64::engine::general_purpose::STANDARD.encode(text),
                );
                facts.insert(
                    "read_at".into(),
                    m["readAt"].as_i64().unwrap_or_default().to_string(),
                );
            }
            RemoteCommand::InstalledKubelet => {
                // As the node script reads them: the kubelet's version, each package's, and
                // the holds.
                let packages = self.packages(node).await?;
                let installed = packages.get("kubelet").copied().ok_or_else(|| {
                    PortError::retryable(format!("node {node}: no kubelet package"))
                })?;
                facts.insert("installed".into(), installed.to_string());
                for p in ["kubelet", "kubectl"] {
                    let v = packages.get(p).map(ToString::to_string).unwrap_or_default();
                    facts.insert(format!("pkg_{p}"), v);
                }
                let host = self.host(node).await?;
                let held: Vec<&str> = host["held"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                facts.insert("held".into(), held.join(","));
            }
            RemoteCommand::RestartKubelet => {
                let installed = self.installed_kubelet(node).await?;
                self.call(
                    Method::POST,
                    &Self::node_path(node, "kubelet-restart"),
                    Some(json!({ "version": installed.to_string() })),
                )
                .await?;
                facts.insert("restarted".into(), installed.to_string());
            }
        }
        Ok(CommandOutput { facts })
    }
}

/// A path segment: everything but unreserved characters percent-encoded.
fn percent_encode(s: &str) -> String {
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    utf8_percent_encode(s, SEGMENT).to_string()
}

impl NodeExecutor for SimAgents {
    fn run<'a>(
        &'a self,
        host: &'a Host,
        cmd: &'a RemoteCommand,
        timeout: Duration,
    ) -> BoxFut<'a, Result<CommandOutput, PortError>> {
        let node = host.as_str();
        Box::pin(async move {
            tokio::time::timeout(timeout, self.run_command(node, cmd))
                .await
                .unwrap_or_else(|_| {
                    Err(PortError::retryable(format!(
                        "node {node}: {} did not finish within {}s",
                        cmd.name(),
                        timeout.as_secs()
                    )))
                })
        })
    }
}
