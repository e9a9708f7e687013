//! An HTTP receiver on loopback for what the daemon sends out (OTLP spans, webhooks, Slack
//! messages): it keeps every request and answers with a script of statuses (then 200).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};

#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// The status it was answered with.
    pub status: u16,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Request>>>,
}

/// One scripted answer: a status and its headers (`Retry-After`).
pub type Answer = (u16, Vec<(&'static str, String)>);

impl Receiver {
    /// Answers the first requests with `script`, every later one with 200.
    pub async fn start(script: Vec<Answer>) -> Receiver {
        let got: Arc<Mutex<Vec<Request>>> = Arc::default();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let (g, sc) = (Arc::clone(&got), Arc::clone(&script));
        let app = axum::Router::new().fallback(
            move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
                let (g, sc) = (Arc::clone(&g), Arc::clone(&sc));
                async move {
                    let (status, extra) = sc
                        .lock()
                        .expect("lock")
                        .pop_front()
                        .unwrap_or((200, Vec::new()));
                    g.lock().expect("lock").push(Request {
                        path: uri.path().to_string(),
                        headers,
                        body,
                        at: Instant::now(),
                        status,
                    });
                    let mut h = HeaderMap::new();
                    for (k, v) in extra {
                        h.insert(k, v.parse().expect("header value"));
                    }
                    (StatusCode::from_u16(status).expect("status"), h, "")
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, got }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.got.lock().expect("lock").clone()
    }
}
