//! The stored form of a record: a versioned, checksummed envelope around bincode 2.
//!
//! Layout (little endian): `magic "UG" | format version u16 | payload (bincode) | crc32 u32`,
//! where the CRC-32 (IEEE) covers everything before it. Decoding never panics: any byte
//! string either decodes to the record that was encoded or returns a [`CodecError`].

use crate::event::Record;

/// The format written by this build. Bump it (and keep a decoder for the old one) on any
/// incompatible change of the record's bincode shape.
pub const FORMAT_VERSION: u16 = 1;
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
    #[error("record has format version {0}; this build reads version {FORMAT_VERSION}")]
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
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bincode::serde::encode_into_std_write(record, &mut out, config())
        .map_err(|e| CodecError::Payload(e.to_string()))?;
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
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion(version));
    }
    let payload = &body[HEADER..];
    let (record, used): (Record, usize) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| CodecError::Payload(e.to_string()))?;
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
