//! Durable appends per second: raw sled (insert + flush per event, and batch + flush) against
//! `SledLog`, witness included, with one producer and with 64 concurrent producers (group
//! commit), and replay from disk.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use upgraded_daemon::log::{EventLog, SledLog, key};
use upgraded_events::codec::encode;
use upgraded_events::{Event, Facts, Record, RunId, RunState, Step, Timestamp};

const EVENTS: u64 = 512;

fn event(i: u64) -> Event {
    Event::StepSucceeded {
        node: format!("worker-{:03}", i % 200).into(),
        step: Step::Drain,
        attempt: 1,
        facts: Facts::from([("evicted".to_string(), "12".to_string())]),
    }
}

fn appends(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("durable_appends");
    g.throughput(Throughput::Elements(EVENTS));
    g.sample_size(10).measurement_time(Duration::from_secs(6));

    // Raw sled, one durable write per event: a plain insert, and a one-insert `Batch` as
    // the log's writer used to apply every commit (twice the cost: the reason a lone record
    // now goes in with `insert`).
    type Write = fn(&sled::Tree, [u8; 24], Vec<u8>);
    let raw: [(&str, Write); 2] = [
        ("raw_sled_insert_flush", |t, k, v| {
            t.insert(k, v).expect("insert");
        }),
        ("raw_sled_batch_flush", |t, k, v| {
            let mut batch = sled::Batch::default();
            batch.insert(&k, v);
            t.apply_batch(batch).expect("batch");
        }),
    ];
    for (name, write) in raw {
        g.bench_function(name, |b| {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = sled::Config::new()
                .path(dir.path())
                .mode(sled::Mode::HighThroughput)
                .open()
                .expect("sled");
            let tree = db.open_tree("events").expect("tree");
            let run = RunId::new();
            let mut seq = 0u64;
            b.iter(|| {
                for _ in 0..EVENTS {
                    let r = Record {
                        run,
                        seq,
                        at: Timestamp(0),
                        epoch: 0,
                        event: event(seq),
                    };
                    write(&tree, key(run, seq), encode(&r).expect("encode"));
                    db.flush().expect("flush");
                    seq += 1;
                }
            });
        });
    }

    for producers in [1usize, 64] {
        g.bench_with_input(
            BenchmarkId::new("sledlog_group_commit", producers),
            &producers,
            |b, &producers| {
                let dir = tempfile::tempdir().expect("tempdir");
                let (log, _) = SledLog::open(dir.path(), Default::default()).expect("open");
                let run = RunId::new();
                b.iter(|| {
                    rt.block_on(async {
                        let per = EVENTS as usize / producers;
                        let mut tasks = Vec::new();
                        for p in 0..producers {
                            let log = log.clone();
                            tasks.push(tokio::spawn(async move {
                                for i in 0..per {
                                    log.append(
                                        run,
                                        vec![(Timestamp(0), event((p * per + i) as u64))],
                                    )
                                    .await
                                    .expect("append");
                                }
                            }));
                        }
                        for t in tasks {
                            t.await.expect("join");
                        }
                    });
                });
            },
        );
    }
    g.finish();
}

fn replay_from_disk(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = SledLog::open(dir.path(), Default::default()).expect("open");
    let run = RunId::new();
    let n = 20_000u64;
    rt.block_on(async {
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            log.append(
                run,
                chunk.iter().map(|&i| (Timestamp(0), event(i))).collect(),
            )
            .await
            .expect("append");
        }
    });
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.bench_function("read_decode_fold_20k", |b| {
        b.iter(|| {
            let records = log.read(run, 0).expect("read");
            RunState::replay(&records).next_seq
        });
    });
    g.finish();
}

criterion_group!(benches, appends, replay_from_disk);
criterion_main!(benches);
