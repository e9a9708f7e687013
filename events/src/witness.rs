//! The witness file's format (`witness.log`, the second copy of every acknowledged record,
//! outside sled): frames, keys, and the scan of a file's bytes. Pure: the daemon writes and
//! reads the file (`daemon/src/log/witness.rs`); `upgradectl --data-dir` reads it to open a
//! stopped daemon's log without touching it.
//!
//! Layout: frames, each 8-byte aligned: `magic u32 | payload len u32 | kind u8 | 3 zero bytes
//! | crc32 u32 | payload | zero padding`, the CRC-32 covering `len | kind | pad` and the
//! payload. A header frame (format version, the witness id that sled also stores) opens the
//! file; commit frames carry `(key, stored record)` pairs; a truncate frame records that an
//! operator's `--repair-tail` removed a run's tail. A zero magic marks the end.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::names::RunId;

/// A record's key: the run's 16 bytes, then the seq big-endian (so keys sort by run, seq).
pub const KEY_LEN: usize = 24;

pub fn key(run: RunId, seq: u64) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[..16].copy_from_slice(run.as_bytes());
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub fn split_key(k: &[u8]) -> Option<(RunId, u64)> {
    if k.len() != KEY_LEN {
        return None;
    }
    let run = RunId::from_slice(&k[..16])?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&k[16..]);
    Some((run, u64::from_be_bytes(seq)))
}

/// The witness file's name inside the data dir.
pub const FILE: &str = "witness.log";
pub const MAGIC: u32 = u32::from_le_bytes(*b"UGWF");
pub const FORMAT: u16 = 1;
pub const HEAD: usize = 16;
/// A frame larger than this is damage, not data (a commit is bounded by the writer's batch).
const MAX_FRAME: usize = 1 << 30;

const KIND_HEADER: u8 = 1;
const KIND_COMMIT: u8 = 2;
const KIND_TRUNCATE: u8 = 3;

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

pub fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
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

pub fn header_frame(id: Uuid) -> Vec<u8> {
    let mut payload = Vec::with_capacity(18);
    payload.extend_from_slice(&FORMAT.to_le_bytes());
    payload.extend_from_slice(id.as_bytes());
    frame(KIND_HEADER, &payload)
}

/// A truncate frame: records of `run` from `seq` on were removed by a repair.
pub fn truncate_frame(run: RunId, seq: u64) -> Vec<u8> {
    frame(KIND_TRUNCATE, &key(run, seq))
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

/// The scan of a witness file's bytes.
pub fn scan_bytes(buf: &[u8]) -> Scan {
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
                let end = key(run, u64::MAX);
                let doomed: Vec<_> = s.records.range(from..=end).map(|(k, _)| *k).collect();
                for k in doomed {
                    s.records.remove(&k);
                }
            }
        }
        _ => {}
    }
}
