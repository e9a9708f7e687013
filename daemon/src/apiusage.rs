//! What the removed-API gate reads at a run's start: each control-plane node's own
//! kube-apiserver asked for its deprecated-API counters (each instance keeps its own; the
//! load balancer would answer for any one of them), and Helm's deployed releases. Recorded
//! with the inventory; the planner judges them (`upgraded_planner::apis`).

use std::time::Duration;

use base64::Engine;
use upgraded_events::Host;
use upgraded_events::apis::ApiUsage;
use upgraded_events::inventory::Inventory;

use crate::ports::{ClusterApi, NodeExecutor, RemoteCommand};

/// Each control-plane node's instance, all asked at once (an unreachable one costs one
/// command timeout, not one per node); one that cannot be read is named in `unread` (the
/// gate warns that it could not see it) and never stops the start.
pub(crate) async fn apiservers(
    nodes: &dyn NodeExecutor,
    inventory: &Inventory,
    timeout: Duration,
) -> ApiUsage {
    let asks = inventory
        .nodes
        .iter()
        .filter(|n| n.control_plane.is_some())
        .map(|n| async move { (n.name.as_str(), read(nodes, &n.name, timeout).await) });
    let mut usage = ApiUsage::default();
    for (name, read) in futures_util::future::join_all(asks).await {
        match read {
            Ok(a) => usage.apiservers.push(a),
            Err(why) => usage.unread.push(format!("apiserver {name}: {why}")),
        }
    }
    usage
}

/// The objects of Helm's deployed releases at a removed API version (the gate warns of
/// them). An identity that may not list Secrets, or a release that cannot be read, leaves
/// them unread, named, never stopping the start.
pub(crate) async fn helm(cluster: &dyn ClusterApi, usage: &mut ApiUsage) {
    let read = match cluster.helm_releases().await {
        Ok(list) => {
            upgraded_planner::apis::helm_objects(&list.to_string()).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.what),
    };
    match read {
        Ok(objects) => usage.helm = objects,
        Err(why) => usage.unread.push(format!("Helm release Secrets: {why}")),
    }
}

/// One instance's counters, parsed.
async fn read(
    nodes: &dyn NodeExecutor,
    name: &str,
    timeout: Duration,
) -> Result<upgraded_events::apis::ApiserverApis, String> {
    let host = Host::new(name);
    let out = nodes
        .run(&host, &RemoteCommand::ApiserverMetrics, timeout)
        .await
        .map_err(|e| e.what)?;
    let text = match out.facts.get("metrics_b64") {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|e| format!("its metrics are not base64: {e}"))?,
        None => return Err("the node reported no metrics".into()),
    };
    let read_at = out
        .facts
        .get("read_at")
        .and_then(|t| t.trim().parse::<i64>().ok())
        .unwrap_or_default();
    upgraded_planner::apis::parse_metrics(name, &String::from_utf8_lossy(&text), read_at)
        .map_err(|e| e.to_string())
}
