//! PostgreSQL back end, for several controllers sharing one database. Writers serialize
//! on the revision row (`SELECT ... FOR UPDATE`); each commit that raises the revision
//! sends `NOTIFY microseg_changes, '<revision>'`, which every controller LISTENs to (and
//! it polls the revision every 2 s as well, in case a notification is lost with a
//! dropped connection).

use super::live::State;
use super::parsed::{self, RawRow};
use super::{AckRow, BoxFut, Live, NodeRow, Outcomes, Row, Store, StoreError, TxFn, Write, SCHEMA};
use crate::error::Error;
use rustls::ClientConfig;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Mutex, MutexGuard};
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, Connection, IsolationLevel, NoTls};

pub const CHANNEL: &str = "microseg_changes";

pub struct Postgres {
    url: String,
    /// Set: every connection is TLS, the server verified by this configuration.
    tls: Option<Arc<ClientConfig>>,
    client: Mutex<Option<Client>>,
    live: Live,
    store_id: u64,
}

const COLS: &str = "kind, name, json, node, reported, revision, deleted";

fn row(r: &tokio_postgres::Row) -> RawRow {
    RawRow {
        kind: r.get(0),
        name: r.get(1),
        json: r.get(2),
        node: r.get(3),
        reported: r.get(4),
        revision: r.get::<_, i64>(5) as u64,
        deleted: r.get(6),
    }
}

/// Connects (over TLS when `tls` is set, which then is required) and drives the
/// connection in a task of its own, handing `on_message` what the server sends unasked.
async fn connect(
    url: &str,
    tls: &Option<Arc<ClientConfig>>,
    on_message: impl FnMut(AsyncMessage) + Send + 'static,
) -> Result<Client, StoreError> {
    let Some(tls) = tls else {
        let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
        drive(conn, on_message);
        return Ok(client);
    };
    let mut config: tokio_postgres::Config = url.parse()?;
    config.ssl_mode(SslMode::Require);
    let (client, conn) = config
        .connect(super::pg_tls::RustlsConnect(tls.clone()))
        .await?;
    drive(conn, on_message);
    Ok(client)
}

/// Runs the connection until its client is dropped or it fails.
fn drive<S, T>(
    mut conn: Connection<S, T>,
    mut on_message: impl FnMut(AsyncMessage) + Send + 'static,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(m)) => on_message(m),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "PostgreSQL connection lost");
                    return;
                }
                None => return,
            }
        }
    });
}

impl Postgres {
    /// `tls`: connect over TLS only, verifying the server with it.
    pub async fn open(url: &str, tls: Option<Arc<ClientConfig>>) -> Result<Postgres, StoreError> {
        let client = connect(url, &tls, |_| {}).await?;
        // Two controllers starting at once must not race on CREATE TABLE.
        client
            .batch_execute(&format!(
                "BEGIN; SELECT pg_advisory_xact_lock(7070); {SCHEMA} COMMIT;"
            ))
            .await?;
        client
            .execute(
                "INSERT INTO meta (key, value) VALUES ('store_id', $1) ON CONFLICT DO NOTHING",
                &[&super::new_store_id()],
            )
            .await?;
        let store_id: i64 = client
            .query_one("SELECT value FROM meta WHERE key = 'store_id'", &[])
            .await?
            .get(0);
        Ok(Postgres {
            url: url.to_string(),
            tls,
            client: Mutex::new(Some(client)),
            live: Live::default(),
            store_id: store_id as u64,
        })
    }

    /// The shared connection, reconnecting if it was lost.
    async fn client(&self) -> Result<MutexGuard<'_, Option<Client>>, Error> {
        let mut g = self.client.lock().await;
        if g.as_ref().is_none_or(Client::is_closed) {
            *g = Some(connect(&self.url, &self.tls, |_| {}).await?);
        }
        Ok(g)
    }
}

async fn revision(c: &impl tokio_postgres::GenericClient) -> Result<u64, Error> {
    let r = c
        .query_one("SELECT value FROM meta WHERE key = 'revision'", &[])
        .await?;
    Ok(r.get::<_, i64>(0) as u64)
}

/// Writes the rows at the next revision (if any resource changes); returns the revision.
/// A row to write: kind, name, json, node, reported.
type Put = (String, String, String, String, Option<String>);

async fn write_all(
    tx: &tokio_postgres::Transaction<'_>,
    base: u64,
    writes: Vec<Write>,
) -> Result<u64, Error> {
    let mut rev = base;
    if writes.iter().any(Write::changes_resources) {
        rev += 1;
        tx.execute(
            "UPDATE meta SET value = $1 WHERE key = 'revision'",
            &[&(rev as i64)],
        )
        .await?;
    }
    // The last write of each resource, written in one statement per kind of write (a
    // batch of reports is thousands of rows: a round trip each would take seconds).
    let mut last: BTreeMap<(String, String), Write> = BTreeMap::new();
    for w in writes {
        match w {
            Write::Put {
                ref kind, ref name, ..
            }
            | Write::Delete {
                ref kind, ref name, ..
            } => {
                last.insert((kind.clone(), name.clone()), w);
            }
            Write::Overlay { name, labels } => {
                if labels.is_empty() {
                    tx.execute("DELETE FROM label_overlays WHERE name = $1", &[&name])
                        .await?;
                } else {
                    tx.execute(
                        "INSERT INTO label_overlays (name, labels) VALUES ($1, $2)
                         ON CONFLICT (name) DO UPDATE SET labels = excluded.labels",
                        &[&name, &serde_json::to_string(&labels)?],
                    )
                    .await?;
                }
            }
        }
    }
    let (mut puts, mut gone): (Vec<Put>, Vec<(String, String)>) = (Vec::new(), Vec::new());
    for w in last.into_values() {
        match w {
            Write::Put {
                kind,
                name,
                json,
                node,
                reported,
            } => {
                let reported = reported.map(|r| serde_json::to_string(&r)).transpose()?;
                puts.push((kind, name, json, node, reported));
            }
            Write::Delete { kind, name } => gone.push((kind, name)),
            Write::Overlay { .. } => {}
        }
    }
    if !puts.is_empty() {
        let col = |f: fn(&Put) -> &str| puts.iter().map(f).collect::<Vec<&str>>();
        let reported: Vec<Option<&str>> = puts.iter().map(|p| p.4.as_deref()).collect();
        tx.execute(
            "INSERT INTO resources (kind, name, json, node, reported, revision, deleted)
             SELECT k, n, j, o, r, $6, FALSE
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) AS u(k, n, j, o, r)
             ON CONFLICT (kind, name) DO UPDATE SET json = excluded.json,
               node = excluded.node, reported = excluded.reported,
               revision = excluded.revision, deleted = FALSE",
            &[
                &col(|p| &p.0),
                &col(|p| &p.1),
                &col(|p| &p.2),
                &col(|p| &p.3),
                &reported,
                &(rev as i64),
            ],
        )
        .await?;
    }
    if !gone.is_empty() {
        let kinds: Vec<&str> = gone.iter().map(|g| g.0.as_str()).collect();
        let names: Vec<&str> = gone.iter().map(|g| g.1.as_str()).collect();
        tx.execute(
            "UPDATE resources SET deleted = TRUE, revision = $3
             FROM UNNEST($1::text[], $2::text[]) AS u(k, n)
             WHERE kind = u.k AND name = u.n",
            &[&kinds, &names, &(rev as i64)],
        )
        .await?;
    }
    if rev != base {
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &rev.to_string()])
            .await?;
    }
    Ok(rev)
}

async fn overlays(
    c: &impl tokio_postgres::GenericClient,
) -> Result<BTreeMap<String, BTreeMap<String, Option<String>>>, Error> {
    let mut out = BTreeMap::new();
    for r in c
        .query("SELECT name, labels FROM label_overlays", &[])
        .await?
    {
        let name: String = r.get(0);
        let overlay = parsed::overlay(&name, r.get::<_, &str>(1))?;
        out.insert(name, overlay);
    }
    Ok(out)
}

/// Brings the memory up to the database's revision `db_rev` (read in this transaction).
async fn sync_state(
    c: &impl tokio_postgres::GenericClient,
    st: &mut State,
    db_rev: u64,
) -> Result<(), Error> {
    if st.needs_load() || db_rev < st.snap.revision {
        let raw = c
            .query(
                &format!("SELECT {COLS} FROM resources WHERE NOT deleted ORDER BY kind, name"),
                &[],
            )
            .await?
            .iter()
            .map(row)
            .collect();
        st.load(db_rev, raw, overlays(c).await?);
        return Ok(());
    }
    if db_rev > st.snap.revision {
        let raw = c
            .query(
                &format!("SELECT {COLS} FROM resources WHERE revision > $1 ORDER BY revision, kind, name"),
                &[&(st.snap.revision as i64)],
            )
            .await?
            .iter()
            .map(row)
            .collect();
        st.catch_up(db_rev, raw);
    }
    st.set_overlays(overlays(c).await?);
    Ok(())
}

impl Store for Postgres {
    fn transact_all<'a>(&'a self, fs: Vec<TxFn<'a>>) -> BoxFut<'a, (u64, Outcomes)> {
        Box::pin(async move {
            let mut st = self.live.write().await;
            let mut g = self.client().await?;
            let c = g.as_mut().expect("connected");
            let tx = c.transaction().await?;
            let cur = tx
                .query_one(
                    "SELECT value FROM meta WHERE key = 'revision' FOR UPDATE",
                    &[],
                )
                .await?;
            let base = cur.get::<_, i64>(0) as u64;
            sync_state(&tx, &mut st, base).await?;
            let (writes, outcomes) = st.run(fs);
            let written = match write_all(&tx, base, writes).await {
                Ok(rev) => tx.commit().await.map(|()| rev).map_err(Error::from),
                Err(e) => Err(e),
            };
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
        })
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
            let mut g = self.client().await?;
            let c = g.as_mut().expect("connected");
            let tx = c
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let db = revision(&tx).await?;
            sync_state(&tx, &mut st, db).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn revision(&self) -> BoxFut<'_, u64> {
        Box::pin(async move {
            let g = self.client().await?;
            revision(g.as_ref().expect("connected")).await
        })
    }

    fn since(&self, rev: u64) -> BoxFut<'_, Vec<Row>> {
        Box::pin(async move {
            let g = self.client().await?;
            let r = g
                .as_ref()
                .expect("connected")
                .query(
                    &format!("SELECT {COLS} FROM resources WHERE revision > $1 ORDER BY revision, kind, name"),
                    &[&(rev as i64)],
                )
                .await?;
            Ok(r.iter().map(|r| parsed::typed(row(r))).collect())
        })
    }

    fn touch_node<'a>(&'a self, node: &'a str, now: f64) -> BoxFut<'a, ()> {
        Box::pin(async move {
            let g = self.client().await?;
            g.as_ref()
                .expect("connected")
                .execute(
                    "INSERT INTO nodes (name, last_seen) VALUES ($1, $2)
                     ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen",
                    &[&node, &now],
                )
                .await?;
            Ok(())
        })
    }

    fn touch_all(&self, seen: Vec<(String, f64)>) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let mut last: BTreeMap<&str, f64> = BTreeMap::new();
            for (node, now) in &seen {
                last.insert(node, *now);
            }
            let names: Vec<&str> = last.keys().copied().collect();
            let nows: Vec<f64> = last.values().copied().collect();
            let g = self.client().await?;
            g.as_ref()
                .expect("connected")
                .execute(
                    "INSERT INTO nodes (name, last_seen)
                     SELECT n, t FROM UNNEST($1::text[], $2::float8[]) AS u(n, t)
                     ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen",
                    &[&names, &nows],
                )
                .await?;
            Ok(())
        })
    }

    fn ack_all(&self, acks: Vec<AckRow>) -> BoxFut<'_, ()> {
        Box::pin(async move {
            let mut g = self.client().await?;
            let c = g.as_mut().expect("connected");
            let tx = c.transaction().await?;
            // One statement per kind of ack: a round trip each, not one per node.
            let (mut ok, mut failed) = (Vec::new(), Vec::new());
            let mut last: BTreeMap<&str, &AckRow> = BTreeMap::new();
            for a in &acks {
                last.insert(&a.node, a);
            }
            for a in last.into_values() {
                match a.error.is_empty() {
                    true => ok.push(a),
                    false => failed.push(a),
                }
            }
            if !ok.is_empty() {
                let names: Vec<&str> = ok.iter().map(|a| a.node.as_str()).collect();
                let revs: Vec<i64> = ok.iter().map(|a| a.revision as i64).collect();
                let nows: Vec<f64> = ok.iter().map(|a| a.now).collect();
                tx.execute(
                    "INSERT INTO nodes (name, revision, error, last_ack, last_seen)
                     SELECT n, r, '', t, t FROM UNNEST($1::text[], $2::bigint[], $3::float8[]) AS u(n, r, t)
                     ON CONFLICT (name) DO UPDATE SET revision = excluded.revision,
                       error = '', last_ack = excluded.last_ack, last_seen = excluded.last_seen",
                    &[&names, &revs, &nows],
                )
                .await?;
            }
            if !failed.is_empty() {
                let names: Vec<&str> = failed.iter().map(|a| a.node.as_str()).collect();
                let errors: Vec<String> = failed
                    .iter()
                    .map(|a| format!("revision {}: {}", a.revision, a.error))
                    .collect();
                let nows: Vec<f64> = failed.iter().map(|a| a.now).collect();
                tx.execute(
                    "INSERT INTO nodes (name, error, last_ack, last_seen)
                     SELECT n, e, t, t FROM UNNEST($1::text[], $2::text[], $3::float8[]) AS u(n, e, t)
                     ON CONFLICT (name) DO UPDATE SET error = excluded.error,
                       last_ack = excluded.last_ack, last_seen = excluded.last_seen",
                    &[&names, &errors, &nows],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn nodes(&self) -> BoxFut<'_, Vec<NodeRow>> {
        Box::pin(async move {
            let g = self.client().await?;
            let r = g
                .as_ref()
                .expect("connected")
                .query(
                    "SELECT name, revision, error, last_ack, last_seen FROM nodes ORDER BY name",
                    &[],
                )
                .await?;
            Ok(r.iter()
                .map(|r| NodeRow {
                    name: r.get(0),
                    revision: r.get::<_, i64>(1) as u64,
                    error: r.get(2),
                    last_ack: r.get(3),
                    last_seen: r.get(4),
                })
                .collect())
        })
    }

    fn watch_changes(
        self: Arc<Self>,
        tx: Arc<watch::Sender<u64>>,
        mut stop: watch::Receiver<bool>,
    ) {
        tokio::spawn(async move {
            loop {
                let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel();
                let notified = move |m| {
                    if let AsyncMessage::Notification(n) = m {
                        let _ = ntx.send(n.payload().parse::<u64>().ok());
                    }
                };
                match connect(&self.url, &self.tls, notified).await {
                    // The connection closes when `client` is dropped, ending its task.
                    Ok(client) => match client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
                        Ok(()) => {
                            let mut tick = tokio::time::interval(Duration::from_secs(2));
                            loop {
                                tokio::select! {
                                    n = nrx.recv() => match n {
                                        Some(Some(rev)) => super::publish(&tx, rev),
                                        Some(None) => {}
                                        None => break,
                                    },
                                    _ = tick.tick() => {
                                        if let Ok(rev) = self.revision().await {
                                            super::publish(&tx, rev);
                                        }
                                    }
                                    _ = stop.changed() => return,
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(channel = CHANNEL, error = %e, "PostgreSQL LISTEN failed")
                        }
                    },
                    Err(e) => tracing::warn!(error = %e, "PostgreSQL listener failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }
}
