//! What the removed-API gate reads at a run's start: each control-plane node's own
//! kube-apiserver asked for its deprecated-API counters (each instance keeps its own; the
//! load balancer would answer for any one of them). Recorded with the inventory; the
//! planner judges them (`upgraded_planner::apis`).

use std::time::Duration;

use base64::Engine;
use upgraded_events::Host;
use upgraded_events::apis::ApiUsage;
use upgraded_events::inventory::Inventory;

use crate::ports::{NodeExecutor, RemoteCommand};

/// Each control-plane node's instance, asked in turn; one that cannot be read is named in
/// `unread` (the gate warns that it could not see it) and never stops the start.
pub(crate) async fn apiservers(
    nodes: &dyn NodeExecutor,
    inventory: &Inventory,
    timeout: Duration,
) -> ApiUsage {
    let mut usage = ApiUsage::default();
    for n in inventory.nodes.iter().filter(|n| n.control_plane.is_some()) {
        let host = Host::new(n.name.as_str());
        let read = match nodes
            .run(&host, &RemoteCommand::ApiserverMetrics, timeout)
            .await
        {
            Ok(out) => {
                let text = out
                    .facts
                    .get("metrics_b64")
                    .map(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()))
                    .transpose()
                    .map_err(|e| format!("its metrics are not base64: {e}"))
                    .map(|b| String::from_utf8_lossy(&b.unwrap_or_default()).into_owned());
                let read_at = out
                    .facts
                    .get("read_at")
                    .and_then(|t| t.trim().parse::<i64>().ok())
                    .unwrap_or_default();
                text.and_then(|t| {
                    upgraded_planner::apis::parse_metrics(&n.name, &t, read_at)
                        .map_err(|e| e.to_string())
                })
            }
            Err(e) => Err(e.what),
        };
        match read {
            Ok(a) => usage.apiservers.push(a),
            Err(why) => usage.unread.push(format!("apiserver {}: {why}", n.name)),
        }
    }
    usage
}
