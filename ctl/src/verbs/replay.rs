//! `upgradectl export [--run R] -o F`, `export --verify F`, and `upgradectl replay --at T
//! [--run R] [--file F] [-o table|json]`: records from the daemon or from an export, folded
//! here (`upgraded_events::replay`).

use std::path::Path;

use anyhow::{Context, bail};
use upgraded_ctl::Client;
use upgraded_ctl::export;
use upgraded_events::replay::{self, At};
use upgraded_events::{Event, Record, RunId};

use super::source::{offline_records, read_export, run_id, run_records};
use crate::cli::Offline;

/// `export -o F`: the run's records (every run's without `--run`), from the daemon or a
/// data dir, private to the user.
pub async fn export(
    client: &Client,
    run: Option<String>,
    data_dir: Option<&Path>,
    to: &Path,
) -> anyhow::Result<()> {
    let run = run.as_deref().map(run_id).transpose()?;
    let (runs, records) = match data_dir {
        Some(d) => {
            let all = upgraded_ctl::datadir::read(d)?;
            let records: Vec<Record> = all
                .into_iter()
                .filter(|r| run.is_none_or(|want| r.run == want))
                .collect();
            let runs: Vec<RunId> = export::runs(&records).into_iter().map(|(r, _)| r).collect();
            (runs, records)
        }
        None => {
            let runs = match run {
                Some(r) => vec![r],
                None => client.runs().await?.into_iter().map(|e| e.run).collect(),
            };
            let mut records = Vec::new();
            for r in &runs {
                records.extend(client.all_records(*r).await?);
            }
            (runs, records)
        }
    };
    if let Some(r) = run
        && runs.is_empty()
    {
        bail!("the log holds no run {r}");
    }
    let bytes = export::write(&records)?;
    write_private(to, &bytes)?;
    println!(
        "wrote {} records of {} run(s) to {} ({} bytes; check it with `upgradectl export --verify {}`)",
        records.len(),
        runs.len(),
        to.display(),
        bytes.len(),
        to.display()
    );
    Ok(())
}

/// `export --verify F`.
pub fn verify(file: &Path) -> anyhow::Result<()> {
    let records = read_export(file)?;
    println!("{}: intact, {} records", file.display(), records.len());
    for (run, n) in export::runs(&records) {
        println!("  run {run}: {n} records");
    }
    Ok(())
}

/// One run's records: offline (default run: the last) or from the daemon (default run:
/// the active one).
async fn records(
    client: &Client,
    run: Option<String>,
    offline: &Offline,
) -> anyhow::Result<Vec<Record>> {
    let run = run.as_deref().map(run_id).transpose()?;
    Ok(match offline_records(offline)? {
        Some(all) => run_records(all, run)?,
        None => {
            let run = match run {
                Some(r) => r,
                None => super::source::active_run(client).await?,
            };
            client.all_records(run).await?
        }
    })
}

/// `export --otlp URL RUN`: the run's spans, derived from its records as the daemon derives
/// them (the same ids), in one request per 256.
pub async fn export_otlp(
    client: &Client,
    run: Option<String>,
    offline: &Offline,
    url: &str,
    ctx: upgraded_events::trace::TraceContext,
) -> anyhow::Result<()> {
    use upgraded_otlp as otlp;
    let exporter = otlp::exporter(url, std::time::Duration::from_secs(30))?;
    let records = records(client, run, offline).await?;
    let Some(first) = records.first() else {
        anyhow::bail!("the run has no records");
    };
    let id = first.run;
    let finished = records
        .iter()
        .any(|r| matches!(r.event, Event::RunCompleted | Event::RunAborted));
    let spans = upgraded_events::trace::TraceFold::spans(ctx, &records);
    for chunk in spans.chunks(256) {
        otlp::send(&exporter, url, chunk).await?;
    }
    let trace: String = upgraded_events::trace::trace_id(id)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!(
        "sent {} spans of run {id} to {} (trace id {trace})",
        spans.len(),
        otlp::traces_url(url)?
    );
    if !finished {
        println!(
            "the run is not finished: its run span and open steps are sent once it completes or is aborted"
        );
    }
    Ok(())
}

/// How `timeline` shows it.
pub struct TimelineOut<'a> {
    pub width: usize,
    pub html: Option<&'a Path>,
    pub chrome_trace: bool,
}

/// `timeline`: the terminal chart (and the HTML file with `--html`), or the Chrome trace.
pub async fn timeline(
    client: &Client,
    run: Option<String>,
    offline: &Offline,
    out: TimelineOut<'_>,
) -> anyhow::Result<()> {
    let records = records(client, run, offline).await?;
    let t = upgraded_events::timeline::of(&records);
    if out.chrome_trace {
        println!(
            "{}",
            serde_json::to_string(&upgraded_ctl::render::timeline::trace::chrome_trace(&t))?
        );
        return Ok(());
    }
    print!("{}", upgraded_ctl::render::timeline::gantt(&t, out.width));
    if let Some(path) = out.html {
        let page = upgraded_ctl::render::timeline::html::html(&t);
        write_private(path, page.as_bytes())?;
        println!("wrote {} ({} bytes)", path.display(), page.len());
    }
    Ok(())
}

/// A new file, 0600 (it holds cluster data), never over an existing one.
fn write_private(to: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    upgraded_ctl::write_private(to, bytes).with_context(|| format!("writing {}", to.display()))
}

/// `replay --at`.
pub async fn replay(
    client: &Client,
    at: &str,
    run: Option<String>,
    offline: &Offline,
    output: &str,
) -> anyhow::Result<()> {
    if !matches!(output, "table" | "json") {
        bail!("-o {output:?}: expected table or json");
    }
    let at = At::parse(at).map_err(anyhow::Error::msg)?;
    let records = records(client, run, offline).await?;
    let then = replay::at(&records, at);
    if output == "json" {
        println!("{}", serde_json::to_string_pretty(&then)?);
    } else {
        print!("{}", upgraded_ctl::render::replay::replay(&then));
    }
    Ok(())
}
