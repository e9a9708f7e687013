//! `upgradectl status [--json] [--file F | --data-dir DIR]`: the active (or last) run, node
//! by node; offline, the last run as its log left it.

use upgraded_ctl::Client;
use upgraded_events::RunState;

use crate::cli::Offline;

pub async fn run(client: &Client, json: bool, offline: &Offline) -> anyhow::Result<()> {
    let (active, ha) = match super::source::offline_records(offline)? {
        Some(all) if all.is_empty() => (None, None),
        Some(all) => (
            Some(RunState::replay(&super::source::run_records(all, None)?).summary()),
            None,
        ),
        None => {
            let s = client.status_of_instance().await?;
            (s.active, s.ha)
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&active)?);
    } else {
        print!("{}", upgraded_ctl::render::status(active.as_ref()));
        if let Some(h) = &ha {
            print!("{}", upgraded_ctl::render::instance(h));
        }
    }
    Ok(())
}
