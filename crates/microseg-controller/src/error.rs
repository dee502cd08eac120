//! Errors of the API, mapped to HTTP statuses and gRPC codes.

use crate::store::StoreError;

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid input: 400 with every message (`FILE:LINE:COL: message` where positioned).
    #[error("{message}")]
    BadInput {
        message: String,
        details: Vec<String>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The database failed: 500.
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// Any other status: 405, 413 and 415 for a request's form, 500 when processing
    /// it failed.
    #[error("{message}")]
    Http {
        status: u16,
        message: String,
        details: Vec<String>,
    },
}

impl Error {
    pub fn bad(message: impl Into<String>) -> Error {
        Error::BadInput {
            message: message.into(),
            details: Vec::new(),
        }
    }

    pub fn invalid(details: Vec<String>) -> Error {
        Error::BadInput {
            message: format!("invalid input: {} error(s)", details.len()),
            details,
        }
    }

    pub fn http(status: u16, message: impl Into<String>) -> Error {
        Error::Http {
            status,
            message: message.into(),
            details: Vec::new(),
        }
    }
}

/// Names and file names come from requests and land in answers, logs and terminals:
/// their control characters (and those that reorder text) are written escaped.
pub use microseg_policy::escape_control as printable;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::Store(e.into())
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Error {
        Error::Store(e.into())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::Store(e.into())
    }
}
