//! A consumer's place in the log: per run, the next record to deliver. The NATS outbox, the
//! trace exporter and each notification sink keep one in the data directory, saved right
//! after each delivery, so a restart delivers from where it stopped (at least once).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
