//! The durable event log: the [`EventLog`] port and its sled implementation.
//!
//! One writer thread owns all writes. Appends from any number of tasks queue up; the writer
//! takes everything queued and writes it as one frame to the witness file (`witness.rs`), a
//! second copy outside sled; once that frame is durable it puts the same records into sled
//! and acknowledges them (group commit). sled's own flusher makes them durable there within
//! `SLED_FLUSH_MS` (a crash before that loses them from sled only: the next open restores
//! them from the witness). After that the writer publishes the records, in commit order, to subscribers (the engine, `watch`
//! streams), so every subscriber sees a run's records in sequence order.
//!
//! Keys are `run id (16 bytes) ‖ seq (8 bytes, big endian)`, so a run's records are contiguous
//! and ordered. Opening the log (`open.rs`) checks every record of both copies: what one copy
//! lost or damaged is restored from the other, and a record that neither holds intact makes
//! the open fail with the run and the sequence range; never is a record skipped silently.

pub mod ha;
mod open;
pub mod replica;
pub mod witness;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc, oneshot};
use upgraded_events::codec::{self, CodecError};
use upgraded_events::{Event, Record, RunId, Timestamp};
use uuid::Uuid;

pub use open::{OpenReport, Recovery};
use witness::{Witness, WitnessError};

/// The port the engine writes its history through. Implementations must make an append
/// durable before acknowledging it and assign contiguous sequence numbers per run.
pub trait EventLog: Send + Sync + 'static {
    /// Appends events to a run (creating it at seq 0 if new); returns the stored records.
    fn append(
        &self,
        run: RunId,
        entries: Vec<(Timestamp, Event)>,
    ) -> impl Future<Output = Result<Vec<Record>, LogError>> + Send;
    /// A run's records from `from` on.
    fn read(&self, run: RunId, from: u64) -> Result<Vec<Record>, LogError>;
    /// All runs, oldest first.
    fn runs(&self) -> Result<Vec<RunId>, LogError>;
    /// Every record appended from now on, in commit order.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Record>>;
    /// Bytes the log takes on disk, when it knows.
    fn size_bytes(&self) -> Option<u64> {
        None
    }
}

/// Seq ranges of one run, for messages: `3..=7, 9`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranges(pub Vec<(u64, u64)>);

impl std::fmt::Display for Ranges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}..={b}")?;
            }
        }
        Ok(())
    }
}

/// A run whose acknowledged records neither copy holds intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRun {
    pub run: RunId,
    /// The missing or damaged seqs.
    pub seqs: Ranges,
    /// Whether intact records follow the first lost one (then no repair can help).
    pub in_the_middle: bool,
}

impl std::fmt::Display for LostRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} seq {} ({})",
            self.run,
            self.seqs,
            if self.in_the_middle {
                "intact records follow"
            } else {
                "the end of the run"
            }
        )
    }
}

fn lost_list(runs: &[LostRun]) -> String {
    runs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn lost_advice(runs: &[LostRun]) -> &'static str {
    if runs.iter().any(|r| r.in_the_middle) {
        "Restore the data dir from a backup (records after the damage would be lost by a \
         repair)"
    } else {
        "If the nodes may have been changed by the lost steps, check them first; then start \
         once with --repair-tail to quarantine the damaged tail (kept in the quarantine tree, \
         not deleted); the run's in-doubt steps are probed again, or restore the data dir \
         from a backup"
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event log storage error in {path}: {source}")]
    Storage {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error(transparent)]
    Witness(#[from] WitnessError),
    #[error(
        "the event log in {dir} cannot be opened: {reason}. The witness {dir}/{} holds {witness}. \
         Nothing was changed. Start once with --rebuild-log to move sled's files to \
         {dir}/damaged-<time>/ (kept, not deleted) and rebuild the log from the witness",
        witness::FILE
    )]
    Unopenable {
        dir: PathBuf,
        reason: String,
        witness: String,
    },
    #[error(
        "the event log in {dir} cannot be opened: {reason}, and it has no witness file to \
         rebuild it from. Nothing was changed. Restore the data dir from a backup"
    )]
    UnopenableNoWitness { dir: PathBuf, reason: String },
    #[error(
        "the event log in {dir} has lost acknowledged records: {}. Neither sled's files nor \
         the witness hold them intact; resuming would repeat steps that were already done. \
         Nothing was changed. {}",
        lost_list(.lost),
        lost_advice(.lost)
    )]
    Lost { dir: PathBuf, lost: Vec<LostRun> },
    #[error(
        "the event log in {dir} was written with a witness (id {id}) but {dir}/{} is missing or \
         unreadable, so lost records could not be detected. Nothing was changed. Restore the \
         file, or start once with --rebuild-log to write a new witness from sled's records",
        witness::FILE
    )]
    WitnessMissing { dir: PathBuf, id: Uuid },
    #[error(
        "the witness {dir}/{} belongs to another event log (id {witness}, sled's is {sled}); \
         was a data dir copied together from two places? Nothing was changed",
        witness::FILE
    )]
    WitnessForeign {
        dir: PathBuf,
        witness: Uuid,
        sled: Uuid,
    },
    #[error(
        "the event log in {dir} holds two different intact versions of run {run} seq {seq} \
         (sled and the witness disagree); refusing to choose. Nothing was changed"
    )]
    Conflict { dir: PathBuf, run: RunId, seq: u64 },
    #[error(
        "event log record run {run} seq {seq} became unreadable after the log was opened: {reason}"
    )]
    Corrupt {
        run: RunId,
        seq: u64,
        reason: String,
    },
    #[error("cannot encode event for run {run}: {source}")]
    Encode {
        run: RunId,
        #[source]
        source: CodecError,
    },
    #[error(
        "the event log in {dir} and the replicated log differ at run {run} seq {seq}: {reason}. \
         Nothing was changed; this instance neither follows nor leads until the two agree \
         (move its data dir aside to take a fresh copy of the replicated log)"
    )]
    Diverged {
        dir: PathBuf,
        run: RunId,
        seq: u64,
        reason: String,
    },
    /// `--ha`: this instance may not append (a standby, fenced, or deposed).
    #[error("this instance may not write the log: {0}")]
    NotLeading(String),
    /// `--ha`: the replicated log did not take the append (no quorum, no answer).
    #[error("the replicated log did not take the append: {0}")]
    Replicated(String),
    #[error("event log is closed")]
    Closed,
    #[error(
        "event log write failed: {0}. The log accepts no more writes until the daemon is \
         restarted"
    )]
    WriteFailed(String),
    #[error("event log stopped accepting writes after an earlier storage error: {0}")]
    Poisoned(String),
}

struct AppendReq {
    run: RunId,
    batch: Batch,
    ack: oneshot::Sender<Result<Vec<Record>, LogError>>,
}

/// What an append brings: events the writer numbers, or records numbered elsewhere (the
/// replicated log's, `--ha`) that it stores as they are.
enum Batch {
    New(Vec<(Timestamp, Event)>),
    Made(Vec<Record>),
}

/// The sled-backed log.
#[derive(Debug, Clone)]
pub struct SledLog {
    tree: sled::Tree,
    path: PathBuf,
    tx: mpsc::Sender<AppendReq>,
    published: broadcast::Sender<Arc<Record>>,
    writer: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl std::fmt::Debug for AppendReq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppendReq").field("run", &self.run).finish()
    }
}

/// How far sled's own flusher may lag behind the witness (milliseconds).
pub const SLED_FLUSH_MS: u64 = 100;

pub use upgraded_events::witness::{KEY_LEN, key, split_key};

impl SledLog {
    /// Opens (or creates) the log in `dir`, checking every record of sled and of the witness,
    /// restoring from one what the other lost, and refusing when both lost a record.
    pub fn open(dir: &Path, recovery: Recovery) -> Result<(SledLog, OpenReport), LogError> {
        let opened = open::open(dir, recovery)?;
        let (tx, rx) = mpsc::channel(4096);
        let (published, _) = broadcast::channel(16_384);
        let tree = opened.tree.clone();
        let writer = Writer {
            db: opened.db,
            tree: opened.tree,
            witness: opened.witness,
            next: opened.next,
            published: published.clone(),
            path: dir.to_path_buf(),
            poisoned: None,
        };
        let handle = std::thread::Builder::new()
            .name("event-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError::Poisoned(format!("cannot start the writer thread: {e}")))?;
        Ok((
            SledLog {
                tree,
                path: dir.to_path_buf(),
                tx,
                published,
                writer: Arc::new(Mutex::new(Some(handle))),
            },
            opened.report,
        ))
    }

    fn storage(&self, source: sled::Error) -> LogError {
        LogError::Storage {
            path: self.path.clone(),
            source,
        }
    }
}

struct Writer {
    db: sled::Db,
    tree: sled::Tree,
    witness: Witness,
    next: HashMap<RunId, u64>,
    published: broadcast::Sender<Arc<Record>>,
    path: PathBuf,
    poisoned: Option<String>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<AppendReq>) {
        let mut reqs = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            reqs.push(first);
            while reqs.len() < 8192 {
                match rx.try_recv() {
                    Ok(r) => reqs.push(r),
                    Err(_) => break,
                }
            }
            self.commit(std::mem::take(&mut reqs));
        }
        // A clean stop leaves sled up to date, so the next open restores nothing.
        let _ = self.db.flush();
    }

    fn commit(&mut self, reqs: Vec<AppendReq>) {
        if let Some(p) = &self.poisoned {
            for r in reqs {
                let _ = r.ack.send(Err(LogError::Poisoned(p.clone())));
            }
            return;
        }
        let mut staged: Vec<(oneshot::Sender<_>, Result<Vec<Record>, LogError>)> = Vec::new();
        let mut stored: Vec<([u8; KEY_LEN], Vec<u8>)> = Vec::new();
        let mut next = self.next.clone();
        for req in reqs {
            let mut seq = next.get(&req.run).copied().unwrap_or(0);
            let made = match req.batch {
                Batch::New(entries) => entries
                    .into_iter()
                    .map(|(at, event)| {
                        let r = Record {
                            run: req.run,
                            seq,
                            at,
                            epoch: 0,
                            event,
                        };
                        seq += 1;
                        r
                    })
                    .collect::<Vec<_>>(),
                Batch::Made(records) => match self.fresh(req.run, seq, records, &stored) {
                    Ok(fresh) => fresh,
                    Err(e) => {
                        staged.push((req.ack, Err(e)));
                        continue;
                    }
                },
            };
            seq = next.get(&req.run).copied().unwrap_or(0);
            let mut records = Vec::with_capacity(made.len());
            let mut encoded = Vec::with_capacity(made.len());
            let mut failed = None;
            for record in made {
                match codec::encode(&record) {
                    Ok(bytes) => encoded.push((key(req.run, seq), bytes)),
                    Err(source) => {
                        failed = Some(LogError::Encode {
                            run: req.run,
                            source,
                        });
                        break;
                    }
                }
                records.push(record);
                seq += 1;
            }
            match failed {
                // All or nothing per request: a request whose events do not encode writes none.
                Some(e) => staged.push((req.ack, Err(e))),
                None => {
                    stored.extend(encoded);
                    next.insert(req.run, seq);
                    staged.push((req.ack, Ok(records)));
                }
            }
        }
        if !stored.is_empty() {
            // The witness is the write-ahead copy: its frame is durable before anything else
            // happens, so a failed append leaves no trace, not even in sled's memory (where
            // `runs` and `status` would show it and sled's flusher could make it durable
            // alone). sled then gets the records and is flushed behind the witness by its own
            // flusher (`SLED_FLUSH_MS`); what a crash takes from sled is restored from the
            // witness at the next open. A lone record goes in with `insert`: sled's
            // `apply_batch` costs as much again (it writes a batch manifest too).
            let frame = witness::commit_frame(stored.iter().map(|(k, v)| (k, v.as_slice())));
            let failed = match self.witness.append(&frame) {
                Err(e) => Some(format!("{e}; nothing of it was recorded")),
                Ok(()) => match stored.as_slice() {
                    [(k, v)] => self.tree.insert(k, v.as_slice()).map(|_| ()),
                    many => {
                        let mut batch = sled::Batch::default();
                        for (k, v) in many {
                            batch.insert(k, v.as_slice());
                        }
                        self.tree.apply_batch(batch)
                    }
                }
                .err()
                .map(|e| {
                    format!(
                        "sled: {e}; the witness holds the records, so they will be there \
                         once the daemon is restarted"
                    )
                }),
            };
            if let Some(e) = failed {
                let msg = format!("{}: {e}", self.path.display());
                self.poisoned = Some(msg.clone());
                for (ack, _) in staged {
                    let _ = ack.send(Err(LogError::WriteFailed(msg.clone())));
                }
                return;
            }
        }
        self.next = next;
        for (ack, result) in staged {
            if let Ok(records) = &result {
                for r in records {
                    let _ = self.published.send(Arc::new(r.clone()));
                }
            }
            let _ = ack.send(result);
        }
    }
}

impl Writer {
    /// Of `records` (one run's, in seq order, numbered elsewhere), those past what the log
    /// holds; the ones it holds must be the same records, and the first new one must be
    /// `next`.
    /// (`staged`: what this commit writes before them.)
    fn fresh(
        &self,
        run: RunId,
        next: u64,
        records: Vec<Record>,
        staged: &[([u8; KEY_LEN], Vec<u8>)],
    ) -> Result<Vec<Record>, LogError> {
        let mut fresh = Vec::with_capacity(records.len());
        for r in records {
            let mismatch = |reason: String| LogError::Diverged {
                dir: self.path.clone(),
                run,
                seq: r.seq,
                reason,
            };
            if r.run != run {
                return Err(mismatch(format!("a record of run {} in its batch", r.run)));
            }
            let expected = next + fresh.len() as u64;
            if r.seq < next {
                let k = key(run, r.seq);
                let held = match staged.iter().rev().find(|(sk, _)| *sk == k) {
                    Some((_, v)) => Some(v.clone()),
                    None => self.tree.get(k).ok().flatten().map(|v| v.to_vec()),
                };
                let same = held
                    .as_deref()
                    .and_then(|b| codec::decode(b).ok())
                    .is_some_and(|h| h == r);
                if !same {
                    return Err(mismatch(
                        "this instance's copy holds another record under that seq".into(),
                    ));
                }
            } else if r.seq != expected {
                return Err(mismatch(format!("seq {expected} was next")));
            } else {
                fresh.push(r);
            }
        }
        Ok(fresh)
    }
}

impl SledLog {
    /// Stores records numbered elsewhere (the replicated log's), as they are: those it holds
    /// already (the same bytes) are skipped, the rest must follow its last one. Returns the
    /// ones newly stored, which are published like appended ones.
    pub async fn store(&self, run: RunId, records: Vec<Record>) -> Result<Vec<Record>, LogError> {
        self.request(run, Batch::Made(records)).await
    }

    async fn request(&self, run: RunId, batch: Batch) -> Result<Vec<Record>, LogError> {
        let (ack, done) = oneshot::channel();
        let t0 = std::time::Instant::now();
        self.tx
            .send(AppendReq { run, batch, ack })
            .await
            .map_err(|_| LogError::Closed)?;
        let stored = done.await.map_err(|_| LogError::Closed)?;
        crate::stats::observe_append(t0.elapsed());
        stored
    }
}

impl EventLog for SledLog {
    async fn append(
        &self,
        run: RunId,
        entries: Vec<(Timestamp, Event)>,
    ) -> Result<Vec<Record>, LogError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        self.request(run, Batch::New(entries)).await
    }

    fn size_bytes(&self) -> Option<u64> {
        Some(crate::stats::dir_bytes(&self.path))
    }

    fn read(&self, run: RunId, from: u64) -> Result<Vec<Record>, LogError> {
        let end = key(run, u64::MAX);
        let mut out = Vec::new();
        for item in self.tree.range(key(run, from)..=end) {
            let (k, v) = item.map_err(|e| self.storage(e))?;
            let (_, seq) = split_key(&k).unwrap_or((run, u64::MAX));
            let record = codec::decode(&v).map_err(|e| LogError::Corrupt {
                run,
                seq,
                reason: e.to_string(),
            })?;
            out.push(record);
        }
        Ok(out)
    }

    fn runs(&self) -> Result<Vec<RunId>, LogError> {
        // Jump from run to run instead of walking every record.
        let mut runs = Vec::new();
        let mut from = [0u8; KEY_LEN];
        while let Some(item) = self.tree.range(from..).next() {
            let (k, _) = item.map_err(|e| self.storage(e))?;
            let Some((run, _)) = split_key(&k) else { break };
            runs.push(run);
            match u128::from_be_bytes(*run.as_bytes()).checked_add(1) {
                Some(n) => from = key(RunId::from_bytes(n.to_be_bytes()), 0),
                None => break,
            }
        }
        Ok(runs)
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Record>> {
        self.published.subscribe()
    }
}

impl SledLog {
    /// Stops the writer after the queued appends (for tests that reopen the same directory).
    pub fn close(self) {
        drop(self.tx);
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use upgraded_events::Actor;

    /// A dropped `sled::Db` releases its file lock when its flusher thread ends, a moment
    /// later: the raw handles these tests use to damage records may still hold it.
    fn open_when_unlocked(
        dir: &Path,
        recovery: Recovery,
    ) -> Result<(SledLog, OpenReport), LogError> {
        for _ in 0..250 {
            match SledLog::open(dir, recovery) {
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
        SledLog::open(dir, recovery)
    }

    /// A raw sled handle, once the closed log's writer thread has released the lock.
    fn raw_when_unlocked(dir: &Path) -> sled::Db {
        for _ in 0..250 {
            match sled::open(dir) {
                Ok(db) => return db,
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("sled: {e}"),
            }
        }
        sled::open(dir).expect("sled")
    }

    fn ev(i: u32) -> (Timestamp, Event) {
        (Timestamp(i64::from(i)), Event::RunRecovered { pid: i })
    }

    const PLAIN: Recovery = Recovery {
        repair_tail: false,
        rebuild: false,
    };

    #[tokio::test]
    async fn records_made_elsewhere_are_stored_as_they_are_once_and_never_over_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = SledLog::open(dir.path(), PLAIN).expect("open");
        let run = RunId::new();
        let made: Vec<Record> = (0..4)
            .map(|i| Record {
                run,
                seq: u64::from(i),
                at: Timestamp(i64::from(i)),
                epoch: 3,
                event: Event::RunRecovered { pid: i },
            })
            .collect();
        let mut sub = log.subscribe();
        assert_eq!(
            log.store(run, made[..2].to_vec())
                .await
                .expect("store")
                .len(),
            2
        );
        // What it holds already is skipped (the follower and the leader store the same
        // records), and only the rest is published.
        assert_eq!(log.store(run, made.clone()).await.expect("again").len(), 2);
        let mut seen = Vec::new();
        while let Ok(r) = sub.try_recv() {
            seen.push(r.seq);
        }
        assert_eq!(seen, vec![0, 1, 2, 3]);
        assert_eq!(log.read(run, 0).expect("read"), made);
        // Another record under a held seq, or a gap, is refused by name and changes nothing.
        let mut other = made[1].clone();
        other.event = Event::RunRecovered { pid: 99 };
        let err = log.store(run, vec![other]).await.expect_err("differs");
        assert!(
            matches!(&err, LogError::Diverged { seq: 1, .. }) && err.to_string().contains("seq 1"),
            "{err}"
        );
        let mut gap = made[3].clone();
        gap.seq = 6;
        let err = log.store(run, vec![gap]).await.expect_err("gap");
        assert!(err.to_string().contains("seq 4 was next"), "{err}");
        assert_eq!(log.read(run, 0).expect("read"), made);
        // An append after them numbers on from the stored ones.
        assert_eq!(
            log.append(run, vec![ev(9)]).await.expect("append")[0].seq,
            4
        );
    }

    #[tokio::test]
    async fn concurrent_appends_get_contiguous_sequences_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = SledLog::open(dir.path(), PLAIN).expect("open");
        let run = RunId::new();
        let mut sub = log.subscribe();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                log.append(run, vec![ev(i), ev(i)]).await
            }));
        }
        for t in tasks {
            let recs = t.await.expect("join").expect("append");
            assert_eq!(
                recs[1].seq,
                recs[0].seq + 1,
                "one request's events stay together"
            );
        }
        let all = log.read(run, 0).expect("read");
        assert_eq!(all.len(), 100);
        assert!(all.iter().enumerate().all(|(i, r)| r.seq == i as u64));
        for want in 0..100 {
            let got = sub.recv().await.expect("published");
            assert_eq!(got.seq, want, "published in commit order");
        }
        log.close();
        let (log, report) = SledLog::open(dir.path(), PLAIN).expect("reopen");
        assert_eq!(report.records, 100);
        assert!(
            report.restored.is_empty() && report.witnessed == 0,
            "{report:?}"
        );
        assert_eq!(log.runs().expect("runs"), vec![run]);
        let more = log.append(run, vec![ev(7)]).await.expect("append");
        assert_eq!(more[0].seq, 100);
    }

    /// A log with run `run` (seq 0..=4) and another run of one record, closed.
    async fn five_records(dir: &Path) -> (RunId, RunId) {
        let run = RunId::new();
        let other = RunId::new();
        let (log, _) = SledLog::open(dir, PLAIN).expect("open");
        log.append(run, (0..5).map(ev).collect())
            .await
            .expect("append");
        log.append(
            other,
            vec![(
                Timestamp(1),
                Event::RunStarted {
                    by: Actor::daemon(),
                },
            )],
        )
        .await
        .expect("append");
        log.close();
        (run, other)
    }

    /// Damages sled's copy of `seqs` behind the log's back (flipped last byte).
    fn damage_in_sled(dir: &Path, run: RunId, seqs: &[u64]) {
        let db = raw_when_unlocked(dir);
        let t = db.open_tree("events").expect("tree");
        for &seq in seqs {
            let k = key(run, seq);
            let mut v = t.get(k).expect("get").expect("present").to_vec();
            let last = v.len() - 1;
            v[last] ^= 0xff;
            t.insert(k, v).expect("insert");
        }
        db.flush().expect("flush");
    }

    /// Rewrites the witness without `seqs` of `run`, as if its copy were lost too.
    fn drop_from_witness(dir: &Path, run: RunId, seqs: &[u64]) {
        let path = dir.join(witness::FILE);
        let scan = witness::scan(&path).expect("scan");
        let keep: Vec<_> = scan
            .records
            .iter()
            .filter(|(k, _)| !seqs.iter().any(|s| **k == key(run, *s)))
            .collect();
        witness::Witness::create(
            &path,
            scan.id.expect("id"),
            keep.into_iter().map(|(k, v)| (k, v.as_slice())),
        )
        .expect("rewrite");
    }

    #[tokio::test]
    async fn a_record_damaged_in_sled_is_restored_from_the_witness() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (run, _) = five_records(dir.path()).await;
        damage_in_sled(dir.path(), run, &[1, 4]);
        let (log, report) = open_when_unlocked(dir.path(), PLAIN).expect("open");
        assert_eq!(report.restored, vec![(run, 1), (run, 4)]);
        assert_eq!(report.restored_damage, 2, "both were damaged bytes");
        let all = log.read(run, 0).expect("read");
        assert_eq!(all.len(), 5);
        assert_eq!(all[4].event, Event::RunRecovered { pid: 4 });
        assert_eq!(
            log.append(run, vec![ev(9)]).await.expect("append")[0].seq,
            5
        );
    }

    #[tokio::test]
    async fn a_tail_lost_from_both_copies_is_refused_by_name_then_quarantined_on_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (run, other) = five_records(dir.path()).await;
        damage_in_sled(dir.path(), run, &[4]);
        drop_from_witness(dir.path(), run, &[4]);
        let err = open_when_unlocked(dir.path(), PLAIN).expect_err("must refuse");
        let msg = err.to_string();
        assert!(
            msg.contains(&run.to_string())
                && msg.contains("seq 4 (the end of the run)")
                && msg.contains(&dir.path().display().to_string())
                && msg.contains("--repair-tail"),
            "{msg}"
        );
        let repair = Recovery {
            repair_tail: true,
            rebuild: false,
        };
        let (log, report) = open_when_unlocked(dir.path(), repair).expect("repair");
        assert_eq!(report.quarantined, vec![(run, 4)]);
        assert_eq!(log.read(run, 0).expect("read").len(), 4);
        assert_eq!(log.read(other, 0).expect("read").len(), 1);
        assert_eq!(
            log.append(run, vec![ev(9)]).await.expect("append")[0].seq,
            4
        );
        log.close();
        let (_, report) = open_when_unlocked(dir.path(), PLAIN).expect("reopens cleanly");
        assert_eq!(report.records, 6);
    }

    #[tokio::test]
    async fn a_middle_lost_from_both_copies_is_never_repaired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (run, _) = five_records(dir.path()).await;
        damage_in_sled(dir.path(), run, &[1]);
        drop_from_witness(dir.path(), run, &[1]);
        let repair = Recovery {
            repair_tail: true,
            rebuild: true,
        };
        let err = open_when_unlocked(dir.path(), repair).expect_err("middle damage");
        match &err {
            LogError::Lost { lost, .. } => {
                assert_eq!(lost.len(), 1);
                assert_eq!(lost[0].seqs, Ranges(vec![(1, 1)]));
                assert!(lost[0].in_the_middle);
            }
            other => panic!("{other}"),
        }
        assert!(err.to_string().contains("backup"), "{err}");
    }

    #[tokio::test]
    async fn records_lost_by_sled_without_a_trace_are_restored() {
        // sled stops reading at its first bad message: records simply vanish.
        let dir = tempfile::tempdir().expect("tempdir");
        let (run, _) = five_records(dir.path()).await;
        {
            let db = raw_when_unlocked(dir.path());
            let t = db.open_tree("events").expect("tree");
            for seq in 2..5 {
                t.remove(key(run, seq)).expect("remove");
            }
            db.flush().expect("flush");
        }
        let (log, report) = open_when_unlocked(dir.path(), PLAIN).expect("open");
        assert_eq!(report.restored.len(), 3);
        assert_eq!(
            report.restored_damage, 0,
            "a missing tail is what a crash leaves"
        );
        assert_eq!(log.read(run, 0).expect("read").len(), 5);
    }

    #[tokio::test]
    async fn damaged_keys_are_set_aside_not_taken_for_lost_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (run, _) = five_records(dir.path()).await;
        {
            let db = raw_when_unlocked(dir.path());
            let t = db.open_tree("events").expect("tree");
            // An intact record under a key past the end of its run (a flipped key byte),
            let v = t.get(key(run, 2)).expect("get").expect("present");
            t.insert(key(run, 9), v).expect("insert");
            // and garbage under a run nobody knows.
            t.insert(key(RunId::new(), 0), b"garbage".to_vec())
                .expect("insert");
            db.flush().expect("flush");
        }
        let (log, report) = open_when_unlocked(dir.path(), PLAIN).expect("opens");
        assert_eq!(report.stray_keys, 2);
        assert_eq!(log.read(run, 0).expect("read").len(), 5);
        assert_eq!(
            log.runs().expect("runs").len(),
            2,
            "the phantom run is gone"
        );
    }

    #[tokio::test]
    async fn a_deleted_witness_is_noticed_and_rebuilt_only_on_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (run, _) = five_records(dir.path()).await;
        std::fs::remove_file(dir.path().join(witness::FILE)).expect("rm");
        let err = open_when_unlocked(dir.path(), PLAIN).expect_err("refused");
        assert!(matches!(err, LogError::WitnessMissing { .. }), "{err}");
        let rebuild = Recovery {
            repair_tail: false,
            rebuild: true,
        };
        let (log, report) = open_when_unlocked(dir.path(), rebuild).expect("rebuild");
        assert_eq!(report.witnessed, 6);
        log.close();
        // And the rebuilt witness protects the log again.
        damage_in_sled(dir.path(), run, &[0]);
        let (_, report) = open_when_unlocked(dir.path(), PLAIN).expect("open");
        assert_eq!(report.restored, vec![(run, 0)]);
    }

    #[tokio::test]
    async fn a_log_from_before_the_witness_gets_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = RunId::new();
        {
            let db = sled::open(dir.path()).expect("sled");
            let t = db.open_tree("events").expect("tree");
            for seq in 0..3 {
                let r = Record {
                    run,
                    seq,
                    at: Timestamp(0),
                    epoch: 0,
                    event: Event::RunRecovered { pid: 1 },
                };
                t.insert(key(run, seq), codec::encode(&r).expect("encode"))
                    .expect("insert");
            }
            db.flush().expect("flush");
        }
        let (log, report) = open_when_unlocked(dir.path(), PLAIN).expect("open");
        assert_eq!(report.witnessed, 3);
        log.close();
        let scan = witness::scan(&dir.path().join(witness::FILE)).expect("scan");
        assert_eq!(scan.records.len(), 3);
    }
}
