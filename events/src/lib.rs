//! upgraded's pure core: the event vocabulary and codec, the node and run state machines, the
//! fold that replays a log into state, and `decide`, which turns state into commands.
//!
//! Architecture invariant: this crate does no I/O. It has no tokio, sled, kube or SSH in its
//! dependencies; time comes in as an argument and effects go out as [`decide::Command`]s.
#![forbid(unsafe_code)]

pub mod apis;
pub mod check;
pub mod codec;
pub mod decide;
pub mod drain;
pub mod drift;
pub mod event;
pub mod export;
pub mod facts;
pub mod fault;
pub mod gate;
pub mod history;
pub mod inventory;
pub mod lease;
pub mod metrics;
pub mod names;
pub mod node;
pub mod notify;
pub mod plan;
pub mod policy;
pub mod preflight;
pub mod quantity;
pub mod replay;
pub mod request;
pub mod rules;
pub mod run;
pub mod state;
pub mod time;
pub mod timeline;
pub mod trace;
pub mod undo;
pub mod version;
pub mod window;
pub mod witness;

pub use decide::{Command, Decision, Observation, decide};
pub use event::{Actor, Event, EventKind, Facts, InDoubt, Json, Record, RunId, Step, Timestamp};
pub use names::{Entry, Host};
pub use plan::{Batch, NodeInfo, NodePlan, Plan, Role};
pub use policy::Policy;
pub use state::RunState;
pub use version::Version;
