//! Watches (`?watch=true`), as the apiserver streams them: one JSON event a line.
//!
//! - From `resourceVersion` N: every change after N (from the journal); N older than the
//!   journal's window gets an `ERROR` event with a 410 `Expired` status, and the client relists.
//! - Without a version (or `0`): an `ADDED` event for every object first, then the changes.
//!   `sendInitialEvents=true` does the same and ends the initial events with a bookmark that
//!   carries `k8s.io/initial-events-end` (a streaming list).
//! - Label and field selectors apply to each event's object; an object that stops matching is
//!   sent as `DELETED`, one that starts as `ADDED`.
//! - `allowWatchBookmarks=true`: a `BOOKMARK` with the current version every minute and before
//!   the watch ends (`timeoutSeconds`, or 30 minutes).
//! - `Accept: ...;as=Table` (`kubectl get -w`): each event's object is a Table of its one row,
//!   the first with the column definitions.
//!
//! The stream waits for changes (woken by every request that changed the world, and, for
//! what changes by itself, every 100 ms on a real clock or, on tokio's clock, at the instant
//! of the world's next due change); a client that hangs up ends it.

#![allow(clippy::result_large_err)]

use std::borrow::Cow;
use std::collections::{BTreeSet, VecDeque};

use axum::body::Body;

use super::*;
use crate::model::Happened;

/// How often a watch with bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);
/// How often a waiting watch looks again (a real clock changes the world without requests).
const POLL: Duration = Duration::from_millis(100);
/// A watch without `timeoutSeconds` ends after this long, as the apiserver's does.
const LONGEST: Duration = Duration::from_secs(1800);

struct Stream {
    sim: Arc<Sim>,
    res: Res,
    namespace: Option<String>,
    filter: Filter,
    query: BTreeMap<String, String>,
    table: bool,
    headers_sent: bool,
    bookmarks: bool,
    /// Changes up to this version were sent.
    cursor: u64,
    /// Objects the watcher knows to match (for DELETED when one stops).
    seen: BTreeSet<(String, String)>,
    lines: VecDeque<Bytes>,
    deadline: tokio::time::Instant,
    next_bookmark: tokio::time::Instant,
    done: bool,
}

/// One watch event as it goes on the wire (written from the object where it lies: a pod
/// watch of a large cluster sends thousands).
#[derive(serde::Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a Value,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut b = serde_json::to_vec(&Line { kind, object }).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

impl Stream {
    /// The object as this watch sends it (converted to `events.k8s.io`, or as a Table row).
    fn shape<'a>(&mut self, object: &'a Value, now: Millis, rv: u64) -> Cow<'a, Value> {
        let object = if self.res == Res::EventV1 {
            serde_json::from_value::<k8s_openapi::api::core::v1::Event>(object.clone())
                .map(|e| Cow::Owned(kube::event_v1(&e)))
                .unwrap_or(Cow::Borrowed(object))
        } else {
            Cow::Borrowed(object)
        };
        if !self.table {
            return object;
        }
        let headers = !self.headers_sent;
        self.headers_sent = true;
        Cow::Owned(crate::table::table(
            self.res,
            std::slice::from_ref(object.as_ref()),
            now,
            rv,
            &self.query,
            headers,
        ))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let def = self.res.def();
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line(
            "BOOKMARK",
            &json!({"kind": def.kind, "apiVersion": self.res.api_version(), "metadata": meta}),
        )
    }

    fn in_scope(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
    }

    /// Takes what changed since the cursor into `lines`.
    fn read(&mut self) {
        let (changes, now, rv) = {
            let mut w = self.sim.world_as_is();
            w.write_journal();
            let now = w.now();
            let rv = w.resource_version();
            match w.changes_since(self.cursor, self.res) {
                Ok(c) => (c, now, rv),
                Err(expired) => {
                    let status = json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": format!("too old resource version: {} ({})", self.cursor, expired.oldest),
                        "reason": "Expired", "code": 410,
                    });
                    self.lines.push_back(line("ERROR", &status));
                    self.done = true;
                    return;
                }
            }
        };
        for c in changes {
            self.cursor = self.cursor.max(c.rv);
            if !self.in_scope(&c.namespace) {
                continue;
            }
            let matches = self.filter.keep_object(&c.object);
            // An object matches a fixed filter all its life or never: sent as it happened.
            if self.filter.is_fixed() {
                if matches {
                    let kind = match c.happened {
                        Happened::Added => "ADDED",
                        Happened::Modified => "MODIFIED",
                        Happened::Deleted => "DELETED",
                    };
                    let object = self.shape(&c.object, now, c.rv);
                    let l = line(kind, &object);
                    self.lines.push_back(l);
                }
                continue;
            }
            let key = (c.namespace.clone(), c.name.clone());
            let kind = match (c.happened, matches, self.seen.contains(&key)) {
                (Happened::Deleted, _, seen) => {
                    self.seen.remove(&key);
                    if !(seen || matches) {
                        continue;
                    }
                    "DELETED"
                }
                (_, true, seen) => {
                    self.seen.insert(key);
                    if c.happened == Happened::Added || !seen && !self.filter.is_empty() {
                        "ADDED"
                    } else {
                        "MODIFIED"
                    }
                }
                (_, false, true) => {
                    self.seen.remove(&key);
                    "DELETED"
                }
                (_, false, false) => continue,
            };
            let object = self.shape(&c.object, now, c.rv);
            let l = line(kind, &object);
            self.lines.push_back(l);
        }
        self.cursor = self.cursor.max(rv);
    }
}

/// The answer to a watch request.
pub(super) async fn serve(
    sim: Arc<Sim>,
    res: Res,
    namespace: Option<String>,
    ask: Ask,
) -> Response {
    let q = ask.query;
    let filter = match Filter::parse(&q, res) {
        Ok(f) => f,
        Err(e) => return refused(&e),
    };
    let from = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                return refused(&ApiError::BadRequest(format!(
                    "Invalid value: \"{v}\": resourceVersion must be a number"
                )));
            }
        },
    };
    let initial_events = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(LONGEST, Duration::from_secs)
        .min(LONGEST);
    let start = tokio::time::Instant::now();
    let mut s = Stream {
        sim: sim.clone(),
        res,
        namespace,
        filter,
        query: q,
        table: ask.table,
        headers_sent: false,
        bookmarks,
        cursor: from.unwrap_or(0),
        seen: BTreeSet::new(),
        lines: VecDeque::new(),
        deadline: start + timeout,
        next_bookmark: start + BOOKMARK_EVERY,
        done: false,
    };
    // From a version without selectors (or with selectors on names and namespaces only,
    // which an object matches all its life or never), every change is sent as it happened:
    // nothing to know about the objects that matched at that version (a pod watch resumed
    // every few minutes does not rebuild every pod).
    let resumed = from.is_some() && !initial_events && s.filter.is_fixed();
    if !resumed {
        let mut w = sim.world();
        w.write_journal();
        let now = w.now();
        let rv = w.resource_version();
        let objects = super::rest::objects(&w, res, s.namespace.as_deref());
        drop(w);
        let mut matching: Vec<Value> = objects
            .into_iter()
            .filter(|v| s.filter.keep_object(v))
            .collect();
        let key = |v: &Value| {
            (
                v["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        };
        let object_rv = |v: &Value| {
            v["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|r| r.parse::<u64>().ok())
                .unwrap_or(0)
        };
        match from {
            Some(n) if !initial_events => {
                // What matched at N is what matches now and has not changed since.
                s.seen = matching
                    .iter()
                    .filter(|v| object_rv(v) <= n)
                    .map(key)
                    .collect();
            }
            _ => {
                matching.sort_by_key(object_rv);
                for v in matching {
                    s.seen.insert(key(&v));
                    let object = s.shape(&v, now, rv);
                    let l = line("ADDED", &object);
                    s.lines.push_back(l);
                }
                s.cursor = rv;
                if initial_events {
                    let b = s.bookmark(rv, true);
                    s.lines.push_back(b);
                }
            }
        }
    }
    let stream = futures_util::stream::unfold(s, |mut s| async move {
        loop {
            if let Some(l) = s.lines.pop_front() {
                return Some((Ok::<Bytes, std::convert::Infallible>(l), s));
            }
            if s.done {
                return None;
            }
            s.read();
            if !s.lines.is_empty() || s.done {
                continue;
            }
            let now = tokio::time::Instant::now();
            if now >= s.deadline {
                if s.bookmarks {
                    let rv = s.cursor;
                    let b = s.bookmark(rv, false);
                    s.lines.push_back(b);
                }
                s.done = true;
                continue;
            }
            if s.bookmarks && now >= s.next_bookmark {
                s.next_bookmark = now + BOOKMARK_EVERY;
                let rv = s.cursor;
                let b = s.bookmark(rv, false);
                s.lines.push_back(b);
                continue;
            }
            let wake = s
                .sim
                .look_again(now, POLL)
                .min(s.deadline)
                .min(if s.bookmarks {
                    s.next_bookmark
                } else {
                    s.deadline
                });
            let notified = s.sim.changed.notified();
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    });
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, private"),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
