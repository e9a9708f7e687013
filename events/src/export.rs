//! The export file: a run's records (or every run's) in one file that checks itself, to
//! attach to an incident ticket and replay anywhere, with no daemon and no cluster.
//!
//! ```text
//! upgraded-export v1
//! <crc32 of the JSON, 8 hex> <one record as JSON>      (one line per record, in order)
//! end <records> <crc32 of every byte before this line, 8 hex>
//! ```
//!
//! Each line checks itself (lowercase hex only), so damage is found at its line's byte offset; the end line
//! proves nothing was cut off or added. Pure: the verbs read and write the bytes.

use std::fmt::Write as _;

use crate::event::{Record, RunId};

const HEADER: &str = "upgraded-export v1\n";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    #[error("not an upgraded export (no `upgraded-export v1` header at byte 0)")]
    NotAnExport,
    #[error("damaged at byte {offset} (record {index}): {what}")]
    Damaged {
        offset: usize,
        index: usize,
        what: String,
    },
    #[error(
        "truncated at byte {offset}: {records} record(s) read, the end line is missing \
         (the file was cut short)"
    )]
    Truncated { offset: usize, records: usize },
    #[error("damaged at byte {offset} (the end line): {what}")]
    End { offset: usize, what: String },
}

/// The export of `records` (in order: each run's from its first record).
pub fn write(records: &[Record]) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = String::from(HEADER);
    for r in records {
        let json = serde_json::to_string(r)?;
        let _ = writeln!(out, "{:08x} {json}", crc32fast::hash(json.as_bytes()));
    }
    let crc = crc32fast::hash(out.as_bytes());
    let _ = writeln!(out, "end {} {crc:08x}", records.len());
    Ok(out.into_bytes())
}

/// The records of an export, every check passed; or where it is damaged.
pub fn read(bytes: &[u8]) -> Result<Vec<Record>, ExportError> {
    if !bytes.starts_with(HEADER.as_bytes()) {
        return Err(ExportError::NotAnExport);
    }
    let mut records = Vec::new();
    let mut at = HEADER.len();
    loop {
        let Some(len) = bytes[at..].iter().position(|b| *b == b'\n') else {
            return Err(ExportError::Truncated {
                offset: at,
                records: records.len(),
            });
        };
        let line = &bytes[at..at + len];
        let damaged = |what: String| ExportError::Damaged {
            offset: at,
            index: records.len(),
            what,
        };
        if let Some(end) = line.strip_prefix(b"end ") {
            let text = std::str::from_utf8(end).unwrap_or("");
            let mut parts = text.split(' ');
            let count = parts.next().and_then(|c| c.parse::<usize>().ok());
            let crc = parts
                .next()
                .filter(|c| {
                    c.len() == 8
                        && c.bytes()
                            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                })
                .and_then(|c| u32::from_str_radix(c, 16).ok());
            let bad = |what: String| ExportError::End { offset: at, what };
            match (count, crc) {
                (Some(n), Some(c)) if parts.next().is_none() => {
                    if n != records.len() {
                        return Err(bad(format!(
                            "it counts {n} records, the file holds {}",
                            records.len()
                        )));
                    }
                    if crc32fast::hash(&bytes[..at]) != c {
                        return Err(bad("the checksum over the file does not match".into()));
                    }
                }
                _ => return Err(bad("unreadable".into())),
            }
            if at + len + 1 != bytes.len() {
                return Err(ExportError::End {
                    offset: at + len + 1,
                    what: "bytes after the end line".into(),
                });
            }
            return Ok(records);
        }
        let (crc, json) = match (line.get(..8), line.get(8), line.get(9..)) {
            (Some(c), Some(b' '), Some(j)) => (c, j),
            _ => return Err(damaged("not `<crc32> <record>`".into())),
        };
        let want = std::str::from_utf8(crc)
            .ok()
            .filter(|c| {
                c.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            })
            .and_then(|c| u32::from_str_radix(c, 16).ok())
            .ok_or_else(|| damaged("unreadable checksum".into()))?;
        if crc32fast::hash(json) != want {
            return Err(damaged("its checksum does not match".into()));
        }
        let r: Record =
            serde_json::from_slice(json).map_err(|e| damaged(format!("not a record: {e}")))?;
        records.push(r);
        at += len + 1;
    }
}

/// The runs an export holds, in the order they appear, with their record counts.
pub fn runs(records: &[Record]) -> Vec<(RunId, usize)> {
    let mut out: Vec<(RunId, usize)> = Vec::new();
    for r in records {
        match out.iter_mut().find(|(id, _)| *id == r.run) {
            Some((_, n)) => *n += 1,
            None => out.push((r.run, 1)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Actor, Event, Timestamp};

    fn sample() -> Vec<Record> {
        let run = RunId::from_u128(7);
        [
            Event::RunStarted {
                by: Actor::daemon(),
            },
            Event::RunPaused {
                by: Actor::daemon(),
                reason: "look\nat \"w-1\"".into(),
            },
            Event::RunCompleted,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, event)| Record {
            run,
            seq: i as u64,
            at: Timestamp(1_000 * i as i64),
            epoch: 0,
            event,
        })
        .collect()
    }

    #[test]
    fn an_export_reads_back_equal() {
        let records = sample();
        let bytes = write(&records).expect("export");
        assert_eq!(read(&bytes), Ok(records.clone()));
        assert_eq!(runs(&records), vec![(RunId::from_u128(7), 3)]);
    }

    #[test]
    fn a_truncated_export_is_refused_with_where_it_ends() {
        let bytes = write(&sample()).expect("export");
        for cut in [bytes.len() - 1, bytes.len() - 20, HEADER.len() + 5, 3] {
            let e = read(&bytes[..cut]).expect_err("truncated");
            match e {
                ExportError::Truncated { offset, .. } => assert!(offset <= cut, "{e}"),
                ExportError::NotAnExport => assert!(cut < HEADER.len()),
                other => panic!("cut at {cut}: {other}"),
            }
        }
        // Cut exactly at a line's end: the end line is missing.
        let line_end = HEADER.len()
            + bytes[HEADER.len()..]
                .iter()
                .position(|b| *b == b'\n')
                .expect("a line")
            + 1;
        assert_eq!(
            read(&bytes[..line_end]),
            Err(ExportError::Truncated {
                offset: line_end,
                records: 1
            })
        );
    }

    #[test]
    fn every_flipped_byte_is_found_at_its_line() {
        let bytes = write(&sample()).expect("export");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            let Err(e) = read(&bad) else {
                panic!("byte {i} flipped went unnoticed");
            };
            let offset = match e {
                ExportError::Damaged { offset, .. } | ExportError::End { offset, .. } => offset,
                ExportError::Truncated { offset, .. } => offset,
                ExportError::NotAnExport => 0,
            };
            let line_start = bytes[..i]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |p| p + 1);
            assert_eq!(offset, line_start, "byte {i}: {e}");
        }
    }
}
