//! The replicated copy of the log in a NATS JetStream stream (`upgraded --ha`, issue 28):
//! one subject per run (`upgraded.log.<run>`), each record in its stored form
//! (`events::codec`), appended only by compare-and-set.
//!
//! Every append names the stream sequence it expects the run's subject to end at
//! (`Nats-Expected-Last-Subject-Sequence`), so an append of a leader that was deposed meanwhile
//! (someone else appended) fails instead of forking the run; and it carries `Nats-Msg-Id`
//! `<run>:<seq>`, so an append retried after a lost acknowledgement is not stored twice
//! (within the stream's duplicate window). Reads go to the stream's leader, in order.

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind};
use async_nats::jetstream::{self};
use upgraded_events::codec;
use upgraded_events::{Record, RunId};

/// Where the replicated log lives.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    /// The stream's name.
    pub stream: String,
    /// Copies JetStream keeps (3 on a three-server cluster; 1 on a single server).
    pub replicas: usize,
    /// How long a publish waits for its acknowledgement.
    pub ack_timeout: Duration,
    /// How long the stream remembers message ids (a retried append within it is not stored
    /// twice).
    pub duplicate_window: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        ReplicaConfig {
            stream: "UPGRADED_LOG".into(),
            replicas: 3,
            ack_timeout: Duration::from_secs(5),
            duplicate_window: Duration::from_secs(120),
        }
    }
}

/// The subjects' root: `upgraded.log.<run>`.
pub const SUBJECT_ROOT: &str = "upgraded.log";

/// The subject of `run`'s records.
pub fn subject(run: RunId) -> String {
    format!("{SUBJECT_ROOT}.{run}")
}

/// `Nats-Msg-Id` of a record: its run and seq.
pub fn msg_id(r: &Record) -> String {
    format!("{}:{}", r.run, r.seq)
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// The run's subject does not end where this instance expected: another leader
    /// appended. This instance was deposed and must append nothing more.
    #[error(
        "the replicated log of run {run} has moved past stream sequence {expected}: another \
         leader appended; this instance stands down"
    )]
    Deposed { run: RunId, expected: u64 },
    /// The stream did not answer (no quorum, a timeout, no connection): nothing is known of
    /// the append, which may be retried with the same ids.
    #[error("the replicated log did not answer: {0}")]
    Unavailable(String),
    /// The stream answered with something that is not ours.
    #[error("the replicated log of run {run} at stream sequence {sequence}: {reason}")]
    Corrupt {
        run: RunId,
        sequence: u64,
        reason: String,
    },
    #[error("the replicated log: {0}")]
    Other(String),
}

/// The replicated log, on a JetStream context.
#[derive(Debug, Clone)]
pub struct Replica {
    js: jetstream::Context,
    cfg: ReplicaConfig,
}

impl Replica {
    /// The stream (created if missing: file storage, the configured replicas, direct gets
    /// off, deletes and purges denied).
    pub async fn open(
        client: async_nats::Client,
        cfg: ReplicaConfig,
    ) -> Result<Replica, ReplicaError> {
        let mut js = jetstream::new(client);
        js.set_timeout(cfg.ack_timeout);
        js.get_or_create_stream(stream::Config {
            name: cfg.stream.clone(),
            subjects: vec![format!("{SUBJECT_ROOT}.>")],
            storage: stream::StorageType::File,
            num_replicas: cfg.replicas,
            duplicate_window: cfg.duplicate_window,
            deny_delete: true,
            deny_purge: true,
            ..Default::default()
        })
        .await
        .map_err(|e| ReplicaError::Unavailable(e.to_string()))?;
        Ok(Replica { js, cfg })
    }

    /// Appends `records` (of one run, in seq order) after stream sequence `expected` (the
    /// last one of the run's subject, 0 for none); the stream sequence of the last record
    /// appended. An append retried after its acknowledgement was lost finds its own record
    /// where it expected to write it (the server checks the expected sequence before the
    /// duplicate id): that counts as appended; anything else there means another leader
    /// appended.
    pub async fn append(&self, records: &[Record], expected: u64) -> Result<u64, ReplicaError> {
        let mut last = expected;
        for r in records {
            let bytes = codec::encode(r).map_err(|e| ReplicaError::Other(e.to_string()))?;
            let publish = PublishMessage::build()
                .payload(bytes.clone().into())
                .message_id(msg_id(r))
                .expected_last_subject_sequence(last);
            let sent = match self.js.send_publish(subject(r.run), publish).await {
                Ok(ack) => tokio::time::timeout(self.cfg.ack_timeout, ack)
                    .await
                    .map_err(|_| None)
                    .and_then(|a| a.map_err(Some)),
                Err(e) => Err(Some(e)),
            };
            last = match sent {
                Ok(ack) => ack.sequence,
                Err(Some(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    match self.next_after(r.run, last).await? {
                        Some((sequence, stored)) if stored == bytes => sequence,
                        _ => {
                            return Err(ReplicaError::Deposed {
                                run: r.run,
                                expected: last,
                            });
                        }
                    }
                }
                Err(Some(e)) => return Err(publish_error(e.kind(), e.to_string())),
                Err(None) => {
                    return Err(ReplicaError::Unavailable(format!(
                        "no acknowledgement of {} within {:?} (it may be stored: retry with the same ids)",
                        msg_id(r),
                        self.cfg.ack_timeout
                    )));
                }
            };
        }
        Ok(last)
    }

    /// The message of `run`'s subject right after stream sequence `after`: its sequence and
    /// bytes.
    async fn next_after(
        &self,
        run: RunId,
        after: u64,
    ) -> Result<Option<(u64, Vec<u8>)>, ReplicaError> {
        let stream = self
            .js
            .get_stream_no_info(&self.cfg.stream)
            .await
            .map_err(|e| ReplicaError::Unavailable(e.to_string()))?;
        match stream
            .get_first_raw_message_by_subject(subject(run), after + 1)
            .await
        {
            Ok(m) => Ok(Some((m.sequence, m.payload.to_vec()))),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(ReplicaError::Unavailable(e.to_string())),
        }
    }

    /// The stream's last sequence (0 while it is empty), from its leader.
    pub async fn last_sequence(&self) -> Result<u64, ReplicaError> {
        let stream = self
            .js
            .get_stream_no_info(&self.cfg.stream)
            .await
            .map_err(|e| ReplicaError::Unavailable(e.to_string()))?;
        let info = stream
            .get_info()
            .await
            .map_err(|e| ReplicaError::Unavailable(e.to_string()))?;
        Ok(info.state.last_sequence)
    }

    /// The record at stream sequence `sequence`; `None` while nothing is stored there yet.
    pub async fn at(&self, sequence: u64) -> Result<Option<Record>, ReplicaError> {
        let stream = self
            .js
            .get_stream_no_info(&self.cfg.stream)
            .await
            .map_err(|e| ReplicaError::Unavailable(e.to_string()))?;
        let m = match stream.get_raw_message(sequence).await {
            Ok(m) => m,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(ReplicaError::Unavailable(e.to_string())),
        };
        let corrupt = |reason: String| ReplicaError::Corrupt {
            run: RunId::nil(),
            sequence,
            reason,
        };
        let record = codec::decode(&m.payload).map_err(|e| corrupt(e.to_string()))?;
        if m.subject.as_str() != subject(record.run) {
            return Err(corrupt(format!(
                "run {}'s record under subject {}",
                record.run, m.subject
            )));
        }
        Ok(Some(record))
    }

    /// The run's records from the stream, in order, each with its stream sequence.
    pub async fn read(&self, run: RunId) -> Result<Vec<(u64, Record)>, ReplicaError> {
        let stream = self
            .js
            .get_stream_no_info(&self.cfg.stream)
            .await
            .map_err(|e| ReplicaError::Unavailable(e.to_string()))?;
        let subject = subject(run);
        let mut out = Vec::new();
        let mut from = 1;
        loop {
            let m = match stream
                .get_first_raw_message_by_subject(&subject, from)
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(out),
                Err(e) => return Err(ReplicaError::Unavailable(e.to_string())),
            };
            let record = codec::decode(&m.payload).map_err(|e| ReplicaError::Corrupt {
                run,
                sequence: m.sequence,
                reason: e.to_string(),
            })?;
            if record.run != run || record.seq != out.len() as u64 {
                return Err(ReplicaError::Corrupt {
                    run,
                    sequence: m.sequence,
                    reason: format!(
                        "holds run {} seq {} where seq {} was next",
                        record.run,
                        record.seq,
                        out.len()
                    ),
                });
            }
            from = m.sequence + 1;
            out.push((m.sequence, record));
        }
    }
}

/// A publish's failure, but a wrong last sequence (which `append` looks into).
fn publish_error(kind: PublishErrorKind, what: String) -> ReplicaError {
    match kind {
        PublishErrorKind::TimedOut
        | PublishErrorKind::BrokenPipe
        | PublishErrorKind::StreamNotFound
        | PublishErrorKind::MaxAckPending => ReplicaError::Unavailable(what),
        _ => ReplicaError::Other(what),
    }
}
