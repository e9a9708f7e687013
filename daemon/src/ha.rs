//! `upgraded --ha` (issue 28): one instance's term, from the lease's window to the engine.
//!
//! Level-triggered: whenever the window (`lease::Leading`) or the engine changes, the
//! supervisor compares what is with what should be. The window open and no engine: the
//! local copy is caught up with the replicated log (and checked against it), then the
//! engine resumes like after a crash (`Daemon::recover`: `RunRecovered`, steps in doubt
//! probed before they are redone; the log puts the term's `LeaderChanged` first). The
//! window closed (fenced, deposed, stopped) and an engine: it is stopped where it stands, as
//! a dying process would be. An engine that fails because the log refused its append (not
//! leading, no quorum) is stopped the same way; any other engine failure ends the process.
//!
//! It decides nothing of the lease (`events::lease` does) and nothing of the run (the
//! engine's `decide` does); it only starts and stops the engine and says how it stands.
//!
//! `open` sets an instance up without waiting for NATS: the local copy is read at once (so
//! the API serves `status` from the first second, saying what it waits for), and a task
//! reaches JetStream, opens the stream and the lease's bucket, then keeps the lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use upgraded_api::HaStatus;
use upgraded_events::lease::{Cause, Change};

use crate::engine::{Daemon, EngineError};
use crate::lease::{Epochs, Leading, LeaseError, LeaseKv};
use crate::log::ha::{CatchUpError, HaLog};
use crate::log::replica::{Replica, ReplicaConfig};
use crate::log::{LogError, SledLog};
use upgraded_events::lease::{Lease, LeaseConfig};

/// How long a new leader waits for its copy to reach the replicated log's end.
const CATCH_UP: Duration = Duration::from_secs(30);

/// Where an instance's replicated log and lease live.
#[derive(Debug, Clone)]
pub struct HaConfig {
    pub instance: String,
    /// The NATS servers, comma-separated.
    pub url: String,
    pub lease: LeaseConfig,
    pub stream: ReplicaConfig,
    /// The lease's KV bucket and key.
    pub bucket: String,
    pub key: String,
    /// The KV bucket of the consumers' shared cursors (`cursor::Turn`).
    pub cursor_bucket: String,
    pub replicas: usize,
}

/// Why `--ha` cannot start, or cannot go on (the process ends on it).
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("--nats-url: {0}")]
    Url(String),
    #[error("--nats-url {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the lease: {0}")]
    Lease(LeaseError),
}

/// An instance set up: its log, the lease's window and changes, and the task that reaches
/// NATS and then keeps the lease.
#[derive(Debug)]
pub struct Ha {
    pub instance: String,
    pub log: HaLog,
    pub leading: watch::Receiver<Leading>,
    pub changes: mpsc::UnboundedReceiver<Change>,
    pub outranked: watch::Sender<u64>,
    /// Why NATS JetStream is not reached yet (`None` once it is).
    pub waiting: watch::Receiver<Option<String>>,
    /// The consumers' shared cursors, once NATS is reached.
    pub cursors: watch::Receiver<Option<async_nats::jetstream::kv::Store>>,
    /// A configuration error found once NATS answered (the process ends on it).
    pub misconfigured: tokio::sync::oneshot::Receiver<HaError>,
    /// Ends the keeper: the window closes, then the lease is released.
    pub stop_lease: watch::Sender<bool>,
    pub keeper: tokio::task::JoinHandle<()>,
}

/// Sets up an instance over its local copy `local` without waiting for NATS: the follower
/// and the keeper start once JetStream answers (it needs a quorum of its servers).
pub fn open(cfg: HaConfig, local: SledLog) -> Result<Ha, HaError> {
    let addrs = crate::outbox::server_addrs(&cfg.url).map_err(HaError::Url)?;
    let (leading_tx, leading) = watch::channel(Leading::default());
    let (replica_tx, replica) = watch::channel(None);
    let log = HaLog::new(local, replica, leading.clone(), &cfg.instance)?;
    log.spawn_follower();
    let (changes_tx, changes) = mpsc::unbounded_channel();
    let (stop_lease, mut stop) = watch::channel(false);
    let (outranked, outranked_rx) = watch::channel(0);
    let (waiting_tx, waiting) = watch::channel(Some("connecting".to_string()));
    let (misconfigured_tx, misconfigured) = tokio::sync::oneshot::channel();
    let (cursors_tx, cursors) = watch::channel(None);
    let epochs = Epochs {
        log: log.epochs(),
        outranked: outranked_rx,
    };
    let instance = cfg.instance.clone();
    let keeper = tokio::spawn(async move {
        let client = match async_nats::ConnectOptions::new()
            .name(format!("upgraded {}", cfg.instance))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .connect(addrs.as_slice())
            .await
        {
            Ok(c) => c,
            Err(source) => {
                let _ = misconfigured_tx.send(HaError::Connect {
                    url: cfg.url.clone(),
                    source,
                });
                return;
            }
        };
        let mut tries = 0u32;
        let (replica, kv, shared) = loop {
            let opened = tokio::select! {
                o = open_both(&client, &cfg) => o,
                _ = stop.changed() => return,
            };
            match opened {
                Opened::All(all) => break *all,
                // Another TTL, a bad config: waiting does not mend it.
                Opened::Fatal(e) => {
                    let _ = misconfigured_tx.send(HaError::Lease(e));
                    return;
                }
                Opened::Wait(why) => {
                    if tries.is_multiple_of(15) {
                        tracing::warn!(error = %why, "waiting for NATS JetStream (it needs a quorum of its servers)");
                    }
                    tries += 1;
                    waiting_tx.send_replace(Some(why));
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(2)) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        };
        waiting_tx.send_replace(None);
        replica_tx.send_replace(Some(replica));
        cursors_tx.send_replace(Some(shared));
        tracing::info!(
            instance = %cfg.instance,
            ttl_ms = cfg.lease.ttl_ms,
            "high availability: following the replicated log and asking for the lease"
        );
        let known = *epochs.log.borrow();
        crate::lease::keep(
            Lease::new(&cfg.instance, cfg.lease, known),
            kv,
            leading_tx,
            changes_tx,
            stop,
            epochs,
        )
        .await;
    });
    Ok(Ha {
        instance,
        log,
        leading,
        changes,
        outranked,
        waiting,
        cursors,
        misconfigured,
        stop_lease,
        keeper,
    })
}

/// What opening the stream and the buckets came to.
enum Opened {
    All(Box<(Replica, LeaseKv, async_nats::jetstream::kv::Store)>),
    /// Not now (no answer, no quorum): why.
    Wait(String),
    /// A configuration that waiting does not mend.
    Fatal(LeaseError),
}

async fn open_both(client: &async_nats::Client, cfg: &HaConfig) -> Opened {
    let r = match Replica::open(client.clone(), cfg.stream.clone()).await {
        Ok(r) => r,
        Err(e) => {
            return Opened::Wait(format!(
                "the replicated log (stream {}): {e}",
                cfg.stream.stream
            ));
        }
    };
    match LeaseKv::open(
        client.clone(),
        &cfg.bucket,
        &cfg.key,
        &cfg.lease,
        cfg.replicas,
    )
    .await
    {
        Ok(kv) => {
            match crate::cursor::open_shared(client.clone(), &cfg.cursor_bucket, cfg.replicas).await
            {
                Ok(shared) => Opened::All(Box::new((r, kv, shared))),
                Err(e) => Opened::Wait(e),
            }
        }
        Err(e @ LeaseError::Bucket { .. }) => Opened::Wait(format!("the lease: {e}")),
        Err(fatal) => Opened::Fatal(fatal),
    }
}

/// What the supervisor runs on.
#[derive(Debug)]
pub struct Term {
    pub instance: String,
    pub daemon: Arc<Daemon<HaLog>>,
    pub log: HaLog,
    pub leading: watch::Receiver<Leading>,
    pub changes: mpsc::UnboundedReceiver<Change>,
    pub fatal: mpsc::UnboundedReceiver<EngineError>,
    /// What `status` shows of this instance.
    pub view: watch::Sender<HaStatus>,
    /// An epoch found in the log at or above a new leader's (the lease stands it down).
    pub outranked: watch::Sender<u64>,
    /// Why NATS JetStream is not reached yet.
    pub waiting: watch::Receiver<Option<String>>,
}

/// An engine failure that is the log refusing to take appends from this instance.
fn lost_the_log(e: &EngineError) -> bool {
    matches!(
        e,
        EngineError::Log(LogError::NotLeading(_) | LogError::Replicated(_))
    )
}

/// Runs terms until the process ends; returns only an engine failure that is not about
/// leadership (the process exits on it, as without `--ha`).
pub async fn supervise(mut t: Term) -> Result<(), EngineError> {
    let mut running = false;
    // The epoch of the last term this instance acted in, and why the lease machine last
    // stepped down (the window closing and the reason reach us in either order).
    let mut term = 0;
    let mut why: Option<Why> = None;
    let mut retry_at = Instant::now();
    let mut note = FOLLOWING.to_string();
    loop {
        let lead = t.leading.borrow_and_update().clone();
        let now = Instant::now();
        let may = lead.may_act(now);
        if running && !may {
            t.daemon.stop();
            running = false;
            note = stopped_note(term, why.as_ref());
            tracing::warn!(instance = %t.instance, "{note}");
        }
        if !running && may && now >= retry_at {
            match begin(&t, lead.epoch).await {
                Ok(()) => {
                    running = true;
                    term = lead.epoch;
                    why = None;
                    note = format!("leading in epoch {}", lead.epoch);
                }
                Err(e) => {
                    note = format!(
                        "holds the lease (epoch {}) but cannot lead yet: {e}",
                        lead.epoch
                    );
                    tracing::warn!(instance = %t.instance, "{note}");
                    retry_at = Instant::now() + Duration::from_secs(2);
                }
            }
        }
        let waiting = t.waiting.borrow_and_update().clone();
        let fenced = !running && fenced_in(term, why.as_ref());
        let shown = shown_note(
            &note,
            running,
            t.log.broken(),
            waiting.as_deref(),
            lead.unanswered && !fenced,
        );
        publish(&t, running && lead.may_act(Instant::now()), &shown, &lead);
        let wake = [lead.from, lead.until, Some(retry_at)]
            .into_iter()
            .flatten()
            .filter(|w| *w > Instant::now())
            .min()
            .map_or(Duration::from_millis(500), |w| {
                w.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_millis(500));
        tokio::select! {
            r = t.leading.changed() => if r.is_err() { return Ok(()) },
            Ok(()) = t.waiting.changed() => {}
            Some(c) = t.changes.recv() => {
                if let Change::SteppedDown { epoch, cause, why: words } = c {
                    let w = Why { epoch, cause, words };
                    // Still running: the window's close is next, and its note says this.
                    if !running {
                        note = if epoch == term {
                            stopped_note(term, Some(&w))
                        } else {
                            format!("standby: {}", w.words)
                        };
                    }
                    why = Some(w);
                }
            }
            Some(e) = t.fatal.recv() => {
                if !lost_the_log(&e) {
                    return Err(e);
                }
                t.daemon.stop();
                running = false;
                // The lease's reason, when it gave one for this term, says more.
                note = match &why {
                    Some(w) if w.epoch == term => stopped_note(term, Some(w)),
                    _ => format!("stopped acting: {e}"),
                };
                tracing::warn!(instance = %t.instance, "{note}");
                retry_at = Instant::now() + Duration::from_secs(1);
            }
            () = tokio::time::sleep(wake) => {}
        }
    }
}

/// What `status` says of this instance: the supervisor's `note`, unless something stands in
/// the way that it does not know of (a follower that stopped, NATS not reached, the lease's
/// calls unanswered: `unanswered` is false when the note already says so, a fenced leader's).
fn shown_note(
    note: &str,
    running: bool,
    broken: Option<String>,
    waiting: Option<&str>,
    unanswered: bool,
) -> String {
    if let Some(b) = broken {
        return format!("not following the replicated log: {b}");
    }
    if running {
        return note.to_string();
    }
    if let Some(w) = waiting {
        return format!(
            "standby: waiting for NATS JetStream (it needs a quorum of its servers): {w}"
        );
    }
    if unanswered {
        return "standby: NATS does not answer the lease's calls (unreachable from here, or \
                without a quorum of its servers); this instance cannot take over until it does"
            .to_string();
    }
    note.to_string()
}

/// Why the lease machine last stepped down (`Change::SteppedDown`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Why {
    epoch: u64,
    cause: Cause,
    words: String,
}

/// Whether the lease machine fenced this instance in `term` (its note then already says NATS
/// failed it).
fn fenced_in(term: u64, why: Option<&Why>) -> bool {
    why.is_some_and(|w| w.epoch == term && w.cause == Cause::Fenced)
}

/// Why this instance stopped acting in `term`: the lease machine's reason when it gave one
/// for that term.
fn stopped_note(term: u64, why: Option<&Why>) -> String {
    match why {
        Some(w) if w.epoch == term => format!(
            "stopped acting in epoch {term}: {}; the run waits for the next leader, which resumes it",
            w.words
        ),
        _ => format!(
            "stopped acting in epoch {term}: the lease's window closed (fenced or deposed); \
             the run waits for the next leader, which resumes it"
        ),
    }
}

/// A new term: the copy caught up and checked, then the engine resumed.
async fn begin(t: &Term, epoch: u64) -> Result<(), String> {
    match t.log.catch_up(epoch, CATCH_UP).await {
        Ok(()) => {}
        Err(CatchUpError::Outranked { top, .. }) => {
            t.outranked.send_replace(top);
            return Err(CatchUpError::Outranked { top, epoch }.to_string());
        }
        Err(e) => return Err(e.to_string()),
    }
    if !t.leading.borrow().may_act(Instant::now()) {
        return Err("the lease's window closed while catching up".into());
    }
    match t.daemon.recover().await {
        Ok(run) => {
            tracing::warn!(instance = %t.instance, epoch, run = ?run.map(|r| r.to_string()), "leading: resumed from the replicated log");
            Ok(())
        }
        Err(e) => {
            t.daemon.stop();
            Err(e.to_string())
        }
    }
}

/// A standby's note when nothing stands in its way.
const FOLLOWING: &str = "standby: following the replicated log";

/// What `status` shows of an instance before its supervisor first runs: the socket is
/// served from the first second, and NATS may not have answered yet.
pub fn first_view(instance: &str, waiting: &watch::Receiver<Option<String>>) -> HaStatus {
    let waiting = waiting.borrow().clone();
    HaStatus {
        instance: instance.to_string(),
        note: shown_note(FOLLOWING, false, None, waiting.as_deref(), false),
        ..HaStatus::default()
    }
}

/// What `status` and `/metrics` show of this instance: the lease's holder as the keeper
/// last learnt it, else the leader the log names last.
fn publish(t: &Term, acting: bool, note: &str, lead: &Leading) {
    let (leader, leader_epoch) = match &lead.holder {
        Some(h) => (Some(h.instance.clone()), Some(h.epoch)),
        None => t
            .daemon
            .status()
            .borrow()
            .as_ref()
            .and_then(|s| s.leader.clone())
            .map_or((None, None), |l| (Some(l.instance), Some(l.epoch))),
    };
    let view = HaStatus {
        instance: t.instance.clone(),
        acting,
        leader,
        leader_epoch,
        note: note.to_string(),
    };
    t.view.send_if_modified(|v| {
        let changed = *v != view;
        *v = view;
        changed
    });
}

#[cfg(test)]
mod tests {
    use super::{Cause, FOLLOWING, Why, fenced_in, first_view, shown_note, stopped_note};

    #[test]
    fn before_the_supervisor_runs_status_says_what_the_instance_waits_for() {
        let (tx, rx) = tokio::sync::watch::channel(Some("connecting".to_string()));
        let v = first_view("admin-c", &rx);
        assert!(!v.acting && v.instance == "admin-c", "{v:?}");
        assert!(
            v.note.starts_with("standby: waiting for NATS JetStream")
                && v.note.ends_with("connecting"),
            "{v:?}"
        );
        tx.send_replace(None);
        assert_eq!(first_view("admin-c", &rx).note, FOLLOWING);
    }

    fn why(epoch: u64, cause: Cause, words: &str) -> Why {
        Why {
            epoch,
            cause,
            words: words.into(),
        }
    }

    #[test]
    fn the_shown_note_puts_what_stands_in_the_way_first() {
        let standby = "standby: following the replicated log";
        // A copy that cannot follow the stream is said first, whatever else holds.
        let n = shown_note(
            standby,
            false,
            Some("run r seq 3 differs".into()),
            None,
            true,
        );
        assert!(
            n.starts_with("not following the replicated log: run r seq 3"),
            "{n}"
        );
        // A running leader says it leads.
        assert_eq!(
            shown_note("leading in epoch 2", true, None, Some("x"), true),
            "leading in epoch 2"
        );
        // Not connected yet: what it waits for.
        let n = shown_note(standby, false, None, Some("no quorum"), false);
        assert!(
            n.contains("waiting for NATS JetStream") && n.ends_with("no quorum"),
            "{n}"
        );
        // A standby whose calls go unanswered says so, and so does one that stopped for
        // another reason earlier.
        let n = shown_note(standby, false, None, None, true);
        assert!(n.starts_with("standby: NATS does not answer"), "{n}");
        let deposed = stopped_note(
            1,
            Some(&why(
                1,
                Cause::Deposed,
                "deposed: the lease is b (epoch 2)'s now",
            )),
        );
        let n = shown_note(&deposed, false, None, None, true);
        assert!(n.starts_with("standby: NATS does not answer"), "{n}");
        // Nothing in the way: the note as it is.
        assert_eq!(shown_note(standby, false, None, None, false), standby);
        assert_eq!(shown_note(&deposed, false, None, None, false), deposed);
    }

    #[test]
    fn the_stopped_note_has_the_terms_epoch_and_its_reason_only_for_that_term() {
        let n = stopped_note(3, Some(&why(3, Cause::Fenced, "fenced: no renewal")));
        assert!(
            n.starts_with("stopped acting in epoch 3: fenced: no renewal"),
            "{n}"
        );
        // A reason from an earlier term is not this one's.
        let n = stopped_note(3, Some(&why(2, Cause::Fenced, "fenced: no renewal")));
        assert!(
            n.starts_with("stopped acting in epoch 3: the lease's window closed"),
            "{n}"
        );
        let n = stopped_note(3, None);
        assert!(n.contains("epoch 3") && !n.contains("fenced:"), "{n}");
    }

    #[test]
    fn only_a_fence_in_the_last_term_counts_as_fenced() {
        let rows = [
            (3, Some(why(3, Cause::Fenced, "fenced")), true),
            (3, Some(why(2, Cause::Fenced, "fenced")), false),
            (3, Some(why(3, Cause::Deposed, "deposed")), false),
            (3, Some(why(3, Cause::Outranked, "outranked")), false),
            (3, None, false),
        ];
        for (i, (term, w, want)) in rows.iter().enumerate() {
            assert_eq!(fenced_in(*term, w.as_ref()), *want, "row {i}");
        }
    }
}
