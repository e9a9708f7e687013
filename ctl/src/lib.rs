//! upgradectl's library: a small HTTP/1.1 client for the daemon's Unix-socket API.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;

pub mod watch;

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
        body: Option<&Value>,
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
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
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

    /// A JSON request; non-2xx answers become [`ClientError::Refused`] with the daemon's words.
    pub async fn json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
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
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
            ClientError::BadResponse(String::from_utf8_lossy(&bytes).chars().take(200).collect())
        })?;
        if !status.is_success() {
            return Err(refused(status, &value));
        }
        Ok(value)
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
            let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            return Err(refused(status, &value));
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

fn refused(status: StatusCode, value: &Value) -> ClientError {
    ClientError::Refused {
        status: status.as_u16(),
        message: value
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no reason given")
            .to_string(),
    }
}
