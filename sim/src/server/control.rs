//! `/sim/v1/...`, the side door for node agents and tests: kubelet restarts, control-plane
//! upgrades, packages, machines down and up, virtual time, faults and injected API errors.

#![allow(clippy::result_large_err)]

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct VersionBody {
    version: String,
    #[serde(default)]
    etcd: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct PackageBody {
    package: String,
    version: String,
}

/// A copy of a node's kubelet files, by name (the kubelet version it was taken at).
#[derive(Debug, Deserialize)]
pub(super) struct CopyBody {
    name: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct AdvanceBody {
    seconds: u64,
}

pub(super) fn control(sim: &Sim, method: &Method, path: &[String], body: &[u8]) -> Response {
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
        // A Prometheus in front of the model, for the Prometheus check.
        (Method::GET, ["v1", "prometheus", "api", "v1", "targets"]) => {
            ok(&sim.world().prometheus_targets())
        }
        (Method::GET, ["v1", "prometheus", "api", "v1", "alerts"]) => {
            ok(&sim.world().prometheus_alerts())
        }
        (Method::GET, ["v1", "prometheus", "-", "healthy"]) => ok(&json!({"ok": true})),
        // An ingress controller in front of the model: `/sim/v1/ingress/NAMESPACE/SERVICE/...`
        // is routed to that Service's ready pods, for the ingress check.
        (Method::GET, ["v1", "ingress", ns, svc, ..]) => {
            let (code, body) = sim.world().ingress(ns, svc);
            json_response(
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY),
                &json!({"status": code, "body": body}),
            )
        }
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
        (Method::GET, ["v1", "nodes", node, "apiserver-metrics"]) => {
            let w = sim.world();
            match w.apiserver_metrics(node) {
                Ok(text) => ok(&json!({"metrics": text, "readAt": w.now() / 1000})),
                Err(e) => model_error(e),
            }
        }
        // What a node agent reads on the machine (files, holds, swap, a pending reboot).
        (Method::GET, ["v1", "nodes", node, "host"]) => match sim.world().nodes.get(*node) {
            Some(n) => ok(&n.host),
            None => not_found("nodes", node),
        },
        // `kubeadm upgrade node` on a worker: its kubelet phase only.
        (Method::POST, ["v1", "nodes", node, "kubeadm-node"]) => match parse_version(body) {
            Ok((v, _)) => done(sim.world().kubeadm_kubelet_phase(node, v)),
            Err(r) => r,
        },
        // The preflight's copy of the kubelet's files, and a rollback's restore of it.
        (
            Method::POST,
            [
                "v1",
                "nodes",
                node,
                "kubelet-files",
                what @ ("save" | "restore"),
            ],
        ) => {
            let b: CopyBody = match serde_json::from_slice(body) {
                Ok(b) => b,
                Err(e) => return bad_request(format!("expected {{\"name\": \"v1.33.5\"}}: {e}")),
            };
            let mut w = sim.world();
            done(if *what == "save" {
                w.save_kubelet_files(node, &b.name)
            } else {
                w.restore_kubelet_files(node, &b.name)
            })
        }
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
