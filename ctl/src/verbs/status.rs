//! `upgradectl status [--json] [--file F | --data-dir DIR]`: the active (or last) run, node
//! by node; offline, the last run as its log left it.

use upgraded_ctl::Client;
use upgraded_events::RunState;

use crate::cli::Offline;

pub async fn run(client: &Client, json: bool, offline: &Offline) -> anyhow::Result<()> {
    let active = match super::source::offline_records(offline)? {
        Some(all) if all.is_empty() => None,
        Some(all) => Some(RunState::replay(&super::source::run_records(all, None)?).summary()),
        None => client.status().await?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&active)?);
    } else {
        print!("{}", upgraded_ctl::render::status(active.as_ref()));
    }
    Ok(())
}
