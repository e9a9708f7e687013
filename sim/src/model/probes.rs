//! What a check's probe pod finds when it runs: the model of each machine's pod network, of
//! CoreDNS, and of volume mounts, with the faults that break them (`Faults::net_broken_from`,
//! `dns_broken_from`, `storage_broken_from`).
//!
//! A probe is an ordinary pod whose first container says what it tries in its environment,
//! the same variables the real probe script reads on a real cluster: `UPGRADED_PROBE` (the
//! kind), `UPGRADED_TARGETS` (comma-separated `IP:port` to dial, or names to resolve) and
//! `UPGRADED_NONCE` (what a storage writer leaves and its reader expects). When its container
//! ends, the model decides the exit code (0 passes, 1 fails) and writes the one JSON line a
//! probe leaves in its termination message (`upgraded_events::check::ProbeReport`).

use k8s_openapi::api::core::v1 as core;
use upgraded_events::check::ProbeReport;

use super::*;

pub const ENV_PROBE: &str = "UPGRADED_PROBE";
pub const ENV_TARGETS: &str = "UPGRADED_TARGETS";
pub const ENV_NONCE: &str = "UPGRADED_NONCE";
pub const ENV_BACK_TO: &str = "UPGRADED_BACK_TO";

/// What a probe container tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeKind {
    /// Dial every target (`IP:port`, pod or node addresses) from the probe's node.
    PodNetwork,
    /// The same dials from the node's own network namespace (a `hostNetwork` probe).
    HostNetwork,
    /// Resolve every target name through the cluster DNS.
    Dns,
    /// Write the nonce on the pod's claim.
    StorageWrite,
    /// Read the nonce back from the pod's claim.
    StorageRead,
}

impl ProbeKind {
    fn parse(s: &str) -> Option<ProbeKind> {
        match s {
            "pod-network" => Some(ProbeKind::PodNetwork),
            "host-network" => Some(ProbeKind::HostNetwork),
            "dns" => Some(ProbeKind::Dns),
            "storage-write" => Some(ProbeKind::StorageWrite),
            "storage-read" => Some(ProbeKind::StorageRead),
            _ => None,
        }
    }
}

/// A probe container's orders, read from its environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeRun {
    pub kind: ProbeKind,
    pub targets: Vec<String>,
    pub nonce: String,
    /// The echo pod on the probe's own node each answering target dials back.
    #[serde(default)]
    pub back_to: Option<String>,
}

/// The probe a pod spec runs, if its first container names one; an unknown kind is refused
/// (422) rather than run as an ordinary container that always passes.
pub fn probe_of(spec: &core::PodSpec, at: &str) -> Result<Option<ProbeRun>, template::SpecError> {
    let Some(c) = spec.containers.first() else {
        return Ok(None);
    };
    let env = |name: &str| {
        c.env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    let Some(kind) = env(ENV_PROBE) else {
        return Ok(None);
    };
    let parsed = ProbeKind::parse(&kind).ok_or_else(|| template::SpecError {
        field: format!("{at}.containers[0].env[{ENV_PROBE}]"),
        value: kind.clone(),
        detail:
            "the sim runs the probes pod-network, host-network, dns, storage-write and storage-read"
                .into(),
    })?;
    Ok(Some(ProbeRun {
        kind: parsed,
        targets: env(ENV_TARGETS)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        nonce: env(ENV_NONCE).unwrap_or_default(),
        back_to: env(ENV_BACK_TO).filter(|b| !b.is_empty()),
    }))
}

fn broken_from(faults: &BTreeMap<String, Version>, node: &SimNode) -> bool {
    faults
        .get(&node.name)
        .is_some_and(|from| node.kubelet >= *from)
}

impl World {
    /// Whether pods on `node` can reach and be reached over the pod network.
    pub fn pod_network_works(&self, node: &str) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| !n.down && !broken_from(&self.faults.net_broken_from, n))
    }

    /// Whether volumes mount on `node`.
    pub fn storage_works(&self, node: &str) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|n| !n.down && !broken_from(&self.faults.storage_broken_from, n))
    }

    /// Whether CoreDNS answers: it runs the image the control plane's upgrade set.
    pub fn dns_works(&self) -> bool {
        let Some(from) = self.faults.dns_broken_from else {
            return true;
        };
        let newest = self
            .nodes
            .values()
            .filter_map(|n| n.control_plane.as_ref())
            .map(|cp| cp.apiserver)
            .max();
        newest.is_none_or(|v| v < from)
    }

    /// Prometheus's `/api/v1/targets`: each machine's kubelet, down while the machine is
    /// down or once its kubelet reaches `Faults::scrape_broken_from`.
    pub fn prometheus_targets(&self) -> serde_json::Value {
        let targets: Vec<serde_json::Value> = self
            .nodes
            .values()
            .map(|n| {
                let down = n.down || broken_from(&self.faults.scrape_broken_from, n);
                serde_json::json!({
                    "scrapePool": "kubelet",
                    "scrapeUrl": format!("https://{}:10250/metrics", n.address),
                    "labels": {"job": "kubelet", "instance": format!("{}:10250", n.address), "node": n.name},
                    "health": if down { "down" } else { "up" },
                    "lastError": if down { "connection refused" } else { "" },
                })
            })
            .collect();
        serde_json::json!({"status": "success", "data": {"activeTargets": targets, "droppedTargets": []}})
    }

    /// Prometheus's `/api/v1/alerts`: those `Faults::alerts_firing` names (`Name` or
    /// `Name label=value`).
    pub fn prometheus_alerts(&self) -> serde_json::Value {
        let alerts: Vec<serde_json::Value> = self
            .faults
            .alerts_firing
            .iter()
            .map(|a| {
                let mut words = a.split_whitespace();
                let mut labels = serde_json::Map::new();
                labels.insert("alertname".into(), words.next().unwrap_or("?").into());
                for w in words {
                    if let Some((k, v)) = w.split_once('=') {
                        labels.insert(k.into(), v.into());
                    }
                }
                serde_json::json!({"labels": labels, "state": "firing", "value": "1"})
            })
            .collect();
        serde_json::json!({"status": "success", "data": {"alerts": alerts}})
    }

    /// What an ingress controller answers for a route to Service `namespace/name`: 404
    /// without the Service (its default backend), 503 with no ready pod behind it, 504
    /// when none of them can be reached over the pod network, else 200.
    pub fn ingress(&self, namespace: &str, name: &str) -> (u16, String) {
        let key = (namespace.to_string(), name.to_string());
        let Some(ip) = self
            .services
            .get(&key)
            .and_then(|s| s.spec.as_ref()?.cluster_ip.clone())
        else {
            return (404, "default backend - 404".into());
        };
        let endpoints = self.service_endpoints(&ip);
        if endpoints.is_empty() {
            (503, "Service Temporarily Unavailable".into())
        } else if !endpoints.iter().any(|n| self.pod_network_works(n)) {
            (504, "Gateway Time-out".into())
        } else {
            (200, "ok".into())
        }
    }

    /// Whether the cluster DNS knows `name` (`SERVICE.NAMESPACE.svc.cluster.local`; other
    /// names are taken as answered, as an upstream resolver would).
    fn service_name_exists(&self, name: &str) -> bool {
        let Some(rest) = name.strip_suffix(".svc.cluster.local") else {
            return true;
        };
        let Some((svc, ns)) = rest.split_once('.') else {
            return false;
        };
        self.services
            .contains_key(&(ns.to_string(), svc.to_string()))
    }

    /// The nodes of the Running pods behind the Service whose ClusterIP is `ip`.
    fn service_endpoints(&self, ip: &str) -> Vec<String> {
        let Some(((ns, _), svc)) = self
            .services
            .iter()
            .find(|(_, s)| s.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some(ip))
        else {
            return Vec::new();
        };
        let selector = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        if selector.is_empty() {
            return Vec::new();
        }
        let now = self.now;
        self.pods
            .range((ns.clone(), String::new())..)
            .take_while(|((n, _), _)| n == ns)
            .map(|(_, p)| p)
            .filter(|p| {
                selector
                    .iter()
                    .all(|(k, v)| p.spec.labels.get(k) == Some(v))
                    && p.is_ready(now, &self.nodes)
            })
            .filter_map(|p| p.node.clone())
            .collect()
    }

    /// The node an address belongs to: a pod's IP, or a node's own (hostNetwork).
    fn node_of_address(&self, ip: &str) -> Option<(String, String)> {
        // Pods have addresses from the pod range (10.244.0.0/16); a probe dials them most:
        // machines are not scanned for those.
        if !ip.starts_with("10.244.")
            && let Some(n) = self.nodes.values().find(|n| n.address == ip)
        {
            return Some((n.name.clone(), format!("node {}", n.name)));
        }
        let answers =
            |p: &&SimPod| p.ip == ip && p.phase == PodPhase::Running && p.deleting_at.is_none();
        // A probe dials echo pods in the checks' namespace: looked for there first.
        let ns = upgraded_events::check::probe::NAMESPACE;
        self.pods
            .range((ns.to_string(), String::new())..)
            .take_while(|((n, _), _)| n == ns)
            .map(|(_, p)| p)
            .find(answers)
            .or_else(|| self.pods.values().find(answers))
            .and_then(|p| {
                p.node
                    .clone()
                    .map(|n| (n.clone(), format!("pod {}/{} on {n}", p.namespace, p.name)))
            })
    }

    /// Exit code and termination message of probe `pod` ending now.
    pub(super) fn probe_result(&mut self, pod: &SimPod, probe: &ProbeRun) -> (i32, String) {
        let node = pod.node.clone().unwrap_or_default();
        let mut facts = BTreeMap::new();
        let failed: Vec<String> = match probe.kind {
            ProbeKind::PodNetwork | ProbeKind::HostNetwork => {
                facts.insert("dialled".to_string(), probe.targets.len().to_string());
                let from = if probe.kind == ProbeKind::HostNetwork {
                    format!("{node}'s host network")
                } else {
                    node.clone()
                };
                let ip_of = |t: &str| t.rsplit_once(':').map_or(t, |(h, _)| h).to_string();
                // A node whose CNI is broken reaches no pod, from its pods or its host (the
                // routes to other nodes' pods are the CNI's), and no pod reaches it.
                let back = probe
                    .back_to
                    .as_deref()
                    .map(|b| (b, self.node_of_address(&ip_of(b))));
                let mut failed = Vec::new();
                for target in &probe.targets {
                    let Some((peer, what)) = self.node_of_address(&ip_of(target)) else {
                        failed.push(format!("dial {target}: no route to host"));
                        continue;
                    };
                    if !self.pod_network_works(&node) || !self.pod_network_works(&peer) {
                        failed.push(format!("dial {target} ({what}) from {from}: i/o timeout"));
                        continue;
                    }
                    match &back {
                        Some((b, None)) => {
                            failed.push(format!("dial back from {target} to {b}: no route to host"))
                        }
                        Some((b, Some((home, _))))
                            if !self.pod_network_works(&peer) || !self.pod_network_works(home) =>
                        {
                            failed.push(format!(
                                "dial back from {target} ({what}) to {b}: i/o timeout"
                            ))
                        }
                        _ => {}
                    }
                }
                if back.is_some() {
                    facts.insert("dialled_back".to_string(), probe.targets.len().to_string());
                }
                failed
            }
            ProbeKind::Dns => {
                // Names are looked up; `IP:port` targets are a Service's ClusterIP, dialled
                // through the node's kube-proxy to one of its endpoints.
                let (dials, names): (Vec<&String>, Vec<&String>) =
                    probe.targets.iter().partition(|t| t.contains(':'));
                facts.insert("resolved".to_string(), names.len().to_string());
                let net = self.pod_network_works(&node);
                let works = net && self.dns_works();
                let mut failed: Vec<String> = names
                    .into_iter()
                    .filter_map(|name| {
                        if !works {
                            Some(format!(
                                "lookup {name} on 10.96.0.10:53 from {node}: i/o timeout"
                            ))
                        } else if !self.service_name_exists(name) {
                            Some(format!("lookup {name} on 10.96.0.10:53: no such host"))
                        } else {
                            None
                        }
                    })
                    .collect();
                for target in dials {
                    facts.insert("service".to_string(), target.clone());
                    let ip = target.rsplit_once(':').map_or(target.as_str(), |(h, _)| h);
                    let endpoints = self.service_endpoints(ip);
                    if endpoints.is_empty() {
                        failed.push(format!(
                            "dial service {target}: connection refused (no ready endpoint)"
                        ));
                    } else if !net || !endpoints.iter().any(|n| self.pod_network_works(n)) {
                        failed.push(format!("dial service {target} from {node}: i/o timeout"));
                    }
                }
                failed
            }
            ProbeKind::StorageWrite | ProbeKind::StorageRead => {
                let claim = pod
                    .spec
                    .claims
                    .first()
                    .map(|c| format!("{}/{c}", pod.namespace));
                match claim {
                    None => vec!["the probe mounts no PersistentVolumeClaim".into()],
                    Some(_) if !self.storage_works(&node) => vec![format!(
                        "MountVolume.SetUp failed on {node}: the volume could not be mounted"
                    )],
                    Some(claim) if probe.kind == ProbeKind::StorageWrite => {
                        self.volume_data.insert(claim, probe.nonce.clone());
                        Vec::new()
                    }
                    Some(claim) => match self.volume_data.get(&claim) {
                        Some(found) if *found == probe.nonce => Vec::new(),
                        Some(found) => vec![format!(
                            "read {found:?} back from {claim}, expected {:?}",
                            probe.nonce
                        )],
                        None => vec![format!(
                            "read nothing back from {claim}: the volume is empty"
                        )],
                    },
                }
            }
        };
        facts.insert("failed".to_string(), failed.len().to_string());
        let ok = failed.is_empty();
        let detail = if ok {
            format!("{} target(s) answered from {node}", probe.targets.len())
        } else {
            failed.join("; ")
        };
        let report = ProbeReport {
            ok: Some(ok),
            detail,
            facts,
        };
        let line = serde_json::to_string(&report).unwrap_or_default();
        (i32::from(!ok), line)
    }
}

impl World {
    /// `node`'s kube-apiserver's `/metrics`, cut to what the removed-API gate reads: its
    /// requests (the pods listed, and each deprecated API called through it), the
    /// deprecated-API gauge, and when the process started (30 days ago: counters of a month).
    pub fn apiserver_metrics(&self, node: &str) -> Result<String, ModelError> {
        let n = self
            .nodes
            .get(node)
            .ok_or_else(|| not_found("nodes", node))?;
        let cp = n
            .control_plane
            .as_ref()
            .ok_or_else(|| ModelError::Invalid(format!("node {node} runs no kube-apiserver")))?;
        if n.down
            || self
                .faults
                .apiserver_fails_from
                .get(node)
                .is_some_and(|v| cp.apiserver >= *v)
        {
            return Err(ModelError::Invalid(format!(
                "the kube-apiserver of {node} does not answer on 127.0.0.1:6443"
            )));
        }
        let calls: Vec<&DeprecatedCalls> = self
            .faults
            .deprecated_apis
            .iter()
            .filter(|c| c.node == node)
            .collect();
        let q = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::from("# TYPE apiserver_request_total counter\n");
        out.push_str(&format!(
            "apiserver_request_total{{code=\"200\",component=\"apiserver\",dry_run=\"\",group=\"\",resource=\"pods\",scope=\"cluster\",subresource=\"\",verb=\"LIST\",version=\"v1\"}} {}\n",
            self.pods.len()
        ));
        for c in &calls {
            out.push_str(&format!(
                "apiserver_request_total{{code=\"200\",component=\"apiserver\",dry_run=\"\",group=\"{}\",resource=\"{}\",scope=\"cluster\",subresource=\"\",verb=\"LIST\",version=\"{}\"}} {}\n",
                q(&c.group),
                q(&c.resource),
                q(&c.version),
                c.requests
            ));
        }
        out.push_str("# TYPE apiserver_requested_deprecated_apis gauge\n");
        for c in &calls {
            out.push_str(&format!(
                "apiserver_requested_deprecated_apis{{group=\"{}\",removed_release=\"{}\",resource=\"{}\",subresource=\"\",version=\"{}\"}} 1\n",
                q(&c.group),
                q(&c.removed_release),
                q(&c.resource),
                q(&c.version)
            ));
        }
        let started = (self.now / 1000).saturating_sub(30 * 86_400);
        out.push_str(&format!(
            "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {started}\n"
        ));
        Ok(out)
    }
}
