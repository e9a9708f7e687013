//! `upgradectl status [--json]`: the active (or last) run, node by node.

use upgraded_ctl::Client;

pub async fn run(client: &Client, json: bool) -> anyhow::Result<()> {
    let active = client.status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&active)?);
    } else {
        print!("{}", upgraded_ctl::render::status(active.as_ref()));
    }
    Ok(())
}
