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

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use upgraded_events::RunId;
use uuid::Uuid;

use super::{KEY_LEN, split_key};

/// The witness file's name inside the data dir.
pub const FILE: &str = "witness.log";
const MAGIC: u32 = u32::from_le_bytes(*b"UGWF");
const FORMAT: u16 = 1;
const HEAD: usize = 16;
/// Allocation step: zero-filled space is added this much at a time (at least a frame).
const CHUNK: u64 = 1 << 20;
/// A frame larger than this is damage, not data (a commit is bounded by the writer's batch).
const MAX_FRAME: usize = 1 << 30;

const KIND_HEADER: u8 = 1;
const KIND_COMMIT: u8 = 2;
const KIND_TRUNCATE: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error("witness {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a scan of the witness file found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The id written in the header (and in sled's `meta` tree); `None` for a missing or
    /// empty file.
    pub id: Option<Uuid>,
    /// Every record the intact frames hold, truncations applied, by key.
    pub records: BTreeMap<[u8; KEY_LEN], Vec<u8>>,
    /// Where the next frame goes: just after the last intact frame.
    pub end: u64,
    /// The file's length (allocated, zero-filled space included).
    pub len: u64,
    /// A damaged frame: its offset, and whether intact frames follow it (damage in the
    /// middle) or not (a torn last write, or damage at the end).
    pub damage: Option<Damage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    pub offset: u64,
    pub middle: bool,
}

impl Scan {
    /// Per run: how many records the witness holds, and the highest seq (for messages).
    pub fn summary(&self) -> String {
        let mut runs: BTreeMap<RunId, (u64, u64)> = BTreeMap::new();
        for k in self.records.keys() {
            if let Some((run, seq)) = split_key(k) {
                let e = runs.entry(run).or_insert((0, 0));
                e.0 += 1;
                e.1 = e.1.max(seq);
            }
        }
        if runs.is_empty() {
            return "no records".into();
        }
        runs.iter()
            .map(|(run, (n, last))| format!("run {run}: {n} records (seq 0..={last})"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + pad8(payload.len()));
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[kind, 0, 0, 0]);
    let mut h = crc32fast::Hasher::new();
    h.update(&out[4..12]);
    h.update(payload);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(HEAD + pad8(payload.len()), 0);
    out
}

/// A commit frame: every `(key, stored record)` of one group commit.
pub fn commit_frame<'a>(
    records: impl IntoIterator<Item = (&'a [u8; KEY_LEN], &'a [u8])>,
) -> Vec<u8> {
    let mut payload = Vec::new();
    for (k, v) in records {
        payload.extend_from_slice(k);
        payload.extend_from_slice(&(v.len() as u32).to_le_bytes());
        payload.extend_from_slice(v);
    }
    frame(KIND_COMMIT, &payload)
}

fn header_frame(id: Uuid) -> Vec<u8> {
    let mut payload = Vec::with_capacity(18);
    payload.extend_from_slice(&FORMAT.to_le_bytes());
    payload.extend_from_slice(id.as_bytes());
    frame(KIND_HEADER, &payload)
}

/// A truncate frame: records of `run` from `seq` on were removed by a repair.
pub fn truncate_frame(run: RunId, seq: u64) -> Vec<u8> {
    frame(KIND_TRUNCATE, &super::key(run, seq))
}

enum Parsed {
    /// A zero magic: the end of the written part.
    End,
    Frame {
        kind: u8,
        payload_at: usize,
        len: usize,
        next: usize,
    },
    Bad,
}

fn parse_at(buf: &[u8], at: usize) -> Parsed {
    let Some(head) = buf.get(at..at + HEAD) else {
        return if buf[at.min(buf.len())..].iter().all(|b| *b == 0) {
            Parsed::End
        } else {
            Parsed::Bad
        };
    };
    let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    if word(0) == 0 && word(4) == 0 && word(8) == 0 && word(12) == 0 {
        return Parsed::End;
    }
    let len = word(4) as usize;
    if word(0) != MAGIC || len > MAX_FRAME || head[9..12] != [0, 0, 0] {
        return Parsed::Bad;
    }
    let payload_at = at + HEAD;
    let Some(payload) = buf.get(payload_at..payload_at + len) else {
        return Parsed::Bad;
    };
    let mut h = crc32fast::Hasher::new();
    h.update(&head[4..12]);
    h.update(payload);
    if h.finalize() != word(12) {
        return Parsed::Bad;
    }
    Parsed::Frame {
        kind: head[8],
        payload_at,
        len,
        next: payload_at + pad8(len),
    }
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

fn scan_bytes(buf: &[u8]) -> Scan {
    let mut s = Scan {
        len: buf.len() as u64,
        ..Scan::default()
    };
    let mut at = 0usize;
    while at < buf.len() {
        match parse_at(buf, at) {
            Parsed::Frame {
                kind,
                payload_at,
                len,
                next,
            } => {
                apply(&mut s, kind, &buf[payload_at..payload_at + len]);
                match &mut s.damage {
                    // Intact frames after damage: only the damaged frames' records are unknown.
                    Some(d) => d.middle = true,
                    None => s.end = next as u64,
                }
                at = next;
            }
            // The end: zeros from here on (a zeroed block with data after it is damage).
            Parsed::End if s.damage.is_none() && buf[at..].iter().all(|b| *b == 0) => break,
            // Past damage, look for intact frames at every 8-byte boundary.
            Parsed::End | Parsed::Bad => {
                s.damage.get_or_insert(Damage {
                    offset: at as u64,
                    middle: false,
                });
                at += 8;
            }
        }
    }
    s
}

fn apply(s: &mut Scan, kind: u8, payload: &[u8]) {
    match kind {
        KIND_HEADER if payload.len() >= 18 => s.id = Uuid::from_slice(&payload[2..18]).ok(),
        KIND_COMMIT => {
            let mut p = payload;
            while p.len() >= KEY_LEN + 4 {
                let mut k = [0u8; KEY_LEN];
                k.copy_from_slice(&p[..KEY_LEN]);
                let n = u32::from_le_bytes([
                    p[KEY_LEN],
                    p[KEY_LEN + 1],
                    p[KEY_LEN + 2],
                    p[KEY_LEN + 3],
                ]) as usize;
                let Some(v) = p.get(KEY_LEN + 4..KEY_LEN + 4 + n) else {
                    break;
                };
                s.records.insert(k, v.to_vec());
                p = &p[KEY_LEN + 4 + n..];
            }
        }
        KIND_TRUNCATE if payload.len() == KEY_LEN => {
            if let Some((run, _)) = split_key(payload) {
                let mut from = [0u8; KEY_LEN];
                from.copy_from_slice(payload);
                let end = super::key(run, u64::MAX);
                let doomed: Vec<_> = s.records.range(from..=end).map(|(k, _)| *k).collect();
                for k in doomed {
                    s.records.remove(&k);
                }
            }
        }
        _ => {}
    }
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
