use std::path::PathBuf;

use aya::maps::MapError;
use aya::programs::ProgramError;

/// What went wrong, and with which kernel object. Each variant is one kind of failure
/// (loading, a missing program or map, attaching, reading or writing a map), so that a
/// caller can tell them apart; the cause, when there is one, is the error's source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "loading the eBPF programs: {0}: run as root (or with CAP_BPF and CAP_NET_ADMIN), \
         with a bpffs mounted where maps are pinned"
    )]
    Load(#[from] aya::EbpfError),
    #[error("program {name} is missing from the embedded eBPF object: rebuild microseg")]
    ProgramMissing { name: &'static str },
    #[error(
        "program {name}: {source}: run as root on a kernel with TC BPF programs \
         (Linux 6.6 or later for TCX)"
    )]
    ProgramLoad {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("map {name} is missing from the embedded eBPF object: rebuild microseg")]
    MapMissing { name: &'static str },
    /// A map of the object, or a second handle on one, could not be opened as its type.
    #[error("map {name}: {source}")]
    MapOpen {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("reading map {name}: {source}")]
    MapRead {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("writing map {name}: {source}{}", full_hint(source))]
    MapWrite {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("interface {interface} does not exist: check the workload's `interface`")]
    InterfaceMissing { interface: String },
    /// `step` says which part of attaching failed; `source` is aya's error for it.
    #[error("interface {interface}: {step}: {source}")]
    Attach {
        interface: String,
        step: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("test run of {program}: {source}: BPF_PROG_TEST_RUN needs root")]
    TestRun {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("changes need a state to apply to: apply whole tables first")]
    NoState,
}

/// What to do when a write failed because the map is full (E2BIG from a hash map, ENOSPC
/// from the prefix trie).
fn full_hint(source: &MapError) -> &'static str {
    let full = [Some(libc::E2BIG), Some(libc::ENOSPC)];
    match source {
        MapError::SyscallError(e) if full.contains(&e.io_error.raw_os_error()) => {
            ": the map is full; fewer rules or workloads, or a larger capacity, make room"
        }
        _ => "",
    }
}

impl Error {
    pub(crate) fn map_read(name: &'static str) -> impl FnOnce(MapError) -> Error {
        move |source| Error::MapRead { name, source }
    }
    pub(crate) fn map_write(name: &'static str) -> impl FnOnce(MapError) -> Error {
        move |source| Error::MapWrite { name, source }
    }
    pub(crate) fn map_open(name: &'static str) -> impl FnOnce(MapError) -> Error {
        move |source| Error::MapOpen { name, source }
    }
    pub(crate) fn program(name: &'static str) -> impl FnOnce(ProgramError) -> Error {
        move |source| Error::ProgramLoad { name, source }
    }
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
