//! The microseg node agent.
//!
//! Standalone, it reads Workloads and Policies from files, compiles them, applies them to
//! the data plane atomically and attaches the classifiers to each local workload's
//! interface, then keeps all of that in step with the files and the interfaces. It serves
//! `stats`, `flows` and `sessions` on a local socket ([`api`]).

pub mod api;
pub mod discovery;
pub mod flows;
pub mod interfaces;
pub mod managed;
mod options;
mod reconcile;
mod runtime;
pub mod stats;
mod watch;

pub use managed::ControllerLink;
pub use options::AgentOptions;
pub use runtime::{cleanup, run, AgentError, Source};
