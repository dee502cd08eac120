//! PostgreSQL: one table, a batch inserted as one statement over arrays (unnest).

use crate::edge::{finish, EdgeRow};
use crate::filter::{Cursor, EdgeWindow, FlowFilter};
use crate::sql::{Dialect, SeqClock, StoredRow, Value, Where, COLUMNS};
use crate::sqlite::page_after;
use crate::{BoxFuture, Edge, Error, FlowRecord, FlowStore, Page, Timestamp};
use std::sync::Arc;
use tokio::sync::Mutex;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};

const BACKEND: &str = "postgres";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS flows (
    seq BIGINT NOT NULL,
    time BIGINT NOT NULL,
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
    rule BIGINT,
    audit_verdict TEXT,
    audit_policy TEXT,
    packets BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    src_workload TEXT,
    dst_workload TEXT,
    src_labels TEXT NOT NULL,
    dst_labels TEXT NOT NULL,
    started BIGINT NOT NULL,
    ended BIGINT,
    conn BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS flows_seq ON flows (seq);
CREATE INDEX IF NOT EXISTS flows_time ON flows (time);
CREATE INDEX IF NOT EXISTS flows_verdict ON flows (verdict, time);
CREATE INDEX IF NOT EXISTS flows_workload ON flows (workload, time);
CREATE INDEX IF NOT EXISTS flows_policy ON flows (policy, time);
";

const INSERT: &str = "INSERT INTO flows (seq, time, node, workload, direction, src_ip, dst_ip, \
    src_port, dst_port, protocol, verdict, policy, rule, audit_verdict, audit_policy, packets, \
    bytes, src_workload, dst_workload, src_labels, dst_labels, started, ended, conn) \
    SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
    $6::text[], $7::text[], $8::int[], $9::int[], $10::int[], $11::text[], $12::text[], \
    $13::bigint[], $14::text[], $15::text[], $16::bigint[], $17::bigint[], $18::text[], \
    $19::text[], $20::text[], $21::text[], $22::bigint[], $23::bigint[], $24::bigint[])";

// As SQLite's: per connection leg, then per edge; labels of the latest report.
const EDGES: &str = "
SELECT s, sw, substr(max(sl), 21), d, dw, substr(max(dl), 21), protocol::bigint,
       dst_port::bigint, verdict, policy, count(*)::bigint, sum(p)::bigint, sum(b)::bigint,
       min(f), max(l)
FROM (SELECT coalesce(src_workload, src_ip) AS s, src_workload IS NOT NULL AS sw,
             coalesce(dst_workload, dst_ip) AS d, dst_workload IS NOT NULL AS dw,
             protocol, dst_port, verdict, policy,
             max(packets) AS p, max(bytes) AS b, min(time) AS f, max(time) AS l,
             max((lpad(time::text, 20, '0') || src_labels) COLLATE \"C\") AS sl,
             max((lpad(time::text, 20, '0') || dst_labels) COLLATE \"C\") AS dl
      FROM flows WHERE time >= $1 AND time <= $2
      GROUP BY conn, verdict, policy, s, sw, d, dw, protocol, dst_port) AS legs
GROUP BY s, sw, d, dw, protocol, dst_port, verdict, policy";

pub struct PostgresStore {
    url: String,
    client: Mutex<Option<Arc<Client>>>,
    seq: SeqClock,
}

impl PostgresStore {
    pub async fn open(url: &str) -> Result<PostgresStore, Error> {
        url.parse::<tokio_postgres::Config>()
            .map_err(|e| Error::BadUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let mut store = PostgresStore {
            url: url.to_string(),
            client: Mutex::new(None),
            seq: SeqClock::new(0),
        };
        let c = store.client().await?;
        c.batch_execute(SCHEMA)
            .await
            .map_err(|e| store.failed("creating the schema", e))?;
        let last: i64 = c
            .query_one("SELECT coalesce(max(seq), 0) FROM flows", &[])
            .await
            .map_err(|e| store.failed("reading the last sequence", e))?
            .get(0);
        store.seq = SeqClock::new(last);
        Ok(store)
    }

    /// The connection, made again if the last one broke.
    async fn client(&self) -> Result<Arc<Client>, Error> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .map_err(|e| self.unavailable(e))?;
        tokio::spawn(async move {
            // Ends when the server or the client goes; the next call reconnects.
            let _ = conn.await;
        });
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    fn target(&self) -> String {
        // The URL without a password.
        match self.url.split_once('@') {
            Some((_, host)) => format!("postgres://…@{host}"),
            None => self.url.clone(),
        }
    }

    fn unavailable(&self, e: tokio_postgres::Error) -> Error {
        Error::Unavailable {
            backend: BACKEND,
            target: self.target(),
            source: Box::new(e),
        }
    }

    fn failed(&self, what: &'static str, e: tokio_postgres::Error) -> Error {
        if e.is_closed() || e.as_db_error().is_none() {
            return self.unavailable(e);
        }
        Error::Backend {
            backend: BACKEND,
            what,
            source: Box::new(e),
        }
    }

    async fn rows(
        &self,
        what: &'static str,
        sql: &str,
        params: &[Value],
    ) -> Result<Vec<Row>, Error> {
        let c = self.client().await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|v| match v {
                Value::Int(n) => n as &(dyn ToSql + Sync),
                Value::Text(s) => s as &(dyn ToSql + Sync),
            })
            .collect();
        c.query(sql, &refs).await.map_err(|e| self.failed(what, e))
    }

    async fn head(&self) -> Result<i64, Error> {
        let rows = self
            .rows(
                "reading the last sequence",
                "SELECT coalesce(max(seq), 0) FROM flows",
                &[],
            )
            .await?;
        Ok(rows.first().map_or(0, |r| r.get(0)))
    }

    async fn stored(&self, sql: &str, params: &[Value]) -> Result<Vec<StoredRow>, Error> {
        let rows = self.rows("a query", sql, params).await?;
        rows.iter()
            .map(|r| read_row(r).map_err(|e| self.failed("a query", e)))
            .collect()
    }
}

impl FlowStore for PostgresStore {
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
            macro_rules! col {
                ($f:ident) => {
                    rows.iter().map(|r| r.$f.clone()).collect::<Vec<_>>()
                };
                ($f:ident as i32) => {
                    rows.iter().map(|r| r.$f as i32).collect::<Vec<i32>>()
                };
            }
            let (seq, time, node, workload, direction) = (
                col!(seq),
                col!(time),
                col!(node),
                col!(workload),
                col!(direction),
            );
            let (src_ip, dst_ip) = (col!(src_ip), col!(dst_ip));
            let (src_port, dst_port, protocol) = (
                col!(src_port as i32),
                col!(dst_port as i32),
                col!(protocol as i32),
            );
            let (verdict, policy, rule) = (col!(verdict), col!(policy), col!(rule));
            let (audit_verdict, audit_policy) = (col!(audit_verdict), col!(audit_policy));
            let (packets, bytes) = (col!(packets), col!(bytes));
            let (src_workload, dst_workload) = (col!(src_workload), col!(dst_workload));
            let (src_labels, dst_labels) = (col!(src_labels), col!(dst_labels));
            let (started, ended, conn) = (col!(started), col!(ended), col!(conn));
            let params: [&(dyn ToSql + Sync); 24] = [
                &seq,
                &time,
                &node,
                &workload,
                &direction,
                &src_ip,
                &dst_ip,
                &src_port,
                &dst_port,
                &protocol,
                &verdict,
                &policy,
                &rule,
                &audit_verdict,
                &audit_policy,
                &packets,
                &bytes,
                &src_workload,
                &dst_workload,
                &src_labels,
                &dst_labels,
                &started,
                &ended,
                &conn,
            ];
            let c = self.client().await?;
            c.execute(INSERT, &params)
                .await
                .map(|_| ())
                .map_err(|e| self.failed("an insert", e))
        })
    }

    fn query<'a>(&'a self, filter: &'a FlowFilter) -> BoxFuture<'a, Result<Page, Error>> {
        Box::pin(async move {
            filter.validate()?;
            let head = self.head().await?;
            let mut w = Where::new(Dialect::Postgres);
            w.filter(filter);
            let sql = format!(
                "SELECT {COLUMNS} FROM flows {} ORDER BY time DESC, seq DESC LIMIT {}",
                w.clause(),
                filter.limit
            );
            let mut records = self
                .stored(&sql, &w.params)
                .await?
                .into_iter()
                .map(StoredRow::into_record)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| Error::BadRow {
                    backend: BACKEND,
                    source,
                })?;
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
            let mut w = Where::new(Dialect::Postgres);
            let p = w.bind(Value::Int(cursor.0));
            w.push(format!("seq > {p}"));
            w.filter(filter);
            let sql = format!(
                "SELECT {COLUMNS} FROM flows {} ORDER BY seq LIMIT {}",
                w.clause(),
                filter.limit
            );
            let rows = self.stored(&sql, &w.params).await?;
            page_after(rows, cursor, head, filter.limit, BACKEND)
        })
    }

    fn edges<'a>(&'a self, window: &'a EdgeWindow) -> BoxFuture<'a, Result<Vec<Edge>, Error>> {
        Box::pin(async move {
            let params = [
                Value::Int(window.since.0),
                Value::Int(window.until.map_or(i64::MAX, |t| t.0)),
            ];
            let rows = self.rows("edges", EDGES, &params).await?;
            let rows = rows
                .iter()
                .map(|r| {
                    Ok(EdgeRow {
                        src: r.try_get(0)?,
                        src_is_workload: r.try_get(1)?,
                        src_labels: r.try_get(2)?,
                        dst: r.try_get(3)?,
                        dst_is_workload: r.try_get(4)?,
                        dst_labels: r.try_get(5)?,
                        protocol: r.try_get(6)?,
                        dst_port: r.try_get(7)?,
                        verdict: r.try_get(8)?,
                        policy: r.try_get(9)?,
                        connections: r.try_get(10)?,
                        packets: r.try_get(11)?,
                        bytes: r.try_get(12)?,
                        first_seen: r.try_get(13)?,
                        last_seen: r.try_get(14)?,
                    })
                })
                .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                .map_err(|e| self.failed("edges", e))?;
            finish(rows, BACKEND)
        })
    }

    fn expire(&self, older_than: Timestamp) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let cut = [Value::Int(older_than.day_start().0)];
            self.rows(
                "expiring old records",
                "DELETE FROM flows WHERE time < $1",
                &cut,
            )
            .await
            .map(|_| ())
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let c = self.client().await?;
            c.simple_query("SELECT 1")
                .await
                .map(|_| ())
                .map_err(|e| self.unavailable(e))
        })
    }
}

fn read_row(r: &Row) -> Result<StoredRow, tokio_postgres::Error> {
    let int =
        |i: usize| -> Result<i64, tokio_postgres::Error> { Ok(i64::from(r.try_get::<_, i32>(i)?)) };
    Ok(StoredRow {
        seq: r.try_get(0)?,
        time: r.try_get(1)?,
        node: r.try_get(2)?,
        workload: r.try_get(3)?,
        direction: r.try_get(4)?,
        src_ip: r.try_get(5)?,
        dst_ip: r.try_get(6)?,
        src_port: int(7)?,
        dst_port: int(8)?,
        protocol: int(9)?,
        verdict: r.try_get(10)?,
        policy: r.try_get(11)?,
        rule: r.try_get(12)?,
        audit_verdict: r.try_get(13)?,
        audit_policy: r.try_get(14)?,
        packets: r.try_get(15)?,
        bytes: r.try_get(16)?,
        src_workload: r.try_get(17)?,
        dst_workload: r.try_get(18)?,
        src_labels: r.try_get(19)?,
        dst_labels: r.try_get(20)?,
        started: r.try_get(21)?,
        ended: r.try_get(22)?,
        conn: r.try_get(23)?,
    })
}
