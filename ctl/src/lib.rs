//! upgradectl's library: a typed HTTP/1.1 client for the daemon's Unix-socket API (the types
//! are [`upgraded_api`]'s, shared with the daemon), and the renderers that turn its answers
//! into text. The verbs themselves live in the binary (`src/verbs/`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::UnixStream;
use upgraded_api::{
    ErrorBody, EventsQuery, ReasonRequest, RollbackRequest, RollbackResponse, RunAck, RunEntry,
    StartRequest, StartResponse, Status, path,
};
use upgraded_events::state::RunSummary;
use upgraded_events::{Record, RunId};

pub mod datadir;
/// The export file's format lives in the core (`upgraded_events::export`).
pub use upgraded_events::export;
pub mod render;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach upgraded at {socket} ({cause}): is the daemon running? Start it with \
         `upgraded`, or point at its socket with --socket or UPGRADED_SOCKET"
    )]
    Unreachable {
        socket: PathBuf,
        cause: std::io::Error,
    },
    #[error("talking to upgraded: {0}")]
    Http(String),
    #[error("upgraded refused: {message} (HTTP {status})")]
    Refused { status: u16, message: String },
    #[error("upgraded sent a response that is not JSON: {0}")]
    BadResponse(String),
    #[error(
        "upgraded sent an answer upgradectl does not understand ({0}); are the daemon and \
         upgradectl the same version?"
    )]
    Decode(String),
    #[error(
        "upgraded at {socket} did not answer within {} s; it may be busy or hung (wait \
         longer with --timeout SECS)",
        .after.as_secs_f64()
    )]
    Timeout { socket: PathBuf, after: Duration },
}

/// How long a request may take unless told otherwise (streams that follow a run are exempt
/// once their answer has begun).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the daemon listens unless told otherwise.
pub fn default_socket() -> PathBuf {
    if let Some(s) = std::env::var_os("UPGRADED_SOCKET") {
        return PathBuf::from(s);
    }
    PathBuf::from("/run/upgraded/api.sock")
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Client {
            socket: socket.to_path_buf(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The bound on connecting and on each request (a followed stream's body is exempt).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    async fn bounded<T>(
        &self,
        f: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(self.timeout, f)
            .await
            .map_err(|_| ClientError::Timeout {
                socket: self.socket.clone(),
                after: self.timeout,
            })?
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|cause| ClientError::Unreachable {
                    socket: self.socket.clone(),
                    cause,
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Http(e.to_string()))?;
        tokio::spawn(conn);
        let bytes = body.unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "upgraded")
            .header("content-type", "application/json")
            .body(Full::new(bytes))
            .map_err(|e| ClientError::Http(e.to_string()))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Http(e.to_string()))
    }

    /// A request whose answer is JSON; non-2xx answers become [`ClientError::Refused`] with
    /// the daemon's words.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ClientError::Http(e.to_string()))?
            .map(Bytes::from);
        let (status, bytes) = self
            .bounded(async {
                let resp = self.send(method, path, body).await?;
                let status = resp.status();
                let bytes = resp
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| ClientError::Http(e.to_string()))?
                    .to_bytes();
                Ok((status, bytes))
            })
            .await?;
        if !status.is_success() {
            return Err(refused(status, &bytes));
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
            ClientError::BadResponse(String::from_utf8_lossy(&bytes).chars().take(200).collect())
        })?;
        serde_json::from_value(value).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Any request, its answer as untyped JSON: for tests and tools that probe the API itself
    /// (upgradectl's verbs use the typed calls below).
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        self.call(method, path, body).await
    }

    /// `GET /v1/status`: the active (or last) run.
    pub async fn status(&self) -> Result<Option<RunSummary>, ClientError> {
        Ok(self.status_of_instance().await?.active)
    }

    /// The active run and, under `--ha`, the instance that answered and its lease.
    pub async fn status_of_instance(&self) -> Result<Status, ClientError> {
        self.call(Method::GET, path::STATUS, None::<&()>).await
    }

    /// Plans an upgrade and starts it (or only plans it: `dry_run`).
    pub async fn start(&self, req: &StartRequest) -> Result<StartResponse, ClientError> {
        self.call(Method::POST, path::RUNS, Some(req)).await
    }

    /// Plans a rollback of a finished run and, unless `plan_only`, starts it.
    pub async fn rollback(&self, req: &RollbackRequest) -> Result<RollbackResponse, ClientError> {
        self.call(Method::POST, path::ROLLBACKS, Some(req)).await
    }

    pub async fn pause(&self, reason: &str) -> Result<RunAck, ClientError> {
        let body = ReasonRequest {
            reason: reason.to_string(),
        };
        self.call(Method::POST, path::PAUSE, Some(&body)).await
    }

    /// `upgradectl notify test SINK`.
    pub async fn notify_test(
        &self,
        sink: &str,
    ) -> Result<upgraded_api::NotifyTestResponse, ClientError> {
        let body = upgraded_api::NotifyTestRequest {
            sink: sink.to_string(),
        };
        self.call(Method::POST, path::NOTIFY_TEST, Some(&body))
            .await
    }

    pub async fn resume(&self) -> Result<RunAck, ClientError> {
        self.call(Method::POST, path::RESUME, None::<&()>).await
    }

    pub async fn abort(&self, reason: &str) -> Result<RunAck, ClientError> {
        let body = ReasonRequest {
            reason: reason.to_string(),
        };
        self.call(Method::POST, path::ABORT, Some(&body)).await
    }

    /// Every run in the log, oldest first.
    pub async fn runs(&self) -> Result<Vec<RunEntry>, ClientError> {
        self.call(Method::GET, path::RUNS, None::<&()>).await
    }

    /// One run's state, folded from its records.
    pub async fn run(&self, run: RunId) -> Result<RunSummary, ClientError> {
        self.call(Method::GET, &path::run(run), None::<&()>).await
    }

    /// A run's records from `q.from`, following live ones when `q.follow`; `each` returns
    /// false to stop early.
    pub async fn records(
        &self,
        run: RunId,
        q: EventsQuery,
        mut each: impl FnMut(Record) -> bool,
    ) -> Result<(), ClientError> {
        let mut bad = None;
        self.lines(&path::events(run, &q), |l| {
            match serde_json::from_str::<Record>(l) {
                Ok(r) => each(r),
                Err(e) => {
                    bad = Some(ClientError::Decode(format!("a record: {e}")));
                    false
                }
            }
        })
        .await?;
        bad.map_or(Ok(()), Err)
    }

    /// Every record of a run so far.
    pub async fn all_records(&self, run: RunId) -> Result<Vec<Record>, ClientError> {
        let mut out = Vec::new();
        self.records(run, EventsQuery::default(), |r| {
            out.push(r);
            true
        })
        .await?;
        Ok(out)
    }

    /// Streams JSON lines; `each` returns false to stop early.
    pub async fn lines(
        &self,
        path: &str,
        mut each: impl FnMut(&str) -> bool,
    ) -> Result<(), ClientError> {
        let resp = self.bounded(self.send(Method::GET, path, None)).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| ClientError::Http(e.to_string()))?
                .to_bytes();
            return Err(refused(status, &bytes));
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Http(e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                buf.extend_from_slice(data);
                while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if !each(String::from_utf8_lossy(&line[..line.len() - 1]).as_ref()) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

fn refused(status: StatusCode, body: &[u8]) -> ClientError {
    ClientError::Refused {
        status: status.as_u16(),
        message: serde_json::from_slice::<ErrorBody>(body)
            .map_or_else(|_| "no reason given".to_string(), |b| b.error),
    }
}

/// Writes a new file 0600 (it holds cluster data), never over an existing one, and syncs it.
pub fn write_private(to: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    f.write_all(bytes)?;
    f.sync_all()
}
