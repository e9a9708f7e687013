//! `upgradectl runs`: every run in the daemon's log.

use upgraded_ctl::Client;

pub async fn run(client: &Client) -> anyhow::Result<()> {
    let runs = client.runs().await?;
    print!("{}", upgraded_ctl::render::runs(&runs));
    Ok(())
}
