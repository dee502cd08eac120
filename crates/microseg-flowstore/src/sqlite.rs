//! The embedded store: one SQLite file in WAL mode, written in one transaction a batch.

use crate::edge::{finish, EdgeRow};
use crate::filter::{Cursor, EdgeWindow, FlowFilter};
use crate::sql::{Dialect, SeqClock, StoredRow, Value, Where, COLUMNS};
use crate::{BoxFuture, Edge, Error, FlowRecord, FlowStore, Page, Timestamp};
use rusqlite::{params, params_from_iter, Connection};
use std::sync::{Arc, Mutex};

const BACKEND: &str = "sqlite";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS flows (
    seq INTEGER PRIMARY KEY,
    time INTEGER NOT NULL,
    node TEXT NOT NULL,
    workload TEXT NOT NULL,
    direction TEXT NOT NULL,
    src_ip TEXT NOT NULL,
    dst_ip TEXT NOT NULL,
    src_port INTEGER NOT NULL,
    dst_port INTEGER NOT NULL,
    protocol INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    policy TEXT,
    rule INTEGER,
    audit_verdict TEXT,
    audit_policy TEXT,
    packets INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    src_workload TEXT,
    dst_workload TEXT,
    src_labels TEXT NOT NULL,
    dst_labels TEXT NOT NULL,
    started INTEGER NOT NULL,
    ended INTEGER,
    conn INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS flows_time ON flows (time);
CREATE INDEX IF NOT EXISTS flows_verdict ON flows (verdict, time);
CREATE INDEX IF NOT EXISTS flows_workload ON flows (workload, time);
CREATE INDEX IF NOT EXISTS flows_policy ON flows (policy, time);
";

// Per connection leg first, then per edge; the labels of an end are those of its latest
// report (the time, zero-padded, sorts the concatenation).
const EDGES: &str = "
SELECT s, sw, substr(max(sl), 21), d, dw, substr(max(dl), 21), protocol, dst_port, verdict,
       policy, count(*), sum(p), sum(b), min(f), max(l)
FROM (SELECT coalesce(src_workload, src_ip) AS s, src_workload IS NOT NULL AS sw,
             coalesce(dst_workload, dst_ip) AS d, dst_workload IS NOT NULL AS dw,
             protocol, dst_port, verdict, policy,
             max(packets) AS p, max(bytes) AS b, min(time) AS f, max(time) AS l,
             max(printf('%020d', time) || src_labels) AS sl,
             max(printf('%020d', time) || dst_labels) AS dl
      FROM flows WHERE time >= ?1 AND time <= ?2
      GROUP BY conn, verdict, policy, s, sw, d, dw, protocol, dst_port)
GROUP BY s, sw, d, dw, protocol, dst_port, verdict, policy";

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    path: String,
    seq: Arc<SeqClock>,
}

impl SqliteStore {
    pub async fn open(path: &str) -> Result<SqliteStore, Error> {
        let owned = path.to_string();
        let (conn, last) = blocking(path, move || {
            let conn = Connection::open(&owned).map_err(|e| unavailable(&owned, e))?;
            conn.pragma_update(None, "journal_mode", "WAL")
                .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
                .and_then(|_| conn.busy_timeout(std::time::Duration::from_secs(5)))
                .and_then(|_| conn.execute_batch(SCHEMA))
                .map_err(|e| failed("creating the schema", e))?;
            let last: i64 = conn
                .query_row("SELECT coalesce(max(seq), 0) FROM flows", [], |r| r.get(0))
                .map_err(|e| failed("reading the last sequence", e))?;
            Ok((conn, last))
        })
        .await?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_string(),
            seq: Arc::new(SeqClock::new(last)),
        })
    }

    /// Runs `f` on the connection off the async threads.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let conn = self.conn.clone();
        blocking(&self.path, move || {
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
    }

    async fn select(&self, sql: String, params: Vec<Value>) -> Result<Vec<FlowRecord>, Error> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&sql).map_err(|e| failed("a query", e))?;
            let rows = stmt
                .query_map(params_from_iter(params.iter().map(to_sql)), read_row)
                .map_err(|e| failed("a query", e))?;
            let mut out = Vec::new();
            for row in rows {
                let row = row.map_err(|e| failed("a query", e))?;
                out.push(row.into_record().map_err(|source| Error::BadRow {
                    backend: BACKEND,
                    source,
                })?);
            }
            Ok(out)
        })
        .await
    }

    async fn head(&self) -> Result<i64, Error> {
        self.with(|c| {
            c.query_row("SELECT coalesce(max(seq), 0) FROM flows", [], |r| r.get(0))
                .map_err(|e| failed("reading the last sequence", e))
        })
        .await
    }
}

impl FlowStore for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn insert<'a>(&'a self, batch: &'a [FlowRecord]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            let first = self.seq.take(batch.len());
            let rows: Vec<StoredRow> = batch
                .iter()
                .enumerate()
                .map(|(i, r)| StoredRow::from_record(r, first + i as i64))
                .collect();
            self.with(move |c| {
                let tx = c.transaction().map_err(|e| failed("an insert", e))?;
                {
                    let sql = format!(
                        "INSERT INTO flows ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
                         ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, \
                         ?23, ?24)"
                    );
                    let mut stmt = tx
                        .prepare_cached(&sql)
                        .map_err(|e| failed("an insert", e))?;
                    for r in &rows {
                        stmt.execute(params![
                            r.seq,
                            r.time,
                            r.node,
                            r.workload,
                            r.direction,
                            r.src_ip,
                            r.dst_ip,
                            r.src_port,
                            r.dst_port,
                            r.protocol,
                            r.verdict,
                            r.policy,
                            r.rule,
                            r.audit_verdict,
                            r.audit_policy,
                            r.packets,
                            r.bytes,
                            r.src_workload,
                            r.dst_workload,
                            r.src_labels,
                            r.dst_labels,
                            r.started,
                            r.ended,
                            r.conn,
                        ])
                        .map_err(|e| failed("an insert", e))?;
                    }
                }
                tx.commit().map_err(|e| failed("an insert", e))
            })
            .await
        })
    }

    fn query<'a>(&'a self, filter: &'a FlowFilter) -> BoxFuture<'a, Result<Page, Error>> {
        Box::pin(async move {
            filter.validate()?;
            let head = self.head().await?;
            let mut w = Where::new(Dialect::Sqlite);
            w.filter(filter);
            let sql = format!(
                "SELECT {COLUMNS} FROM flows {} ORDER BY time DESC, seq DESC LIMIT {}",
                w.clause(),
                filter.limit
            );
            let mut records = self.select(sql, w.params).await?;
            records.reverse();
            Ok(Page {
                records,
                cursor: Cursor(head),
            })
        })
    }

    fn after<'a>(
        &'a self,
        cursor: Cursor,
        filter: &'a FlowFilter,
    ) -> BoxFuture<'a, Result<Page, Error>> {
        Box::pin(async move {
            filter.validate()?;
            let head = self.head().await?;
            let mut w = Where::new(Dialect::Sqlite);
            let p = w.bind(Value::Int(cursor.0));
            w.push(format!("seq > {p}"));
            w.filter(filter);
            let sql = format!(
                "SELECT {COLUMNS} FROM flows {} ORDER BY seq LIMIT {}",
                w.clause(),
                filter.limit
            );
            let limit = filter.limit;
            let rows = self
                .with(move |c| {
                    let mut stmt = c.prepare_cached(&sql).map_err(|e| failed("a query", e))?;
                    let rows = stmt
                        .query_map(params_from_iter(w.params.iter().map(to_sql)), read_row)
                        .map_err(|e| failed("a query", e))?;
                    rows.collect::<Result<Vec<_>, _>>()
                        .map_err(|e| failed("a query", e))
                })
                .await?;
            page_after(rows, cursor, head, limit, BACKEND)
        })
    }

    fn edges<'a>(&'a self, window: &'a EdgeWindow) -> BoxFuture<'a, Result<Vec<Edge>, Error>> {
        Box::pin(async move {
            let (since, until) = (window.since.0, window.until.map_or(i64::MAX, |t| t.0));
            let rows = self
                .with(move |c| {
                    let mut stmt = c.prepare_cached(EDGES).map_err(|e| failed("edges", e))?;
                    let rows = stmt
                        .query_map(params![since, until], |r| {
                            Ok(EdgeRow {
                                src: r.get(0)?,
                                src_is_workload: r.get(1)?,
                                src_labels: r.get(2)?,
                                dst: r.get(3)?,
                                dst_is_workload: r.get(4)?,
                                dst_labels: r.get(5)?,
                                protocol: r.get(6)?,
                                dst_port: r.get(7)?,
                                verdict: r.get(8)?,
                                policy: r.get(9)?,
                                connections: r.get(10)?,
                                packets: r.get(11)?,
                                bytes: r.get(12)?,
                                first_seen: r.get(13)?,
                                last_seen: r.get(14)?,
                            })
                        })
                        .map_err(|e| failed("edges", e))?;
                    rows.collect::<Result<Vec<_>, _>>()
                        .map_err(|e| failed("edges", e))
                })
                .await?;
            finish(rows, BACKEND)
        })
    }

    fn expire(&self, older_than: Timestamp) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let cut = older_than.day_start().0;
            self.with(move |c| {
                c.execute("DELETE FROM flows WHERE time < ?1", [cut])
                    .map(|_| ())
                    .map_err(|e| failed("expiring old records", e))
            })
            .await
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let path = self.path.clone();
            self.with(move |c| {
                c.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
                    .map_err(|e| unavailable(&path, e))
            })
            .await
        })
    }
}

/// The page `after` returns: records in stored order, and a cursor past them (past the
/// whole store when nothing more matched).
pub(crate) fn page_after(
    rows: Vec<StoredRow>,
    cursor: Cursor,
    head: i64,
    limit: usize,
    backend: &'static str,
) -> Result<Page, Error> {
    let full = rows.len() >= limit;
    let last = rows.last().map_or(cursor.0, |r| r.seq);
    let records = rows
        .into_iter()
        .map(StoredRow::into_record)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::BadRow { backend, source })?;
    let next = if full { last } else { last.max(head) };
    Ok(Page {
        records,
        cursor: Cursor(next.max(cursor.0)),
    })
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok(StoredRow {
        seq: r.get(0)?,
        time: r.get(1)?,
        node: r.get(2)?,
        workload: r.get(3)?,
        direction: r.get(4)?,
        src_ip: r.get(5)?,
        dst_ip: r.get(6)?,
        src_port: r.get(7)?,
        dst_port: r.get(8)?,
        protocol: r.get(9)?,
        verdict: r.get(10)?,
        policy: r.get(11)?,
        rule: r.get(12)?,
        audit_verdict: r.get(13)?,
        audit_policy: r.get(14)?,
        packets: r.get(15)?,
        bytes: r.get(16)?,
        src_workload: r.get(17)?,
        dst_workload: r.get(18)?,
        src_labels: r.get(19)?,
        dst_labels: r.get(20)?,
        started: r.get(21)?,
        ended: r.get(22)?,
        conn: r.get(23)?,
    })
}

fn to_sql(v: &Value) -> &dyn rusqlite::ToSql {
    match v {
        Value::Int(n) => n,
        Value::Text(s) => s,
    }
}

async fn blocking<T: Send + 'static>(
    path: &str,
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| unavailable(path, e))?
}

fn unavailable(path: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Unavailable {
        backend: BACKEND,
        target: path.to_string(),
        source: Box::new(e),
    }
}

fn failed(what: &'static str, e: rusqlite::Error) -> Error {
    Error::Backend {
        backend: BACKEND,
        what,
        source: Box::new(e),
    }
}
