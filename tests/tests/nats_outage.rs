//! NATS outages around a real daemon on a fake world, with a real `nats-server`: stopped for
//! the rest of a run and started again, every record reaches the stream once and in order
//! (the upgrade never waited); the stream deleted while the daemon runs, the daemon makes it
//! again and publishes the next run's records, and says what it cannot send again.

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use upgraded_ctl::Client;
use upgraded_tests::nats::NatsServer;

use common::{run_events, start_run, wait_completed, wait_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_and_a_deleted_stream_lose_nothing_and_hold_nothing_up() {
    let mut server = NatsServer::start().expect("nats-server (scripts/setup installs it)");
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = tmp.path().join("daemon.log");
    let child = common::quick_fake_world(tmp.path(), 4)
        .args(["--nats-url", &server.url(), "--cluster-name", "lab"])
        .args(["--nats-ack-timeout-secs", "1"])
        .env("RUST_LOG", "warn")
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    let mut daemon = common::Daemon::from_child(child);
    let client = Client::new(&tmp.path().join("api.sock"));
    wait_ready(&client, &mut daemon).await;

    // The server goes away early in the run and stays away until the run is over.
    let v = start_run(&client, "v1.33.1").await.expect("start");
    let run = v["run"].as_str().expect("run").to_string();
    let early = common::stream::published(&server.url(), "lab", &run, 3).await;
    assert!(early.len() >= 3, "publishing before the outage: {early:?}");
    server.stop();
    let down_at = Instant::now();
    wait_completed(&client).await;
    eprintln!("the run completed {:?} into the outage", down_at.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.resume().expect("nats-server again");
    let events = run_events(&client, &run).await;
    let got = common::stream::published(&server.url(), "lab", &run, events.len()).await;
    common::stream::assert_exactly_once_in_order(&got, &run, events.len());

    // The stream deleted under the daemon: the next run's records make it again.
    let js = jetstream::new(async_nats::connect(server.url()).await.expect("connect"));
    js.delete_stream("UPGRADES")
        .await
        .expect("delete the stream");
    let v = start_run(&client, "v1.34.1").await.expect("start");
    let second = v["run"].as_str().expect("run").to_string();
    wait_completed(&client).await;
    let events = run_events(&client, &second).await;
    let got = common::stream::published(&server.url(), "lab", &second, events.len()).await;
    common::stream::assert_exactly_once_in_order(&got, &second, events.len());
    let said = std::fs::read_to_string(&log).expect("daemon log");
    assert!(
        said.contains("recreated") && said.contains("outbox-cursor.json"),
        "the daemon says the stream was made again and how to publish older runs again:\n{said}"
    );
}
