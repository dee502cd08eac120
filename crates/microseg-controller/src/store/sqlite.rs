//! SQLite back end: one file, WAL, one connection behind a mutex. Writers take the
//! database lock with `BEGIN IMMEDIATE`, so even two controllers on one file stay
//! consistent (each sees the other's changes by polling the revision).

use super::live::State;
use super::parsed::{self, RawRow};
use super::{AckRow, BoxFut, Live, NodeRow, Outcomes, Row, Store, StoreError, TxFn, Write, SCHEMA};
use crate::error::Error;
use rusqlite::{params, Connection, TransactionBehavior};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    live: Live,
    store_id: u64,
}

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
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('store_id', ?1) ON CONFLICT DO NOTHING",
            params![super::new_store_id()],
        )?;
        let store_id: i64 =
            conn.query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| {
                r.get(0)
            })?;
        Ok(Sqlite {
            conn: Arc::new(Mutex::new(conn)),
            live: Live::default(),
            store_id: store_id as u64,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, Error>) -> Result<T, Error> {
        with(&self.conn, f)
    }

    /// Runs `f` on the connection on the blocking pool: SQLite's calls block, and the
    /// connection may be busy with a long transaction.
    async fn off<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || with(&conn, f))
            .await
            .map_err(|e| Error::http(500, format!("the database call failed: {e}")))?
    }
}

fn with<T>(
    conn: &Mutex<Connection>,
    f: impl FnOnce(&mut Connection) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut c = conn.lock().map_err(|_| StoreError::Poisoned)?;
    f(&mut c)
}

/// Runs blocking work on an async worker without holding up the others (the worker's
/// other tasks move to another thread meanwhile).
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn overlays(
    conn: &Connection,
) -> Result<BTreeMap<String, BTreeMap<String, Option<String>>>, Error> {
    let mut out = BTreeMap::new();
    let mut st = conn.prepare_cached("SELECT name, labels FROM label_overlays")?;
    let it = st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    for x in it {
        let (n, l) = x?;
        let o = parsed::overlay(&n, &l)?;
        out.insert(n, o);
    }
    Ok(out)
}

const SINCE: &str = "SELECT kind, name, json, node, reported, revision, deleted FROM resources WHERE revision > ?1 ORDER BY revision, kind, name";

/// Brings the memory up to the database's revision `db_rev` (read in this transaction).
fn sync_state(conn: &Connection, st: &mut State, db_rev: u64) -> Result<(), Error> {
    if st.needs_load() || db_rev < st.snap.revision {
        let raw = rows(conn, LIVE, [])?;
        st.load(db_rev, raw, overlays(conn)?);
        return Ok(());
    }
    if db_rev > st.snap.revision {
        let raw = rows(conn, SINCE, [st.snap.revision as i64])?;
        st.catch_up(db_rev, raw);
    }
    st.set_overlays(overlays(conn)?);
    Ok(())
}

fn transact(
    conn: &mut Connection,
    st: &mut State,
    fs: Vec<TxFn<'_>>,
) -> Result<(u64, Outcomes), Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let base = revision(&tx)?;
    sync_state(&tx, st, base)?;
    let (writes, outcomes) = st.run(fs);
    let written = write_all(&tx, base, writes).and_then(|rev| {
        tx.commit()?;
        Ok(rev)
    });
    match written {
        Ok(rev) => {
            st.commit(rev);
            Ok((rev, outcomes))
        }
        Err(e) => {
            st.abort();
            Err(e)
        }
    }
}

/// Writes the rows at the next revision (if any resource changes); returns the revision.
fn write_all(tx: &Connection, base: u64, writes: Vec<Write>) -> Result<u64, Error> {
    let mut rev = base;
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
    Ok(rev)
}

fn ack(c: &Connection, a: &AckRow) -> Result<(), Error> {
    // A failed revision leaves the enforced one as it was.
    if a.error.is_empty() {
        c.prepare_cached(
            "INSERT INTO nodes (name, revision, error, last_ack, last_seen)
             VALUES (?1, ?2, '', ?3, ?3)
             ON CONFLICT (name) DO UPDATE SET revision = excluded.revision,
               error = '', last_ack = excluded.last_ack, last_seen = excluded.last_seen",
        )?
        .execute(params![a.node, a.revision as i64, a.now])?;
    } else {
        c.prepare_cached(
            "INSERT INTO nodes (name, error, last_ack, last_seen) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT (name) DO UPDATE SET error = excluded.error,
               last_ack = excluded.last_ack, last_seen = excluded.last_seen",
        )?
        .execute(params![
            a.node,
            format!("revision {}: {}", a.revision, a.error),
            a.now
        ])?;
    }
    Ok(())
}

impl Store for Sqlite {
    fn transact_all<'a>(&'a self, fs: Vec<TxFn<'a>>) -> BoxFut<'a, (u64, Outcomes)> {
        Box::pin(async move {
            let mut st = self.live.write().await;
            blocking(|| self.with(|c| transact(c, &mut st, fs)))
        })
    }

    fn revision(&self) -> BoxFut<'_, u64> {
        Box::pin(async move { self.off(|c| revision(c)).await })
    }

    fn store_id(&self) -> u64 {
        self.store_id
    }

    fn live(&self) -> &Live {
        &self.live
    }

    fn catch_up(&self) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let db = self.revision().await?;
            if db == self.live.revision().await && !self.live.needs_load().await {
                return Ok(());
            }
            let mut st = self.live.write().await;
            blocking(|| {
                self.with(|c| {
                    let tx = c.transaction()?;
                    let db = revision(&tx)?;
                    sync_state(&tx, &mut st, db)?;
                    tx.commit()?;
                    Ok(())
                })
            })
        })
    }

    fn since(&self, rev: u64) -> BoxFut<'_, Vec<Row>> {
        Box::pin(async move {
            let raw = self.off(move |c| rows(c, SINCE, [rev as i64])).await?;
            Ok(raw.into_iter().map(parsed::typed).collect())
        })
    }

    fn touch_node<'a>(&'a self, node: &'a str, now: f64) -> BoxFut<'a, ()> {
        let node = node.to_string();
        Box::pin(async move {
            self.off(move |c| {
                c.execute(
                    "INSERT INTO nodes (name, last_seen) VALUES (?1, ?2)
                     ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen",
                    params![node, now],
                )?;
                Ok(())
            })
            .await
        })
    }

    fn touch_all(&self, seen: Vec<(String, f64)>) -> BoxFut<'_, ()> {
        Box::pin(async move {
            self.off(move |c| {
                let tx = c.transaction()?;
                for (node, now) in &seen {
                    tx.prepare_cached(
                        "INSERT INTO nodes (name, last_seen) VALUES (?1, ?2)
                         ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen",
                    )?
                    .execute(params![node, now])?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
        })
    }

    fn ack_all(&self, acks: Vec<AckRow>) -> BoxFut<'_, ()> {
        Box::pin(async move {
            self.off(move |c| {
                let tx = c.transaction()?;
                for a in &acks {
                    ack(&tx, a)?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
        })
    }

    fn nodes(&self) -> BoxFut<'_, Vec<NodeRow>> {
        Box::pin(async move {
            self.off(|c| {
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
            .await
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
