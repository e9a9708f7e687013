//! Progress to NATS JetStream, from the log: an outbox.
//!
//! A publisher task reads each run's records from a persisted cursor and publishes them in
//! order, one at a time, to `upgrades.<cluster>.<run>.<node>.<event>` (tokens escaped by
//! [`token`]; run-level events use the node token `_run`), with `Nats-Msg-Id` =
//! `<run>:<seq>` and the record as JSON. The cursor moves only when the stream acknowledges a
//! record; a timeout is "unknown", so the same record is sent again with the same id and the
//! stream's duplicate window drops the copy. The upgrade never waits for any of this: a NATS
//! outage only grows the backlog, which is delivered in order when NATS is back.

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, stream};

use crate::backoff::Backoff;
use upgraded_events::Record;

use crate::log::EventLog;

/// The stream the daemon creates when it is missing (an existing one is used as it is).
pub const DEFAULT_STREAM: &str = "UPGRADES";
pub const SUBJECT_ROOT: &str = "upgrades";
/// The node token of run-level events (escapes are `_` + two hex digits, so it cannot
/// collide with an escaped name).
pub const RUN_TOKEN: &str = "_run";

#[derive(Debug, Clone)]
pub struct OutboxConfig {
    pub url: String,
    /// The cluster's name in subjects.
    pub cluster: String,
    pub stream: String,
    /// How long a publish waits for the stream's acknowledgement before it is retried.
    pub ack_timeout: Duration,
    /// The cursor file (`<data dir>/outbox-cursor.json`).
    pub cursor_path: PathBuf,
    /// The duplicate window of a stream the daemon creates: longer than any outage after
    /// which a record might be sent twice (the cursor is saved right after each ack).
    pub duplicate_window: Duration,
    /// Under `--ha`: publish only while this instance acts, from the shared cursors.
    pub turn: Option<crate::cursor::Turn>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Cursor(#[from] crate::cursor::CursorError),
    #[error("reading the event log: {0}")]
    Log(#[from] crate::log::LogError),
}

/// A subject token: ASCII letters, digits and `-` as they are; every other byte as `_XX`.
/// Reversible, and never `.`, `*`, `>` or whitespace.
pub fn token(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    if out.is_empty() { "_".into() } else { out }
}

pub fn subject(cluster: &str, r: &Record) -> String {
    let node = r
        .event
        .node()
        .map_or_else(|| RUN_TOKEN.to_string(), |n| token(n.as_str()));
    format!(
        "{SUBJECT_ROOT}.{}.{}.{node}.{}",
        token(cluster),
        r.run,
        r.event.kind().name()
    )
}

/// The message id JetStream de-duplicates on.
pub fn msg_id(r: &Record) -> String {
    format!("{}:{}", r.run, r.seq)
}

pub use crate::cursor::Cursor;

/// The publisher. Runs until the process ends.
#[derive(Debug)]
pub struct Outbox<L> {
    log: L,
    cfg: OutboxConfig,
    book: crate::cursor::Book,
    stats: crate::stats::Consumer,
}

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// `--nats-url`: one server's URL, or several separated by commas (the servers of a
/// cluster; the client fails over between them).
pub fn server_addrs(url: &str) -> Result<Vec<async_nats::ServerAddr>, String> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.parse().map_err(|e| format!("{u:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|a| {
            if a.is_empty() {
                Err("no URL given".into())
            } else {
                Ok(a)
            }
        })
}

impl<L: EventLog + Clone> Outbox<L> {
    pub fn new(log: L, cfg: OutboxConfig) -> Result<Outbox<L>, OutboxError> {
        let book = crate::cursor::Book::open(cfg.cursor_path.clone(), "outbox", cfg.turn.clone())?;
        Ok(Outbox {
            log,
            cfg,
            book,
            stats: crate::stats::Consumer::new("nats"),
        })
    }

    /// Starts the publisher in the background.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if let Err(e) = self.run().await {
                tracing::error!(error = %e, "the NATS outbox stopped; progress is still in the log");
            }
        })
    }

    async fn connect(&self) -> jetstream::Context {
        let opts = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5));
        let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
        loop {
            let addrs = match server_addrs(&self.cfg.url) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(url = %self.cfg.url, error = %e, "--nats-url is not a NATS URL; progress is not published");
                    std::future::pending::<()>().await;
                    continue;
                }
            };
            match opts.clone().connect(addrs.as_slice()).await {
                Ok(client) => {
                    let mut js = jetstream::new(client);
                    js.set_timeout(self.cfg.ack_timeout);
                    return js;
                }
                Err(e) => {
                    tracing::warn!(url = %self.cfg.url, error = %e, "NATS not reachable; the upgrade goes on, progress waits");
                    backoff.wait().await;
                }
            }
        }
    }

    async fn ensure_stream(&self, js: &jetstream::Context) -> Result<(), async_nats::Error> {
        js.get_or_create_stream(stream::Config {
            name: self.cfg.stream.clone(),
            subjects: vec![format!("{SUBJECT_ROOT}.>")],
            duplicate_window: self.cfg.duplicate_window,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
        Ok(())
    }

    /// Publishes one record until the stream acknowledges it (a duplicate ack counts); false
    /// when it gave up because this instance stopped acting (`--ha`).
    async fn publish(&self, js: &jetstream::Context, r: &Record, stream_ready: &mut bool) -> bool {
        let subject = subject(&self.cfg.cluster, r);
        let id = msg_id(r);
        let payload = match serde_json::to_vec(r) {
            Ok(p) => p,
            Err(e) => format!(
                "{{\"run\":\"{}\",\"seq\":{},\"error\":\"{e}\"}}",
                r.run, r.seq
            )
            .into_bytes(),
        };
        let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
        let mut lost = false;
        loop {
            if !*stream_ready {
                match self.ensure_stream(js).await {
                    Ok(()) => {
                        *stream_ready = true;
                        if lost {
                            tracing::warn!(
                                stream = %self.cfg.stream,
                                "the stream was gone (deleted?) and is recreated; what was published \
                                 to it before is not sent again: stop the daemon, move {} away and \
                                 start it to publish every run again",
                                self.cfg.cursor_path.display()
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, stream = %self.cfg.stream, "JetStream stream not available yet");
                        backoff.wait().await;
                        if !self.book.holds() {
                            return false;
                        }
                        continue;
                    }
                }
            }
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", id.as_str());
            let sent = js
                .publish_with_headers(subject.clone(), headers, payload.clone().into())
                .await;
            let failed = match sent {
                Ok(ack) => match tokio::time::timeout(self.cfg.ack_timeout, ack).await {
                    Ok(Ok(_)) => return true,
                    Ok(Err(e)) => e,
                    Err(_) => PublishError::new(PublishErrorKind::TimedOut),
                },
                Err(e) => e,
            };
            // No stream answers for the subject (deleted, or never made): make it again.
            if failed.kind() == PublishErrorKind::StreamNotFound {
                *stream_ready = false;
                lost = true;
            }
            let problem = match failed.kind() {
                PublishErrorKind::TimedOut => {
                    "no acknowledgement in time (it may be stored: retrying with the same id)"
                        .to_string()
                }
                _ => failed.to_string(),
            };
            self.stats.failed();
            tracing::warn!(%id, %subject, %problem, "publish not acknowledged; retrying");
            backoff.wait().await;
            if !self.book.holds() {
                return false;
            }
        }
    }

    async fn run(mut self) -> Result<(), OutboxError> {
        let mut sub = self.log.subscribe();
        let js = self.connect().await;
        let mut stream_ready = false;
        'pass: loop {
            self.book.wait_turn().await?;
            for run in self.log.runs()? {
                let from = self.book.next(run);
                let records = self.log.read(run, from)?;
                let mut left = records.len() as u64;
                for r in records {
                    self.stats.lag(left);
                    if !self.publish(&js, &r, &mut stream_ready).await {
                        continue 'pass;
                    }
                    self.book.set(run, r.seq + 1).await?;
                    self.stats.delivered(1);
                    left -= 1;
                }
                self.stats.lag(0);
            }
            // New records wake us; a missed wake-up costs at most a second.
            let _ = tokio::time::timeout(Duration::from_secs(1), sub.recv()).await;
            while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(5), sub.recv()).await {
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use upgraded_events::{Event, RunId, Step, Timestamp};

    #[test]
    fn tokens_escape_everything_a_subject_cannot_hold() {
        assert_eq!(token("w-1"), "w-1");
        assert_eq!(token("node.example.com"), "node_2Eexample_2Ecom");
        assert_eq!(token("a b*c>d_e"), "a_20b_2Ac_3Ed_5Fe");
        assert_eq!(token(""), "_");
        assert_ne!(
            token("_run"),
            RUN_TOKEN,
            "an escaped name never equals the run token"
        );
        for s in ["w.1", "x*", ">", "tab\there", "ünï"] {
            let t = token(s);
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{t}"
            );
        }
    }

    #[test]
    fn subjects_and_ids() {
        let run = RunId::new();
        let r = Record {
            run,
            seq: 7,
            at: Timestamp(0),
            epoch: 0,
            event: Event::StepStarted {
                node: "r640-01.dc1".into(),
                step: Step::Cordon,
                attempt: 1,
            },
        };
        assert_eq!(
            subject("prod eu", &r),
            format!("upgrades.prod_20eu.{run}.r640-01_2Edc1.StepStarted")
        );
        assert_eq!(msg_id(&r), format!("{run}:7"));
        let started = Record {
            event: Event::RunStarted {
                by: upgraded_events::Actor::daemon(),
            },
            ..r
        };
        assert_eq!(
            subject("c", &started),
            format!("upgrades.c.{run}._run.RunStarted")
        );
    }
}
