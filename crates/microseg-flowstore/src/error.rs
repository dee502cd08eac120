use crate::filter::FilterError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("flow store URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(transparent)]
    BadFilter(#[from] FilterError),
    /// The server (or file) cannot be reached: the caller keeps going and counts what it
    /// could not store.
    #[error("{backend} flow store at {target} is unavailable")]
    Unavailable {
        backend: &'static str,
        target: String,
        #[source]
        source: BoxError,
    },
    /// The store answered, but refused or failed the statement.
    #[error("{backend} flow store: {what} failed")]
    Backend {
        backend: &'static str,
        what: &'static str,
        #[source]
        source: BoxError,
    },
    /// A stored row that does not read back as a record.
    #[error("{backend} flow store: stored row {what}")]
    Corrupt { backend: &'static str, what: String },
}

impl Error {
    /// Whether the store could not be reached at all (rather than refusing a statement).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}
