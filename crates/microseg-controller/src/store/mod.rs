//! The data layer: one trait, two back ends (SQLite, PostgreSQL).
//!
//! The live state is kept in memory, parsed and indexed (`live.rs`); the database is the
//! durable copy, read whole at start and then only for what other controllers changed.
//! Every change goes through [`Store::transact`] (or [`Store::transact_all`], several
//! changes in one database transaction and one revision): the back end locks out other
//! writers (also other controllers sharing the database), catches the memory up with
//! the database, hands each closure the live state, writes what it returns and raises
//! the global revision once if any resource changed. Each resource row carries the
//! revision that last changed it, and deletions leave a tombstone, so "changes since
//! revision N" is one query (docs/CONTROLLER.md "Sizing").

mod error;
pub mod live;
mod parsed;
mod pg_tls;
pub mod postgres;
mod rows;
pub mod sqlite;

use crate::error::Error;
pub use error::StoreError;
pub use live::Live;
use microseg_policy::{Resource, Workload};
pub use parsed::BadRow;
pub use rows::Rows;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::watch;

pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// The closure of a transaction: reads the snapshot, returns the writes or refuses.
pub type TxFn<'a> = Box<dyn FnOnce(&Snapshot) -> Result<Vec<Write>, Error> + Send + 'a>;

/// One resource row, its document parsed when it was read.
#[derive(Debug, Clone)]
pub struct Row {
    pub kind: String,
    pub name: String,
    /// The resource document (canonical JSON text, as the agents receive it).
    pub json: String,
    /// "" for resources created through the API; the node for discovered workloads.
    pub node: String,
    /// Discovered workloads: the name and labels the agent reported.
    pub reported: Option<Reported>,
    pub revision: u64,
    pub deleted: bool,
    /// The document parsed (None for a deleted row), or why it does not read back.
    pub resource: Option<Result<Arc<Resource>, BadRow>>,
    /// A discovered workload as the other nodes receive it: without its interface.
    pub peer_json: Option<String>,
}

impl Row {
    /// The document as the agent on `node` receives it: a workload discovered on another
    /// node loses its interface (a link on that other node), so it is a peer only.
    pub fn json_for(&self, node: &str) -> Result<&str, Error> {
        if self.node.is_empty() || self.node == node {
            return Ok(&self.json);
        }
        match &self.peer_json {
            Some(j) => Ok(j),
            None => self.workload().map(|_| self.json.as_str()),
        }
    }

    /// The parsed document; an error naming the row when it does not read back.
    pub fn resource(&self) -> Result<&Resource, Error> {
        match &self.resource {
            Some(Ok(r)) => Ok(r),
            Some(Err(bad)) => Err(StoreError::BadRow(bad.clone()).into()),
            None => Err(StoreError::BadRow(BadRow {
                kind: self.kind.clone(),
                name: self.name.clone(),
                revision: self.revision,
                problem: "it is deleted".into(),
            })
            .into()),
        }
    }

    /// The document of a Workload row.
    pub fn workload(&self) -> Result<&Workload, Error> {
        match self.resource()? {
            Resource::Workload(w) => Ok(w),
            Resource::Policy(_) => Err(StoreError::BadRow(BadRow {
                kind: self.kind.clone(),
                name: self.name.clone(),
                revision: self.revision,
                problem: "a Policy where a Workload was expected".into(),
            })
            .into()),
        }
    }
}

/// What an agent reported for a discovered workload (stored as
/// `{"name": ..., "labels": {...}}`): the name it gave and its labels, before the label
/// changes made through the API.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Reported {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

/// The live state handed to a transaction.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub revision: u64,
    /// Live (not deleted) rows.
    pub rows: Rows,
    /// Labels set through the API on discovered workloads: name → key → value (None removes).
    pub overlays: BTreeMap<String, BTreeMap<String, Option<String>>>,
}

impl Snapshot {
    pub fn get(&self, kind: &str, name: &str) -> Option<&Row> {
        self.rows.get(kind, name)
    }
}

#[derive(Debug, Clone)]
pub enum Write {
    Put {
        kind: String,
        name: String,
        json: String,
        node: String,
        reported: Option<Reported>,
    },
    Delete {
        kind: String,
        name: String,
    },
    /// Replaces a workload's label overlay (an empty map removes it). Raises no revision
    /// by itself.
    Overlay {
        name: String,
        labels: BTreeMap<String, Option<String>>,
    },
}

impl Write {
    pub fn changes_resources(&self) -> bool {
        !matches!(self, Write::Overlay { .. })
    }
}

/// A node's ack: the revision it enforces, or why not (`error`), at `now`.
#[derive(Debug, Clone)]
pub struct AckRow {
    pub node: String,
    pub revision: u64,
    pub error: String,
    pub now: f64,
}

/// One node as the controller knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub name: String,
    /// The revision the node reported enforcing.
    pub revision: u64,
    pub error: String,
    pub last_ack: Option<f64>,
    pub last_seen: f64,
}

/// What each closure of [`Store::transact_all`] came to: its refusal, or nothing.
pub type Outcomes = Vec<Result<(), Error>>;

pub trait Store: Send + Sync {
    /// Runs `f` on the live state with writers locked out; writes its result. Returns
    /// the revision after the transaction (unchanged if no resource changed).
    fn transact<'a>(&'a self, f: TxFn<'a>) -> BoxFut<'a, u64> {
        Box::pin(async move {
            let (rev, mut out) = self.transact_all(vec![f]).await?;
            out.pop().unwrap_or(Ok(())).map(|()| rev)
        })
    }
    /// Runs each closure in turn, each seeing the writes of those before it, and writes
    /// what they return in one database transaction and at most one new revision. A
    /// closure that refuses changes nothing; the others still apply.
    fn transact_all<'a>(&'a self, fs: Vec<TxFn<'a>>) -> BoxFut<'a, (u64, Outcomes)>;
    fn revision(&self) -> BoxFut<'_, u64>;
    /// This database's random number, made when it was created: a revision counts in it.
    fn store_id(&self) -> u64;
    /// The live state in memory (kept in step with the database by the back end).
    fn live(&self) -> &Live;
    /// Reads what other controllers wrote since the memory's revision.
    fn catch_up(&self) -> BoxFut<'_, ()>;
    /// The live rows of one kind (or all), sorted by kind and name.
    fn list<'a>(&'a self, kind: Option<&'a str>) -> BoxFut<'a, Vec<Row>> {
        Box::pin(async move {
            self.catch_up().await?;
            let (_, rows) = self.live().snapshot().await?;
            Ok(rows
                .iter()
                .filter(|r| kind.is_none_or(|k| r.kind == k))
                .cloned()
                .collect())
        })
    }
    /// The whole live state and its revision, read consistently.
    fn full(&self) -> BoxFut<'_, (u64, Rows)> {
        Box::pin(async move {
            self.catch_up().await?;
            self.live().snapshot().await
        })
    }
    /// Rows (tombstones included) changed after `revision`, read from the database.
    fn since(&self, revision: u64) -> BoxFut<'_, Vec<Row>>;
    fn touch_node<'a>(&'a self, node: &'a str, now: f64) -> BoxFut<'a, ()>;
    /// One ack: [`Store::ack_all`] of one row.
    fn ack<'a>(&'a self, node: &'a str, revision: u64, error: &'a str, now: f64) -> BoxFut<'a, ()> {
        self.ack_all(vec![AckRow {
            node: node.to_string(),
            revision,
            error: error.to_string(),
            now,
        }])
    }
    /// Several nodes seen, each at its time, in one transaction.
    fn touch_all(&self, seen: Vec<(String, f64)>) -> BoxFut<'_, ()> {
        Box::pin(async move {
            for (node, now) in &seen {
                self.touch_node(node, *now).await?;
            }
            Ok(())
        })
    }
    /// Several acks, in order (a later one of a node wins), in one transaction.
    fn ack_all(&self, acks: Vec<AckRow>) -> BoxFut<'_, ()>;
    fn nodes(&self) -> BoxFut<'_, Vec<NodeRow>>;
    /// Keeps `tx` at the newest revision written by anyone (other controllers on a shared
    /// database); local writes are published by the caller.
    fn watch_changes(self: Arc<Self>, tx: Arc<watch::Sender<u64>>, stop: watch::Receiver<bool>);
}

/// Raises the published revision if `rev` is newer.
pub fn publish(tx: &watch::Sender<u64>, rev: u64) {
    tx.send_if_modified(|v| {
        if rev > *v {
            *v = rev;
            true
        } else {
            false
        }
    });
}

/// A new store's number: random, positive.
pub(crate) fn new_store_id() -> i64 {
    let mut b = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b));
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    ((u64::from_le_bytes(b) ^ t) >> 1).max(1) as i64
}

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
INSERT INTO meta (key, value) VALUES ('revision', 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS resources (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    json TEXT NOT NULL,
    node TEXT NOT NULL DEFAULT '',
    reported TEXT,
    revision BIGINT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (kind, name)
);
CREATE INDEX IF NOT EXISTS resources_revision ON resources (revision);
CREATE TABLE IF NOT EXISTS label_overlays (name TEXT PRIMARY KEY, labels TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY,
    revision BIGINT NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    last_ack DOUBLE PRECISION,
    last_seen DOUBLE PRECISION NOT NULL
);
";
