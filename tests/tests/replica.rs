//! The replicated log (`upgraded --ha`, issue 28) on a real `nats-server` with JetStream:
//! appends are compare-and-set on the run's subject, so of two instances racing for one
//! append exactly one succeeds and the other learns it was deposed; an append retried after
//! a lost acknowledgement is not stored twice; what is read back is what was appended, in
//! order; a record that is not ours is refused with the stream sequence named.

use std::time::Duration;

use upgraded_daemon::log::replica::{Replica, ReplicaConfig, ReplicaError, subject};
use upgraded_events::{Event, Record, RunId, Timestamp};
use upgraded_tests::nats::NatsServer;

fn record(run: RunId, seq: u64, epoch: u64, reason: &str) -> Record {
    Record {
        run,
        seq,
        at: Timestamp(1_795_000_000_000 + seq as i64),
        epoch,
        event: Event::RunHalted {
            reason: reason.into(),
        },
    }
}

async fn replica(url: &str) -> Replica {
    let client = async_nats::connect(url).await.expect("connect");
    Replica::open(
        client,
        ReplicaConfig {
            replicas: 1,
            ack_timeout: Duration::from_secs(5),
            ..ReplicaConfig::default()
        },
    )
    .await
    .expect("the stream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_are_compare_and_set_and_a_retry_is_stored_once() {
    let server = NatsServer::start().expect("nats-server (scripts/setup installs it)");
    let (a, b) = (replica(&server.url()).await, replica(&server.url()).await);
    let run = RunId::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0042);

    // The leader appends the run's first two records.
    let first = [record(run, 0, 1, "zero"), record(run, 1, 1, "one")];
    let last = a.append(&first, 0).await.expect("the leader appends");

    // Two instances race for seq 2, both expecting the run's subject to end at `last`:
    // exactly one is stored, the other is told it was deposed.
    let mine = [record(run, 2, 1, "the old leader's")];
    let theirs = [record(run, 2, 2, "the new leader's")];
    let (x, y) = tokio::join!(a.append(&mine, last), b.append(&theirs, last));
    let won = match (&x, &y) {
        (Ok(_), Err(ReplicaError::Deposed { expected, .. }))
        | (Err(ReplicaError::Deposed { expected, .. }), Ok(_)) => {
            assert_eq!(*expected, last);
            if x.is_ok() { &mine[0] } else { &theirs[0] }
        }
        other => panic!("exactly one append must win: {other:?}"),
    };
    let after = x.as_ref().or(y.as_ref()).copied().expect("a winner");

    // The winner's append retried (its acknowledgement lost): the same ids, the same
    // expectation: not stored twice.
    let again = if x.is_ok() { &a } else { &b };
    let retried = again
        .append(std::slice::from_ref(won), last)
        .await
        .expect("a retry of a stored append is acknowledged");
    assert_eq!(retried, after, "the duplicate is the stored message");

    // A batch whose first record was stored before the acknowledgement was lost: the
    // retry of the whole batch stores the rest, once.
    let epoch = won.epoch;
    let batch = [
        record(run, 3, epoch, "three"),
        record(run, 4, epoch, "four"),
    ];
    let part = again
        .append(&batch[..1], after)
        .await
        .expect("the first of the batch");
    let end = again
        .append(&batch, after)
        .await
        .expect("the batch retried");
    assert!(end > part);

    // Read back: the run's records in order, each once, as appended.
    let back = b.read(run).await.expect("read");
    let records: Vec<&Record> = back.iter().map(|(_, r)| r).collect();
    assert_eq!(records, [&first[0], &first[1], won, &batch[0], &batch[1]]);
    assert_eq!(back.last().map(|(s, _)| *s), Some(end));
    let after = end;
    // A leader's epoch survives the trip (format 2 records).
    assert!(records.iter().all(|r| r.epoch >= 1));
    // Another run's subject is its own: nothing read across runs.
    let other = RunId::from_u128(7);
    assert!(b.read(other).await.expect("read").is_empty());

    // Something that is not a record on a run's subject is refused, naming where.
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.publish(subject(other), "not a record".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    match b.read(other).await {
        Err(ReplicaError::Corrupt { sequence, .. }) => assert!(sequence > after),
        other => panic!("{other:?}"),
    }
}
