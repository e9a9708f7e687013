//! `upgradectl runs [--file F | --data-dir DIR]`: the run history, from the daemon or
//! offline.

use upgraded_ctl::Client;
use upgraded_events::Record;

use crate::cli::Offline;

pub async fn run(client: &Client, offline: &Offline) -> anyhow::Result<()> {
    match super::source::offline_records(offline)? {
        Some(all) => {
            let runs: Vec<Vec<Record>> = upgraded_ctl::export::runs(&all)
                .into_iter()
                .map(|(run, _)| all.iter().filter(|r| r.run == run).cloned().collect())
                .collect();
            let history = upgraded_events::history::history(&runs);
            print!("{}", upgraded_ctl::render::history_table(&history));
        }
        None => {
            let runs = client.runs().await?;
            print!("{}", upgraded_ctl::render::runs(&runs));
        }
    }
    Ok(())
}
