//! The HA lease (issue 28) on a real `nats-server`: two keepers of one key. One leads, the
//! other stands by and never acts meanwhile; the leader killed (no release), the standby
//! takes over within TTL + its retry period + the campaign delay, in the next epoch, and the
//! old leader's last instant of acting comes before the new one's first; a leader whose key
//! someone else rewrote stands down at its next renewal; a clean stop releases the key, so the
//! next instance does not wait out the TTL.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use upgraded_daemon::lease::{Epochs, Leading, LeaseKv, keep};
use upgraded_events::lease::{Cause, Change, Lease, LeaseConfig};
use upgraded_tests::nats::NatsServer;

/// Short enough for a test, long enough that a loaded machine's slow renewal (2 s of
/// slack before a leader fences itself) does not depose a healthy leader.
const CONFIG: LeaseConfig = LeaseConfig {
    ttl_ms: 6_000,
    campaign_delay_ms: 1_000,
    margin_ms: 2_000,
};

struct Keeper {
    leading: watch::Receiver<Leading>,
    changes: mpsc::UnboundedReceiver<Change>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

async fn keeper(url: &str, instance: &str, epoch: u64) -> Keeper {
    let client = async_nats::connect(url).await.expect("connect");
    let kv = LeaseKv::open(client, "upgraded_lease", "lab", &CONFIG, 1)
        .await
        .expect("the lease bucket");
    let (tx, leading) = watch::channel(Leading::default());
    let (ctx, changes) = mpsc::unbounded_channel();
    let (stop, stopped) = watch::channel(false);
    // No log behind these keepers: the epochs they know are their own.
    let epochs = Epochs {
        log: watch::channel(0).1,
        outranked: watch::channel(0).1,
    };
    let task = tokio::spawn(keep(
        Lease::new(instance, CONFIG, epoch),
        kv,
        tx,
        ctx,
        stopped,
        epochs,
    ));
    Keeper {
        leading,
        changes,
        stop,
        task,
    }
}

/// Waits until `k` may act; how long that took.
async fn until_acting(k: &Keeper, within: Duration) -> Duration {
    let t = Instant::now();
    while !k.leading.borrow().may_act(Instant::now()) {
        assert!(t.elapsed() < within, "not acting within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leads_the_other_takes_over_after_a_kill_and_a_clean_stop_releases() {
    let server = NatsServer::start().expect("nats-server (scripts/setup installs it)");
    let url = server.url();
    let mut a = keeper(&url, "admin-1", 0).await;
    // An instance with another TTL is refused: its key could pass before the other fences.
    let other = LeaseConfig {
        ttl_ms: 9_000,
        ..CONFIG
    };
    let client = async_nats::connect(&url).await.expect("connect");
    let refused = LeaseKv::open(client, "upgraded_lease", "lab", &other, 1)
        .await
        .expect_err("another TTL");
    assert!(refused.to_string().contains("9000 ms"), "{refused}");
    until_acting(&a, Duration::from_secs(3)).await;
    assert!(matches!(
        a.changes.recv().await,
        Some(Change::Elected { epoch: 1 })
    ));

    // The standby never acts while the leader renews (two TTLs).
    let b = keeper(&url, "admin-2", 0).await;
    let watch_until = Instant::now() + Duration::from_millis(2 * CONFIG.ttl_ms);
    while Instant::now() < watch_until {
        let now = Instant::now();
        assert!(!b.leading.borrow().may_act(now), "two leaders");
        assert!(a.leading.borrow().may_act(now), "the leader stopped acting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // kill -9 of the leader: no release. Its last renewal decides when it would have
    // stopped acting; the standby must not act before then.
    let last = a.leading.borrow().clone();
    a.task.abort();
    let killed = Instant::now();
    let took = until_acting(&b, Duration::from_secs(20)).await;
    // The TTL, the standby's retry period and the campaign delay, and 2 s for the server
    // to expire the key and answer.
    let bound = Duration::from_millis(
        CONFIG.ttl_ms + CONFIG.renew_every_ms() + CONFIG.campaign_delay_ms + 2_000,
    );
    eprintln!("takeover after a kill: {took:?} (bound {bound:?})");
    assert!(took <= bound, "{took:?}");
    let new = b.leading.borrow().clone();
    assert_eq!(new.epoch, 2, "the next epoch");
    let (old_until, new_from) = (last.until.expect("it led"), new.from.expect("it leads"));
    assert!(
        old_until + Duration::from_millis(CONFIG.campaign_delay_ms) <= new_from,
        "the old leader could act until {:?} after the kill, the new one from {:?}",
        old_until.saturating_duration_since(killed),
        new_from.saturating_duration_since(killed)
    );

    // Someone else rewrites the key: the leader's next renewal finds another revision and
    // it stands down at once.
    let mut b = b;
    assert!(matches!(
        b.changes.recv().await,
        Some(Change::Elected { epoch: 2 })
    ));
    let client = async_nats::connect(&url).await.expect("connect");
    let store = async_nats::jetstream::new(client)
        .get_key_value("upgraded_lease")
        .await
        .expect("bucket");
    store
        .put("lab", "epoch=9 instance=intruder".into())
        .await
        .expect("put");
    let change = tokio::time::timeout(Duration::from_secs(5), b.changes.recv())
        .await
        .expect("stands down within a renewal");
    assert!(
        matches!(&change, Some(Change::SteppedDown { epoch: 2, cause: Cause::Deposed, why }) if why.contains("intruder (epoch 9)")),
        "{change:?}"
    );
    assert!(!b.leading.borrow().may_act(Instant::now()));
    b.stop.send_replace(true);
    let _ = b.task.await;

    // A clean stop releases: the next instance leads without waiting out the TTL.
    store.delete("lab").await.expect("clear the intruder");
    let c = keeper(&url, "admin-3", 9).await;
    until_acting(&c, Duration::from_secs(3)).await;
    c.stop.send_replace(true);
    let _ = c.task.await;
    let d = keeper(&url, "admin-4", 10).await;
    let took = until_acting(&d, Duration::from_secs(3)).await;
    eprintln!("takeover after a clean stop: {took:?}");
    assert!(took < Duration::from_millis(CONFIG.ttl_ms), "{took:?}");
    assert_eq!(d.leading.borrow().epoch, 11);
}
