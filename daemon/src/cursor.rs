//! A consumer's place in the log: per run, the next record to deliver. The NATS outbox, the
//! trace exporter and each notification sink keep one in the data directory, saved right
//! after each delivery, so a restart delivers from where it stopped (at least once).
//!
//! Under `--ha` (`Turn`) only the instance that acts delivers, and each consumer's cursor is
//! shared through a NATS KV bucket as well: a new leader merges it into its own before its
//! first delivery and goes on where the last leader stopped (at least once: a notice the
//! last leader sent just before it died may be sent again; receivers dedupe on its id).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use tokio::sync::watch;
use upgraded_api::HaStatus;
use upgraded_events::RunId;

#[derive(Debug, thiserror::Error)]
#[error("cursor {path}: {problem}")]
pub struct CursorError {
    pub path: PathBuf,
    pub problem: String,
}

/// Per run, the next sequence number to deliver.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor(BTreeMap<RunId, u64>);

impl Cursor {
    pub fn load(path: &Path) -> Result<Cursor, CursorError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| CursorError {
                path: path.to_path_buf(),
                problem: format!("unreadable ({e}); move it away to deliver every run again"),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Cursor::default()),
            Err(e) => Err(CursorError {
                path: path.to_path_buf(),
                problem: e.to_string(),
            }),
        }
    }

    /// Written to a temporary file, synced, then renamed over the old one.
    pub fn save(&self, path: &Path) -> Result<(), CursorError> {
        let err = |e: std::io::Error| CursorError {
            path: path.to_path_buf(),
            problem: e.to_string(),
        };
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec(self).map_err(|e| CursorError {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(&text).map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)
    }

    pub fn next(&self, run: RunId) -> u64 {
        self.0.get(&run).copied().unwrap_or(0)
    }

    pub fn set(&mut self, run: RunId, next: u64) {
        self.0.insert(run, next);
    }

    /// Takes `other`'s place in each run where it is further; whether anything moved.
    pub fn merge(&mut self, other: &Cursor) -> bool {
        let mut moved = false;
        for (run, next) in &other.0 {
            if *next > self.next(*run) {
                self.0.insert(*run, *next);
                moved = true;
            }
        }
        moved
    }
}

/// Under `--ha`: whether this instance acts (only then do its consumers deliver), and the
/// bucket where the consumers' cursors are shared (once NATS is reached).
#[derive(Debug, Clone)]
pub struct Turn {
    pub acting: watch::Receiver<HaStatus>,
    pub store: watch::Receiver<Option<kv::Store>>,
    /// The cluster's token (`outbox::token`): keys are `<cluster>.<consumer>`.
    pub cluster: String,
}

/// The bucket of shared cursors (created when missing: history 1, file storage).
pub async fn open_shared(
    client: async_nats::Client,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, String> {
    let js = jetstream::new(client);
    match js.get_key_value(bucket).await {
        Ok(kv) => Ok(kv),
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: bucket.to_string(),
                history: 1,
                storage: jetstream::stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("the cursors' bucket {bucket}: {e}")),
    }
}

/// Whether `held` (the epoch a turn began in) is still this instance's turn.
fn in_turn(now: &HaStatus, held: Option<u64>) -> bool {
    now.acting && held.is_some() && held == Some(now.leader_epoch.unwrap_or(0))
}

/// A consumer's cursor where it is kept: its file and, under `--ha`, the shared copy.
#[derive(Debug)]
pub struct Book {
    cursor: Cursor,
    path: PathBuf,
    turn: Option<(Turn, String)>,
    /// Under `--ha`: the epoch of the term in which the shared cursor was merged (the turn
    /// lasts while this instance acts in it).
    holding: Option<u64>,
    /// The shared copy could not be written (said once until it can again).
    unshared: bool,
}

impl Book {
    /// The cursor of the consumer `name`, from `path` (and under `--ha`, `turn`).
    pub fn open(path: PathBuf, name: &str, turn: Option<Turn>) -> Result<Book, CursorError> {
        let cursor = Cursor::load(&path)?;
        let turn = turn.map(|t| {
            let key = format!("{}.{name}", t.cluster);
            (t, key)
        });
        Ok(Book {
            cursor,
            path,
            turn,
            holding: None,
            unshared: false,
        })
    }

    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    pub fn next(&self, run: RunId) -> u64 {
        self.cursor.next(run)
    }

    /// Whether the consumer may deliver now: always, but under `--ha` only while this
    /// instance acts (a delivery that waits gives up when it stops acting).
    pub fn holds(&self) -> bool {
        match &self.turn {
            None => true,
            Some((t, _)) => in_turn(&t.acting.borrow(), self.holding),
        }
    }

    /// Before each pass over the runs: waits for this instance's turn (under `--ha`, while
    /// it acts); when a turn begins, the shared cursor is merged into this one. Whether the
    /// consumer must fold again from the cursor (a turn began: what it kept may be stale).
    pub async fn wait_turn(&mut self) -> Result<bool, CursorError> {
        let Some((turn, key)) = &mut self.turn else {
            return Ok(false);
        };
        if in_turn(&turn.acting.borrow(), self.holding) {
            return Ok(false);
        }
        self.holding = None;
        let mut complained = false;
        loop {
            let store = turn.store.borrow().clone();
            let now = turn.acting.borrow_and_update().clone();
            if now.acting
                && let Some(store) = store
            {
                match store.get(key.as_str()).await {
                    Ok(shared) => {
                        let shared: Cursor = match shared {
                            None => Cursor::default(),
                            Some(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                                tracing::warn!(key = %key, error = %e, "the shared cursor is unreadable; going on from this instance's own");
                                Cursor::default()
                            }),
                        };
                        if self.cursor.merge(&shared) {
                            self.cursor.save(&self.path)?;
                        }
                        self.holding = Some(now.leader_epoch.unwrap_or(0));
                        return Ok(true);
                    }
                    Err(e) if !complained => {
                        tracing::warn!(key = %key, error = %e, "cannot read the shared cursor; delivering nothing until it can");
                        complained = true;
                    }
                    Err(_) => {}
                }
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), turn.acting.changed()).await;
        }
    }

    /// Moves `run`'s place to `next` (never back): the file, then the shared copy.
    pub async fn set(&mut self, run: RunId, next: u64) -> Result<(), CursorError> {
        if next <= self.cursor.next(run) {
            return Ok(());
        }
        self.cursor.set(run, next);
        self.cursor.save(&self.path)?;
        if let Some((turn, key)) = &self.turn {
            let store = turn.store.borrow().clone();
            let body = serde_json::to_vec(&self.cursor).unwrap_or_default();
            let put = match store {
                Some(s) => s
                    .put(key.as_str(), body.into())
                    .await
                    .map_err(|e| e.to_string()),
                None => Err("NATS not reached".to_string()),
            };
            match put {
                Ok(_) if self.unshared => {
                    tracing::info!(key = %key, "the shared cursor is written again");
                    self.unshared = false;
                }
                Ok(_) => {}
                Err(e) if !self.unshared => {
                    tracing::warn!(key = %key, error = %e, "cannot write the shared cursor; a next leader may deliver again what this one did");
                    self.unshared = true;
                }
                Err(_) => {}
            }
        }
        Ok(())
    }
}

/// Records of every run the cursor has not passed yet (a consumer's lag, read again while it
/// waits for its endpoint, so the gauge rises during an outage).
pub fn backlog<L: crate::log::EventLog>(log: &L, cursor: &Cursor) -> u64 {
    let Ok(runs) = log.runs() else { return 0 };
    runs.into_iter()
        .map(|run| {
            log.read(run, cursor.next(run))
                .map_or(0, |r| r.len() as u64)
        })
        .sum()
}

/// Whether the record before `next` ends `run` (`RunCompleted`, `RunAborted`): a consumer
/// that has delivered that far can drop what it keeps of the run.
pub fn run_ended<L: crate::log::EventLog>(log: &L, run: RunId, next: u64) -> bool {
    log.read(run, next.saturating_sub(1))
        .ok()
        .and_then(|rs| {
            rs.last().map(|r| {
                matches!(
                    r.event,
                    upgraded_events::Event::RunCompleted | upgraded_events::Event::RunAborted
                )
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_takes_the_further_place_run_by_run() {
        let (a, b, c) = (RunId::new(), RunId::new(), RunId::new());
        let mut mine = Cursor::default();
        mine.set(a, 10);
        mine.set(b, 3);
        let mut theirs = Cursor::default();
        theirs.set(a, 7);
        theirs.set(b, 9);
        theirs.set(c, 2);
        assert!(mine.merge(&theirs));
        assert_eq!((mine.next(a), mine.next(b), mine.next(c)), (10, 9, 2));
        assert!(!mine.merge(&theirs), "nothing further the second time");
    }

    #[test]
    fn a_turn_lasts_while_the_instance_acts_in_the_term_it_began_in() {
        let status = |acting, epoch| HaStatus {
            acting,
            leader_epoch: epoch,
            ..HaStatus::default()
        };
        let rows = [
            // (what status says, the epoch the turn began in, whether it still holds)
            (status(true, Some(3)), Some(3), true),
            (status(false, Some(3)), Some(3), false),
            // Acting in a later term: the turn must begin again (merge the shared cursor).
            (status(true, Some(5)), Some(3), false),
            // No turn begun yet.
            (status(true, Some(3)), None, false),
            (status(false, None), None, false),
        ];
        for (i, (now, held, want)) in rows.iter().enumerate() {
            assert_eq!(in_turn(now, *held), *want, "row {i}");
        }
    }

    #[tokio::test]
    async fn without_a_turn_a_book_always_holds_and_never_goes_back() {
        let tmp = tempfile::tempdir().expect("tmp");
        let p = tmp.path().join("c.json");
        let mut b = Book::open(p.clone(), "x", None).expect("open");
        assert!(b.holds());
        assert!(!b.wait_turn().await.expect("turn"));
        let run = RunId::new();
        b.set(run, 5).await.expect("set");
        b.set(run, 2).await.expect("set");
        assert_eq!(Cursor::load(&p).expect("load").next(run), 5);
    }

    #[test]
    fn cursor_round_trips_and_refuses_garbage() {
        let tmp = tempfile::tempdir().expect("tmp");
        let p = tmp.path().join("cursor.json");
        assert_eq!(
            Cursor::load(&p).expect("missing is empty"),
            Cursor::default()
        );
        let mut c = Cursor::default();
        let run = RunId::new();
        c.set(run, 42);
        c.save(&p).expect("save");
        assert_eq!(Cursor::load(&p).expect("load").next(run), 42);
        std::fs::write(&p, b"{not json").expect("write");
        let e = Cursor::load(&p).expect_err("garbage");
        assert!(e.to_string().contains("move it away"), "{e}");
    }
}
