//! Why the controller could not start or keep running: a flag or file to correct (exit
//! status 2), or a failure of the machine or the database (exit status 1).

use crate::store::StoreError;
use crate::tls::TlsError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A flag or file is wrong (exit 2).
    #[error(transparent)]
    BadInput(#[from] InputError),
    /// Anything else (exit 1).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// A flag or a file the flags name is wrong; the message says which and what to give.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("TLS: {0}")]
    Tls(#[source] TlsError),
    #[error("TLS needs both --tls-cert and --tls-key (and --tls-client-ca only with them)")]
    TlsFlagsIncomplete,
    #[error("{flag} {}: {source}", path.display())]
    TokenUnreadable {
        flag: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{flag} {}: the token must be one non-empty word", path.display())]
    TokenNotOneWord { flag: &'static str, path: PathBuf },
    #[error("{}: {source}", path.display())]
    AgentTokenUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: no agent token (the controller writes it at its first start; or give --agent-token-file)", path.display())]
    NoAgentToken { path: PathBuf },
    #[error("the agent token must differ from the controller token")]
    SameTokens,
    #[error("sslmode=require: no CA bundle found on this system; give the database server's CA with --db-ca")]
    NoSystemCa,
    #[error("--db-ca: {0}")]
    DbCa(#[source] TlsError),
    #[error("--db-ca is for a PostgreSQL --db (postgres://...)")]
    DbCaWithoutPostgres,
    #[error("--db {db}: use postgres://USER@HOST:PORT/DB or sqlite:PATH")]
    DbUrl { db: String },
    #[error("--flow-db: {reason}")]
    FlowDb { reason: String },
    #[error("--flow-retention: {reason}")]
    FlowRetention { reason: String },
}

/// The machine or the database failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{}: {source}", path.display())]
    TokenCreate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state dir {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("SQLite {}: {source}", path.display())]
    Sqlite { path: PathBuf, source: StoreError },
    /// PostgreSQL, or a database read at start.
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Storage(#[from] crate::error::Error),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    /// The bound socket's address, the TLS listener, the signal handler.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_caller_tells_a_bad_flag_from_a_failure_and_reaches_the_cause() {
        let mut opts = crate::Options::new("/nonexistent/state");
        opts.token_file = Some("/nonexistent/token".into());
        let e = crate::load_token(&opts).unwrap_err();
        let ControllerError::BadInput(InputError::TokenUnreadable { flag, .. }) = &e else {
            panic!("{e:?}")
        };
        assert_eq!(*flag, "--token-file");
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(io.map(|e| e.kind()), Some(std::io::ErrorKind::NotFound));
        assert!(e
            .to_string()
            .starts_with("--token-file /nonexistent/token: "));

        opts.db = Some("sqlite:/nonexistent/dir/controller.db".into());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let Err(e) = rt.block_on(crate::open_store(&opts)) else {
            panic!("opened")
        };
        let ControllerError::Runtime(RuntimeError::Sqlite { source, .. }) = &e else {
            panic!("{e:?}")
        };
        assert!(matches!(source, StoreError::Sqlite(_)), "{source:?}");
        assert!(e
            .to_string()
            .starts_with("SQLite /nonexistent/dir/controller.db: "));
    }
}
