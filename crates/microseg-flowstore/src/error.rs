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
    /// A stored row with a field that does not read back.
    #[error("{backend} flow store: stored row {source}")]
    BadRow {
        backend: &'static str,
        #[source]
        source: RowError,
    },
}

/// The field of a stored row that does not read back, and its stored value.
#[derive(Debug, thiserror::Error)]
pub enum RowError {
    #[error("{field} {value} out of range")]
    OutOfRange { field: &'static str, value: i64 },
    /// Text that names no direction, verdict and so on.
    #[error("{field} {value:?}")]
    Unknown { field: &'static str, value: String },
    #[error("{field} {text:?}: {source}")]
    Labels {
        field: &'static str,
        text: String,
        #[source]
        source: serde_json::Error,
    },
}

/// A stored integer as the narrower type its field has.
pub(crate) fn narrow<T: TryFrom<i64>>(field: &'static str, value: i64) -> Result<T, RowError> {
    T::try_from(value).map_err(|_| RowError::OutOfRange { field, value })
}

/// Stored labels (JSON text) as a map.
pub(crate) fn labels(field: &'static str, text: String) -> Result<crate::Labels, RowError> {
    serde_json::from_str(&text).map_err(|source| RowError::Labels {
        field,
        text,
        source,
    })
}

impl Error {
    /// Whether the store could not be reached at all (rather than refusing a statement).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}
