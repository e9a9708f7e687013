//! What the kube-rs tests share: a sim served on loopback from the test's runtime, and a
//! kube-rs client for it.

use std::sync::Arc;

use kube::{Client, Config};
use upgraded_sim::World;
use upgraded_sim::server::{Sim, serve};

/// Serves `world` on an ephemeral loopback port; returns the sim and a client.
pub async fn serve_world(world: World) -> (Arc<Sim>, Client) {
    let sim = Sim::new(world);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(serve(listener, sim.clone(), std::future::pending()));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::new(url.parse().expect("a URL"));
    (sim, Client::try_from(config).expect("a client"))
}
