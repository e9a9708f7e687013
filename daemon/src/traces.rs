//! Traces to an OpenTelemetry collector, from the log: a consumer like the NATS outbox.
//!
//! The spans are the core's ([`upgraded_events::trace`]): derived from the records with ids
//! derived from the run, so a span is the same whoever sends it and whenever. This task folds
//! each run's records from its first, sends the spans finished by records past its cursor
//! (`<data dir>/traces-cursor.json`), and moves the cursor once the collector accepted them.
//! After a restart it folds again what it had sent, silently, and goes on from the cursor:
//! nothing is sent twice, nothing is lost. A collector that is down costs retries with
//! backoff and a rising failure counter, never a step of the upgrade. Under `--ha` only the
//! instance that acts sends, from the cursor the instances share (`cursor::Book`).
//!
//! The daemon's own `run` span (the process that drove a run) goes the same way, through
//! `tracing-opentelemetry`, with a link to the run's trace: a restarted daemon's work shows
//! up next to the run it resumed.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use opentelemetry_sdk::trace::SpanData;
use tokio::sync::mpsc;
use upgraded_events::RunId;
use upgraded_events::trace::{Span, TraceContext, TraceFold};
use upgraded_otlp as otlp;

use crate::cursor::{Book, CursorError, Turn};
use crate::log::EventLog;
use crate::stats::Consumer;

#[derive(Debug, Clone)]
pub struct TraceConfig {
    /// The collector's OTLP/HTTP endpoint (`http://127.0.0.1:4318`; `/v1/traces` is added).
    pub endpoint: String,
    pub ctx: TraceContext,
    pub cursor_path: PathBuf,
    /// Per request.
    pub timeout: Duration,
    /// Under `--ha`: send only while this instance acts, from the shared cursors.
    pub turn: Option<Turn>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Cursor(#[from] CursorError),
    #[error(transparent)]
    Otlp(#[from] otlp::OtlpError),
    #[error("reading the event log: {0}")]
    Log(#[from] crate::log::LogError),
}

/// Spans per request.
const BATCH: usize = 256;
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// One run's fold and how far it has read.
#[derive(Debug)]
struct Folded {
    fold: TraceFold,
    next: u64,
}

#[derive(Debug)]
pub struct Traces<L> {
    log: L,
    cfg: TraceConfig,
    book: Book,
    exporter: otlp::SpanExporter,
    folds: HashMap<RunId, Folded>,
    stats: Consumer,
    /// The daemon's own spans (`tracing-opentelemetry`), best effort.
    own: mpsc::Receiver<SpanData>,
}

/// A span processor that hands the daemon's own finished spans to the trace task (the SDK's
/// batch processor runs its own thread without a tokio reactor, where our client cannot).
#[derive(Debug)]
pub struct ToTask(mpsc::Sender<SpanData>);

impl opentelemetry_sdk::trace::SpanProcessor for ToTask {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        // A full queue drops the span: the daemon's own spans never hold anything up.
        let _ = self.0.try_send(span);
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

/// The tracer provider for the daemon's own spans, and where they arrive.
pub fn own_spans() -> (
    opentelemetry_sdk::trace::SdkTracerProvider,
    mpsc::Receiver<SpanData>,
) {
    let (tx, rx) = mpsc::channel(1024);
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(ToTask(tx))
        .with_resource(otlp::resource())
        .build();
    (provider, rx)
}

/// Links the current tracing span (the engine's `run` span) to the run's trace.
pub fn link_to_run(span: &tracing::Span, run: RunId) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    span.add_link(otlp::context(
        upgraded_events::trace::trace_id(run),
        upgraded_events::trace::run_span_id(run),
    ));
}

impl<L: EventLog + Clone> Traces<L> {
    pub fn new(
        log: L,
        cfg: TraceConfig,
        own: mpsc::Receiver<SpanData>,
    ) -> Result<Traces<L>, TraceError> {
        let book = Book::open(cfg.cursor_path.clone(), "traces", cfg.turn.clone())?;
        let exporter = otlp::exporter(&cfg.endpoint, cfg.timeout)?;
        Ok(Traces {
            log,
            cfg,
            book,
            exporter,
            folds: HashMap::new(),
            stats: Consumer::new("traces"),
            own,
        })
    }

    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            if let Err(e) = self.run().await {
                tracing::error!(error = %e, "the trace exporter stopped; the runs are still in the log");
            }
        })
    }

    /// The spans of `run`'s records past the cursor, each with the seq that finished it.
    fn pending(&mut self, run: RunId) -> Result<(Vec<(u64, Span)>, u64), TraceError> {
        let from = self.book.next(run);
        let start = match self.folds.get(&run) {
            Some(f) => f.next,
            None => {
                if self.log.read(run, from)?.is_empty() {
                    return Ok((Vec::new(), from));
                }
                0
            }
        };
        let records = self.log.read(run, start)?;
        let f = self.folds.entry(run).or_insert_with(|| Folded {
            fold: TraceFold::new(self.cfg.ctx.clone()),
            next: 0,
        });
        let mut out = Vec::new();
        for r in &records {
            let spans = f.fold.apply(r);
            f.next = r.seq + 1;
            // What the cursor says was sent is folded again and not sent.
            if r.seq >= from {
                out.extend(spans.into_iter().map(|s| (r.seq, s)));
            }
        }
        Ok((out, f.next.max(from)))
    }

    /// Sends until the collector takes them (retrying with backoff; the run goes on); false
    /// when it gave up because this instance stopped acting (`--ha`).
    async fn deliver(&mut self, spans: &[Span]) -> bool {
        let mut backoff = crate::backoff::Backoff::new(BACKOFF_START, BACKOFF_MAX);
        let mut warned = false;
        loop {
            match otlp::send(&self.exporter, &self.cfg.endpoint, spans).await {
                Ok(()) => {
                    self.stats.delivered(spans.len() as u64);
                    if warned {
                        tracing::info!(endpoint = %self.cfg.endpoint, "the collector takes spans again");
                    }
                    return true;
                }
                Err(e) => {
                    self.stats.failed();
                    self.stats
                        .lag(crate::cursor::backlog(&self.log, self.book.cursor()));
                    if !warned || backoff.next_delay() >= BACKOFF_MAX {
                        tracing::warn!(error = %e, retry_in = ?backoff.next_delay(), "spans not accepted; the upgrade goes on, they wait");
                        warned = true;
                    }
                    // The daemon's own spans are not worth keeping while we wait.
                    while self.own.try_recv().is_ok() {}
                    backoff.wait().await;
                    if !self.book.holds() {
                        return false;
                    }
                }
            }
        }
    }

    async fn run(mut self) -> Result<(), TraceError> {
        let mut sub = self.log.subscribe();
        'pass: loop {
            if self.book.wait_turn().await? {
                self.folds.clear();
            }
            for run in self.log.runs()? {
                let (pending, end) = self.pending(run)?;
                self.stats.lag(end.saturating_sub(self.book.next(run)));
                for chunk in pending.chunks(BATCH) {
                    let spans: Vec<Span> = chunk.iter().map(|(_, s)| s.clone()).collect();
                    if !self.deliver(&spans).await {
                        self.folds.clear();
                        continue 'pass;
                    }
                    if let Some((seq, _)) = chunk.last() {
                        self.book.set(run, seq + 1).await?;
                    }
                }
                // Records that finished no span move the cursor too.
                self.book.set(run, end).await?;
                if let Some(f) = self.folds.get(&run)
                    && f.next == end
                    && crate::cursor::run_ended(&self.log, run, self.book.next(run))
                {
                    self.folds.remove(&run);
                }
            }
            self.stats.lag(0);
            let own: Vec<SpanData> = std::iter::from_fn(|| self.own.try_recv().ok()).collect();
            if !own.is_empty() {
                use opentelemetry_sdk::trace::SpanExporter as _;
                if self.exporter.export(own).await.is_err() {
                    self.stats.failed();
                }
            }
            // New records wake us; a missed wake-up costs at most a second.
            let _ = tokio::time::timeout(Duration::from_secs(1), sub.recv()).await;
            while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(5), sub.recv()).await {
            }
        }
    }
}
