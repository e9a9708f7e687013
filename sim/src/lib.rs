//! A simulated bare-metal Kubernetes cluster — nodes in hardware generations, workloads, pods,
//! PodDisruptionBudgets, a scheduler and kubelets — on a real or virtual clock, served over the
//! Kubernetes REST API subset that kubectl get/cordon/drain and the daemon use.
//!
//! `model` is the cluster (synchronous, deterministic for a seed); `scenario` builds the
//! built-in clusters; `kube`/`table` render the model as Kubernetes objects; `server` serves it.
#![forbid(unsafe_code)]

pub mod admission;
pub mod clock;
pub mod defaults;
pub mod import;
pub mod kube;
pub mod model;
pub mod patch;
pub mod proto;
pub mod resource;
pub mod scenario;
pub mod server;
pub mod table;

pub use clock::{Clock, Millis};
pub use model::World;
pub use server::{Sim, SimServer, kubeconfig};
