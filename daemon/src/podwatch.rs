//! The cluster's pods as the health gate reads them, kept by a watch (what client-go calls an
//! informer): listed once, then every added, changed and deleted pod applied as the apiserver
//! streams it. A gate then reads what the cache holds instead of listing every pod again, so
//! verifying n nodes costs O(n + changes), not O(n × pods).
//!
//! The cache is used only while it is in sync: until the first list has been read, and again
//! after the watch broke (a 410 Gone, an error, a stream that failed) until it has been listed
//! again, a caller lists for itself, as before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::TryStreamExt;
use kube::Client;
use kube::api::{ListParams, WatchEvent, WatchParams};
use upgraded_events::inventory::MIRROR_ANNOTATION;
use upgraded_events::state::PodHealth;

/// How long one watch request lasts before it is made again from the last resourceVersion
/// (the apiserver ends watches after a while; client-go picks 5–10 minutes).
const WATCH_SECS: u32 = 290;
/// How long to wait before listing again after the watch broke, doubled at each break in a
/// row up to [`RELIST_MAX`] (an apiserver that keeps refusing the watch is not listed in a
/// loop; callers list for themselves meanwhile).
const RELIST_AFTER: Duration = Duration::from_secs(1);
const RELIST_MAX: Duration = Duration::from_secs(60);
/// Page size of the list.
const PAGE: u32 = 500;

/// The pods the health gate reads: every namespace but the one the checks' probes run in
/// (the daemon's own pods are not the cluster's health, and a large run's probes would be
/// most of the watch's traffic).
pub(crate) fn health_fields() -> String {
    format!(
        "metadata.namespace!={}",
        upgraded_events::check::probe::NAMESPACE
    )
}

/// A pod as the health gate reads it: its key, whether it is a mirror, its phase and its
/// containers' waiting reasons; every other field is skipped while parsing.
#[derive(serde::Deserialize, Default, Clone)]
#[serde(default)]
pub(crate) struct HealthPod {
    metadata: HealthMeta,
    status: HealthStatus,
}

#[derive(serde::Deserialize, Default, Clone)]
#[serde(default, rename_all = "camelCase")]
struct HealthMeta {
    namespace: String,
    name: String,
    resource_version: Option<String>,
    annotations: Option<std::collections::BTreeMap<String, serde::de::IgnoredAny>>,
}

#[derive(serde::Deserialize, Default, Clone)]
#[serde(default, rename_all = "camelCase")]
struct HealthStatus {
    phase: Option<String>,
    container_statuses: Option<Vec<HealthContainer>>,
}

#[derive(serde::Deserialize, Default, Clone)]
#[serde(default)]
struct HealthContainer {
    state: Option<HealthState>,
}

#[derive(serde::Deserialize, Default, Clone)]
#[serde(default)]
struct HealthState {
    waiting: Option<HealthWaiting>,
}

#[derive(serde::Deserialize, Default, Clone)]
#[serde(default)]
struct HealthWaiting {
    reason: Option<String>,
}

impl HealthPod {
    /// As `PodInv::from_value` reads the same fields.
    pub(crate) fn health(&self) -> PodHealth {
        PodHealth {
            finished: matches!(self.status.phase.as_deref(), Some("Succeeded" | "Failed")),
            mirror: self
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION)),
            crash_looping: self.status.container_statuses.iter().flatten().any(|c| {
                c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    == Some("CrashLoopBackOff")
            }),
        }
    }

    fn key(&self) -> (String, String) {
        (self.metadata.namespace.clone(), self.metadata.name.clone())
    }
}

/// A page of the list, with the resourceVersion the watch starts from.
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Page {
    metadata: PageMeta,
    items: Vec<HealthPod>,
}

#[derive(serde::Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct PageMeta {
    #[serde(rename = "continue")]
    continue_: Option<String>,
    resource_version: Option<String>,
}

#[derive(Default)]
struct Cache {
    pods: HashMap<(String, String), PodHealth>,
    synced: bool,
    /// The watch task, started at the first read.
    task: Option<tokio::task::AbortHandle>,
}

/// The shared cache; the watch task stops when the last clone is dropped.
#[derive(Clone, Default)]
pub(crate) struct PodWatch {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    cache: Mutex<Cache>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let cache = self.cache.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = cache.task.take() {
            t.abort();
        }
    }
}

impl PodWatch {
    /// Every pod's health if the cache is in sync (starting its watch at the first call);
    /// `None` when the caller must list for itself.
    pub(crate) fn read(&self, client: &Client) -> Option<Vec<PodHealth>> {
        let mut cache = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.task.is_none() {
            let weak = Arc::downgrade(&self.inner);
            let task = tokio::spawn(run(weak, client.clone()));
            cache.task = Some(task.abort_handle());
        }
        cache.synced.then(|| cache.pods.values().copied().collect())
    }
}

/// What ended one list-and-watch.
enum Broke {
    /// The cache is gone: stop.
    Dropped,
    /// List again (after a pause).
    Relist(String),
}

async fn run(inner: Weak<Inner>, client: Client) {
    let mut pause = RELIST_AFTER;
    loop {
        let mut events = 0u64;
        match list_and_watch(&inner, &client, &mut events).await {
            Broke::Dropped => return,
            Broke::Relist(why) => {
                tracing::debug!(%why, "pod watch broke; listing again");
                match inner.upgrade() {
                    Some(i) => i.cache.lock().unwrap_or_else(|p| p.into_inner()).synced = false,
                    None => return,
                }
                if events > 0 {
                    pause = RELIST_AFTER;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RELIST_MAX);
            }
        }
    }
}

/// Lists every pod into the cache, then applies the watch from the list's resourceVersion
/// until it breaks.
async fn list_and_watch(inner: &Weak<Inner>, client: &Client, events: &mut u64) -> Broke {
    let mut pods = HashMap::new();
    let mut params = ListParams::default().limit(PAGE).fields(&health_fields());
    let mut version = String::new();
    loop {
        let req = match kube::core::Request::new("/api/v1/pods").list(&params) {
            Ok(r) => r,
            Err(e) => return Broke::Relist(e.to_string()),
        };
        let page: Page = match client.request(req).await {
            Ok(p) => p,
            Err(e) => return Broke::Relist(e.to_string()),
        };
        if version.is_empty() {
            version = page.metadata.resource_version.unwrap_or_default();
        }
        for p in &page.items {
            pods.insert(p.key(), p.health());
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    match inner.upgrade() {
        Some(i) => {
            let mut cache = i.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.pods = pods;
            cache.synced = true;
        }
        None => return Broke::Dropped,
    }
    loop {
        let params = WatchParams::default()
            .timeout(WATCH_SECS)
            .fields(&health_fields())
            .disable_bookmarks();
        let req = match kube::core::Request::new("/api/v1/pods").watch(&params, &version) {
            Ok(r) => r,
            Err(e) => return Broke::Relist(e.to_string()),
        };
        let stream = match client.request_events::<HealthPod>(req).await {
            Ok(s) => s,
            Err(e) => return Broke::Relist(e.to_string()),
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = match stream.try_next().await {
                Ok(Some(e)) => e,
                // The apiserver ended this watch: watch again from where it stopped.
                Ok(None) => break,
                Err(e) => return Broke::Relist(e.to_string()),
            };
            let Some(i) = inner.upgrade() else {
                return Broke::Dropped;
            };
            *events += 1;
            let mut cache = i.cache.lock().unwrap_or_else(|p| p.into_inner());
            match event {
                WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                    if let Some(v) = &p.metadata.resource_version {
                        version.clone_from(v);
                    }
                    cache.pods.insert(p.key(), p.health());
                }
                WatchEvent::Deleted(p) => {
                    if let Some(v) = &p.metadata.resource_version {
                        version.clone_from(v);
                    }
                    cache.pods.remove(&p.key());
                }
                WatchEvent::Bookmark(b) => version = b.metadata.resource_version,
                // 410 Gone (the version is too old) or anything else: list again.
                WatchEvent::Error(e) => return Broke::Relist(format!("{} {}", e.code, e.message)),
            }
        }
    }
}
