//! The journal: every change to an object as the API shows it, in resourceVersion order, for
//! watches (`?watch=true&resourceVersion=N` streams the changes after N). The apiserver's watch
//! cache, in small: a bounded window of recent changes, and a floor below which a watch gets
//! `410 Gone` and relists.
//!
//! Changes are noted where the model makes them (an object created, changed or gone) and
//! written at the end of every tick, each object as it then is: a watcher sees every state an
//! object had at any instant of simulated time, never a half-made one. An object gone is
//! written as it was last, with the resourceVersion of its removal.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;

use super::*;
use crate::resource::Res;

/// How many changes the journal keeps (older watches get 410 and relist).
pub const JOURNAL_CAP: usize = 20_000;

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Happened {
    Added,
    Modified,
    Deleted,
}

impl Happened {
    pub fn as_str(self) -> &'static str {
        match self {
            Happened::Added => "ADDED",
            Happened::Modified => "MODIFIED",
            Happened::Deleted => "DELETED",
        }
    }
}

/// One change, with the object as it then was.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub res: Res,
    pub happened: Happened,
    pub namespace: String,
    pub name: String,
    pub object: Arc<Value>,
}

/// `(resource, namespace, name)`: an object's identity.
pub(crate) type ObjKey = (Res, String, String);

#[derive(Debug, Clone)]
pub(crate) struct Journal {
    on: bool,
    /// Only these resources' changes are kept (`None`: every resource's).
    only: Option<Vec<Res>>,
    entries: VecDeque<Change>,
    /// A watch from a version below this cannot be served (its changes were dropped).
    floor: u64,
    /// Objects changed since the last write, and whether each is new.
    pending: BTreeMap<ObjKey, bool>,
    /// Objects gone since the last write, as they were last.
    gone: Vec<Change>,
}

impl Journal {
    fn keeps(&self, res: Res) -> bool {
        self.on
            && self
                .only
                .as_ref()
                .is_none_or(|only| only.contains(&res.stored()))
    }

    pub(crate) fn new(floor: u64) -> Journal {
        Journal {
            on: true,
            only: None,
            entries: VecDeque::new(),
            floor,
            pending: BTreeMap::new(),
            gone: Vec::new(),
        }
    }
}

/// A watch asked for changes the journal no longer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// The oldest version a watch may start from now.
    pub oldest: u64,
}

impl World {
    /// Whether changes are kept for watches (on by default; a rehearsal, which never watches,
    /// turns it off).
    pub fn journal_on(&self) -> bool {
        self.journal.on
    }

    /// Keeps changes for watches or stops (a watch from before `off` gets 410 Gone).
    pub fn set_journal(&mut self, on: bool) {
        if !on {
            self.journal.entries.clear();
            self.journal.pending.clear();
            self.journal.gone.clear();
        }
        self.journal.floor = self.resource_version;
        self.journal.on = on;
    }

    /// Keeps only `resources`' changes from now on (a rehearsal, in which the daemon watches
    /// pods and nothing else, does not serialise every other change); a watch on another
    /// resource gets `410 Gone`.
    pub fn journal_only(&mut self, resources: &[Res]) {
        self.write_journal();
        let only: Vec<Res> = resources.iter().map(|r| r.stored()).collect();
        self.journal.entries.retain(|c| only.contains(&c.res));
        self.journal.only = Some(only);
    }

    /// Drops every change kept so far, as etcd's compaction does: a watch whose version is
    /// older than now gets `410 Gone` at its next read and must relist.
    pub fn compact_journal(&mut self) {
        self.write_journal();
        self.journal.entries.clear();
        self.journal.floor = self.resource_version;
    }

    /// `res ns/name` changed (or was made, with `new`).
    /// A workload object changed (every change is noted for the watches): the controllers'
    /// and the budgets' caches look again.
    fn workload_noted(&mut self, res: Res) {
        if matches!(
            res,
            Res::Deployment | Res::ReplicaSet | Res::StatefulSet | Res::DaemonSet
        ) {
            self.work_epoch += 1;
            self.workloads_epoch += 1;
        }
    }

    pub(crate) fn noted(&mut self, res: Res, namespace: &str, name: &str, new: bool) {
        self.workload_noted(res);
        if !self.journal.keeps(res) {
            return;
        }
        let e = self
            .journal
            .pending
            .entry((res, namespace.to_string(), name.to_string()))
            .or_insert(new);
        *e |= new;
    }

    /// `res ns/name` is gone; `object` is how it was last, with its removal's version.
    pub(crate) fn noted_gone(&mut self, res: Res, namespace: &str, name: &str, object: Value) {
        self.workload_noted(res);
        if !self.journal.keeps(res) {
            return;
        }
        let key = (res, namespace.to_string(), name.to_string());
        let created = self.journal.pending.remove(&key).unwrap_or(false);
        if created {
            // Made and gone within one write: a watcher never saw it, and needs not.
            return;
        }
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(self.resource_version);
        self.journal.gone.push(Change {
            rv,
            res,
            happened: Happened::Deleted,
            namespace: key.1,
            name: key.2,
            object: Arc::new(object),
        });
    }

    /// Writes what changed since the last write, each object as it now is.
    pub(crate) fn write_journal(&mut self) {
        if !self.journal.on || (self.journal.pending.is_empty() && self.journal.gone.is_empty()) {
            return;
        }
        let pending = std::mem::take(&mut self.journal.pending);
        let mut written = std::mem::take(&mut self.journal.gone);
        for ((res, ns, name), new) in pending {
            let Some(object) = crate::kube::object(self, res, &ns, &name) else {
                continue;
            };
            let rv = object["metadata"]["resourceVersion"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(self.resource_version);
            written.push(Change {
                rv,
                res,
                happened: if new {
                    Happened::Added
                } else {
                    Happened::Modified
                },
                namespace: ns,
                name,
                object: Arc::new(object),
            });
        }
        written.sort_by_key(|c| c.rv);
        let j = &mut self.journal;
        for c in written {
            // A change older than the newest written (an object noted twice) keeps order.
            if j.entries.back().is_some_and(|last| last.rv > c.rv) {
                continue;
            }
            j.entries.push_back(c);
        }
        while j.entries.len() > JOURNAL_CAP {
            if let Some(old) = j.entries.pop_front() {
                j.floor = j.floor.max(old.rv);
            }
        }
    }

    /// The changes after version `since` of the resources `res` reads, oldest first; `Expired`
    /// when some were dropped (the watch must relist).
    pub fn changes_since(&self, since: u64, res: Res) -> Result<Vec<Change>, Expired> {
        if !self.journal.keeps(res) {
            return Err(Expired {
                oldest: self.resource_version,
            });
        }
        if since < self.journal.floor {
            return Err(Expired {
                oldest: self.journal.floor,
            });
        }
        let stored = res.stored();
        let start = self.journal.entries.partition_point(|c| c.rv <= since);
        Ok(self
            .journal
            .entries
            .range(start..)
            .filter(|c| c.res == stored)
            .cloned()
            .collect())
    }
}
