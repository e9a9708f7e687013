//! What reached the daemon's JetStream stream (`UPGRADES`), read by a fresh consumer.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;

/// Every message of `run` on the stream, by a fresh consumer: (seq, Nats-Msg-Id), each
/// payload checked against schemas/record.schema.json; waits (up to 30 s) until `want` have
/// arrived.
pub async fn published(url: &str, cluster: &str, run: &str, want: usize) -> Vec<(u64, String)> {
    let schema = upgraded_tests::records::validator();
    let js = jetstream::new(async_nats::connect(url).await.expect("connect"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut out = Vec::new();
        if let Ok(stream) = js.get_stream("UPGRADES").await {
            let c = stream
                .create_consumer(consumer::pull::Config {
                    filter_subject: format!("upgrades.{cluster}.{run}.>"),
                    ..Default::default()
                })
                .await
                .expect("consumer");
            let mut batch = c
                .fetch()
                .max_messages(5000)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .expect("fetch");
            while let Some(m) = batch.next().await {
                let m = m.expect("message");
                let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("JSON");
                upgraded_tests::records::assert_valid(&schema, &v);
                let id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                out.push((v["seq"].as_u64().expect("seq"), id));
            }
        }
        if out.len() >= want || Instant::now() > deadline {
            return out;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Each of the run's `n` records once, in seq order, with its `<run>:<seq>` id.
pub fn assert_exactly_once_in_order(got: &[(u64, String)], run: &str, n: usize) {
    let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (0..n as u64).collect::<Vec<_>>(),
        "every record exactly once, in order"
    );
    for (s, id) in got {
        assert_eq!(id, &format!("{run}:{s}"));
    }
}
