//! kube-rs's `watcher` and `reflector` against the sim, as the daemon's and an operator's
//! controllers use them on a real apiserver: the initial list (paged, or streamed with
//! `sendInitialEvents`), the changes after it, and a relist after `410 Gone` that drops what
//! was deleted while the watch could not see it.

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;
use upgraded_sim::server::Sim;
use upgraded_sim::{Clock, scenario};

/// A kind-scenario sim served on loopback from this runtime, and a client for it.
async fn start() -> (Arc<Sim>, Client) {
    let world = scenario::build("kind", Clock::real(1.0), 3).expect("the scenario builds");
    common::serve_world(world).await
}

/// Polls `f` until it holds, for up to 30 s.
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn names(store: &Store<Pod>) -> Vec<String> {
    let mut n: Vec<String> = store
        .state()
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    n.sort();
    n
}

fn world_pods(sim: &Sim) -> Vec<String> {
    let mut n: Vec<String> = sim.world().pods.values().map(|p| p.name.clone()).collect();
    n.sort();
    n
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": name, "image": "nginx"}]}
            }
        }
    }))
    .expect("a Deployment")
}

/// Runs a reflector over every pod with `config`; returns its store and a channel that counts
/// the watcher's (re)lists.
fn reflect(
    client: &Client,
    config: watcher::Config,
) -> (
    Store<Pod>,
    mpsc::UnboundedReceiver<()>,
    impl Future<Output = ()> + use<>,
) {
    let api: Api<Pod> = Api::all(client.clone());
    let (reader, writer) = reflector::store();
    let (tx, lists) = mpsc::unbounded_channel();
    let run = async move {
        let mut events =
            std::pin::pin!(reflector::reflector(writer, watcher(api, config)).default_backoff());
        while let Some(e) = events.next().await {
            if let Ok(watcher::Event::InitDone) = e {
                let _ = tx.send(());
            }
        }
    };
    (reader, lists, run)
}

async fn reflects_changes_and_relists_after_410(config: watcher::Config) {
    let (sim, client) = start().await;
    let (store, mut lists, run) = reflect(&client, config);
    tokio::spawn(run);
    store.wait_until_ready().await.expect("the first list");
    lists.recv().await.expect("one list");
    assert_eq!(names(&store), world_pods(&sim));

    // Changes made through the API arrive through the watch.
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    deployments
        .create(&PostParams::default(), &deployment("web", 2))
        .await
        .expect("created");
    until("two web pods in the store", || {
        names(&store)
            .iter()
            .filter(|n| n.starts_with("web-"))
            .count()
            == 2
    })
    .await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let victim = names(&store)
        .into_iter()
        .find(|n| n.starts_with("web-"))
        .expect("a web pod");
    pods.delete(&victim, &DeleteParams::default().grace_period(0))
        .await
        .expect("deleted");
    until("the deleted pod leaves and its replacement comes", || {
        let n = names(&store);
        !n.contains(&victim) && n.iter().filter(|n| n.starts_with("web-")).count() == 2
    })
    .await;
    assert_eq!(names(&store), world_pods(&sim));

    // A deletion the watch never sees: made and compacted away at one instant, as when a
    // watch falls behind etcd's compaction. The next read is a 410; the watcher relists.
    let hidden = names(&store)
        .into_iter()
        .find(|n| n.starts_with("web-"))
        .expect("a web pod");
    {
        let mut w = sim.world();
        w.delete_pod("default", &hidden, Some(0)).expect("deleted");
        w.tick();
        assert!(
            !w.pods
                .contains_key(&("default".to_string(), hidden.clone())),
            "gone at once with no grace"
        );
        w.compact_journal();
    }
    tokio::time::timeout(Duration::from_secs(30), lists.recv())
        .await
        .expect("a relist after 410")
        .expect("the watcher runs");
    until("the store agrees with the world after the relist", || {
        names(&store) == world_pods(&sim)
    })
    .await;
    assert!(!names(&store).contains(&hidden));

    // And the watch carries on from the relist's version.
    deployments
        .create(&PostParams::default(), &deployment("after", 1))
        .await
        .expect("created");
    until("a pod made after the relist", || {
        names(&store).iter().any(|n| n.starts_with("after-"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reflector_follows_the_sim_and_relists_after_410() {
    reflects_changes_and_relists_after_410(watcher::Config::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_list_reflector_follows_the_sim_and_relists_after_410() {
    reflects_changes_and_relists_after_410(watcher::Config::default().streaming_lists()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_list_is_consistent_across_pages() {
    let (sim, client) = start().await;
    let (store, _lists, run) = reflect(&client, watcher::Config::default().page_size(4));
    tokio::spawn(run);
    store.wait_until_ready().await.expect("the first list");
    assert_eq!(names(&store), world_pods(&sim));
}
