//! `upgradectl sim serve`: a built-in scenario behind the Kubernetes API, for kubectl;
//! `sim snapshot`: a scenario as a kubectl List; `rehearse`: `upgraded-rehearse`.

use anyhow::Context;

/// `upgradectl sim serve`: the scenario on a real clock until Ctrl-C.
pub async fn serve(
    scenario: &str,
    address: std::net::IpAddr,
    port: u16,
    kubeconfig: &std::path::Path,
    seed: u64,
    speed: f64,
) -> anyhow::Result<()> {
    let world = upgraded_sim::scenario::build(scenario, upgraded_sim::Clock::real(speed), seed)?;
    let listener = tokio::net::TcpListener::bind((address, port))
        .await
        .with_context(|| format!("binding {address}:{port}"))?;
    let url = format!("http://{}", listener.local_addr()?);
    std::fs::write(kubeconfig, upgraded_sim::kubeconfig(&url))
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    let sim = upgraded_sim::Sim::new(world);
    {
        let w = sim.world();
        println!(
            "sim: scenario {scenario}: {} nodes, {} pods, {} PodDisruptionBudgets; serving {url}",
            w.nodes.len(),
            w.pods.len(),
            w.pdbs.len()
        );
    }
    println!(
        "sim: kubeconfig written to {}; try `kubectl --kubeconfig {} get nodes -o wide`",
        kubeconfig.display(),
        kubeconfig.display()
    );
    upgraded_sim::server::serve(listener, sim, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    println!("sim: stopped");
    Ok(())
}

/// `upgradectl sim snapshot`: the scenario as `kubectl get ... -o json` prints it.
pub fn snapshot(
    scenario: &str,
    seed: u64,
    assume_fixed: bool,
    output: &std::path::Path,
) -> anyhow::Result<()> {
    let clock = upgraded_sim::Clock::virtual_at(upgraded_sim::clock::VIRTUAL_EPOCH);
    let mut world = upgraded_sim::scenario::build(scenario, clock, seed)?;
    if assume_fixed {
        for done in upgraded_sim::scenario::fix_blockers(&mut world)? {
            eprintln!("sim: {done}");
        }
    }
    let text = serde_json::to_string_pretty(&upgraded_sim::kube::list_json(&world))?;
    if output.as_os_str() == "-" {
        println!("{text}");
    } else {
        upgraded_ctl::write_private(output, text.as_bytes())
            .with_context(|| format!("writing {}", output.display()))?;
        eprintln!(
            "sim: scenario {scenario}: {} nodes, {} pods written to {}",
            world.nodes.len(),
            world.pods.len(),
            output.display()
        );
    }
    Ok(())
}

/// `upgradectl rehearse`: runs `upgraded-rehearse` with the same arguments, from beside
/// this program or else from `PATH` (the engine lives in the daemon's crates, which
/// upgradectl does not link).
pub fn rehearse(args: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    const NAME: &str = "upgraded-rehearse";
    let beside = std::env::current_exe()
        .ok()
        .map(|p| p.with_file_name(NAME))
        .filter(|p| p.is_file());
    let program = beside.unwrap_or_else(|| NAME.into());
    let err = std::process::Command::new(&program).args(args).exec();
    Err(anyhow::anyhow!(
        "running {}: {err}; it is built and installed with upgraded (cargo build --bins)",
        program.display()
    ))
}
