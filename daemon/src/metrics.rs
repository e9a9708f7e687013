//! `/metrics`, `/healthz` and `/readyz` on TCP (Prometheus cannot scrape a Unix socket): the
//! log's metrics as the core folds them (`upgraded_events::metrics`), kept up to date from
//! the log's own publication, plus what only the running daemon knows (the active run's node
//! passes). A scrape reads; it never waits for the engine, and the engine never waits for it.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::broadcast;
use upgraded_events::RunId;
use upgraded_events::metrics::Metrics;

use crate::engine::Daemon;
use crate::log::EventLog;

/// What a scrape reads.
struct Shared<L: EventLog + Clone> {
    metrics: Mutex<Metrics>,
    daemon: Arc<Daemon<L>>,
    socket: PathBuf,
}

/// Folds every record of the log into the metrics, then each one the log publishes (a
/// record already folded, by its run's next seq, is skipped), and serves them on `addr`.
pub async fn serve<L: EventLog + Clone>(
    addr: SocketAddr,
    daemon: Arc<Daemon<L>>,
    socket: PathBuf,
) -> std::io::Result<()> {
    let log = daemon.log().clone();
    // Subscribed before the reading, so nothing falls between them.
    let mut sub = log.subscribe();
    // The whole log, read off the runtime's threads (it may be large).
    let (metrics, mut next) = tokio::task::spawn_blocking(move || {
        let mut metrics = Metrics::default();
        let mut next: HashMap<RunId, u64> = HashMap::new();
        for run in log.runs().map_err(std::io::Error::other)? {
            let records = log.read(run, 0).map_err(std::io::Error::other)?;
            for r in &records {
                metrics.apply(r);
            }
            next.insert(run, records.last().map_or(0, |r| r.seq + 1));
        }
        Ok::<_, std::io::Error>((metrics, next))
    })
    .await
    .map_err(std::io::Error::other)??;
    let shared = Arc::new(Shared {
        metrics: Mutex::new(metrics),
        daemon,
        socket,
    });
    let follower = Arc::clone(&shared);
    tokio::spawn(async move {
        loop {
            match sub.recv().await {
                Ok(r) => {
                    let want = next.entry(r.run).or_insert(0);
                    if r.seq >= *want {
                        *want = r.seq + 1;
                        follower
                            .metrics
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .apply(&r);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Catch up from storage, run by run.
                    let log = follower.daemon.log();
                    let Ok(runs) = log.runs() else { continue };
                    for run in runs {
                        let from = next.get(&run).copied().unwrap_or(0);
                        let Ok(records) = log.read(run, from) else {
                            continue;
                        };
                        let mut m = follower.metrics.lock().unwrap_or_else(|p| p.into_inner());
                        for r in &records {
                            m.apply(r);
                            next.insert(run, r.seq + 1);
                        }
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let app = Router::new()
        .route("/metrics", get(metrics_text::<L>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready::<L>))
        .with_state(shared);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    axum::serve(listener, app).await
}

async fn metrics_text<L: EventLog + Clone>(State(s): State<Arc<Shared<L>>>) -> impl IntoResponse {
    let mut passes: BTreeMap<String, u64> = BTreeMap::new();
    if let Some(summary) = s.daemon.status().borrow().as_ref() {
        for n in &summary.nodes {
            *passes.entry(n.phase.as_str().to_string()).or_default() += 1;
        }
    }
    let leader = s.daemon.ha().map(|h| (h.instance, h.acting));
    let process = crate::stats::snapshot(s.daemon.log().size_bytes(), leader);
    let text = s.metrics.lock().unwrap_or_else(|p| p.into_inner()).render(
        env!("CARGO_PKG_VERSION"),
        &passes,
        &process,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// Ready when the log answers and the API socket takes a connection.
async fn ready<L: EventLog + Clone>(State(s): State<Arc<Shared<L>>>) -> impl IntoResponse {
    if let Err(e) = s.daemon.log().runs() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("the log: {e}\n"));
    }
    if let Err(e) = tokio::net::UnixStream::connect(&s.socket).await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the API socket {}: {e}\n", s.socket.display()),
        );
    }
    (StatusCode::OK, "ready\n".to_string())
}
