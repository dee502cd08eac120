//! The cluster-wide flow record store: what agents report, kept for a retention period in
//! SQLite (a file), PostgreSQL or ClickHouse, and queried by filter, by cursor (to follow)
//! or as edges. Every back end behaves the same; `tests/suite.rs` runs one suite on each.

mod clickhouse;
mod edge;
mod error;
mod filter;
mod http;
mod postgres;
mod record;
mod selector;
mod sql;
mod sqlite;
mod time;

pub use clickhouse::ClickHouseStore;
pub use edge::{Edge, Endpoint};
pub use error::{BoxError, Error, RowError};
pub use filter::{
    Cursor, EdgeWindow, FilterError, FlowFilter, DEFAULT_EDGE_WINDOW, DEFAULT_LIMIT, MAX_LIMIT,
};
pub use postgres::PostgresStore;
pub use record::{Direction, FlowRecord, Labels, Protocol, Verdict};
pub use selector::{Requirement, Selector, SelectorError};
pub use sqlite::SqliteStore;
pub use time::{parse_duration, Timestamp};

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// How long records are kept unless configured otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86_400);

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Records, oldest first, and where to continue with [`FlowStore::after`].
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<FlowRecord>,
    pub cursor: Cursor,
}

pub trait FlowStore: Send + Sync {
    /// `sqlite`, `postgres` or `clickhouse`.
    fn backend(&self) -> &'static str;

    /// Stores a batch in one go (one transaction or one request).
    fn insert<'a>(&'a self, batch: &'a [FlowRecord]) -> BoxFuture<'a, Result<(), Error>>;

    /// The newest `filter.limit` matching records, oldest first; the cursor continues
    /// after everything stored when the query began.
    fn query<'a>(&'a self, filter: &'a FlowFilter) -> BoxFuture<'a, Result<Page, Error>>;

    /// Matching records stored after `cursor`, in the order they were stored, at most
    /// `filter.limit`; call again with the page's cursor to follow.
    fn after<'a>(
        &'a self,
        cursor: Cursor,
        filter: &'a FlowFilter,
    ) -> BoxFuture<'a, Result<Page, Error>>;

    /// Edges over the window, sorted by source, destination, protocol, port, verdict and
    /// policy.
    fn edges<'a>(&'a self, window: &'a EdgeWindow) -> BoxFuture<'a, Result<Vec<Edge>, Error>>;

    /// Removes every record of the UTC days before `older_than`'s day (whole days, so
    /// that ClickHouse can drop partitions; a record lives up to a day past retention).
    fn expire(&self, older_than: Timestamp) -> BoxFuture<'_, Result<(), Error>>;

    /// Whether the store answers.
    fn health(&self) -> BoxFuture<'_, Result<(), Error>>;
}

/// The back end a URL names (as [`FlowStore::backend`] will say), known before the store
/// is open: `postgres`, `clickhouse` or `sqlite`.
pub fn backend_of(url: &str) -> &'static str {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        "postgres"
    } else if url.starts_with("clickhouse://") {
        "clickhouse"
    } else {
        "sqlite"
    }
}

/// Opens (and creates if needed) the store a URL names: `postgres://…` (or
/// `postgresql://…`), `clickhouse://HOST:PORT/DB`, otherwise a SQLite file path
/// (`sqlite:PATH` also works).
pub async fn open(url: &str) -> Result<Box<dyn FlowStore>, Error> {
    Ok(match backend_of(url) {
        "postgres" => Box::new(PostgresStore::open(url).await?),
        "clickhouse" => Box::new(ClickHouseStore::open(url).await?),
        _ => {
            let path = url.strip_prefix("sqlite:").unwrap_or(url);
            if path.is_empty() || path.contains("://") {
                return Err(Error::BadUrl {
                    url: url.to_string(),
                    reason: "a SQLite file path, postgres://… or clickhouse://HOST:PORT/DB".into(),
                });
            }
            Box::new(SqliteStore::open(path).await?)
        }
    })
}
