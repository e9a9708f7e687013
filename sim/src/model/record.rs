//! Events (`core/v1`, also served as `events.k8s.io/v1`) as the cluster's components record
//! them: the scheduler's `Scheduled` and `FailedScheduling`, the kubelet's `Pulled`, `Created`,
//! `Started` and `Killing`, the controllers' `SuccessfulCreate` and `ScalingReplicaSet`, the
//! node's `NodeNotSchedulable` and `NodeNotReady`, storage's provisioning, a Job's `Completed`.
//! So `kubectl get events` and `kubectl events` tell what a drain did.
//!
//! As client-go's recorder does, an event repeated about the same object (same reason and
//! message) within ten minutes raises the first one's `count` and `lastTimestamp` instead of
//! making another. Events live an hour (the apiserver's `--event-ttl`), and at most
//! [`MAX_EVENTS`] are kept.

use std::collections::{BTreeMap, VecDeque};

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

use super::*;
use crate::resource::Res;

/// How long an event is kept (the apiserver's default `--event-ttl`).
pub const EVENT_TTL_MS: Millis = 3_600_000;
/// Within this long, a repeat raises the count of the first (client-go's correlator).
const AGGREGATE_MS: Millis = 600_000;
/// At most this many events are kept; the oldest go first.
pub const MAX_EVENTS: usize = 5_000;

/// What an event is about: `involvedObject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct About {
    pub kind: &'static str,
    pub api_version: &'static str,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.containers{nginx}` for a container's events.
    pub field_path: Option<String>,
}

/// Who records it: `source.component` and, for a kubelet, `source.host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source<'a> {
    pub component: &'static str,
    pub host: Option<&'a str>,
}

impl Source<'_> {
    pub const SCHEDULER: Source<'static> = Source {
        component: "default-scheduler",
        host: None,
    };
}

pub fn kubelet(node: &str) -> Source<'_> {
    Source {
        component: "kubelet",
        host: Some(node),
    }
}

pub fn controller(name: &'static str) -> Source<'static> {
    Source {
        component: name,
        host: None,
    }
}

/// The events kept.
#[derive(Debug, Clone, Default)]
pub struct Events {
    /// Off, nothing is recorded (a rehearsal, which nobody reads events of).
    pub(crate) off: bool,
    pub(crate) items: BTreeMap<(String, String), core::Event>,
    /// The event a repeat is folded into: (involved uid, reason, message) → key.
    latest: HashMap<(String, String, String), (String, String)>,
    /// Keys in the order they were made, to let the oldest go.
    order: VecDeque<(Millis, (String, String))>,
    /// Makes names unique within one millisecond.
    seq: u64,
}

impl Events {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &core::Event> {
        self.items.values()
    }
}

impl World {
    /// Stops or resumes recording events.
    pub fn set_events(&mut self, on: bool) {
        self.events.off = !on;
    }

    /// Records a `Normal` event.
    pub(crate) fn event(
        &mut self,
        about: About,
        source: Source<'_>,
        reason: &str,
        message: String,
    ) {
        self.record(about, source, "Normal", reason, message);
    }

    /// Records a `Warning` event.
    pub(crate) fn warning(
        &mut self,
        about: About,
        source: Source<'_>,
        reason: &str,
        message: String,
    ) {
        self.record(about, source, "Warning", reason, message);
    }

    fn record(
        &mut self,
        about: About,
        source: Source<'_>,
        kind: &str,
        reason: &str,
        message: String,
    ) {
        if self.events.off {
            return;
        }
        let now = self.now;
        let same = (about.uid.clone(), reason.to_string(), message.clone());
        if let Some(key) = self.events.latest.get(&same).cloned() {
            let rv = self.bump();
            if let Some(e) = self.events.items.get_mut(&key) {
                let last = e
                    .last_timestamp
                    .as_ref()
                    .map_or(0, |t| t.0.as_millisecond().max(0) as Millis);
                if now.saturating_sub(last) <= AGGREGATE_MS {
                    e.count = Some(e.count.unwrap_or(1) + 1);
                    e.last_timestamp = Some(crate::kube::time(now));
                    e.metadata.resource_version = Some(rv.to_string());
                    self.noted(Res::Event, &key.0, &key.1, false);
                    return;
                }
            }
        }
        let namespace = if about.namespace.is_empty() {
            "default".to_string()
        } else {
            about.namespace.clone()
        };
        self.events.seq += 1;
        // client-go names an event `<object>.<hex nanoseconds>`.
        let name = format!(
            "{}.{:x}",
            about.name,
            now.saturating_mul(1_000_000) + self.events.seq % 1_000_000
        );
        let uid = self.uid();
        let rv = self.bump();
        let at = crate::kube::time(now);
        let event = core::Event {
            metadata: meta::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: Some(uid),
                resource_version: Some(rv.to_string()),
                creation_timestamp: Some(at.clone()),
                ..Default::default()
            },
            involved_object: core::ObjectReference {
                api_version: Some(about.api_version.to_string()),
                kind: Some(about.kind.to_string()),
                name: Some(about.name.clone()),
                namespace: (!about.namespace.is_empty()).then(|| about.namespace.clone()),
                uid: Some(about.uid.clone()),
                field_path: about.field_path.clone(),
                resource_version: None,
            },
            reason: Some(reason.to_string()),
            message: Some(message),
            source: Some(core::EventSource {
                component: Some(source.component.to_string()),
                host: source.host.map(str::to_string),
            }),
            first_timestamp: Some(at.clone()),
            last_timestamp: Some(at),
            count: Some(1),
            type_: Some(kind.to_string()),
            reporting_component: Some(source.component.to_string()),
            reporting_instance: Some(source.host.unwrap_or(source.component).to_string()),
            ..Default::default()
        };
        let key = (namespace, name);
        self.events.items.insert(key.clone(), event);
        self.events.latest.insert(same, key.clone());
        self.events.order.push_back((now, key.clone()));
        self.noted(Res::Event, &key.0, &key.1, true);
        self.expire_events();
    }

    /// Events older than the TTL, and the oldest beyond [`MAX_EVENTS`], go.
    pub(crate) fn expire_events(&mut self) {
        let now = self.now;
        while let Some((made, key)) = self.events.order.front().cloned() {
            let full = self.events.items.len() > MAX_EVENTS;
            if !full && now.saturating_sub(made) < EVENT_TTL_MS {
                break;
            }
            self.events.order.pop_front();
            if let Some(mut e) = self.events.items.remove(&key) {
                let rv = self.bump();
                e.metadata.resource_version = Some(rv.to_string());
                let uid = e.involved_object.uid.clone().unwrap_or_default();
                let reason = e.reason.clone().unwrap_or_default();
                let message = e.message.clone().unwrap_or_default();
                if self
                    .events
                    .latest
                    .get(&(uid.clone(), reason.clone(), message.clone()))
                    == Some(&key)
                {
                    self.events.latest.remove(&(uid, reason, message));
                }
                if let Ok(v) = serde_json::to_value(&e) {
                    self.noted_gone(Res::Event, &key.0, &key.1, v);
                }
            }
        }
    }

    /// When the oldest event's time to live ends.
    pub(super) fn next_event_expiry(&self) -> Option<Millis> {
        self.events
            .order
            .front()
            .map(|(made, _)| made + EVENT_TTL_MS)
            .filter(|&t| t > self.now)
    }

    /// Stores an Event a client recorded.
    pub(crate) fn add_api_event(&mut self, mut e: core::Event) -> (String, String) {
        self.stamp(&mut e.metadata);
        e.metadata.generation = None;
        let key = crate::model::namespaces::key_of(&e.metadata);
        self.events.items.insert(key.clone(), e);
        self.events.order.push_back((self.now, key.clone()));
        self.noted(Res::Event, &key.0, &key.1, true);
        key
    }

    /// Forgets every event (a scenario starts long settled: nothing recent happened).
    pub(crate) fn clear_events(&mut self) {
        self.events.items.clear();
        self.events.latest.clear();
        self.events.order.clear();
    }
}

/// What an event about pod `p` says it is about (a container's events name it).
pub fn about_pod(p: &SimPod, container: Option<&str>) -> About {
    About {
        kind: "Pod",
        api_version: "v1",
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        uid: p.uid.clone(),
        field_path: container.map(|c| format!("spec.containers{{{c}}}")),
    }
}

/// What an event about node `n` says it is about.
pub fn about_node(n: &SimNode) -> About {
    About {
        kind: "Node",
        api_version: "v1",
        namespace: String::new(),
        name: n.name.clone(),
        uid: n.name.clone(),
        field_path: None,
    }
}
