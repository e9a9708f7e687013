//! `upgradectl pause|resume|abort`: operator requests on the active run. The daemon checks
//! them against the run's phase (`events::request`) and records who asked.

use upgraded_ctl::Client;

pub async fn pause(client: &Client, reason: &str) -> anyhow::Result<()> {
    let ack = client.pause(reason).await?;
    println!("paused run {}", ack.run);
    Ok(())
}

pub async fn resume(client: &Client) -> anyhow::Result<()> {
    let ack = client.resume().await?;
    println!("resumed run {}", ack.run);
    Ok(())
}

pub async fn abort(client: &Client, reason: &str) -> anyhow::Result<()> {
    let ack = client.abort(reason).await?;
    println!(
        "aborting run {}: nodes it cordoned are being uncordoned",
        ack.run
    );
    Ok(())
}
