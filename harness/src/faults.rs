//! Faults between the daemon and the sim's API server, on a schedule in virtual time: what a
//! Saturday night does to an upgrade (an etcd leader election, an apiserver being upgraded
//! by this very run). While a window is open, every request the daemon's kube client sends
//! meets its fault: the connection refused, a 500/503 (with or without `Retry-After`) or a
//! 429 as the apiserver writes them, or a hang until the window closes. Outside the windows
//! the sim answers. Each fault met is counted, by kind.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use hyper::{Request, Response};
use tower::ServiceExt;
use upgraded_daemon::ports::Clock;
use upgraded_events::Timestamp;

/// What a request meets while its window is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFault {
    /// The connection is refused (the apiserver's process is gone).
    Refused,
    /// The apiserver answers with `code` (500, 503, 429), with `Retry-After` when given.
    Status { code: u16, retry_after: Option<u32> },
    /// No answer until the window closes, then a refused connection.
    Hang,
}

impl ApiFault {
    pub fn kind(self) -> &'static str {
        match self {
            ApiFault::Refused => "api-refused",
            ApiFault::Status { code: 429, .. } => "api-429",
            ApiFault::Status {
                retry_after: Some(_),
                ..
            } => "api-5xx-retry-after",
            ApiFault::Status { .. } => "api-5xx",
            ApiFault::Hang => "api-hang",
        }
    }
}

/// A fault from `from` until `until` (virtual time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: Timestamp,
    pub until: Timestamp,
    pub fault: ApiFault,
}

/// The schedule, and what the daemon met of it.
#[derive(Debug, Default)]
pub struct ApiFaults {
    windows: Mutex<Vec<Window>>,
    met: Mutex<BTreeMap<&'static str, u64>>,
}

impl ApiFaults {
    pub fn new(windows: Vec<Window>) -> Arc<ApiFaults> {
        Arc::new(ApiFaults {
            windows: Mutex::new(windows),
            met: Mutex::default(),
        })
    }

    pub fn add(&self, w: Window) {
        self.windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(w);
    }

    /// The open window at `now` (the first scheduled, when several overlap).
    pub fn at(&self, now: Timestamp) -> Option<Window> {
        self.windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|w| w.from <= now && now < w.until)
            .copied()
    }

    /// Requests that met a fault, by kind.
    pub fn met(&self) -> BTreeMap<&'static str, u64> {
        self.met.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn count(&self, f: ApiFault) {
        *self
            .met
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(f.kind())
            .or_default() += 1;
    }
}

/// The kube client's transport in a harness with faults: the sim's router, or the fault.
#[derive(Clone)]
pub struct FaultyApi {
    pub router: axum::Router,
    pub faults: Arc<ApiFaults>,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for FaultyApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyApi").finish_non_exhaustive()
    }
}

fn refused() -> tower::BoxError {
    Box::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "connection refused (an injected fault)",
    ))
}

/// The apiserver's own answer for `code` (a `Status` object).
fn status(code: u16, retry_after: Option<u32>) -> Response<axum::body::Body> {
    let reason = match code {
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        _ => "InternalError",
    };
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("an injected fault: {code}"), "reason": reason, "code": code,
    });
    let mut b = Response::builder()
        .status(code)
        .header("content-type", "application/json");
    if let Some(s) = retry_after {
        b = b.header("retry-after", s.to_string());
    }
    b.body(axum::body::Body::from(body.to_string()))
        .unwrap_or_else(|_| Response::new(axum::body::Body::empty()))
}

impl<B> tower::Service<Request<B>> for FaultyApi
where
    B: axum::body::HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tower::BoxError>,
{
    type Response = Response<axum::body::Body>;
    type Error = tower::BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            match me.faults.at(me.clock.now()) {
                None => Ok(me
                    .router
                    .oneshot(req.map(axum::body::Body::new))
                    .await
                    .map_err(|e| -> tower::BoxError { Box::new(e) })?),
                Some(w) => {
                    me.faults.count(w.fault);
                    match w.fault {
                        ApiFault::Refused => Err(refused()),
                        ApiFault::Status { code, retry_after } => Ok(status(code, retry_after)),
                        ApiFault::Hang => {
                            me.clock.sleep_until(w.until).await;
                            Err(refused())
                        }
                    }
                }
            }
        })
    }
}
