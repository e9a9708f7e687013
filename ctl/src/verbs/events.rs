//! `upgradectl events [--run ID] [--from SEQ] [-f | --file F | --data-dir DIR]`: a run's
//! records as JSON lines, from the daemon or offline.

use upgraded_api::EventsQuery;
use upgraded_ctl::Client;

pub async fn run(
    client: &Client,
    run: Option<String>,
    from: u64,
    follow: bool,
    offline: &crate::cli::Offline,
) -> anyhow::Result<()> {
    let run = run.as_deref().map(super::source::run_id).transpose()?;
    if let Some(all) = super::source::offline_records(offline)? {
        for r in super::source::run_records(all, run)?
            .iter()
            .filter(|r| r.seq >= from)
        {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    let run = match run {
        Some(r) => r,
        None => super::source::active_run(client).await?,
    };
    let mut out = Ok(());
    client
        .records(run, EventsQuery { from, follow }, |r| {
            match serde_json::to_string(&r) {
                Ok(line) => println!("{line}"),
                Err(e) => out = Err(e),
            }
            out.is_ok()
        })
        .await?;
    Ok(out?)
}
