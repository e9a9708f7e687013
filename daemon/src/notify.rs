//! Notifications to webhooks and Slack, from the log: one consumer per sink, like the NATS
//! outbox. What is worth a notice, what it says and how an answer is handled are the core's
//! (`upgraded_events::notify`); this module folds, posts and keeps each sink's cursor
//! (`<data dir>/notify-<sink>-cursor.json`), so a restart delivers from where it stopped
//! (at least once: receivers dedupe on the CloudEvents `id`, the record's id). Under `--ha`
//! only the instance that acts delivers, from the cursor the instances share
//! (`cursor::Book`).
//!
//! A sink that is down is retried with backoff (a 429's `Retry-After` honoured) while the
//! upgrade goes on; a sink that refuses a notice for good (another 4xx) has it dropped, and
//! the drop is written to `<data dir>/notify-<sink>-dropped.jsonl` and counted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use upgraded_events::notify::{Notice, NoticeFold, Sink, SinkKind, Verdict};
use upgraded_events::{Record, RunId};

use crate::cursor::{Book, CursorError, Turn};
use crate::log::EventLog;
use crate::stats::Consumer;

/// What every sink shares.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub cluster: String,
    /// A run's HTML timeline, with `{run}` for its id.
    pub timeline_url: String,
    /// How people reach this daemon: `upgradectl` (with `--socket` when not the default).
    pub ctl: String,
    pub data_dir: PathBuf,
    /// Per request.
    pub timeout: Duration,
    /// Slack: at least this long between two messages to one sink.
    pub slack_interval: Duration,
    /// Under `--ha`: deliver only while this instance acts, from the shared cursors.
    pub turn: Option<Turn>,
}

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notification sink {sink}: {problem}")]
    Secret { sink: String, problem: String },
    #[error(transparent)]
    Cursor(#[from] CursorError),
    #[error("reading the event log: {0}")]
    Log(#[from] crate::log::LogError),
    #[error("the HTTPS client: {0}")]
    Client(#[from] upgraded_otlp::OtlpError),
    #[error("no notification sink {0:?} in the daemon's policy")]
    NoSink(String),
}

type HttpClient = Client<upgraded_otlp::Connector, Full<Bytes>>;

/// The sinks, ready to post (the daemon keeps one for `upgradectl notify test`).
#[derive(Debug)]
pub struct Notify {
    cfg: NotifyConfig,
    sinks: Vec<(Sink, Option<Vec<u8>>)>,
    client: HttpClient,
}

/// A sink's answer to one post.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Answer {
    /// None: no answer (connection refused, timeout).
    pub status: Option<u16>,
    pub retry_after_secs: Option<u64>,
    /// The answer's body (at most 1 KiB) or what went wrong.
    pub detail: String,
}

impl Notify {
    /// Reads every webhook's key (a missing file or variable stops the daemon here, before
    /// anything is sent unsigned).
    pub fn new(cfg: NotifyConfig, sinks: &[Sink]) -> Result<Notify, NotifyError> {
        let mut out = Vec::new();
        for s in sinks {
            let key = match &s.secret {
                None => None,
                Some(upgraded_events::notify::Secret::File(f)) => {
                    let text = std::fs::read(f).map_err(|e| NotifyError::Secret {
                        sink: s.name.clone(),
                        problem: format!("reading secretFile {f}: {e}"),
                    })?;
                    Some(trim(text))
                }
                Some(upgraded_events::notify::Secret::Env(v)) => {
                    let text = std::env::var(v).map_err(|_| NotifyError::Secret {
                        sink: s.name.clone(),
                        problem: format!("secretEnv {v} is not set in the daemon's environment"),
                    })?;
                    Some(trim(text.into_bytes()))
                }
            };
            if key.as_ref().is_some_and(Vec::is_empty) {
                return Err(NotifyError::Secret {
                    sink: s.name.clone(),
                    problem: "the key is empty".into(),
                });
            }
            out.push((s.clone(), key));
        }
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(upgraded_otlp::connector()?);
        Ok(Notify {
            cfg,
            sinks: out,
            client,
        })
    }

    /// Starts one consumer per sink.
    pub fn spawn<L: EventLog + Clone>(self: &Arc<Self>, log: &L) -> Result<(), NotifyError> {
        for (i, (sink, _)) in self.sinks.iter().enumerate() {
            let path = self
                .cfg
                .data_dir
                .join(format!("notify-{}-cursor.json", sink.name));
            let worker = Worker {
                log: log.clone(),
                notify: Arc::clone(self),
                sink: i,
                book: Book::open(
                    path,
                    &format!("notify-{}", sink.name),
                    self.cfg.turn.clone(),
                )?,
                folds: HashMap::new(),
                stats: Consumer::new(format!("notify-{}", sink.name)),
                last_sent: None,
            };
            let name = sink.name.clone();
            tokio::spawn(async move {
                if let Err(e) = worker.run().await {
                    tracing::error!(sink = %name, error = %e, "a notification sink stopped; the runs are still in the log");
                }
            });
        }
        Ok(())
    }

    /// `upgradectl notify test SINK`: one synthetic notice, sent once, and the answer.
    pub async fn test(
        &self,
        name: &str,
        by: &str,
        now: upgraded_events::Timestamp,
    ) -> Result<(String, Answer), NotifyError> {
        let i = self
            .sinks
            .iter()
            .position(|(s, _)| s.name == name)
            .ok_or_else(|| NotifyError::NoSink(name.to_string()))?;
        let notice = Notice {
            class: upgraded_events::notify::Class::Run,
            what: "test",
            record: Record {
                run: RunId::nil(),
                seq: now.0.max(0) as u64,
                at: now,
                epoch: 0,
                event: upgraded_events::Event::RunPaused {
                    by: upgraded_events::Actor {
                        uid: None,
                        name: by.to_string(),
                    },
                    reason: "a test notification (upgradectl notify test); nothing happened".into(),
                },
            },
            node: None,
            text: format!(
                "{}: a test notification from upgraded, sent by {by} (`upgradectl notify test {name}`).",
                self.cfg.cluster
            ),
        };
        let ty = notice.event_type();
        Ok((ty, self.post(i, &[&notice]).await))
    }

    /// Posts `notices` to sink `i` (a webhook takes one; Slack one message for them all).
    async fn post(&self, i: usize, notices: &[&Notice]) -> Answer {
        let (sink, key) = &self.sinks[i];
        let (body, content_type) = match sink.kind {
            SinkKind::Webhook => {
                let Some(n) = notices.first() else {
                    return Answer {
                        status: Some(204),
                        retry_after_secs: None,
                        detail: String::new(),
                    };
                };
                (
                    serde_json::to_vec(&n.cloudevent(&self.cfg.cluster)).unwrap_or_default(),
                    "application/cloudevents+json",
                )
            }
            SinkKind::Slack => {
                let owned: Vec<Notice> = notices.iter().map(|n| (*n).clone()).collect();
                let text = upgraded_events::notify::slack_messages(&owned)
                    .into_iter()
                    .map(|(_, t)| t)
                    .collect::<Vec<_>>()
                    .join("\n");
                (
                    serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap_or_default(),
                    "application/json",
                )
            }
        };
        let mut req = hyper::Request::post(sink.url.as_str())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(
                hyper::header::USER_AGENT,
                concat!("upgraded/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(key) = key {
            req = req.header(
                "X-Upgraded-Signature",
                format!("sha256={}", sign(key, &body)),
            );
        }
        let req = match req.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(e) => {
                return Answer {
                    status: Some(400),
                    retry_after_secs: None,
                    detail: format!("the request cannot be built: {e}"),
                };
            }
        };
        let sent = tokio::time::timeout(self.cfg.timeout, async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            let detail = String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned();
            Ok::<_, String>(Answer {
                status: Some(status),
                retry_after_secs: retry_after,
                detail,
            })
        })
        .await;
        match sent {
            Ok(Ok(a)) => a,
            Ok(Err(e)) => Answer {
                status: None,
                retry_after_secs: None,
                detail: e,
            },
            Err(_) => Answer {
                status: None,
                retry_after_secs: None,
                detail: format!("no answer within {:?}", self.cfg.timeout),
            },
        }
    }
}

fn trim(mut key: Vec<u8>) -> Vec<u8> {
    while key.last().is_some_and(|b| b.is_ascii_whitespace()) {
        key.pop();
    }
    key
}

/// HMAC-SHA256 of `body` under `key`, in lowercase hex.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    use hmac::Mac;
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Debug)]
struct Folded {
    fold: NoticeFold,
    next: u64,
    /// Notices folded but not delivered yet, in seq order.
    queue: Vec<Notice>,
}

struct Worker<L> {
    log: L,
    notify: Arc<Notify>,
    sink: usize,
    book: Book,
    folds: HashMap<RunId, Folded>,
    stats: Consumer,
    last_sent: Option<Instant>,
}

impl<L: EventLog + Clone> Worker<L> {
    fn sink(&self) -> &Sink {
        &self.notify.sinks[self.sink].0
    }

    /// Folds `run`'s new records; notices of records before the cursor were delivered.
    fn fold(&mut self, run: RunId) -> Result<u64, NotifyError> {
        let from = self.book.next(run);
        if !self.folds.contains_key(&run) && self.log.read(run, from)?.is_empty() {
            return Ok(from);
        }
        let cfg = &self.notify.cfg;
        let classes = self.notify.sinks[self.sink].0.classes.clone();
        let f = self.folds.entry(run).or_insert_with(|| Folded {
            fold: NoticeFold::new(&cfg.cluster, &cfg.timeline_url, &cfg.ctl),
            next: 0,
            queue: Vec::new(),
        });
        for r in self.log.read(run, f.next)? {
            let notices = f.fold.apply(&r);
            f.next = r.seq + 1;
            if r.seq >= from {
                f.queue
                    .extend(notices.into_iter().filter(|n| classes.contains(&n.class)));
            }
        }
        Ok(f.next.max(from))
    }

    async fn save(&mut self, run: RunId, next: u64) -> Result<(), NotifyError> {
        Ok(self.book.set(run, next).await?)
    }

    /// Posts until delivered or dropped; false when it gave up because this instance
    /// stopped acting (`--ha`): then nothing moves, the next leader delivers it.
    async fn deliver(&mut self, notices: &[Notice]) -> bool {
        let refs: Vec<&Notice> = notices.iter().collect();
        let mut failures = 0u32;
        loop {
            let a = self.notify.post(self.sink, &refs).await;
            self.last_sent = Some(Instant::now());
            match upgraded_events::notify::verdict(a.status, a.retry_after_secs, failures) {
                Verdict::Delivered => {
                    self.stats.delivered(1);
                    return true;
                }
                Verdict::Drop => {
                    self.stats.failed();
                    self.dropped(notices, &a);
                    return true;
                }
                Verdict::Retry(ms) => {
                    self.stats.failed();
                    self.stats
                        .lag(crate::cursor::backlog(&self.log, self.book.cursor()));
                    if failures.is_multiple_of(10) {
                        tracing::warn!(sink = %self.sink().name, status = ?a.status, detail = %a.detail, retry_in_ms = ms, "notification not delivered; the upgrade goes on, it waits");
                    }
                    failures = failures.saturating_add(1);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    if !self.book.holds() {
                        return false;
                    }
                }
            }
        }
    }

    fn dropped(&self, notices: &[Notice], a: &Answer) {
        let path = self
            .notify
            .cfg
            .data_dir
            .join(format!("notify-{}-dropped.jsonl", self.sink().name));
        tracing::error!(sink = %self.sink().name, status = ?a.status, detail = %a.detail, file = %path.display(), "the sink refused a notification for good; dropped");
        let mut lines = String::new();
        for n in notices {
            let line = serde_json::json!({
                "id": n.id(),
                "type": n.event_type(),
                "status": a.status,
                "answer": a.detail,
            });
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        use std::io::Write;
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(lines.as_bytes()));
        if let Err(e) = written {
            tracing::error!(file = %path.display(), error = %e, "cannot record the dropped notification");
        }
    }

    async fn run(mut self) -> Result<(), NotifyError> {
        let mut sub = self.log.subscribe();
        let slack = self.sink().kind == SinkKind::Slack;
        let interval = self.notify.cfg.slack_interval;
        'pass: loop {
            if self.book.wait_turn().await? {
                self.folds.clear();
            }
            for run in self.log.runs()? {
                loop {
                    let mut end = self.fold(run)?;
                    let queued = self.folds.get(&run).map_or(0, |f| f.queue.len());
                    self.stats.lag(end.saturating_sub(self.book.next(run)));
                    if queued == 0 {
                        self.save(run, end).await?;
                        break;
                    }
                    if slack {
                        // One message a second: what piles up meanwhile goes in the next.
                        if let Some(t) = self.last_sent {
                            let wait = interval.saturating_sub(t.elapsed());
                            if !wait.is_zero() {
                                tokio::time::sleep(wait).await;
                                end = self.fold(run)?;
                            }
                        }
                    }
                    let Some(f) = self.folds.get_mut(&run) else {
                        break;
                    };
                    let take = if slack {
                        let msgs = upgraded_events::notify::slack_messages(&f.queue);
                        let upto = msgs.first().map_or(0, |m| m.0);
                        f.queue.iter().take_while(|n| n.record.seq <= upto).count()
                    } else {
                        1
                    };
                    let batch: Vec<Notice> = f.queue.drain(..take.max(1)).collect();
                    if !self.deliver(&batch).await {
                        // Not this instance's turn any more: what it folded is dropped.
                        self.folds.clear();
                        continue 'pass;
                    }
                    let next_queued = self
                        .folds
                        .get(&run)
                        .and_then(|f| f.queue.first())
                        .map_or(end, |n| n.record.seq);
                    self.save(run, next_queued).await?;
                }
                if let Some(f) = self.folds.get(&run)
                    && f.queue.is_empty()
                    && crate::cursor::run_ended(&self.log, run, self.book.next(run))
                {
                    self.folds.remove(&run);
                }
            }
            self.stats.lag(0);
            let _ = tokio::time::timeout(Duration::from_secs(1), sub.recv()).await;
            while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(5), sub.recv()).await {
            }
        }
    }
}
