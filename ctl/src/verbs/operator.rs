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

/// `notify test SINK`: what the sink answered; a failure unless it took the event.
pub async fn notify_test(client: &Client, sink: &str) -> anyhow::Result<()> {
    let r = client.notify_test(sink).await?;
    match r.status {
        Some(s) => println!(
            "{} answered {s} to a {} event: {}",
            r.sink,
            r.event_type,
            r.detail.trim()
        ),
        None => println!("{} did not answer: {}", r.sink, r.detail),
    }
    if !r.status.is_some_and(|s| (200..300).contains(&s)) {
        anyhow::bail!("the sink did not take the event");
    }
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
