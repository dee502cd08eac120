//! ClickHouse over its HTTP interface. The SQL is what release 18.16 (Debian's) and
//! current releases both take: a MergeTree partitioned by day (retention drops whole
//! partitions; 18.16 has no TTL), absent values as '' or -1 (no Nullable in keys or
//! aggregates there), labels as JSON text (no Map type).

use crate::edge::{finish, EdgeRow};
use crate::filter::{Cursor, EdgeWindow, FlowFilter};
use crate::http::{self, HttpError};
use crate::sql::{clickhouse_string, Dialect, SeqClock, StoredRow, Where, COLUMNS};
use crate::sqlite::page_after;
use crate::{BoxFuture, Edge, Error, FlowRecord, FlowStore, Page, Timestamp};
use serde::{Deserialize, Serialize};

const BACKEND: &str = "clickhouse";
const CREATE_DATABASE: &str = "creating the database";

pub struct ClickHouseStore {
    /// HOST:PORT of the HTTP interface.
    addr: String,
    db: String,
    seq: SeqClock,
}

/// A row as JSONEachRow carries it.
#[derive(Serialize, Deserialize)]
struct ChRow {
    #[serde(skip_deserializing)]
    day: String,
    seq: i64,
    time: i64,
    node: String,
    workload: String,
    direction: String,
    src_ip: String,
    dst_ip: String,
    src_port: i64,
    dst_port: i64,
    protocol: i64,
    verdict: String,
    policy: String,
    rule: i64,
    audit_verdict: String,
    audit_policy: String,
    packets: i64,
    bytes: i64,
    src_workload: String,
    dst_workload: String,
    src_labels: String,
    dst_labels: String,
    started: i64,
    ended: i64,
    conn: i64,
}

#[derive(Deserialize)]
struct ChEdge {
    s: String,
    sw: u8,
    sl: String,
    d: String,
    dw: u8,
    dl: String,
    protocol: i64,
    dst_port: i64,
    verdict: String,
    policy: String,
    connections: i64,
    packets: i64,
    bytes: i64,
    first_seen: i64,
    last_seen: i64,
}

fn text(v: Option<String>) -> String {
    v.unwrap_or_default()
}

fn some(v: String) -> Option<String> {
    (!v.is_empty()).then_some(v)
}

impl ChRow {
    fn from_stored(r: StoredRow) -> ChRow {
        ChRow {
            day: Timestamp(r.time).date(),
            seq: r.seq,
            time: r.time,
            node: r.node,
            workload: r.workload,
            direction: r.direction,
            src_ip: r.src_ip,
            dst_ip: r.dst_ip,
            src_port: r.src_port,
            dst_port: r.dst_port,
            protocol: r.protocol,
            verdict: r.verdict,
            policy: text(r.policy),
            rule: r.rule.unwrap_or(-1),
            audit_verdict: text(r.audit_verdict),
            audit_policy: text(r.audit_policy),
            packets: r.packets,
            bytes: r.bytes,
            src_workload: text(r.src_workload),
            dst_workload: text(r.dst_workload),
            src_labels: r.src_labels,
            dst_labels: r.dst_labels,
            started: r.started,
            ended: r.ended.unwrap_or(-1),
            conn: r.conn,
        }
    }

    fn into_stored(self) -> StoredRow {
        StoredRow {
            seq: self.seq,
            time: self.time,
            node: self.node,
            workload: self.workload,
            direction: self.direction,
            src_ip: self.src_ip,
            dst_ip: self.dst_ip,
            src_port: self.src_port,
            dst_port: self.dst_port,
            protocol: self.protocol,
            verdict: self.verdict,
            policy: some(self.policy),
            rule: (self.rule >= 0).then_some(self.rule),
            audit_verdict: some(self.audit_verdict),
            audit_policy: some(self.audit_policy),
            packets: self.packets,
            bytes: self.bytes,
            src_workload: some(self.src_workload),
            dst_workload: some(self.dst_workload),
            src_labels: self.src_labels,
            dst_labels: self.dst_labels,
            started: self.started,
            ended: (self.ended >= 0).then_some(self.ended),
            conn: self.conn,
        }
    }
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
                dst_labels String, started Int64, ended Int64, conn Int64
            ) ENGINE = MergeTree PARTITION BY day ORDER BY time"
        );
        store.run("creating the table", &table).await?;
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

fn records(rows: Vec<StoredRow>) -> Result<Vec<FlowRecord>, Error> {
    rows.into_iter()
        .map(StoredRow::into_record)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|what| Error::Corrupt {
            backend: BACKEND,
            what,
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
            let mut body = Vec::with_capacity(batch.len() * 512);
            for (i, r) in batch.iter().enumerate() {
                let row = ChRow::from_stored(StoredRow::from_record(r, first + i as i64));
                serde_json::to_writer(&mut body, &row).map_err(|e| Error::Backend {
                    backend: BACKEND,
                    what: "an insert",
                    source: Box::new(e),
                })?;
                body.push(b'\n');
            }
            let query = format!("INSERT INTO flows (day, {COLUMNS}) FORMAT JSONEachRow");
            self.send("an insert", &query, &body).await.map(|_| ())
        })
    }

    fn query<'a>(&'a self, filter: &'a FlowFilter) -> BoxFuture<'a, Result<Page, Error>> {
        Box::pin(async move {
            filter.validate()?;
            let head = self.head().await?;
            let mut w = Where::new(Dialect::ClickHouse);
            Self::clause(filter, &mut w);
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
        Box::pin(async move {
            let until = window.until.unwrap_or(Timestamp(i64::MAX / 2));
            let mut w = Where::new(Dialect::ClickHouse);
            w.push(format!(
                "time >= {} AND time <= {}",
                window.since.0, until.0
            ));
            w.push(format!("day >= toDate('{}')", window.since.date()));
            if window.until.is_some() {
                w.push(format!("day <= toDate('{}')", until.date()));
            }
            // Per connection leg, then per edge; labels of the latest report.
            let q = format!(
                "SELECT s, sw, argMax(sl, l) AS sl, d, dw, argMax(dl, l) AS dl, protocol,
                        dst_port, verdict, policy, toInt64(count()) AS connections,
                        sum(p) AS packets, sum(b) AS bytes, min(f) AS first_seen,
                        max(l) AS last_seen
                 FROM (SELECT if(src_workload = '', src_ip, src_workload) AS s,
                              src_workload != '' AS sw,
                              if(dst_workload = '', dst_ip, dst_workload) AS d,
                              dst_workload != '' AS dw, protocol, dst_port, verdict, policy,
                              max(packets) AS p, max(bytes) AS b, min(time) AS f,
                              max(time) AS l, argMax(src_labels, time) AS sl,
                              argMax(dst_labels, time) AS dl
                       FROM flows {}
                       GROUP BY conn, verdict, policy, s, sw, d, dw, protocol, dst_port)
                 GROUP BY s, sw, d, dw, protocol, dst_port, verdict, policy",
                w.clause()
            );
            let rows: Vec<ChEdge> = self.select("edges", &q).await?;
            let rows = rows
                .into_iter()
                .map(|e| EdgeRow {
                    src: e.s,
                    src_is_workload: e.sw != 0,
                    src_labels: e.sl,
                    dst: e.d,
                    dst_is_workload: e.dw != 0,
                    dst_labels: e.dl,
                    protocol: e.protocol,
                    dst_port: e.dst_port,
                    verdict: e.verdict,
                    policy: some(e.policy),
                    connections: e.connections,
                    packets: e.packets,
                    bytes: e.bytes,
                    first_seen: e.first_seen,
                    last_seen: e.last_seen,
                })
                .collect();
            finish(rows, BACKEND)
        })
    }

    fn expire(&self, older_than: Timestamp) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Part {
                partition: String,
            }
            let cut = older_than.date();
            let parts: Vec<Part> = self
                .select(
                    "listing partitions",
                    &format!(
                        "SELECT DISTINCT partition FROM system.parts WHERE database = {} \
                         AND table = 'flows' AND active",
                        clickhouse_string(&self.db)
                    ),
                )
                .await?;
            for p in parts {
                // A Date partition reads back as YYYY-MM-DD (quoted in newer releases).
                let day = p.partition.trim_matches('\'');
                if day < cut.as_str() {
                    let q = format!(
                        "ALTER TABLE flows DROP PARTITION {}",
                        clickhouse_string(day)
                    );
                    self.run("dropping an old day", &q).await?;
                }
            }
            Ok(())
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move { self.run("SELECT 1", "SELECT 1").await.map(|_| ()) })
    }
}
