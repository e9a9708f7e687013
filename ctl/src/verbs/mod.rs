//! One module per verb: each takes its flags and the client, calls the daemon through the
//! typed API (or works offline), and prints what `upgraded_ctl::render` makes of the answer.

use std::time::Duration;

use upgraded_ctl::Client;

use crate::cli::{Cli, Cmd, SimCmd};

pub mod events;
pub mod operator;
pub mod plan;
pub mod replay;
pub mod rollback;
pub mod runs;
pub mod sim;
pub mod source;
pub mod start;
pub mod status;
pub mod watch;

/// Runs the verb the command line names.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::new(&cli.socket).with_timeout(Duration::from_secs_f64(cli.timeout));
    match cli.cmd {
        Cmd::Plan(args) => {
            let blocked = plan::run(args)?;
            if blocked {
                std::process::exit(2);
            }
        }
        Cmd::Watch { interval_ms } => watch::run(&client, interval_ms).await?,
        Cmd::Start { to, dry_run, force } => start::run(&client, to, dry_run, force).await?,
        Cmd::Status { json, offline } => status::run(&client, json, &offline).await?,
        Cmd::Pause { reason } => operator::pause(&client, &reason).await?,
        Cmd::Resume => operator::resume(&client).await?,
        Cmd::Notify {
            cmd: crate::cli::NotifyCmd::Test { sink },
        } => operator::notify_test(&client, &sink).await?,
        Cmd::Rollback {
            nodes,
            to,
            all,
            run,
            plan,
            etcd,
            confirm_data_loss,
            output,
        } => {
            let etcd = if etcd == "restore-snapshot" {
                upgraded_api::EtcdMode::RestoreSnapshot
            } else {
                upgraded_api::EtcdMode::Keep
            };
            rollback::run(
                &client,
                (nodes, to, all),
                (etcd, confirm_data_loss),
                run,
                plan,
                &output,
            )
            .await?
        }
        Cmd::Abort { reason } => operator::abort(&client, &reason).await?,
        Cmd::Events {
            run,
            from,
            follow,
            offline,
        } => events::run(&client, run, from, follow, &offline).await?,
        Cmd::Runs { offline } => runs::run(&client, &offline).await?,
        Cmd::Export {
            run,
            run_id,
            data_dir,
            file,
            output,
            verify,
            otlp,
            cluster_name,
            timeline_url,
        } => match (verify, output, otlp) {
            (Some(f), _, _) => replay::verify(&f)?,
            (None, _, Some(url)) => {
                let offline = crate::cli::Offline { file, data_dir };
                let ctx = upgraded_events::trace::TraceContext {
                    cluster: cluster_name,
                    timeline_url: timeline_url
                        .unwrap_or_else(|| "file:///var/lib/upgraded/timelines/{run}.html".into()),
                };
                replay::export_otlp(&client, run.or(run_id), &offline, &url, ctx).await?
            }
            (None, Some(to), None) => {
                replay::export(&client, run.or(run_id), data_dir.as_deref(), &to).await?
            }
            (None, None, None) => {
                anyhow::bail!("export: say -o FILE to write, --otlp URL to send, or --verify FILE")
            }
        },
        Cmd::Timeline {
            run,
            offline,
            html,
            format,
            width,
        } => {
            let width = width
                .or_else(|| std::env::var("COLUMNS").ok()?.parse().ok())
                .unwrap_or(100);
            replay::timeline(
                &client,
                run,
                &offline,
                replay::TimelineOut {
                    width,
                    html: html.as_deref(),
                    chrome_trace: format == "chrome-trace",
                },
            )
            .await?
        }
        Cmd::Replay {
            at,
            run,
            offline,
            output,
        } => replay::replay(&client, &at, run, &offline, &output).await?,
        Cmd::Demo { to, keep, scenario } => {
            let story = match scenario.as_str() {
                "rollback" => crate::demo::Story::Rollback,
                "network" => crate::demo::Story::Network,
                _ => crate::demo::Story::Upgrade,
            };
            crate::demo::run(&to, keep, story).await?
        }
        Cmd::Sim {
            cmd:
                SimCmd::Serve {
                    scenario,
                    port,
                    address,
                    kubeconfig,
                    seed,
                    speed,
                },
        } => sim::serve(&scenario, address, port, &kubeconfig, seed, speed).await?,
        Cmd::Sim {
            cmd:
                SimCmd::Snapshot {
                    scenario,
                    seed,
                    assume_fixed,
                    output,
                },
        } => sim::snapshot(&scenario, seed, assume_fixed, &output)?,
        Cmd::Rehearse { args } => sim::rehearse(args)?,
    }
    Ok(())
}

/// Prints a plan as the table `upgradectl plan` prints.
pub fn print_plan(plan: &upgraded_planner::PlanReport) {
    print!("{}", upgraded_planner::render::table(plan));
}
