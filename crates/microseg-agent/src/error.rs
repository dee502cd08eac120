//! What can go wrong in the agent, as types a caller can tell apart; every message says
//! what to do where there is something to do.

use std::path::PathBuf;

use microseg_policy::compile::Problem;

/// Why the agent stopped with an error: bad input (exit 2) or a runtime failure (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The policy files are invalid: one `FILE:LINE:COL: message` per problem.
    #[error("{}", .0.join("\n"))]
    BadInput(Vec<String>),
    #[error(transparent)]
    Dataplane(#[from] microseg_dataplane::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{0} is not on a BPF filesystem, so nothing could be pinned there (mount -t bpf bpf /sys/fs/bpf, or pass --bpffs DIR on one)"
    )]
    NotOnBpffs(PathBuf),
    #[error("installing the signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("starting the data plane's owner thread: {0}")]
    Owner(#[source] std::io::Error),
}

impl AgentError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> AgentError {
        let path = path.into();
        move |source| AgentError::Io { path, source }
    }
}

/// Why a policy was not enforced. Nothing of it reached the data plane: the revision
/// before it stays in force.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    /// The data plane cannot hold part of the policy (e.g. too many `sourcePorts` rules
    /// for one peer).
    #[error("policy not applied, revision {in_force} stays in force: {}", join(.problems))]
    Uncompilable {
        in_force: u64,
        problems: Vec<Problem>,
    },
    #[error("policy not applied, revision {in_force} stays in force: {source}")]
    Apply {
        in_force: u64,
        #[source]
        source: microseg_dataplane::Error,
    },
    #[error("the agent's data plane owner has stopped (see the log for why): restart the agent")]
    OwnerGone,
}

fn join(problems: &[Problem]) -> String {
    let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
    texts.join("; ")
}
