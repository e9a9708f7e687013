//! The stored form of a record: a versioned, checksummed envelope around bincode 2.
//!
//! Layout (little endian): `magic "UG" | format version u16 | payload (bincode) | crc32 u32`,
//! where the CRC-32 (IEEE) covers everything before it. Decoding never panics: any byte
//! string either decodes to the record that was encoded or returns a [`CodecError`].
//!
//! Version 1 is `run, seq, at, event`; version 2 adds the leader's `epoch` after `at`. A
//! record of epoch 0 (a single daemon, no leadership) is still written as version 1, so
//! a log without `--ha` is byte for byte what older builds wrote and read.

use serde::{Deserialize, Serialize};

use crate::event::{Event, Record, Timestamp};
use crate::names::RunId;

/// The newest format this build writes (version 2, for records of an epoch above 0).
/// Bump it (and keep a decoder for the old ones) on any incompatible change of the
/// record's bincode shape.
pub const FORMAT_VERSION: u16 = 2;
/// The format of a record of epoch 0.
const FORMAT_V1: u16 = 1;

#[derive(Serialize)]
struct WriteV1<'a> {
    run: &'a RunId,
    seq: u64,
    at: &'a Timestamp,
    event: &'a Event,
}

#[derive(Serialize)]
struct WriteV2<'a> {
    run: &'a RunId,
    seq: u64,
    at: &'a Timestamp,
    epoch: u64,
    event: &'a Event,
}

#[derive(Deserialize)]
struct ReadV1 {
    run: RunId,
    seq: u64,
    at: Timestamp,
    event: Event,
}

#[derive(Deserialize)]
struct ReadV2 {
    run: RunId,
    seq: u64,
    at: Timestamp,
    epoch: u64,
    event: Event,
}
const MAGIC: [u8; 2] = *b"UG";
const HEADER: usize = 4;
const TRAILER: usize = 4;
/// Records larger than this are refused (a plan of 5,000 nodes is well below it).
pub const MAX_RECORD_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("record too short ({0} bytes)")]
    TooShort(usize),
    #[error("record does not start with the upgraded magic bytes")]
    BadMagic,
    #[error("record has format version {0}; this build reads versions 1 to {FORMAT_VERSION}")]
    UnknownVersion(u16),
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("payload does not decode: {0}")]
    Payload(String),
    #[error("payload has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("record of {0} bytes exceeds the {MAX_RECORD_BYTES}-byte limit")]
    TooLarge(usize),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_RECORD_BYTES>()
}

/// Encodes a record into its stored form.
pub fn encode(record: &Record) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&MAGIC);
    let written = if record.epoch == 0 {
        out.extend_from_slice(&FORMAT_V1.to_le_bytes());
        let v1 = WriteV1 {
            run: &record.run,
            seq: record.seq,
            at: &record.at,
            event: &record.event,
        };
        bincode::serde::encode_into_std_write(v1, &mut out, config())
    } else {
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let v2 = WriteV2 {
            run: &record.run,
            seq: record.seq,
            at: &record.at,
            epoch: record.epoch,
            event: &record.event,
        };
        bincode::serde::encode_into_std_write(v2, &mut out, config())
    };
    written.map_err(|e| CodecError::Payload(e.to_string()))?;
    if out.len() + TRAILER > MAX_RECORD_BYTES {
        return Err(CodecError::TooLarge(out.len() + TRAILER));
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decodes a stored record, checking magic, version and checksum before the payload.
pub fn decode(bytes: &[u8]) -> Result<Record, CodecError> {
    if bytes.len() < HEADER + TRAILER {
        return Err(CodecError::TooShort(bytes.len()));
    }
    if bytes.len() > MAX_RECORD_BYTES {
        return Err(CodecError::TooLarge(bytes.len()));
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER);
    if body[..2] != MAGIC {
        return Err(CodecError::BadMagic);
    }
    let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    let version = u16::from_le_bytes([body[2], body[3]]);
    let payload = &body[HEADER..];
    let bad = |e: bincode::error::DecodeError| CodecError::Payload(e.to_string());
    let (record, used) = match version {
        FORMAT_V1 => {
            let (r, used): (ReadV1, usize) =
                bincode::serde::decode_from_slice(payload, config()).map_err(bad)?;
            let record = Record {
                run: r.run,
                seq: r.seq,
                at: r.at,
                epoch: 0,
                event: r.event,
            };
            (record, used)
        }
        FORMAT_VERSION => {
            let (r, used): (ReadV2, usize) =
                bincode::serde::decode_from_slice(payload, config()).map_err(bad)?;
            // Epoch 0 is always written as version 1: anything else is not ours.
            if r.epoch == 0 {
                return Err(CodecError::Payload(
                    "a version 2 record of epoch 0".to_string(),
                ));
            }
            let record = Record {
                run: r.run,
                seq: r.seq,
                at: r.at,
                epoch: r.epoch,
                event: r.event,
            };
            (record, used)
        }
        other => return Err(CodecError::UnknownVersion(other)),
    };
    if used != payload.len() {
        return Err(CodecError::TrailingBytes(payload.len() - used));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Timestamp};
    use proptest::prelude::*;

    fn sample() -> Record {
        Record {
            run: crate::RunId::from_u128(7),
            seq: 3,
            at: Timestamp(1_700_000_000_000),
            epoch: 0,
            event: Event::RunHalted {
                reason: "node w1: kubelet NotReady".into(),
            },
        }
    }

    #[test]
    fn round_trips() {
        let bytes = encode(&sample()).expect("encode");
        assert_eq!(decode(&bytes), Ok(sample()));
    }

    /// Epoch 0 is written as version 1 (what every older build wrote and reads); an epoch
    /// above 0 as version 2, which carries it.
    #[test]
    fn a_record_of_a_leaders_epoch_is_version_2_and_epoch_0_stays_version_1() {
        let v1 = encode(&sample()).expect("encode");
        assert_eq!(&v1[2..4], &1u16.to_le_bytes());
        let led = Record {
            epoch: 7,
            ..sample()
        };
        let v2 = encode(&led).expect("encode");
        assert_eq!(&v2[2..4], &2u16.to_le_bytes());
        assert_eq!(decode(&v2), Ok(led));
        assert!(v2.len() > v1.len());
        // A version 2 frame of epoch 0 is refused (never written).
        let mut forged = Vec::new();
        forged.extend_from_slice(&MAGIC);
        forged.extend_from_slice(&2u16.to_le_bytes());
        let r = sample();
        let w = WriteV2 {
            run: &r.run,
            seq: r.seq,
            at: &r.at,
            epoch: 0,
            event: &r.event,
        };
        bincode::serde::encode_into_std_write(w, &mut forged, config()).expect("encode");
        let crc = crc32fast::hash(&forged);
        forged.extend_from_slice(&crc.to_le_bytes());
        assert!(matches!(decode(&forged), Err(CodecError::Payload(_))));
        // An unknown version is named.
        let mut v3 = v2.clone();
        v3[2] = 3;
        let body = v3.len() - 4;
        let crc = crc32fast::hash(&v3[..body]);
        v3[body..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&v3), Err(CodecError::UnknownVersion(3)));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = encode(&sample()).expect("encode");
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(decode(&b).is_err(), "flip of bit {i} went unnoticed");
        }
    }

    #[test]
    fn truncation_is_detected() {
        let bytes = encode(&sample()).expect("encode");
        for len in 0..bytes.len() {
            assert!(
                decode(&bytes[..len]).is_err(),
                "truncated to {len} accepted"
            );
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn garbage_with_valid_frame_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..512)) {
            // Valid magic, version and checksum around random bytes: only bincode stands guard.
            let mut b = Vec::new();
            b.extend_from_slice(&MAGIC);
            b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            b.extend_from_slice(&payload);
            let crc = crc32fast::hash(&b);
            b.extend_from_slice(&crc.to_le_bytes());
            let _ = decode(&b);
        }
    }
}
