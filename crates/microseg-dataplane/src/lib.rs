//! microseg's data plane from userspace: loading the kernel programs, their maps and pins,
//! applying policy tables atomically, attaching to interfaces, reading counters, sessions
//! and events, and running the programs on crafted packets (`BPF_PROG_TEST_RUN`).

mod apply;
pub mod attach;
mod batch;
mod error;
mod loader;
pub mod packet;
pub mod sessions;
mod testrun;
mod write;

pub use error::Error;
pub use loader::{Dataplane, LoadOptions};
pub use microseg_common as common;
pub use testrun::{Hook, RunResult};

/// The kernel programs, built by `build.rs`.
pub static PROGRAMS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/microseg"));

pub type Result<T, E = Error> = std::result::Result<T, E>;
