//! How the database failed, with the driver's error as the source.

/// A failure of the database or of what it holds (500 on REST, UNAVAILABLE on gRPC).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {}", postgres_text(.0))]
    Postgres(#[from] tokio_postgres::Error),
    /// A label overlay could not be written as JSON.
    #[error("writing JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A label overlay that does not read back (the database was edited by hand).
    #[error("the stored label overlay of workload \"{name}\" does not read back: {source}; remove it from the label_overlays table")]
    BadOverlay {
        name: String,
        source: serde_json::Error,
    },
    #[error("{0}")]
    BadRow(#[from] super::BadRow),
    /// A transaction that carried several requests failed: each of them gets this.
    #[error("{0}")]
    Batch(String),
    /// A thread panicked while it held the SQLite connection.
    #[error(
        "the database connection's lock is poisoned by an earlier failure; restart the controller"
    )]
    Poisoned,
}

/// The server's code and message, or the error with its causes: "error performing TLS
/// handshake" alone does not say why.
fn postgres_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.code().code(), db.message());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text = format!("{text}: {c}");
        cause = c.source();
    }
    text
}
