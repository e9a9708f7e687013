//! `upgradectl watch`: redraws the progress view until the run completes or is aborted
//! (Ctrl-C stops watching, not the run). On a terminal the screen is redrawn; otherwise a
//! view is printed when it changes.

use std::io::IsTerminal;
use std::time::Duration;

use upgraded_ctl::Client;
use upgraded_ctl::render::watch::{finished, render};

pub async fn run(client: &Client, interval_ms: u64) -> anyhow::Result<()> {
    let tty = std::io::stdout().is_terminal();
    let mut last = String::new();
    loop {
        let active = client.status().await?;
        let view = render(active.as_ref());
        if view != last {
            if tty {
                print!("\x1b[H\x1b[2J");
            }
            println!("{view}");
            last = view;
        }
        if finished(active.as_ref()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(interval_ms.max(50))).await;
    }
}
