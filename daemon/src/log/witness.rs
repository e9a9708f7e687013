//! The witness: a second, independent copy of every acknowledged record, outside sled.
//!
//! sled checks its own checksums and, at the first bad message in its files, silently stops
//! reading: records that were acknowledged simply vanish. So every group commit is also
//! written, as one frame, to `witness.log`, a plain file that sled never touches, and an
//! append is acknowledged only when *both* copies are durable (the two flushes run in
//! parallel). Opening the log compares the two: whatever one copy lost or damaged is restored
//! from the other, and a record missing from both is reported with its run and range.
//!
//! Layout: frames, each 8-byte aligned: `magic u32 | payload len u32 | kind u8 | 3 zero bytes
//! | crc32 u32 | payload | zero padding`, the CRC-32 covering `len | kind | pad` and the
//! payload. A header frame (format version, the witness id that sled also stores) opens the
//! file; commit frames carry `(key, stored record)` pairs; a truncate frame records that an
//! operator's `--repair-tail` removed a run's tail. The file is grown in zero-filled chunks
//! ahead of the writes, so each commit is an overwrite of allocated blocks and `fdatasync`
//! needs no journal commit of the file system; a zero magic marks the end.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[cfg(test)]
use upgraded_events::RunId;
pub use upgraded_events::witness::{
    Damage, FILE, HEAD, Scan, commit_frame, header_frame, scan_bytes, truncate_frame,
};
use uuid::Uuid;

use super::KEY_LEN;

/// Allocation step: zero-filled space is added this much at a time (at least a frame).
const CHUNK: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("witness {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads the witness file (a missing file scans as empty).
pub fn scan(path: &Path) -> Result<Scan, WitnessError> {
    let buf = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Scan::default()),
        Err(source) => {
            return Err(WitnessError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    Ok(scan_bytes(&buf))
}

/// The open witness file, appended to by the log's writer.
#[derive(Debug)]
pub struct Witness {
    file: File,
    path: PathBuf,
    end: u64,
    allocated: u64,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> WitnessError + '_ {
    move |source| WitnessError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Witness {
    /// Opens the scanned file for appending after its last intact frame. Anything after
    /// that frame (a torn last write) is zeroed, so a later scan cannot mistake it for data.
    pub fn open(path: &Path, scan: &Scan) -> Result<Witness, WitnessError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(io(path))?;
        let w = Witness {
            file,
            path: path.to_path_buf(),
            end: scan.end,
            allocated: scan.len,
        };
        if scan.len > scan.end {
            w.zero(scan.end, scan.len)?;
            w.file.sync_data().map_err(io(path))?;
        }
        Ok(w)
    }

    /// Writes a new witness holding `id` and `records` as one commit, replacing `path`
    /// atomically (temporary file, fsync, rename, fsync of the directory).
    pub fn create<'a>(
        path: &Path,
        id: Uuid,
        records: impl IntoIterator<Item = (&'a [u8; KEY_LEN], &'a [u8])>,
    ) -> Result<Witness, WitnessError> {
        let tmp = path.with_extension("tmp");
        let mut bytes = header_frame(id);
        bytes.extend_from_slice(&commit_frame(records));
        let end = bytes.len() as u64;
        {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io(&tmp))?;
            f.write_all_at(&bytes, 0).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, path).map_err(io(path))?;
        if let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        Witness::open(
            path,
            &Scan {
                end,
                len: end,
                ..Scan::default()
            },
        )
    }

    fn zero(&self, from: u64, to: u64) -> Result<(), WitnessError> {
        let zeros = vec![0u8; CHUNK as usize];
        let mut at = from;
        while at < to {
            let n = (to - at).min(CHUNK);
            self.file
                .write_all_at(&zeros[..n as usize], at)
                .map_err(io(&self.path))?;
            at += n;
        }
        Ok(())
    }

    /// Appends a frame and makes it durable.
    pub fn append(&mut self, frame: &[u8]) -> Result<(), WitnessError> {
        let need = self.end + frame.len() as u64 + HEAD as u64;
        if need > self.allocated {
            // Grow by zero-filled chunks, durable with their size, so the commits that follow
            // overwrite allocated blocks and `fdatasync` has no metadata to write.
            let to = need.div_ceil(CHUNK) * CHUNK + CHUNK;
            self.zero(self.allocated, to)?;
            self.file.sync_all().map_err(io(&self.path))?;
            self.allocated = to;
        }
        self.file
            .write_all_at(frame, self.end)
            .map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))?;
        self.end += frame.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(run: RunId, seq: u64) -> [u8; KEY_LEN] {
        super::super::key(run, seq)
    }

    #[test]
    fn frames_round_trip_and_truncations_apply_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        let run = RunId::new();
        let id = Uuid::now_v7();
        let (k0, k1, k2) = (k(run, 0), k(run, 1), k(run, 2));
        let mut w = Witness::create(&path, id, [(&k0, &b"zero"[..])]).expect("create");
        w.append(&commit_frame([(&k1, &b"one"[..]), (&k2, &b"two"[..])]))
            .expect("append");
        w.append(&truncate_frame(run, 1)).expect("truncate");
        w.append(&commit_frame([(&k1, &b"uno"[..])]))
            .expect("append");
        let s = scan(&path).expect("scan");
        assert_eq!(s.id, Some(id));
        assert_eq!(s.damage, None);
        let got: Vec<_> = s.records.values().map(|v| v.as_slice()).collect();
        assert_eq!(got, vec![&b"zero"[..], &b"uno"[..]]);
        assert!(s.len >= CHUNK, "space is allocated ahead");
    }

    #[test]
    fn damage_is_told_apart_at_the_end_and_in_the_middle() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE);
        let run = RunId::new();
        let keys: Vec<_> = (0..4).map(|s| k(run, s)).collect();
        let mut w =
            Witness::create(&path, Uuid::now_v7(), [(&keys[0], &b"a"[..])]).expect("create");
        let mut offsets = Vec::new();
        for key in &keys[1..] {
            offsets.push(w.end);
            w.append(&commit_frame([(key, &b"payload"[..])]))
                .expect("append");
        }
        drop(w);
        let mut bytes = std::fs::read(&path).expect("read");
        // The last frame torn: only its records are unknown, nothing follows.
        let last = offsets[2] as usize;
        bytes[last + HEAD] ^= 0xff;
        let s = scan_bytes(&bytes);
        assert_eq!(
            s.damage,
            Some(Damage {
                offset: last as u64,
                middle: false
            })
        );
        assert_eq!(s.records.len(), 3);
        assert_eq!(
            s.end, last as u64,
            "the next append overwrites the torn frame"
        );
        // A frame in the middle: the frames after it still count.
        bytes[last + HEAD] ^= 0xff;
        let mid = offsets[0] as usize;
        bytes[mid + 5] ^= 0x01;
        let s = scan_bytes(&bytes);
        assert_eq!(
            s.damage,
            Some(Damage {
                offset: mid as u64,
                middle: true
            })
        );
        assert_eq!(s.records.len(), 3, "seq 1 unknown, 0, 2 and 3 kept");
        assert!(!s.records.contains_key(&keys[1]));
    }
}
