//! How each workflow step is carried out through the ports, and how an in-doubt step is probed.

use std::sync::Arc;
use std::time::Duration;

use upgraded_events::{Facts, Step, Version};

use crate::ports::{ClusterApi, NodeExecutor, PortError, RemoteCommand};

/// The adapters a step may use.
#[derive(Clone)]
pub struct Ports {
    pub cluster: Arc<dyn ClusterApi>,
    pub nodes: Arc<dyn NodeExecutor>,
    /// Upper bound for one remote command.
    pub command_timeout: Duration,
}

impl std::fmt::Debug for Ports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ports")
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

/// The version a node should run once its upgrade steps are done: its last hop.
pub fn final_version(steps: &[Step]) -> Option<Version> {
    steps.iter().rev().find_map(|s| match s {
        Step::UpgradePackages { version } => Some(*version),
        _ => None,
    })
}

/// Runs one remote command with the configured timeout; its facts.
async fn remote(ports: &Ports, node: &str, cmd: &RemoteCommand) -> Result<Facts, PortError> {
    Ok(ports
        .nodes
        .run(node, cmd, ports.command_timeout)
        .await?
        .facts)
}

/// Executes one step on one node; the facts go into the outcome event.
pub async fn execute(
    ports: &Ports,
    node: &str,
    step: &Step,
    all_steps: &[Step],
    leave_cordoned: bool,
) -> Result<Facts, PortError> {
    let mut facts = Facts::new();
    match step {
        Step::Preflight => {
            let status = ports.cluster.node_status(node).await?;
            let out = ports
                .nodes
                .run(node, &RemoteCommand::Preflight, ports.command_timeout)
                .await?;
            facts.extend(out.facts);
            facts.insert("unschedulable".into(), status.unschedulable.to_string());
            facts.insert("kubelet_before".into(), status.kubelet_version.to_string());
        }
        Step::Cordon => ports.cluster.cordon(node).await?,
        Step::Drain => facts.extend(ports.cluster.drain(node).await?),
        Step::UpgradePackages { version } => {
            let cmd = RemoteCommand::InstallPackages { version: *version };
            facts.extend(remote(ports, node, &cmd).await?);
        }
        Step::KubeadmUpgrade { version, apply } => {
            let cmd = RemoteCommand::KubeadmUpgrade {
                version: *version,
                apply: *apply,
            };
            facts.extend(remote(ports, node, &cmd).await?);
        }
        Step::EtcdSnapshot => {
            facts.extend(remote(ports, node, &RemoteCommand::EtcdSnapshot).await?);
        }
        Step::RestartKubelet => {
            ports
                .nodes
                .run(node, &RemoteCommand::RestartKubelet, ports.command_timeout)
                .await?;
        }
        Step::Verify => {
            let status = ports.cluster.node_status(node).await?;
            if !status.ready {
                return Err(PortError::retryable(format!("node {node} is not Ready")));
            }
            if let Some(want) = final_version(all_steps).filter(|w| *w != status.kubelet_version) {
                return Err(PortError::retryable(format!(
                    "node {node} runs kubelet {}, expected {want}",
                    status.kubelet_version
                )));
            }
            facts.insert("kubelet_version".into(), status.kubelet_version.to_string());
        }
        Step::Uncordon => {
            if leave_cordoned {
                facts.insert("left_cordoned".into(), "cordoned before the run".into());
            } else {
                ports.cluster.uncordon(node).await?;
            }
        }
        Step::Soak => {
            let status = ports.cluster.node_status(node).await?;
            if !status.ready {
                return Err(PortError::retryable(format!(
                    "node {node} became NotReady during its soak"
                )));
            }
        }
    }
    Ok(facts)
}

/// For steps that must not run twice: did the in-doubt attempt take effect?
pub async fn probe(ports: &Ports, node: &str, step: &Step) -> Result<(bool, Facts), PortError> {
    let installed = || async {
        let out = ports
            .nodes
            .run(
                node,
                &RemoteCommand::InstalledKubelet,
                ports.command_timeout,
            )
            .await?;
        out.facts
            .get("installed")
            .and_then(|v| v.parse::<Version>().ok())
            .ok_or_else(|| {
                PortError::retryable(format!("node {node}: installed kubelet version unreadable"))
            })
    };
    match step {
        Step::UpgradePackages { version } => {
            let have = installed().await?;
            Ok((
                have >= *version,
                [("installed".to_string(), have.to_string())].into(),
            ))
        }
        Step::RestartKubelet => {
            // Restarted means: the running kubelet is the installed one.
            let have = installed().await?;
            let running = ports.cluster.node_status(node).await?.kubelet_version;
            let facts = [
                ("installed".to_string(), have.to_string()),
                ("running".to_string(), running.to_string()),
            ]
            .into();
            Ok((running == have, facts))
        }
        other => Err(PortError::fatal(format!("{other} is re-run, not probed"))),
    }
}
