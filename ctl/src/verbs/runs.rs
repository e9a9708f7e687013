//! `upgradectl runs [--file F]`: the run history, from the daemon or from an export.

use std::path::Path;

use upgraded_ctl::Client;
use upgraded_events::Record;

pub async fn run(client: &Client, file: Option<&Path>) -> anyhow::Result<()> {
    match file {
        Some(f) => {
            let all = super::replay::read_export(f)?;
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
