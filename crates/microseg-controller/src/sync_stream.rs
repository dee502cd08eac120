//! One agent's `Sync` stream: a full state (or, for an agent that resumes, what changed
//! since its revision), then a delta per revision. Everything comes from the live state
//! in memory (`store/live.rs`): a full state walks the shared rows, a delta the log's
//! shared rows of the revisions it spans; only the per-node messages are built here, a
//! part at a time as the link takes them (docs/CONTROLLER.md "Sizing").

use crate::core::Core;
use crate::error::Error;
use crate::store::live::{Changes, FullRows};
use crate::store::Row;
use microseg_proto::prost::encoding::message;
use microseg_proto::v1::{DesiredState, Resource, ResourceRef};
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tonic::Status;

type Tx = mpsc::Sender<Result<DesiredState, Status>>;

/// The most bytes of one part (a larger resource goes alone). Smaller than the protocol's
/// bound (`STATE_CHUNK_BYTES`): each stream's encoder keeps a buffer as large as the
/// largest message it sent, which a thousand streams would hold for as long as they live.
const PART_BYTES: usize = 64 << 10;

/// Room for a part's own fields (revision, full, more) besides its resources.
const PART_OVERHEAD: usize = 32;

/// How many large revisions (full states, and deltas of more than [`LARGE_DELTA_ROWS`])
/// are being sent at once: each holds a few parts in memory, and a fleet that starts at
/// once must not hold them for every node. Sending is bound by the CPU anyway.
fn large_permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| Semaphore::new(16))
}

/// A delta of more rows than this waits for a permit as a full state does.
const LARGE_DELTA_ROWS: usize = 1_000;

/// Builds the parts of one revision as resources are added, sending a part when the next
/// would overflow it (all parts but the last carry `more`).
struct Parts<'t> {
    tx: &'t Tx,
    limit: usize,
    revision: u64,
    current: DesiredState,
    size: usize,
    /// A complete part not yet sent: only the next one says whether it was the last.
    held: Option<DesiredState>,
}

impl<'t> Parts<'t> {
    fn new(tx: &'t Tx, limit: usize, revision: u64, full: bool) -> Parts<'t> {
        Parts {
            tx,
            limit,
            revision,
            current: DesiredState {
                revision,
                full,
                ..Default::default()
            },
            size: PART_OVERHEAD,
            held: None,
        }
    }

    /// Makes room for `cost` more bytes; false when the agent is gone.
    async fn room(&mut self, cost: usize) -> bool {
        let holds_any = !self.current.upserts.is_empty() || !self.current.deletes.is_empty();
        if !holds_any || self.size + cost <= self.limit {
            self.size += cost;
            return true;
        }
        let next = DesiredState {
            revision: self.revision,
            ..Default::default()
        };
        let done = std::mem::replace(&mut self.current, next);
        self.size = PART_OVERHEAD + cost;
        if let Some(mut prev) = self.held.replace(done) {
            prev.more = true;
            return self.tx.send(Ok(prev)).await.is_ok();
        }
        true
    }

    async fn upsert(&mut self, r: Resource) -> bool {
        if !self.room(message::encoded_len(3, &r)).await {
            return false;
        }
        self.current.upserts.push(r);
        true
    }

    async fn delete(&mut self, r: ResourceRef) -> bool {
        if !self.room(message::encoded_len(4, &r)).await {
            return false;
        }
        self.current.deletes.push(r);
        true
    }

    async fn finish(mut self) -> bool {
        if let Some(mut prev) = self.held.take() {
            prev.more = true;
            if self.tx.send(Ok(prev)).await.is_err() {
                return false;
            }
        }
        self.tx.send(Ok(self.current)).await.is_ok()
    }
}

fn as_sent(r: &Row, node: &str) -> Result<Resource, Error> {
    Ok(Resource {
        kind: r.kind.clone(),
        name: r.name.clone(),
        json: r.json_for(node)?.to_string(),
    })
}

/// Sends the full state `rows` at `revision`; Ok(false) when the agent is gone.
async fn send_full(
    tx: &Tx,
    node: &str,
    revision: u64,
    rows: &FullRows,
    limit: usize,
) -> Result<bool, Error> {
    let _permit = large_permits().acquire().await;
    tracing::info!(
        node,
        revision,
        resources = rows.len(),
        "sending the full state"
    );
    let mut parts = Parts::new(tx, limit, revision, true);
    for r in rows.iter() {
        if !parts.upsert(as_sent(r, node)?).await {
            return Ok(false);
        }
    }
    Ok(parts.finish().await)
}

/// Sends the rows changed up to `to` as one delta; Ok(false) when the agent is gone.
async fn send_delta(
    tx: &Tx,
    node: &str,
    to: u64,
    rows: Vec<&Row>,
    limit: usize,
) -> Result<bool, Error> {
    let _permit = match rows.len() > LARGE_DELTA_ROWS {
        true => Some(large_permits().acquire().await),
        false => None,
    };
    tracing::debug!(node, revision = to, rows = rows.len(), "sending a delta");
    let mut parts = Parts::new(tx, limit, to, false);
    for r in rows.iter().filter(|r| !r.deleted) {
        if !parts.upsert(as_sent(r, node)?).await {
            return Ok(false);
        }
    }
    for r in rows.iter().filter(|r| r.deleted) {
        let gone = ResourceRef {
            kind: r.kind.clone(),
            name: r.name.clone(),
        };
        if !parts.delete(gone).await {
            return Ok(false);
        }
    }
    Ok(parts.finish().await)
}

/// The rows of several changes, a later row of a kind and name replacing an earlier one.
fn merged(lists: &[Arc<Vec<Arc<Row>>>]) -> Vec<&Row> {
    if let [one] = lists {
        return one.iter().map(|r| &**r).collect();
    }
    let mut by_key: BTreeMap<(&str, &str), &Row> = BTreeMap::new();
    for r in lists.iter().flat_map(|l| l.iter()) {
        by_key.insert((&r.kind, &r.name), r);
    }
    by_key.into_values().collect()
}

/// Counts the node's open streams while it lives.
struct Connected {
    core: Arc<Core>,
    node: String,
}

impl Drop for Connected {
    fn drop(&mut self) {
        if let Ok(mut s) = self.core.streams.lock() {
            if let Some(n) = s.get_mut(&self.node) {
                *n -= 1;
                if *n == 0 {
                    s.remove(&self.node);
                }
            }
        }
    }
}

/// The memory must hold what the published revision says (another controller's write
/// is read by the first stream that needs it).
async fn caught_up(core: &Core, published: u64) -> Result<(), Error> {
    if core.store.live().revision().await < published || core.store.live().needs_load().await {
        core.store.catch_up().await?;
    }
    Ok(())
}

/// Where the stream starts: the revision the agent holds when it may resume from it.
pub struct Start {
    pub node: String,
    pub accepts_parts: bool,
    pub resume_from: Option<u64>,
}

pub async fn stream_state(core: Arc<Core>, start: Start, tx: Tx, status: fn(Error) -> Status) {
    let node = start.node;
    let limit = if start.accepts_parts {
        PART_BYTES
    } else {
        usize::MAX
    };
    if let Ok(mut s) = core.streams.lock() {
        *s.entry(node.clone()).or_default() += 1;
    }
    let _guard = Connected {
        core: core.clone(),
        node: node.clone(),
    };
    // Subscribe before reading, so no change between the read and the wait is missed.
    let mut rev_rx = core.rev.subscribe();
    let mut shutdown = core.shutdown.clone();
    let fail = |e: Error| async {
        let _ = tx.send(Err(status(e))).await;
    };
    let published = *rev_rx.borrow_and_update();
    if let Err(e) = caught_up(&core, published).await {
        return fail(e).await;
    }
    let mut last = match start.resume_from {
        Some(rev) => rev,
        None => {
            let _sending = core.sending.start();
            let (rev, rows) = core.store.live().full_state().await;
            match send_full(&tx, &node, rev, &rows, limit).await {
                Ok(true) => rev,
                Ok(false) => return,
                Err(e) => return fail(e).await,
            }
        }
    };
    let mut resuming = start.resume_from.is_some();
    let mut touch = tokio::time::interval(Duration::from_secs(10));
    loop {
        if !resuming {
            tokio::select! {
                r = rev_rx.changed() => if r.is_err() { return },
                _ = touch.tick() => {
                    let _ = core.touch(&node).await;
                    continue;
                }
                _ = tx.closed() => return,
                _ = shutdown.changed() => return,
            }
        }
        let published = *rev_rx.borrow_and_update();
        if published <= last && !resuming {
            continue;
        }
        if let Err(e) = caught_up(&core, published).await {
            return fail(e).await;
        }
        // Counted while it sends: the report writer waits for it (core/batch.rs).
        let sending = core.sending.start();
        let sent = match core.store.live().changes_since(last).await {
            // A resumed agent hears at once that it holds the newest revision.
            Changes::None if resuming => send_delta(&tx, &node, last, Vec::new(), limit).await,
            Changes::None => continue,
            Changes::Rows { to, lists } => {
                let rows = merged(&lists);
                let sent = send_delta(&tx, &node, to, rows, limit).await;
                last = to;
                sent
            }
            Changes::TooOld => match resumed_from_store(&core, last).await {
                Ok(Some((to, rows))) => {
                    let sent = send_delta(&tx, &node, to, rows.iter().collect(), limit).await;
                    last = to;
                    sent
                }
                Ok(None) => {
                    let (rev, rows) = core.store.live().full_state().await;
                    last = rev;
                    send_full(&tx, &node, rev, &rows, limit).await
                }
                Err(e) => Err(e),
            },
        };
        drop(sending);
        resuming = false;
        match sent {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return fail(e).await,
        }
    }
}

/// The rows changed after `last` read from the database, for an agent that resumes from
/// a revision older than the log (a restarted controller has none); None when a full
/// state is cheaper (more rows changed than there are live ones).
async fn resumed_from_store(core: &Core, last: u64) -> Result<Option<(u64, Vec<Row>)>, Error> {
    let (rev, live) = core.store.live().snapshot().await?;
    if last == 0 {
        return Ok(None);
    }
    let rows: Vec<Row> = core
        .store
        .since(last)
        .await?
        .into_iter()
        .filter(|r| r.revision <= rev)
        .collect();
    if rows.len() > live.len() {
        return Ok(None);
    }
    // Rows written after the memory's revision wait for the next delta.
    Ok(Some((rev, rows)))
}
