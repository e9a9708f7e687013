//! Opening the log: sled and the witness are read in full and reconciled.
//!
//! Every record is checked in both copies (magic, version, CRC-32, key against content). A
//! record one copy lost or damaged is restored from the other (the damaged bytes go to sled's
//! `quarantine` tree, not away); a record neither holds intact is *lost*, and the open fails
//! naming the data dir, the run and the seq range, unless the operator asked to repair a
//! damaged tail. sled's `meta` tree remembers the witness's id, so a deleted witness is
//! noticed too. sled itself failing to open (or panicking on its damaged files) is reported
//! with what the witness holds, and `--rebuild-log` moves sled's files aside and rebuilds.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use upgraded_events::RunId;
use upgraded_events::codec;
use uuid::Uuid;

use super::witness::{self, Witness};
use super::{KEY_LEN, LogError, LostRun, Ranges, key, split_key};

const META_WITNESS_ID: &[u8] = b"witness-id";

/// What the operator allows the open to do about damage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Recovery {
    /// Records lost from both copies at the *end* of a run are accepted as lost: their
    /// damaged bytes are quarantined and the run goes on from the last intact record.
    pub repair_tail: bool,
    /// Rebuild a copy that cannot be read from the other: sled's files moved aside and the
    /// log rebuilt from the witness, or a missing witness written anew from sled.
    pub rebuild: bool,
}

/// What opening found and did.
#[derive(Debug, Default, Clone)]
pub struct OpenReport {
    pub runs: usize,
    pub records: u64,
    /// (run, seq) of records moved to the quarantine tree by `repair_tail`.
    pub quarantined: Vec<(RunId, u64)>,
    /// Records sled lacked or had damaged, written back from the witness.
    pub restored: Vec<(RunId, u64)>,
    /// How many of `restored` were damage: bytes sled holds that fail their checks, or a
    /// record missing below one sled still has (sled stops reading at a bad message). The
    /// rest were the last records before a stop, which sled had not flushed yet: normal.
    pub restored_damage: usize,
    /// Records sled had that the witness did not (written just before a crash, or a log
    /// from before the witness), now in the witness too.
    pub witnessed: u64,
    /// Damage found in the witness (its intact frames and sled's records made it whole).
    pub witness_damage: Option<String>,
    /// Where sled's unreadable files were moved by `rebuild`.
    pub moved_aside: Option<PathBuf>,
    /// Keys that are no record key (damage), moved to the quarantine tree.
    pub stray_keys: usize,
}

pub(super) struct Opened {
    pub db: sled::Db,
    pub tree: sled::Tree,
    pub witness: Witness,
    pub next: HashMap<RunId, u64>,
    pub report: OpenReport,
}

struct Sled {
    db: sled::Db,
    events: sled::Tree,
    quarantine: sled::Tree,
    meta: sled::Tree,
    /// Every key and value of the events tree.
    entries: Vec<(sled::IVec, sled::IVec)>,
}

/// Runs `f`, turning a panic (sled panics on some damage) into an error message.
fn guarded<T>(f: impl FnOnce() -> Result<T, sled::Error>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("sled: {e}")),
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            Err(format!("sled panicked: {what}"))
        }
    }
}

fn open_sled(dir: &Path) -> Result<Sled, String> {
    guarded(|| {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(Some(super::SLED_FLUSH_MS))
            .open()?;
        let events = db.open_tree("events")?;
        let quarantine = db.open_tree("quarantine")?;
        let meta = db.open_tree("meta")?;
        let entries = events.iter().collect::<Result<Vec<_>, _>>()?;
        Ok(Sled {
            db,
            events,
            quarantine,
            meta,
            entries,
        })
    })
}

/// sled's own files in `dir` (everything but ours), moved to `dir/damaged-<secs>/`.
fn move_sled_aside(dir: &Path) -> std::io::Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let aside = dir.join(format!("damaged-{secs}"));
    std::fs::create_dir(&aside)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let n = name.to_string_lossy();
        if n == "db" || n == "conf" || n == "blobs" || n.starts_with("snap.") {
            std::fs::rename(entry.path(), aside.join(&name))?;
        }
    }
    Ok(aside)
}

pub(super) fn open(dir: &Path, recovery: Recovery) -> Result<Opened, LogError> {
    let storage = |source| LogError::Storage {
        path: dir.to_path_buf(),
        source,
    };
    let wpath = dir.join(witness::FILE);
    let scan = witness::scan(&wpath)?;
    let mut report = OpenReport::default();
    let sled = match open_sled(dir) {
        Ok(s) => s,
        Err(reason) if scan.id.is_none() => {
            return Err(LogError::UnopenableNoWitness {
                dir: dir.to_path_buf(),
                reason,
            });
        }
        Err(reason) if !recovery.rebuild => {
            return Err(LogError::Unopenable {
                dir: dir.to_path_buf(),
                reason,
                witness: scan.summary(),
            });
        }
        Err(reason) => {
            let aside = move_sled_aside(dir).map_err(|source| {
                LogError::Witness(witness::WitnessError::Io {
                    path: dir.to_path_buf(),
                    source,
                })
            })?;
            tracing::warn!(%reason, aside = %aside.display(), "sled's files moved aside; rebuilding the log from the witness");
            report.moved_aside = Some(aside);
            open_sled(dir).map_err(|reason| LogError::UnopenableNoWitness {
                dir: dir.to_path_buf(),
                reason,
            })?
        }
    };

    let sled_id = sled
        .meta
        .get(META_WITNESS_ID)
        .map_err(storage)?
        .and_then(|v| Uuid::from_slice(&v).ok());
    let mut recreate_witness = false;
    let id = match (sled_id, scan.id) {
        (Some(a), Some(b)) if a != b => {
            return Err(LogError::WitnessForeign {
                dir: dir.to_path_buf(),
                witness: b,
                sled: a,
            });
        }
        (Some(a), None) if !recovery.rebuild => {
            return Err(LogError::WitnessMissing {
                dir: dir.to_path_buf(),
                id: a,
            });
        }
        (Some(a), None) => {
            recreate_witness = true;
            a
        }
        (_, Some(b)) => b,
        // A new log, or one written before the witness existed.
        (None, None) => {
            recreate_witness = true;
            Uuid::now_v7()
        }
    };

    // sled's records: intact, damaged, or under a key that is no record key.
    let mut good: BTreeMap<[u8; KEY_LEN], Vec<u8>> = BTreeMap::new();
    let mut damaged: BTreeMap<[u8; KEY_LEN], sled::IVec> = BTreeMap::new();
    let mut stray: Vec<(sled::IVec, sled::IVec)> = Vec::new();
    for (k, v) in &sled.entries {
        let Some((run, seq)) = split_key(k) else {
            stray.push((k.clone(), v.clone()));
            continue;
        };
        match codec::decode(v) {
            Ok(r) if r.run == run && r.seq == seq => {
                good.insert(key(run, seq), v.to_vec());
            }
            // An intact record under another record's key: the key is what was damaged.
            // Its own key is checked through the copies like any other.
            Ok(_) => stray.push((k.clone(), v.clone())),
            Err(_) => {
                damaged.insert(key(run, seq), v.clone());
            }
        }
    }
    // The witness's records are checked the same way (its frames have their own CRC too).
    let witnessed: BTreeMap<[u8; KEY_LEN], Vec<u8>> = scan
        .records
        .iter()
        .filter(|(k, v)| {
            matches!((split_key(&k[..]), codec::decode(v)), (Some((run, seq)), Ok(r)) if r.run == run && r.seq == seq)
        })
        .map(|(k, v)| (*k, v.clone()))
        .collect();

    // Damaged bytes under a run that neither copy otherwise knows are a damaged key, not a
    // lost run: they are set aside like other stray keys.
    let known: BTreeSet<RunId> = good
        .keys()
        .chain(witnessed.keys())
        .filter_map(|k| split_key(k).map(|(run, _)| run))
        .collect();
    let phantom: Vec<[u8; KEY_LEN]> = damaged
        .keys()
        .filter(|k| split_key(&k[..]).is_some_and(|(run, _)| !known.contains(&run)))
        .copied()
        .collect();
    for k in phantom {
        if let Some(v) = damaged.remove(&k) {
            stray.push((sled::IVec::from(&k[..]), v));
        }
    }

    // The union, and what each copy lacks.
    let mut union: BTreeMap<[u8; KEY_LEN], &[u8]> = BTreeMap::new();
    let mut to_sled: Vec<[u8; KEY_LEN]> = Vec::new();
    let mut to_witness: Vec<[u8; KEY_LEN]> = Vec::new();
    for (k, v) in &good {
        match witnessed.get(k) {
            Some(w) if w != v => {
                let (run, seq) = split_key(k).unwrap_or_default();
                return Err(LogError::Conflict {
                    dir: dir.to_path_buf(),
                    run,
                    seq,
                });
            }
            Some(_) => {}
            None => to_witness.push(*k),
        }
        union.insert(*k, v);
    }
    for (k, v) in &witnessed {
        if !good.contains_key(k) {
            to_sled.push(*k);
            union.insert(*k, v);
        }
    }

    // Per run: every seq from 0 to the highest either copy has seen must be in the union.
    let mut highest: BTreeMap<RunId, u64> = BTreeMap::new();
    for k in union.keys().chain(damaged.keys()) {
        if let Some((run, seq)) = split_key(k) {
            let h = highest.entry(run).or_insert(0);
            *h = (*h).max(seq);
        }
    }
    let mut lost: Vec<LostRun> = Vec::new();
    for (&run, &top) in &highest {
        let present: BTreeSet<u64> = union
            .range(key(run, 0)..=key(run, u64::MAX))
            .filter_map(|(k, _)| split_key(k).map(|(_, s)| s))
            .collect();
        if present.len() as u64 == top + 1 {
            continue;
        }
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for seq in (0..=top).filter(|s| !present.contains(s)) {
            match ranges.last_mut() {
                Some((_, b)) if *b + 1 == seq => *b = seq,
                _ => ranges.push((seq, seq)),
            }
        }
        let first = ranges.first().map(|r| r.0).unwrap_or(0);
        lost.push(LostRun {
            run,
            in_the_middle: present.iter().any(|s| *s > first),
            seqs: Ranges(ranges),
        });
    }
    let repairable = recovery.repair_tail && lost.iter().all(|l| !l.in_the_middle);
    if !lost.is_empty() && !repairable {
        return Err(LogError::Lost {
            dir: dir.to_path_buf(),
            lost,
        });
    }

    // From here on the open changes things: each change is durable before the log is used.
    let mut repaired_tails: Vec<(RunId, u64)> = Vec::new();
    for l in &lost {
        let first = l.seqs.0.first().map(|r| r.0).unwrap_or(0);
        repaired_tails.push((l.run, first));
        let doomed: Vec<_> = damaged
            .range(key(l.run, first)..=key(l.run, u64::MAX))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (k, v) in doomed {
            sled.quarantine.insert(k, v).map_err(storage)?;
            sled.events.remove(k).map_err(storage)?;
            damaged.remove(&k);
            if let Some((run, seq)) = split_key(&k) {
                report.quarantined.push((run, seq));
            }
        }
    }
    // The highest seq sled holds intact, per run: a missing record below it is damage.
    let mut sled_top: HashMap<RunId, u64> = HashMap::new();
    for k in good.keys() {
        if let Some((run, seq)) = split_key(k) {
            let t = sled_top.entry(run).or_insert(0);
            *t = (*t).max(seq);
        }
    }
    for k in &to_sled {
        let below_intact =
            split_key(k).is_some_and(|(run, seq)| sled_top.get(&run).is_some_and(|top| *top > seq));
        if below_intact || damaged.contains_key(k) {
            report.restored_damage += 1;
        }
        if let Some(bad) = damaged.remove(k) {
            sled.quarantine.insert(k, bad).map_err(storage)?;
        }
        if let Some(v) = witnessed.get(k) {
            sled.events.insert(k, v.as_slice()).map_err(storage)?;
        }
        if let Some(rs) = split_key(k) {
            report.restored.push(rs);
        }
    }
    report.stray_keys = stray.len();
    for (k, v) in stray {
        sled.quarantine.insert(k.clone(), v).map_err(storage)?;
        sled.events.remove(k).map_err(storage)?;
    }
    sled.meta
        .insert(META_WITNESS_ID, id.as_bytes())
        .map_err(storage)?;
    sled.db.flush().map_err(storage)?;

    if let Some(d) = scan.damage {
        report.witness_damage = Some(format!(
            "a damaged frame at offset {} ({})",
            d.offset,
            if d.middle {
                "intact frames follow"
            } else {
                "the last write"
            }
        ));
        // A damaged frame in the middle is rewritten away: the new witness holds the union.
        recreate_witness |= d.middle;
    }
    let w = if recreate_witness {
        report.witnessed = to_witness.len() as u64;
        Witness::create(&wpath, id, union.iter().map(|(k, v)| (k, *v)))?
    } else {
        let mut w = Witness::open(&wpath, &scan)?;
        for (run, seq) in &repaired_tails {
            w.append(&witness::truncate_frame(*run, *seq))?;
        }
        if !to_witness.is_empty() {
            report.witnessed = to_witness.len() as u64;
            w.append(&witness::commit_frame(
                to_witness
                    .iter()
                    .filter_map(|k| union.get(k).map(|v| (k, *v))),
            ))?;
        }
        w
    };

    let mut next: HashMap<RunId, u64> = HashMap::new();
    for k in union.keys() {
        if let Some((run, seq)) = split_key(k) {
            if repaired_tails.iter().any(|(r, s)| *r == run && seq >= *s) {
                continue;
            }
            let n = next.entry(run).or_insert(0);
            *n = (*n).max(seq + 1);
            report.records += 1;
        }
    }
    for (run, seq) in &repaired_tails {
        next.entry(*run).or_insert(*seq);
    }
    report.runs = next.len();
    Ok(Opened {
        db: sled.db,
        tree: sled.events,
        witness: w,
        next,
        report,
    })
}
