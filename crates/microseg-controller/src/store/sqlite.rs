//! SQLite back end: one file, WAL, one connection behind a mutex. Writers take the
//! database lock with `BEGIN IMMEDIATE`, so even two controllers on one file stay
//! consistent (each sees the other's changes by polling the revision).

use super::parsed::{self, ParsedRows, RawRow};
use super::{BoxFut, NodeRow, Row, Snapshot, Store, StoreError, TxFn, Write, SCHEMA};
use crate::error::Error;
use rusqlite::{params, Connection, TransactionBehavior};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub struct Sqlite {
    conn: Mutex<Connection>,
    parsed: ParsedRows,
}

const COLS: &str = "kind, name, json, node, reported, revision, deleted";

fn row(r: &rusqlite::Row) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        kind: r.get(0)?,
        name: r.get(1)?,
        json: r.get(2)?,
        node: r.get(3)?,
        reported: r.get(4)?,
        revision: r.get::<_, i64>(5)? as u64,
        deleted: r.get(6)?,
    })
}

fn rows(conn: &Connection, sql: &str, p: impl rusqlite::Params) -> Result<Vec<RawRow>, Error> {
    let mut st = conn.prepare_cached(sql)?;
    let out = st.query_map(p, row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(out)
}

const LIVE: &str = "SELECT kind, name, json, node, reported, revision, deleted FROM resources WHERE NOT deleted ORDER BY kind, name";

fn revision(conn: &Connection) -> Result<u64, Error> {
    let v: i64 = conn.query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
        r.get(0)
    })?;
    Ok(v as u64)
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Sqlite, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Sqlite {
            conn: Mutex::new(conn),
            parsed: ParsedRows::default(),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, Error>) -> Result<T, Error> {
        let mut c = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        f(&mut c)
    }
}

fn transact(conn: &mut Connection, parsed: &ParsedRows, f: TxFn<'_>) -> Result<u64, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut snap = Snapshot {
        revision: revision(&tx)?,
        rows: parsed.rows(rows(&tx, LIVE, [])?, true)?,
        ..Default::default()
    };
    {
        let mut st = tx.prepare_cached("SELECT name, labels FROM label_overlays")?;
        let it = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for x in it {
            let (n, l) = x?;
            snap.overlays.insert(n.clone(), parsed::overlay(&n, &l)?);
        }
    }
    let writes = f(&snap)?;
    let mut rev = snap.revision;
    if writes.iter().any(Write::changes_resources) {
        rev += 1;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'revision'",
            params![rev as i64],
        )?;
    }
    for w in writes {
        match w {
            Write::Put {
                kind,
                name,
                json,
                node,
                reported,
            } => {
                tx.execute(
                    "INSERT INTO resources (kind, name, json, node, reported, revision, deleted)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, FALSE)
                     ON CONFLICT (kind, name) DO UPDATE SET json = excluded.json,
                       node = excluded.node, reported = excluded.reported,
                       revision = excluded.revision, deleted = FALSE",
                    params![
                        kind,
                        name,
                        json,
                        node,
                        reported.map(|r| serde_json::to_string(&r)).transpose()?,
                        rev as i64
                    ],
                )?;
            }
            Write::Delete { kind, name } => {
                tx.execute(
                    "UPDATE resources SET deleted = TRUE, revision = ?3 WHERE kind = ?1 AND name = ?2",
                    params![kind, name, rev as i64],
                )?;
            }
            Write::Overlay { name, labels } => {
                if labels.is_empty() {
                    tx.execute("DELETE FROM label_overlays WHERE name = ?1", params![name])?;
                } else {
                    tx.execute(
                        "INSERT INTO label_overlays (name, labels) VALUES (?1, ?2)
                         ON CONFLICT (name) DO UPDATE SET labels = excluded.labels",
                        params![name, serde_json::to_string(&labels)?],
                    )?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(rev)
}

impl Store for Sqlite {
    fn transact<'a>(&'a self, f: TxFn<'a>) -> BoxFut<'a, u64> {
        Box::pin(async move { self.with(|c| transact(c, &self.parsed, f)) })
    }

    fn revision(&self) -> BoxFut<'_, u64> {
        Box::pin(async move { self.with(|c| revision(c)) })
    }

    fn list<'a>(&'a self, kind: Option<&'a str>) -> BoxFut<'a, Vec<Row>> {
        Box::pin(async move {
            self.with(|c| match kind {
                Some(k) => {
                    let raw = rows(
                        c,
                        &format!(
                            "SELECT {COLS} FROM resources WHERE NOT deleted AND kind = ?1 ORDER BY name"
                        ),
                        [k],
                    )?;
                    Ok(self.parsed.rows(raw, false)?)
                }
                None => Ok(self.parsed.rows(rows(c, LIVE, [])?, true)?),
            })
        })
    }

    fn full(&self) -> BoxFut<'_, (u64, Vec<Row>)> {
        Box::pin(async move {
            self.with(|c| {
                let tx = c.transaction()?;
                let rev = revision(&tx)?;
                let r = rows(&tx, LIVE, [])?;
                tx.commit()?;
                Ok((rev, self.parsed.rows(r, true)?))
            })
        })
    }

    fn since(&self, rev: u64) -> BoxFut<'_, Vec<Row>> {
        Box::pin(async move {
            self.with(|c| {
                let raw = rows(
                    c,
                    &format!(
                        "SELECT {COLS} FROM resources WHERE revision > ?1 ORDER BY revision, kind, name"
                    ),
                    [rev as i64],
                )?;
                Ok(self.parsed.rows(raw, false)?)
            })
        })
    }

    fn touch_node<'a>(&'a self, node: &'a str, now: f64) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.with(|c| {
                c.execute(
                    "INSERT INTO nodes (name, last_seen) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen",
                    params![node, now],
                )?;
                Ok(())
            })
        })
    }

    fn ack<'a>(&'a self, node: &'a str, revision: u64, error: &'a str, now: f64) -> BoxFut<'a, ()> {
        Box::pin(async move {
            self.with(|c| {
                // A failed revision leaves the enforced one as it was.
                if error.is_empty() {
                    c.execute(
                        "INSERT INTO nodes (name, revision, error, last_ack, last_seen)
                         VALUES (?1, ?2, '', ?3, ?3)
                         ON CONFLICT (name) DO UPDATE SET revision = excluded.revision,
                           error = '', last_ack = excluded.last_ack, last_seen = excluded.last_seen",
                        params![node, revision as i64, now],
                    )?;
                } else {
                    c.execute(
                        "INSERT INTO nodes (name, error, last_ack, last_seen) VALUES (?1, ?2, ?3, ?3)
                         ON CONFLICT (name) DO UPDATE SET error = excluded.error,
                           last_ack = excluded.last_ack, last_seen = excluded.last_seen",
                        params![node, format!("revision {revision}: {error}"), now],
                    )?;
                }
                Ok(())
            })
        })
    }

    fn nodes(&self) -> BoxFut<'_, Vec<NodeRow>> {
        Box::pin(async move {
            self.with(|c| {
                let mut st = c.prepare_cached(
                    "SELECT name, revision, error, last_ack, last_seen FROM nodes ORDER BY name",
                )?;
                let out = st
                    .query_map([], |r| {
                        Ok(NodeRow {
                            name: r.get(0)?,
                            revision: r.get::<_, i64>(1)? as u64,
                            error: r.get(2)?,
                            last_ack: r.get(3)?,
                            last_seen: r.get(4)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(out)
            })
        })
    }

    fn watch_changes(
        self: Arc<Self>,
        tx: Arc<watch::Sender<u64>>,
        mut stop: watch::Receiver<bool>,
    ) {
        // Another process writing the same file: notice it by polling.
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(2));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                if let Ok(rev) = self.revision().await {
                    super::publish(&tx, rev);
                }
            }
        });
    }
}
