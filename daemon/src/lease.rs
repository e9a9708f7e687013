//! The lease keeper (`upgraded --ha`, issue 28): runs `events::lease` against a key in a
//! NATS KV bucket whose `max_age` is the lease's TTL (the key expires that long after its
//! last write). It makes the compare-and-set call the machine names — `create`, `update` at
//! the revision held, `delete` at that revision on a clean stop — reports what it answered,
//! and publishes what the engine needs to ask before each act: the epoch and the window
//! of monotonic time in which this instance may act.
//!
//! It reads the key only to name the holder in a refusal; it never decides from a read.

use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use async_nats::jetstream::{self};
use tokio::sync::watch;
use upgraded_events::lease::{Answer, Call, Change, Holder, Lease, LeaseConfig, Role};

/// What the engine asks before each node command and API change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leading {
    /// This instance leads in `epoch`…
    pub epoch: u64,
    /// …and may act from this instant…
    pub from: Option<Instant>,
    /// …until this one (self-fencing), unless a renewal moves it.
    pub until: Option<Instant>,
    /// Who holds the lease as this instance last learnt it (itself while it leads; for a
    /// standby, the holder its last refused `create` named), for `status` and refusals.
    pub holder: Option<Holder>,
    /// The lease's calls go unanswered (NATS unreachable from here, or without a quorum).
    pub unanswered: bool,
}

impl Leading {
    /// Whether this instance may act at `now`.
    pub fn may_act(&self, now: Instant) -> bool {
        matches!((self.from, self.until), (Some(f), Some(u)) if f <= now && now < u)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("the lease bucket {bucket}: {what}")]
    Bucket { bucket: String, what: String },
    /// The bucket expires keys after another TTL than this instance's (a configuration
    /// error, not an outage: waiting does not mend it).
    #[error(
        "the lease bucket {bucket} expires keys after {max_age:?} but this instance's lease \
         TTL is {ttl_ms} ms: give every instance the same TTL (or delete the bucket)"
    )]
    Ttl {
        bucket: String,
        max_age: Duration,
        ttl_ms: u64,
    },
    #[error(transparent)]
    Config(#[from] upgraded_events::lease::LeaseConfigError),
}

/// The lease key in its bucket.
#[derive(Debug, Clone)]
pub struct LeaseKv {
    kv: kv::Store,
    key: String,
}

impl LeaseKv {
    /// The bucket (created if missing, `max_age` the TTL, history 1) and the key.
    pub async fn open(
        client: async_nats::Client,
        bucket: &str,
        key: &str,
        config: &LeaseConfig,
        replicas: usize,
    ) -> Result<LeaseKv, LeaseError> {
        config.validate()?;
        let js = jetstream::new(client);
        let bad = |e: &dyn std::fmt::Display| LeaseError::Bucket {
            bucket: bucket.to_string(),
            what: e.to_string(),
        };
        let kv = match js.get_key_value(bucket).await {
            Ok(kv) => {
                // A key that expires sooner than this instance's TTL could pass to another
                // before this one fences itself: every instance must agree on it.
                let max_age = kv.status().await.map_err(|e| bad(&e))?.info.config.max_age;
                if max_age != Duration::from_millis(config.ttl_ms) {
                    return Err(LeaseError::Ttl {
                        bucket: bucket.to_string(),
                        max_age,
                        ttl_ms: config.ttl_ms,
                    });
                }
                kv
            }
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: bucket.to_string(),
                    history: 1,
                    max_age: Duration::from_millis(config.ttl_ms),
                    storage: jetstream::stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map_err(|e| bad(&e))?,
        };
        Ok(LeaseKv {
            kv,
            key: key.to_string(),
        })
    }

    /// Makes `call`, sent at `sent` (ms of the keeper's clock); what it answered.
    pub async fn call(&self, call: &Call, sent: u64) -> Answer {
        match call {
            Call::Create(h) => match self.kv.create(&self.key, h.encode().into()).await {
                Ok(revision) => Answer::Stored { revision, sent },
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                    Answer::Held(self.holder().await)
                }
                Err(_) => Answer::NoAnswer,
            },
            Call::Update { holder, revision } => {
                match self
                    .kv
                    .update(&self.key, holder.encode().into(), *revision)
                    .await
                {
                    Ok(revision) => Answer::Stored { revision, sent },
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                        Answer::Held(self.holder().await)
                    }
                    Err(_) => Answer::NoAnswer,
                }
            }
            Call::Release { revision } => {
                match self
                    .kv
                    .delete_expect_revision(&self.key, Some(*revision))
                    .await
                {
                    Ok(()) => Answer::Stored {
                        revision: *revision,
                        sent,
                    },
                    Err(_) => Answer::NoAnswer,
                }
            }
        }
    }

    /// Who holds the key now, if it can be read (for the words of a refusal only).
    async fn holder(&self) -> Option<Holder> {
        let entry = self.kv.entry(&self.key).await.ok()??;
        Holder::decode(std::str::from_utf8(&entry.value).ok()?)
    }
}

/// What the log tells the keeper of epochs.
#[derive(Debug)]
pub struct Epochs {
    /// The highest epoch in the log: a standby asks above it.
    pub log: watch::Receiver<u64>,
    /// An epoch a new leader found in the log at or above its own (it must not act).
    pub outranked: watch::Receiver<u64>,
}

/// Keeps `lease` on `kv` until `stop` says so: the calls it names, its changes logged and
/// handed to `changes`, and `leading` kept up to date. On stop it releases a lease it holds.
pub async fn keep(
    mut lease: Lease,
    kv: LeaseKv,
    leading: watch::Sender<Leading>,
    changes: tokio::sync::mpsc::UnboundedSender<Change>,
    mut stop: watch::Receiver<bool>,
    mut epochs: Epochs,
) {
    let t0 = Instant::now();
    let ms = |t: Instant| u64::try_from(t.duration_since(t0).as_millis()).unwrap_or(u64::MAX);
    let at = |m: u64| t0 + Duration::from_millis(m);
    let publish = |lease: &Lease| {
        let view = match (lease.epoch(), lease.window()) {
            (Some(epoch), Some((from, until))) => Leading {
                epoch,
                from: Some(at(from)),
                until: Some(at(until)),
                holder: Some(Holder {
                    instance: lease.instance.clone(),
                    epoch,
                }),
                unanswered: lease.unanswered_since.is_some(),
            },
            _ => Leading {
                holder: match &lease.role {
                    Role::Standby { leader, .. } => leader.clone(),
                    _ => None,
                },
                unanswered: lease.unanswered_since.is_some(),
                ..Leading::default()
            },
        };
        leading.send_if_modified(|l| {
            let changed = *l != view;
            *l = view;
            changed
        });
    };
    loop {
        if *stop.borrow() {
            // The window closes before the lease is released: nothing acts after that.
            leading.send_replace(Leading::default());
            if let Some(call) = lease.stop() {
                let _ = kv.call(&call, ms(Instant::now())).await;
            }
            return;
        }
        // The window the engine reads changes before anyone hears of it: a leader that
        // stepped down has stopped acting by the time it says so.
        let now = ms(Instant::now());
        let mut change = lease.tick(now);
        if lease.epoch().is_none() {
            lease.saw_epoch(*epochs.log.borrow_and_update(), now);
        }
        let outranked = *epochs.outranked.borrow_and_update();
        if outranked > 0 {
            change = change.or(lease.saw_epoch(outranked, now));
        }
        publish(&lease);
        if let Some(c) = change {
            report(&lease.instance, c, &changes);
        }
        let (call, wake) = lease.next(ms(Instant::now()));
        if let Some(call) = call {
            let sent = ms(Instant::now());
            let answer = kv.call(&call, sent).await;
            let change = lease.answered(answer, ms(Instant::now()));
            publish(&lease);
            if let Some(c) = change {
                report(&lease.instance, c, &changes);
            }
            continue;
        }
        // Wake for the next call, the fence, or the end of the campaign delay.
        let mut next = wake.map(at);
        if let Some((from, until)) = lease.window() {
            for t in [at(from), at(until)] {
                if t > Instant::now() {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
        }
        let sleep = next.map_or(Duration::from_millis(200), |t| {
            t.saturating_duration_since(Instant::now())
        });
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            _ = stop.changed() => {}
            Ok(()) = epochs.outranked.changed() => {}
        }
    }
}

/// A change of role, logged and handed on.
fn report(instance: &str, c: Change, changes: &tokio::sync::mpsc::UnboundedSender<Change>) {
    match &c {
        Change::Elected { epoch } => {
            tracing::warn!(instance, epoch, "elected: leading after the campaign delay");
        }
        Change::SteppedDown { epoch, why, .. } => {
            tracing::warn!(instance, epoch, %why, "stepped down: no more node commands or API changes");
        }
    }
    let _ = changes.send(c);
}
