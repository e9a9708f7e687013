//! The durable event log: the [`EventLog`] port and its sled implementation.
//!
//! One writer thread owns all writes. Appends from any number of tasks queue up; the writer
//! takes everything queued, applies it as one sled batch and flushes once (group commit). An
//! append is acknowledged only after that flush: sled loses unflushed writes on a crash. After
//! the flush the writer publishes the records, in commit order, to subscribers (the engine,
//! `watch` streams), so every subscriber sees a run's records in sequence order.
//!
//! Keys are `run id (16 bytes) ‖ seq (8 bytes, big endian)`, so a run's records are contiguous
//! and ordered. Opening the log verifies every record (checksum, key, sequence): a bad record is
//! reported with its position, never skipped; with `repair_tail` a bad *tail* of a run is moved
//! to a quarantine tree (kept, not deleted) and the rest opens.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, mpsc, oneshot};
use upgraded_events::codec::{self, CodecError};
use upgraded_events::{Event, Record, RunId, Timestamp};
use uuid::Uuid;

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
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event log storage error at {path}: {source}")]
    Storage {
        path: PathBuf,
        #[source]
        source: sled::Error,
    },
    #[error(
        "event log record run {run} seq {seq} is unreadable: {reason}; the log was not opened \
         (a damaged tail can be quarantined with --repair-tail)"
    )]
    Corrupt {
        run: String,
        seq: String,
        reason: String,
    },
    #[error(
        "event log record run {run} seq {seq} is unreadable in the middle of the run ({reason}); \
         refusing to repair: records after it would be lost. Restore the data directory from a \
         backup or export the run with `upgradectl events` for inspection"
    )]
    CorruptMiddle {
        run: RunId,
        seq: u64,
        reason: String,
    },
    #[error("event log of run {run} has a gap: expected seq {expected}, found {found}")]
    Gap {
        run: RunId,
        expected: u64,
        found: u64,
    },
    #[error("cannot encode event for run {run}: {source}")]
    Encode {
        run: RunId,
        #[source]
        source: CodecError,
    },
    #[error("event log is closed")]
    Closed,
    #[error("event log stopped accepting writes after an earlier storage error: {0}")]
    Poisoned(String),
}

/// What opening found and did.
#[derive(Debug, Default, Clone)]
pub struct OpenReport {
    pub runs: usize,
    pub records: u64,
    /// (run, seq) of records moved to the quarantine tree by `repair_tail`.
    pub quarantined: Vec<(RunId, u64)>,
}

struct AppendReq {
    run: RunId,
    entries: Vec<(Timestamp, Event)>,
    ack: oneshot::Sender<Result<Vec<Record>, LogError>>,
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

const KEY_LEN: usize = 24;

pub fn key(run: RunId, seq: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..16].copy_from_slice(run.as_bytes());
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn split_key(k: &[u8]) -> Option<(RunId, u64)> {
    if k.len() != KEY_LEN {
        return None;
    }
    let run = Uuid::from_slice(&k[..16]).ok()?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&k[16..]);
    Some((run, u64::from_be_bytes(seq)))
}

impl SledLog {
    /// Opens (or creates) the log in `dir`, verifying every record.
    pub fn open(dir: &Path, repair_tail: bool) -> Result<(SledLog, OpenReport), LogError> {
        let storage = |source| LogError::Storage {
            path: dir.to_path_buf(),
            source,
        };
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(storage)?;
        let tree = db.open_tree("events").map_err(storage)?;
        let quarantine = db.open_tree("quarantine").map_err(storage)?;
        let (next, report) = verify(&tree, &quarantine, repair_tail, dir)?;
        db.flush().map_err(storage)?;
        let (tx, rx) = mpsc::channel(4096);
        let (published, _) = broadcast::channel(16_384);
        let writer = Writer {
            db,
            tree: tree.clone(),
            next,
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
            report,
        ))
    }

    fn storage(&self, source: sled::Error) -> LogError {
        LogError::Storage {
            path: self.path.clone(),
            source,
        }
    }
}

/// Scans the whole tree: every record must decode, match its key, and follow its
/// predecessor. Returns the next sequence number per run.
fn verify(
    tree: &sled::Tree,
    quarantine: &sled::Tree,
    repair_tail: bool,
    dir: &Path,
) -> Result<(HashMap<RunId, u64>, OpenReport), LogError> {
    let storage = |source| LogError::Storage {
        path: dir.to_path_buf(),
        source,
    };
    let mut next: HashMap<RunId, u64> = HashMap::new();
    let mut report = OpenReport::default();
    // The first bad position per run; everything from there must be bad too to be a "tail".
    let mut bad: HashMap<RunId, (u64, String)> = HashMap::new();
    let mut bad_keys: Vec<(RunId, u64, sled::IVec, sled::IVec)> = Vec::new();
    for item in tree.iter() {
        let (k, v) = item.map_err(storage)?;
        let Some((run, seq)) = split_key(&k) else {
            return Err(LogError::Corrupt {
                run: "?".into(),
                seq: "?".into(),
                reason: format!("key of {} bytes (expected {KEY_LEN})", k.len()),
            });
        };
        let problem = match codec::decode(&v) {
            Err(e) => Some(e.to_string()),
            Ok(r) if r.run != run || r.seq != seq => Some(format!(
                "record says run {} seq {}, stored under run {run} seq {seq}",
                r.run, r.seq
            )),
            Ok(_) => None,
        };
        let expected = next.get(&run).copied().unwrap_or(0);
        match (problem, bad.get(&run)) {
            (Some(reason), None) => {
                bad.insert(run, (seq, reason));
                bad_keys.push((run, seq, k, v));
            }
            (Some(_), Some(_)) => bad_keys.push((run, seq, k, v)),
            (None, Some((first_bad, reason))) => {
                // A good record after a bad one: the damage is in the middle.
                return Err(LogError::CorruptMiddle {
                    run,
                    seq: *first_bad,
                    reason: reason.clone(),
                });
            }
            (None, None) => {
                if seq != expected {
                    return Err(LogError::Gap {
                        run,
                        expected,
                        found: seq,
                    });
                }
                next.insert(run, seq + 1);
                report.records += 1;
            }
        }
    }
    if let Some((run, (seq, reason))) = bad.iter().min_by_key(|(r, _)| **r) {
        if !repair_tail {
            return Err(LogError::Corrupt {
                run: run.to_string(),
                seq: seq.to_string(),
                reason: reason.clone(),
            });
        }
        for (run, seq, k, v) in bad_keys {
            quarantine.insert(k.clone(), v).map_err(storage)?;
            tree.remove(k).map_err(storage)?;
            report.quarantined.push((run, seq));
        }
    }
    report.runs = next.len();
    Ok((next, report))
}

struct Writer {
    db: sled::Db,
    tree: sled::Tree,
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
    }

    fn commit(&mut self, reqs: Vec<AppendReq>) {
        if let Some(p) = &self.poisoned {
            for r in reqs {
                let _ = r.ack.send(Err(LogError::Poisoned(p.clone())));
            }
            return;
        }
        let mut batch = sled::Batch::default();
        let mut staged: Vec<(oneshot::Sender<_>, Result<Vec<Record>, LogError>)> = Vec::new();
        let mut next = self.next.clone();
        for req in reqs {
            let mut seq = next.get(&req.run).copied().unwrap_or(0);
            let mut records = Vec::with_capacity(req.entries.len());
            let mut encoded = Vec::with_capacity(req.entries.len());
            let mut failed = None;
            for (at, event) in req.entries {
                let record = Record {
                    run: req.run,
                    seq,
                    at,
                    event,
                };
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
                    for (k, v) in encoded {
                        batch.insert(&k, v);
                    }
                    next.insert(req.run, seq);
                    staged.push((req.ack, Ok(records)));
                }
            }
        }
        let durable = self
            .tree
            .apply_batch(batch)
            .and_then(|()| self.db.flush().map(|_| ()));
        if let Err(e) = durable {
            let msg = format!("{}: {e}", self.path.display());
            self.poisoned = Some(msg.clone());
            for (ack, _) in staged {
                let _ = ack.send(Err(LogError::Poisoned(msg.clone())));
            }
            return;
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

impl EventLog for SledLog {
    async fn append(
        &self,
        run: RunId,
        entries: Vec<(Timestamp, Event)>,
    ) -> Result<Vec<Record>, LogError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let (ack, done) = oneshot::channel();
        self.tx
            .send(AppendReq { run, entries, ack })
            .await
            .map_err(|_| LogError::Closed)?;
        done.await.map_err(|_| LogError::Closed)?
    }

    fn read(&self, run: RunId, from: u64) -> Result<Vec<Record>, LogError> {
        let end = key(run, u64::MAX);
        let mut out = Vec::new();
        for item in self.tree.range(key(run, from)..=end) {
            let (k, v) = item.map_err(|e| self.storage(e))?;
            let (_, seq) = split_key(&k).unwrap_or((run, u64::MAX));
            let record = codec::decode(&v).map_err(|e| LogError::Corrupt {
                run: run.to_string(),
                seq: seq.to_string(),
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
            match run.as_u128().checked_add(1) {
                Some(n) => from = key(Uuid::from_u128(n), 0),
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
    fn open_when_unlocked(dir: &Path, repair: bool) -> Result<(SledLog, OpenReport), LogError> {
        for _ in 0..250 {
            match SledLog::open(dir, repair) {
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => return other,
            }
        }
        SledLog::open(dir, repair)
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

    #[tokio::test]
    async fn concurrent_appends_get_contiguous_sequences_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = SledLog::open(dir.path(), false).expect("open");
        let run = Uuid::now_v7();
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
        let (log, report) = SledLog::open(dir.path(), false).expect("reopen");
        assert_eq!(report.records, 100);
        assert_eq!(log.runs().expect("runs"), vec![run]);
        let more = log.append(run, vec![ev(7)]).await.expect("append");
        assert_eq!(more[0].seq, 100);
    }

    #[tokio::test]
    async fn a_corrupt_tail_is_reported_then_quarantined_and_a_corrupt_middle_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = Uuid::now_v7();
        let other = Uuid::now_v7();
        {
            let (log, _) = SledLog::open(dir.path(), false).expect("open");
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
        }
        // Damage the last record of `run` behind the log's back.
        {
            let db = raw_when_unlocked(dir.path());
            let t = db.open_tree("events").expect("tree");
            let k = key(run, 4);
            let mut v = t.get(k).expect("get").expect("present").to_vec();
            let last = v.len() - 1;
            v[last] ^= 0xff;
            t.insert(k, v).expect("insert");
            db.flush().expect("flush");
        }
        let err = open_when_unlocked(dir.path(), false).expect_err("must refuse");
        let msg = err.to_string();
        assert!(
            msg.contains(&run.to_string()) && msg.contains("seq 4") && msg.contains("checksum"),
            "{msg}"
        );
        let (log, report) = open_when_unlocked(dir.path(), true).expect("repair");
        assert_eq!(report.quarantined, vec![(run, 4)]);
        assert_eq!(log.read(run, 0).expect("read").len(), 4);
        assert_eq!(
            log.append(run, vec![ev(9)]).await.expect("append")[0].seq,
            4
        );
        log.close();
        // Now damage a record in the middle: no repair may drop what follows it.
        {
            let db = raw_when_unlocked(dir.path());
            let t = db.open_tree("events").expect("tree");
            t.insert(key(run, 1), b"garbage".to_vec()).expect("insert");
            db.flush().expect("flush");
        }
        let err = open_when_unlocked(dir.path(), true).expect_err("middle damage");
        assert!(
            matches!(err, LogError::CorruptMiddle { seq: 1, .. }),
            "{err}"
        );
    }
}
