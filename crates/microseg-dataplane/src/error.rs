use std::path::PathBuf;

/// What went wrong, and with which kernel object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the eBPF programs: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("interface {interface}: {message}")]
    Interface { interface: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("test run: {0}")]
    TestRun(String),
    #[error("changes need a state to apply to: apply whole tables first")]
    NoState,
}

impl Error {
    pub(crate) fn map(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> Error {
        move |source| Error::Map { name, source }
    }
    pub(crate) fn program(name: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> Error {
        move |source| Error::Program { name, source }
    }
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
