//! `upgradectl`: start, observe and steer upgrades run by `upgraded`.
//!
//! `cli` defines the command line, `verbs` holds one module per verb, `demo` the embedded
//! demo; the client and the renderers are the library (`upgraded_ctl`).

use clap::Parser;

mod cli;
mod demo;
mod verbs;

#[tokio::main]
async fn main() {
    quiet_on_closed_pipe();
    let cli = cli::Cli::parse();
    if let Err(e) = verbs::run(cli).await {
        eprintln!("upgradectl: {e:#}");
        std::process::exit(1);
    }
}

/// `upgradectl events | head`: when the reader goes away, stop quietly instead of panicking
/// in `println!` (Rust ignores SIGPIPE, so the write fails with EPIPE).
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info)
    }));
}
