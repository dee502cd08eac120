//! The microseg node agent.
//!
//! Standalone, it reads Workloads and Policies from files, compiles them, applies them to
//! the data plane atomically and attaches the classifiers to each local workload's
//! interface, then keeps all of that in step with the files and the interfaces. It serves
//! `stats`, `flows` and `sessions` on a local socket ([`api`]).
//!
//! One thread owns the data plane's writable state ([`owner`]); every task reaches it
//! through a [`DataPlaneHandle`], whose reads never wait for a compile.

pub mod api;
mod background;
pub mod discovery;
mod error;
pub mod export;
mod files;
pub mod flows;
mod handle;
pub mod interfaces;
pub mod managed;
pub mod metrics;
mod options;
mod owner;
mod reconcile;
mod runtime;
pub mod stats;
mod watch;

pub use error::{AgentError, EnforceError};
pub use handle::DataPlaneHandle;
pub use managed::ControllerLink;
pub use options::AgentOptions;
pub use runtime::{cleanup, run, run_until, Source};
