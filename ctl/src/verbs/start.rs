//! `upgradectl start --to vX.Y.Z [--dry-run] [--force]`.

use upgraded_api::StartRequest;
use upgraded_ctl::Client;

pub async fn run(client: &Client, to: String, dry_run: bool, force: bool) -> anyhow::Result<()> {
    let v = client
        .start(&StartRequest {
            target: to,
            dry_run,
            force,
        })
        .await?;
    super::print_plan(&v.plan);
    match v.run {
        Some(run) => println!("\nstarted run {run}; follow it with `upgradectl events -f`"),
        None if dry_run => println!("\n(dry run: nothing recorded)"),
        None => println!("\nnothing to do: no run was recorded"),
    }
    Ok(())
}
