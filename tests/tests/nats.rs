//! The NATS harness: a real, current nats-server with JetStream on a free loopback port.
//! Publishes with `Nats-Msg-Id` are de-duplicated, a consumer reads them in order, and the
//! stream survives a server restart (the outage the outbox must ride out).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use upgraded_tests::nats::NatsServer;

async fn publish(js: &jetstream::Context, subject: &str, id: &str, body: &str) -> bool {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    let ack = js
        .publish_with_headers(subject.to_string(), headers, body.to_string().into())
        .await
        .expect("publish sent")
        .await
        .expect("the stream acked");
    ack.duplicate
}

async fn bodies(stream: &stream::Stream, name: &str) -> Vec<String> {
    let c = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.into()),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut batch = c
        .fetch()
        .max_messages(100)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .expect("fetch");
    let mut out = vec![];
    while let Some(m) = batch.next().await {
        let m = m.expect("message");
        out.push(String::from_utf8_lossy(&m.payload).into_owned());
        m.ack().await.expect("ack");
    }
    out
}

#[tokio::test]
async fn jetstream_dedups_orders_and_survives_a_restart() {
    let mut server = NatsServer::start().expect("nats-server starts (scripts/setup installs it)");
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: "UPGRADES".into(),
            subjects: vec!["upgrades.>".into()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .expect("stream");
    for i in 1..=5 {
        assert!(
            !publish(
                &js,
                "upgrades.lab.run1.w-1.NodeCordoned",
                &format!("run1-{i}"),
                &format!("event {i}")
            )
            .await
        );
    }
    assert!(
        publish(
            &js,
            "upgrades.lab.run1.w-1.NodeCordoned",
            "run1-3",
            "event 3 again"
        )
        .await,
        "same id: a duplicate"
    );
    assert_eq!(
        bodies(&stream, "first").await,
        (1..=5).map(|i| format!("event {i}")).collect::<Vec<_>>()
    );

    // Outage: the server goes away and comes back with its store.
    server.stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.resume().expect("restart");
    let client = async_nats::connect(server.url()).await.expect("reconnect");
    let js = jetstream::new(client);
    let mut stream = js
        .get_stream("UPGRADES")
        .await
        .expect("the stream survived");
    assert_eq!(stream.info().await.expect("info").state.messages, 5);
    assert!(
        publish(&js, "upgrades.lab.run1.w-1.NodeCordoned", "run1-5", "again").await,
        "dedup survives the restart"
    );
    assert!(
        !publish(
            &js,
            "upgrades.lab.run1.w-1.NodeUncordoned",
            "run1-6",
            "event 6"
        )
        .await
    );
    assert_eq!(bodies(&stream, "second").await.len(), 6);
}
