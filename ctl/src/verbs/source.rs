//! Where a verb's records come from: the daemon (its active run by default), or offline
//! an export file or a data dir (the last run by default); and a `--run` id read.

use std::path::Path;

use anyhow::{Context, bail};
use upgraded_ctl::Client;
use upgraded_ctl::export;
use upgraded_events::{Record, RunId};

use crate::cli::Offline;

pub fn run_id(r: &str) -> anyhow::Result<RunId> {
    r.parse::<RunId>()
        .with_context(|| format!("--run {r:?} is not a run id (see `upgradectl runs`)"))
}

pub fn read_export(file: &Path) -> anyhow::Result<Vec<Record>> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    export::read(&bytes).with_context(|| format!("{} is refused", file.display()))
}

/// Every record the offline source holds (an export or a data dir), or none when the
/// daemon is to be asked.
pub fn offline_records(offline: &Offline) -> anyhow::Result<Option<Vec<Record>>> {
    Ok(match (&offline.file, &offline.data_dir) {
        (Some(f), _) => Some(read_export(f)?),
        (None, Some(d)) => Some(upgraded_ctl::datadir::read(d)?),
        (None, None) => None,
    })
}

/// Run `run`'s records among `all` (default: the last run).
pub fn run_records(all: Vec<Record>, run: Option<RunId>) -> anyhow::Result<Vec<Record>> {
    let run = match run {
        Some(r) => r,
        None => export::runs(&all)
            .last()
            .map(|(r, _)| *r)
            .context("the log holds no run")?,
    };
    let mine: Vec<Record> = all.into_iter().filter(|r| r.run == run).collect();
    if mine.is_empty() {
        bail!("the log holds no run {run} (see `upgradectl runs`)");
    }
    Ok(mine)
}

/// The active (or last) run's id.
pub async fn active_run(client: &Client) -> anyhow::Result<RunId> {
    client
        .status()
        .await?
        .and_then(|a| a.run)
        .context("no run yet: start one with `upgradectl start --to vX.Y.Z`")
}
