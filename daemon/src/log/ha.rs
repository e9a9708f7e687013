//! The log of `upgraded --ha` (issue 28): the replicated log in a JetStream stream
//! (`replica.rs`) in front of this instance's own sled log and witness.
//!
//! The leader appends to the stream first, by compare-and-set on the run's subject and
//! stamped with its epoch, then stores the same records in its sled log (as they are:
//! `SledLog::store`) and only then acknowledges them. Every instance, leader or standby,
//! follows the stream into its own copy (`follow`), one stream sequence after the other from
//! the first: at start that checks every record of the local copy against the stream (what it
//! lacks is stored, a record that differs stops the follower with the run and seq named),
//! then it keeps a standby's copy equal to the stream. The leader's own appends come back to
//! it through the stream and are found held already.
//!
//! An append is refused unless the lease's window is open (`Leading::may_act`); the first
//! record of a term in a run is a `LeaderChanged` with the new epoch, put in by the log so
//! no record of a term precedes it (after the first batch of a new run).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};
use upgraded_events::{Event, Record, RunId, Timestamp};

use super::replica::{Replica, ReplicaError};
use super::{EventLog, LogError, SledLog};
use crate::lease::Leading;

/// How far one run of the replicated log is known (from the stream, as followed or
/// appended).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Track {
    /// The next seq of the run.
    next: u64,
    /// The stream sequence of its last record (what the next append expects).
    last: u64,
    /// The highest epoch among its records.
    epoch: u64,
}

#[derive(Debug, Default)]
struct Tracks {
    runs: HashMap<RunId, Track>,
    /// Why the follower stopped (a local copy that differs from the stream).
    broken: Option<String>,
}

impl Tracks {
    fn saw(&mut self, r: &Record, sequence: u64) {
        let t = self.runs.entry(r.run).or_default();
        t.next = t.next.max(r.seq + 1);
        t.last = t.last.max(sequence);
        t.epoch = t.epoch.max(r.epoch);
    }
}

/// The replicated log, as the engine's `EventLog`.
#[derive(Debug, Clone)]
pub struct HaLog {
    local: SledLog,
    /// The stream, once NATS JetStream has been reached (until then the local copy is
    /// read, and nothing is appended or followed).
    replica: watch::Receiver<Option<Replica>>,
    leading: watch::Receiver<Leading>,
    instance: String,
    tracks: Arc<Mutex<Tracks>>,
    /// The last stream sequence the follower has in the local copy.
    followed: watch::Sender<u64>,
    /// The highest epoch in the log (the lease asks above it).
    epoch: watch::Sender<u64>,
    /// One append at a time: each expects where the last one ended.
    writing: Arc<tokio::sync::Mutex<()>>,
}

impl HaLog {
    /// The replicated log over `local`, for `instance`, appending while `leading` says so,
    /// to the stream `replica` holds once it is reached. The highest epoch of the local copy
    /// is known at once (a standby asks above it).
    pub fn new(
        local: SledLog,
        replica: watch::Receiver<Option<Replica>>,
        leading: watch::Receiver<Leading>,
        instance: &str,
    ) -> Result<HaLog, LogError> {
        let mut top = 0;
        for run in local.runs()? {
            for r in local.read(run, 0)? {
                top = top.max(r.epoch);
            }
        }
        Ok(HaLog {
            local,
            replica,
            leading,
            instance: instance.to_string(),
            tracks: Arc::new(Mutex::new(Tracks::default())),
            followed: watch::channel(0).0,
            epoch: watch::channel(top).0,
            writing: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The highest epoch in the log, as it grows.
    pub fn epochs(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }

    /// The stream, if NATS JetStream has been reached.
    fn stream(&self) -> Option<Replica> {
        self.replica.borrow().clone()
    }

    fn tracks(&self) -> std::sync::MutexGuard<'_, Tracks> {
        self.tracks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Why the follower stopped, if it did.
    pub fn broken(&self) -> Option<String> {
        self.tracks().broken.clone()
    }

    /// Follows the stream into the local copy, from its first sequence, until the process
    /// ends or the copy is found to differ (then `broken` says where).
    pub fn spawn_follower(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move { me.follow().await })
    }

    async fn follow(mut self) {
        let replica = match self.replica.wait_for(Option::is_some).await {
            Ok(r) => r.clone(),
            Err(_) => return,
        };
        let Some(replica) = replica else { return };
        let mut next = 1u64;
        let mut complained = None::<Instant>;
        loop {
            // A batch of what is there, then stored run by run in stream order.
            let mut batch: Vec<(u64, Record)> = Vec::new();
            let mut failure = None;
            while batch.len() < 512 {
                match replica.at(next + batch.len() as u64).await {
                    Ok(Some(r)) => batch.push((next + batch.len() as u64, r)),
                    Ok(None) => break,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            let mut i = 0;
            while i < batch.len() {
                let run = batch[i].1.run;
                let j = batch[i..]
                    .iter()
                    .position(|(_, r)| r.run != run)
                    .map_or(batch.len(), |k| i + k);
                let records: Vec<Record> = batch[i..j].iter().map(|(_, r)| r.clone()).collect();
                // A copy that differs (`Diverged`, run and seq named) or a local log that
                // takes nothing more: the follower stops, and the instance never leads.
                if let Err(e) = self.local.store(run, records).await {
                    tracing::error!(error = %e, "the follower stops: this instance's copy cannot follow the replicated log");
                    self.tracks().broken = Some(e.to_string());
                    return;
                }
                {
                    let mut t = self.tracks();
                    for (sequence, r) in &batch[i..j] {
                        t.saw(r, *sequence);
                    }
                }
                let top = batch[i..j].iter().map(|(_, r)| r.epoch).max().unwrap_or(0);
                self.epoch.send_if_modified(|e| {
                    let raise = top > *e;
                    *e = (*e).max(top);
                    raise
                });
                next = batch[j - 1].0 + 1;
                self.followed.send_replace(next - 1);
                i = j;
            }
            match failure {
                Some(e) => {
                    if complained.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                        tracing::warn!(error = %e, "cannot read the replicated log; following again in a second");
                        complained = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                None if batch.is_empty() => tokio::time::sleep(Duration::from_millis(100)).await,
                None => {}
            }
        }
    }

    /// Brings the local copy up to the stream's end as it is now (the follower's work,
    /// waited for), within `limit`; then checks the copies agree: every run of the local
    /// copy is in the stream as far as it goes (a run from before `--ha` is uploaded whole),
    /// and the highest epoch in the log is below `epoch`.
    pub async fn catch_up(&self, epoch: u64, limit: Duration) -> Result<(), CatchUpError> {
        let replica = self.stream().ok_or_else(|| {
            CatchUpError::Unavailable("NATS JetStream has not been reached yet".into())
        })?;
        let end = replica
            .last_sequence()
            .await
            .map_err(|e| CatchUpError::Unavailable(e.to_string()))?;
        let mut followed = self.followed.subscribe();
        let waited = tokio::time::timeout(limit, async {
            loop {
                if *followed.borrow_and_update() >= end {
                    return;
                }
                if followed.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        if let Some(b) = self.broken() {
            return Err(CatchUpError::Broken(b));
        }
        if waited.is_err() {
            return Err(CatchUpError::Unavailable(format!(
                "the local copy did not reach the stream's sequence {end} within {limit:?}"
            )));
        }
        let top = *self.epoch.borrow();
        if top >= epoch {
            return Err(CatchUpError::Outranked { top, epoch });
        }
        for run in self
            .local
            .runs()
            .map_err(|e| CatchUpError::Broken(e.to_string()))?
        {
            let records = self
                .local
                .read(run, 0)
                .map_err(|e| CatchUpError::Broken(e.to_string()))?;
            let known = self.tracks().runs.get(&run).copied();
            match known {
                Some(t) if t.next == records.len() as u64 => {}
                Some(t) => {
                    let (from, to, more, less) = if t.next < records.len() as u64 {
                        (
                            t.next,
                            records.len() as u64 - 1,
                            "this instance's log",
                            "the replicated log",
                        )
                    } else {
                        (
                            records.len() as u64,
                            t.next - 1,
                            "the replicated log",
                            "this instance's log",
                        )
                    };
                    return Err(CatchUpError::Broken(format!(
                        "run {run} seq {from}..={to} are in {more} but not in {less} ({}); \
                         nothing was changed (move the data dir aside to take a fresh copy)",
                        self.local.path.display()
                    )));
                }
                // A run from before `--ha`: the stream gets all of it.
                None => {
                    let last = replica.append(&records, 0).await.map_err(|e| {
                        CatchUpError::Unavailable(format!("uploading run {run}: {e}"))
                    })?;
                    let mut t = self.tracks();
                    for r in &records {
                        t.saw(r, last);
                    }
                    tracing::info!(%run, records = records.len(), "a run from before --ha was copied to the replicated log");
                }
            }
        }
        Ok(())
    }
}

/// Why a new term cannot begin yet.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error("the replicated log is not reachable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Broken(String),
    #[error(
        "the log already holds epoch {top}, not below this lease's {epoch}: another instance \
         led with it"
    )]
    Outranked { top: u64, epoch: u64 },
}

impl EventLog for HaLog {
    async fn append(
        &self,
        run: RunId,
        entries: Vec<(Timestamp, Event)>,
    ) -> Result<Vec<Record>, LogError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let _one = self.writing.lock().await;
        let lead = self.leading.borrow().clone();
        if !lead.may_act(Instant::now()) {
            return Err(LogError::NotLeading(
                "its lease's window is closed (a standby, fenced, or deposed)".into(),
            ));
        }
        let t = self.tracks().runs.get(&run).copied().unwrap_or_default();
        let asked = entries.len();
        let mut events: Vec<(Timestamp, Event)> = entries;
        // The first record of this term in the run names the leader (after the first
        // batch of a new run, which must begin with its own first record).
        let at = events.last().map_or(Timestamp(0), |(at, _)| *at);
        let changed = Event::LeaderChanged {
            instance: self.instance.clone(),
            epoch: lead.epoch,
        };
        let mut ours = 0..asked;
        if t.epoch < lead.epoch {
            if t.next == 0 {
                events.push((at, changed));
            } else {
                let first = events.first().map_or(at, |(at, _)| *at);
                events.insert(0, (first, changed));
                ours = 1..asked + 1;
            }
        }
        let records: Vec<Record> = events
            .into_iter()
            .enumerate()
            .map(|(i, (at, event))| Record {
                run,
                seq: t.next + i as u64,
                at,
                epoch: lead.epoch,
                event,
            })
            .collect();
        let replica = self.stream().ok_or_else(|| {
            LogError::Replicated("NATS JetStream has not been reached yet".into())
        })?;
        let last = replica
            .append(&records, t.last)
            .await
            .map_err(|e| match e {
                ReplicaError::Deposed { .. } => LogError::NotLeading(e.to_string()),
                other => LogError::Replicated(other.to_string()),
            })?;
        {
            let mut tr = self.tracks();
            for r in &records {
                tr.saw(r, last);
            }
        }
        self.epoch.send_if_modified(|e| {
            let raise = lead.epoch > *e;
            *e = (*e).max(lead.epoch);
            raise
        });
        // The stream holds them: this copy gets them now (the follower may have already).
        self.local.store(run, records.clone()).await?;
        Ok(records[ours].to_vec())
    }

    fn read(&self, run: RunId, from: u64) -> Result<Vec<Record>, LogError> {
        self.local.read(run, from)
    }

    fn runs(&self) -> Result<Vec<RunId>, LogError> {
        self.local.runs()
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Record>> {
        self.local.subscribe()
    }

    fn size_bytes(&self) -> Option<u64> {
        self.local.size_bytes()
    }
}
