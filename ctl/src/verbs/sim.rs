//! `upgradectl sim serve`: a built-in scenario behind the Kubernetes API, for kubectl.

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
