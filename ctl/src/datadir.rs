//! `--data-dir DIR`: a daemon's log read without the daemon and without changing anything.
//! Every acknowledged record is in the data dir's witness file (`witness.log`, the copy the
//! daemon keeps outside sled), which is read as plain bytes; sled's own files are never
//! opened, so a stopped daemon's dir (or a copy of it) is read as it is.

use std::path::{Path, PathBuf};

use upgraded_events::witness::{FILE, scan_bytes, split_key};
use upgraded_events::{Record, codec};

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("reading {path}: {cause} (is {dir} an upgraded data dir?)")]
    Read {
        path: PathBuf,
        dir: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "{path} is damaged at byte {offset}: acknowledged records cannot be read from it \
         (start upgraded on this data dir, which restores them from sled)"
    )]
    Damaged { path: PathBuf, offset: u64 },
    #[error("{path}: the record of run {run} seq {seq} does not decode: {why}")]
    Record {
        path: PathBuf,
        run: String,
        seq: u64,
        why: String,
    },
}

/// Every record in `dir`'s log, by run and seq.
pub fn read(dir: &Path) -> Result<Vec<Record>, DataDirError> {
    let path = dir.join(FILE);
    let bytes = std::fs::read(&path).map_err(|cause| DataDirError::Read {
        path: path.clone(),
        dir: dir.to_path_buf(),
        cause,
    })?;
    let scan = scan_bytes(&bytes);
    // A file with bytes but no intact header is not a witness (or is damaged from its
    // start); a torn last frame is a write that was never acknowledged; damage before
    // intact frames hides acknowledged records.
    if scan.id.is_none() && bytes.iter().any(|b| *b != 0) {
        return Err(DataDirError::Damaged { path, offset: 0 });
    }
    if let Some(d) = scan.damage.filter(|d| d.middle) {
        return Err(DataDirError::Damaged {
            path,
            offset: d.offset,
        });
    }
    let mut out = Vec::with_capacity(scan.records.len());
    for (k, v) in &scan.records {
        let (run, seq) = split_key(k).unwrap_or_default();
        out.push(codec::decode(v).map_err(|e| DataDirError::Record {
            path: path.clone(),
            run: run.to_string(),
            seq,
            why: e.to_string(),
        })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use upgraded_events::witness::{commit_frame, header_frame, key};
    use upgraded_events::{Event, RunId, Timestamp};

    fn record(run: RunId, seq: u64) -> (Vec<u8>, Vec<u8>) {
        let r = Record {
            run,
            seq,
            at: Timestamp(seq as i64),
            epoch: 0,
            event: Event::RunCompleted,
        };
        (key(run, seq).to_vec(), codec::encode(&r).expect("encode"))
    }

    /// A witness file of three commits; returns it and where each commit frame starts.
    fn witness(run: RunId) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = header_frame(uuid::Uuid::nil());
        let mut at = Vec::new();
        for seq in 0..3 {
            let (k, v) = record(run, seq);
            let mut key_arr = [0u8; upgraded_events::witness::KEY_LEN];
            key_arr.copy_from_slice(&k);
            at.push(bytes.len());
            bytes.extend(commit_frame([(&key_arr, v.as_slice())]));
        }
        bytes.resize(bytes.len() + 4096, 0);
        (bytes, at)
    }

    #[test]
    fn a_data_dir_reads_as_its_records_and_middle_damage_is_named() {
        let dir = tempfile::tempdir().expect("tmp");
        let run = RunId::from_u128(9);
        let (bytes, at) = witness(run);
        std::fs::write(dir.path().join(FILE), &bytes).expect("write");
        let got = read(dir.path()).expect("read");
        assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), [0, 1, 2]);
        // A torn last frame (never acknowledged): the rest reads.
        let mut torn = bytes.clone();
        torn[at[2] + 20] ^= 0xff;
        std::fs::write(dir.path().join(FILE), &torn).expect("write");
        assert_eq!(read(dir.path()).expect("read").len(), 2);
        // Damage with intact frames after it: refused, with where.
        let mut mid = bytes.clone();
        mid[at[1] + 20] ^= 0xff;
        std::fs::write(dir.path().join(FILE), &mid).expect("write");
        let e = read(dir.path()).expect_err("damaged");
        assert!(
            matches!(e, DataDirError::Damaged { offset, .. } if offset == at[1] as u64),
            "{e}"
        );
        // Garbage from the first byte: not read as an empty log.
        std::fs::write(dir.path().join(FILE), b"not a witness file at all").expect("write");
        assert!(matches!(
            read(dir.path()),
            Err(DataDirError::Damaged { offset: 0, .. })
        ));
        // Not a data dir.
        let e = read(&dir.path().join("nope")).expect_err("missing");
        assert!(e.to_string().contains("upgraded data dir"), "{e}");
    }
}
