//! ClickHouse over its HTTP interface. The SQL is what release 18.16 (Debian's) and
//! current releases both take: a MergeTree partitioned by day (retention drops whole
//! partitions; 18.16 has no TTL), absent values as '' or -1 (no Nullable in keys or
//! aggregates there), labels as JSON text (no Map type).

mod edges;
mod rows;

use crate::edge::Edge;
use crate::filter::{Cursor, EdgeWindow, FlowFilter};
use crate::http::{self, HttpError};
use crate::sql::{clickhouse_string, Dialect, SeqClock, StoredRow, Where, COLUMNS};
use crate::sqlite::page_after;
use crate::{BoxFuture, Error, FlowRecord, FlowStore, Page, Timestamp};
use edges::{EdgeCache, EDGE_ENDS_TABLE};
use rows::ChRow;
use serde::Deserialize;

const BACKEND: &str = "clickhouse";
const CREATE_DATABASE: &str = "creating the database";

pub struct ClickHouseStore {
    /// HOST:PORT of the HTTP interface.
    addr: String,
    db: String,
    seq: SeqClock,
    edges: EdgeCache,
}

impl ClickHouseStore {
    /// `clickhouse://HOST:PORT/DB` (DB defaults to `default`); creates the database and
    /// table when missing.
    pub async fn open(url: &str) -> Result<ClickHouseStore, Error> {
        let bad = |reason: &str| Error::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("clickhouse://")
            .ok_or_else(|| bad("clickhouse://HOST:PORT/DB"))?;
        let (addr, db) = rest.split_once('/').unwrap_or((rest, ""));
        let db = if db.is_empty() { "default" } else { db };
        if !addr.contains(':') || addr.contains('@') {
            return Err(bad("clickhouse://HOST:PORT/DB, the HTTP port (8123) given"));
        }
        if !db.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
            return Err(bad("the database name: letters, digits and '_'"));
        }
        let mut store = ClickHouseStore {
            addr: addr.to_string(),
            db: db.to_string(),
            seq: SeqClock::new(0),
            edges: EdgeCache::default(),
        };
        store
            .run(
                "creating the database",
                &format!("CREATE DATABASE IF NOT EXISTS {db}"),
            )
            .await?;
        let table = format!(
            "CREATE TABLE IF NOT EXISTS {db}.flows (
                day Date, seq Int64, time Int64, node String, workload String,
                direction String, src_ip String, dst_ip String, src_port Int32,
                dst_port Int32, protocol Int32, verdict String, policy String, rule Int64,
                audit_verdict String, audit_policy String, packets Int64, bytes Int64,
                src_workload String, dst_workload String, src_labels String,
                dst_labels String, started Int64, ended Int64, conn Int64, edge Int64, leg Int64
            ) ENGINE = MergeTree PARTITION BY day ORDER BY time"
        );
        store.run("creating the table", &table).await?;
        store.run("creating the table", EDGE_ENDS_TABLE).await?;
        let last = store.head().await?;
        store.seq = SeqClock::new(last);
        Ok(store)
    }

    /// One statement; the answer's body.
    async fn send(&self, what: &'static str, query: &str, body: &[u8]) -> Result<Vec<u8>, Error> {
        // Until it exists, the database cannot be the session's.
        let db = if what == CREATE_DATABASE {
            String::new()
        } else {
            format!("database={}&", self.db)
        };
        let path = format!(
            "/?{db}output_format_json_quote_64bit_integers=0&query={}",
            http::encode(query)
        );
        let resp = http::post(&self.addr, &path, body).await.map_err(|e| {
            let (HttpError::Connect(e) | HttpError::Exchange(e)) = e;
            Error::Unavailable {
                backend: BACKEND,
                target: format!("http://{}", self.addr),
                source: Box::new(e),
            }
        })?;
        if resp.status != 200 {
            let msg = String::from_utf8_lossy(&resp.body).trim().to_string();
            return Err(Error::Backend {
                backend: BACKEND,
                what,
                source: format!("HTTP {}: {msg}", resp.status).into(),
            });
        }
        Ok(resp.body)
    }

    async fn run(&self, what: &'static str, query: &str) -> Result<Vec<u8>, Error> {
        self.send(what, query, b"").await
    }

    /// A `FORMAT JSONEachRow` select, one value a line.
    async fn select<T: for<'de> Deserialize<'de>>(
        &self,
        what: &'static str,
        query: &str,
    ) -> Result<Vec<T>, Error> {
        let body = self
            .run(what, &format!("{query} FORMAT JSONEachRow"))
            .await?;
        body.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| {
                serde_json::from_slice(l).map_err(|e| Error::Corrupt {
                    backend: BACKEND,
                    what: format!("{}: {e}", String::from_utf8_lossy(l)),
                })
            })
            .collect()
    }

    async fn head(&self) -> Result<i64, Error> {
        #[derive(Deserialize)]
        struct Head {
            head: i64,
        }
        let rows: Vec<Head> = self
            .select(
                "reading the last sequence",
                "SELECT max(seq) AS head FROM flows",
            )
            .await?;
        Ok(rows.first().map_or(0, |h| h.head))
    }

    /// The filter, plus the days it spans so that other partitions are skipped.
    fn clause(filter: &FlowFilter, w: &mut Where) {
        w.filter(filter);
        if let Some(t) = filter.since {
            w.push(format!("day >= toDate('{}')", t.date()));
        }
        if let Some(t) = filter.until {
            w.push(format!("day <= toDate('{}')", t.date()));
        }
    }

    async fn stored(&self, query: &str) -> Result<Vec<StoredRow>, Error> {
        let rows: Vec<ChRow> = self.select("a query", query).await?;
        Ok(rows.into_iter().map(ChRow::into_stored).collect())
    }
}

fn json_lines<T: serde::Serialize>(rows: &[T]) -> Result<Vec<u8>, Error> {
    let mut body = Vec::with_capacity(rows.len() * 512);
    for r in rows {
        serde_json::to_writer(&mut body, r).map_err(|e| Error::Backend {
            backend: BACKEND,
            what: "an insert",
            source: Box::new(e),
        })?;
        body.push(b'\n');
    }
    Ok(body)
}

fn records(rows: Vec<StoredRow>) -> Result<Vec<FlowRecord>, Error> {
    rows.into_iter()
        .map(StoredRow::into_record)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| Error::BadRow {
            backend: BACKEND,
            source,
        })
}

impl FlowStore for ClickHouseStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn insert<'a>(&'a self, batch: &'a [FlowRecord]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            let first = self.seq.take(batch.len());
            let rows: Vec<ChRow> = batch
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    ChRow::from_stored(StoredRow::from_record(r, first + i as i64), r.edge_id())
                })
                .collect();
            // The edges' ends first: a flow row is never without them.
            let ends = self.edges.missing(&rows);
            if !ends.is_empty() {
                let q = "INSERT INTO edge_ends FORMAT JSONEachRow";
                self.send("an insert", q, &json_lines(&ends)?).await?;
            }
            let q = format!("INSERT INTO flows (day, {COLUMNS}, edge, leg) FORMAT JSONEachRow");
            self.send("an insert", &q, &json_lines(&rows)?).await?;
            self.edges.written(&ends, &rows);
            Ok(())
        })
    }

    fn query<'a>(&'a self, filter: &'a FlowFilter) -> BoxFuture<'a, Result<Page, Error>> {
        Box::pin(async move {
            filter.validate()?;
            let head = self.head().await?;
            let mut w = Where::new(Dialect::ClickHouse);
            Self::clause(filter, &mut w);
            // The oldest time among the newest `limit` first, over one column: sorting
            // every matching row with all its columns took seconds on millions.
            #[derive(Deserialize)]
            struct Oldest {
                time: i64,
            }
            let oldest: Vec<Oldest> = self
                .select(
                    "a query",
                    &format!(
                        "SELECT time FROM flows {} ORDER BY time DESC LIMIT {}, 1",
                        w.clause(),
                        filter.limit - 1
                    ),
                )
                .await?;
            if let Some(o) = oldest.first() {
                w.push(format!("time >= {}", o.time));
            }
            let q = format!(
                "SELECT {COLUMNS} FROM flows {} ORDER BY time DESC, seq DESC LIMIT {}",
                w.clause(),
                filter.limit
            );
            let mut records = records(self.stored(&q).await?)?;
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
            let mut w = Where::new(Dialect::ClickHouse);
            w.push(format!("seq > {}", cursor.0));
            Self::clause(filter, &mut w);
            let q = format!(
                "SELECT {COLUMNS} FROM flows {} ORDER BY seq LIMIT {}",
                w.clause(),
                filter.limit
            );
            let rows = self.stored(&q).await?;
            page_after(rows, cursor, head, filter.limit, BACKEND)
        })
    }

    fn edges<'a>(&'a self, window: &'a EdgeWindow) -> BoxFuture<'a, Result<Vec<Edge>, Error>> {
        Box::pin(self.edges_in(window))
    }

    fn expire(&self, older_than: Timestamp) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let cut = older_than.date();
            #[derive(Deserialize)]
            struct Part {
                table: String,
                partition: String,
            }
            let parts: Vec<Part> = self
                .select(
                    "listing partitions",
                    &format!(
                        "SELECT DISTINCT table, partition FROM system.parts WHERE database = {} \
                         AND table IN ('flows', 'edge_ends') AND active",
                        clickhouse_string(&self.db)
                    ),
                )
                .await?;
            for p in parts {
                // A Date partition reads back as YYYY-MM-DD (quoted in newer releases).
                let day = p.partition.trim_matches('\'');
                if day < cut.as_str() {
                    let q = format!(
                        "ALTER TABLE {} DROP PARTITION {}",
                        p.table,
                        clickhouse_string(day)
                    );
                    self.run("dropping an old day", &q).await?;
                }
            }
            // Edges seen again must be written again.
            self.edges.clear();
            Ok(())
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move { self.run("SELECT 1", "SELECT 1").await.map(|_| ()) })
    }
}
