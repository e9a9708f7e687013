//! What tells each machine from its generation's siblings, read at a run's start: its
//! agent's `Fingerprint` (files, holds, swap, kernel, a pending reboot) and the kubelet config
//! keys that must agree, read from the running kubelet's `/configz` through the API.
//! Recorded with the inventory (`Inventory::hosts`); the core judges drift and pending
//! reboots (`events::drift`, the planner's findings).

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use upgraded_events::drift::KUBELET_FACT;
use upgraded_events::inventory::Inventory;
use upgraded_events::{Facts, Host};

use crate::ports::{ClusterApi, NodeExecutor, RemoteCommand};

/// How many machines are read at once.
const AT_ONCE: usize = 16;

/// Every node's host facts, by node. A machine that cannot be read has only `unread` (why);
/// a kubelet whose config cannot be read, `kubelet_config_unread`. Neither stops the start:
/// the plan says what it could not judge.
pub(crate) async fn hosts(
    nodes: &dyn NodeExecutor,
    cluster: &dyn ClusterApi,
    inventory: &Inventory,
    keys: &[String],
    timeout: Duration,
) -> BTreeMap<String, Facts> {
    let names: Vec<String> = inventory.nodes.iter().map(|n| n.name.clone()).collect();
    hosts_of(nodes, cluster, names, keys, timeout).await
}

/// The host facts of the machines named (`hosts`, for some of them: a reading of drift
/// after a batch).
pub(crate) async fn hosts_of(
    nodes: &dyn NodeExecutor,
    cluster: &dyn ClusterApi,
    names: Vec<String>,
    keys: &[String],
    timeout: Duration,
) -> BTreeMap<String, Facts> {
    futures_util::stream::iter(names)
        .map(|name| async move {
            let facts = read(nodes, cluster, &Host::new(name.as_str()), keys, timeout).await;
            (name, facts)
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await
}

async fn read(
    nodes: &dyn NodeExecutor,
    cluster: &dyn ClusterApi,
    host: &Host,
    keys: &[String],
    timeout: Duration,
) -> Facts {
    let mut facts = match nodes.run(host, &RemoteCommand::Fingerprint, timeout).await {
        Ok(out) => out.facts,
        Err(e) => return [("unread".to_string(), e.what)].into(),
    };
    facts.remove("node_started_ms");
    facts.remove("node_ended_ms");
    match tokio::time::timeout(timeout, cluster.kubelet_config(host)).await {
        Ok(Ok(config)) => {
            for k in keys {
                let v = match config.get(k.as_str()) {
                    Some(v) => v.to_string(),
                    None => "unset".to_string(),
                };
                facts.insert(format!("{KUBELET_FACT}{k}"), v);
            }
        }
        Ok(Err(e)) => {
            facts.insert("kubelet_config_unread".into(), e.what);
        }
        Err(_) => {
            facts.insert(
                "kubelet_config_unread".into(),
                format!("/configz did not answer within {}s", timeout.as_secs()),
            );
        }
    }
    facts
}
