//! `upgradectl rollback (--node NAME... | --to vX.Y.Z | --all) [--run ID] [--plan]
//! [--etcd keep|restore-snapshot [--confirm-data-loss]] [-o table|json]`.

use anyhow::{Context, bail};
use upgraded_api::RollbackRequest;
use upgraded_ctl::Client;
use upgraded_events::RunId;

pub async fn run(
    client: &Client,
    (nodes, to, all): (Vec<String>, Option<String>, bool),
    (etcd, confirm_data_loss): (upgraded_api::EtcdMode, bool),
    run: Option<String>,
    plan_only: bool,
    output: &str,
) -> anyhow::Result<()> {
    if !matches!(output, "table" | "json") {
        bail!("-o {output:?}: expected table or json");
    }
    let run = run
        .map(|r| {
            r.parse::<RunId>()
                .with_context(|| format!("--run {r:?} is not a run id (see `upgradectl runs`)"))
        })
        .transpose()?;
    let answer = client
        .rollback(&RollbackRequest {
            nodes,
            to,
            all,
            run,
            plan_only,
            etcd,
            confirm_data_loss,
        })
        .await?;
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", upgraded_ctl::render::rollback(&answer));
    }
    Ok(())
}
