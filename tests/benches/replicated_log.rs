//! What `--ha` costs each append: one record appended and acknowledged through the engine's
//! `EventLog`, on this instance's sled log alone (the single daemon), and on the replicated
//! log (`HaLog`: the JetStream stream by compare-and-set, then sled) with one real
//! `nats-server` (replicas 1) and with three clustered on loopback (replicas 3, what `--ha`
//! runs on). Needs the pinned nats-server (`scripts/setup`).
//!
//! `cargo bench -p upgraded-tests --bench replicated_log`

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::sync::watch;
use upgraded_daemon::lease::Leading;
use upgraded_daemon::log::ha::HaLog;
use upgraded_daemon::log::replica::{Replica, ReplicaConfig};
use upgraded_daemon::log::{EventLog, Recovery, SledLog};
use upgraded_events::{Event, RunId, Timestamp};
use upgraded_tests::nats::{NatsCluster, NatsServer};

const PLAIN: Recovery = Recovery {
    repair_tail: false,
    rebuild: false,
};

fn one() -> Vec<(Timestamp, Event)> {
    vec![(Timestamp(1), Event::RunRecovered { pid: 1 })]
}

/// The replicated log on `urls` with `replicas`, leading for the whole bench.
async fn ha_log(dir: &std::path::Path, urls: &str, replicas: usize) -> HaLog {
    let (local, _) = SledLog::open(dir, PLAIN).expect("sled");
    let addrs = upgraded_daemon::outbox::server_addrs(urls).expect("urls");
    let client = async_nats::connect(addrs.as_slice()).await.expect("nats");
    let cfg = ReplicaConfig {
        replicas,
        ..ReplicaConfig::default()
    };
    // A fresh cluster elects its JetStream leader in a moment.
    let t = Instant::now();
    let replica = loop {
        match Replica::open(client.clone(), cfg.clone()).await {
            Ok(r) => break r,
            Err(e) if t.elapsed() < Duration::from_secs(30) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the stream: {e}"),
        }
    };
    let now = Instant::now();
    let (_keep, leading) = watch::channel(Leading {
        epoch: 1,
        from: Some(now),
        until: Some(now + Duration::from_secs(24 * 3600)),
        holder: None,
        unanswered: false,
    });
    std::mem::forget(_keep);
    let (_reached, replica) = watch::channel(Some(replica));
    std::mem::forget(_reached);
    HaLog::new(local, replica, leading, "bench").expect("ha log")
}

fn appends(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("append one record");
    g.sample_size(30).measurement_time(Duration::from_secs(5));

    let dir = tempfile::tempdir().expect("tempdir");
    let (sled, _) = SledLog::open(dir.path(), PLAIN).expect("sled");
    let run = RunId::new();
    g.bench_function("sled + witness (single daemon)", |b| {
        b.iter(|| rt.block_on(sled.append(run, one())).expect("append"));
    });

    let single = NatsServer::start().expect("nats-server (scripts/setup)");
    let dir1 = tempfile::tempdir().expect("tempdir");
    let ha1 = rt.block_on(ha_log(dir1.path(), &single.url(), 1));
    let run1 = RunId::new();
    g.bench_function("--ha, one nats-server (replicas 1)", |b| {
        b.iter(|| rt.block_on(ha1.append(run1, one())).expect("append"));
    });

    let cluster = NatsCluster::start().expect("three nats-servers");
    let dir3 = tempfile::tempdir().expect("tempdir");
    let ha3 = rt.block_on(ha_log(dir3.path(), &cluster.urls(), 3));
    let run3 = RunId::new();
    g.bench_function("--ha, three nats-servers (replicas 3)", |b| {
        b.iter(|| rt.block_on(ha3.append(run3, one())).expect("append"));
    });
    g.finish();
}

criterion_group!(benches, appends);
criterion_main!(benches);
