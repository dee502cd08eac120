//! The flow record's way in: uploaded flows wait in a bounded queue (over the bound they
//! are dropped and counted), a writer stores them in batches and keeps them through a
//! store outage, and retention expires old days every hour. The store is opened in the
//! background, again and again until it answers, so that a flow database that is down
//! never stops the controller (docs/CONTROLLER.md, "Flows").

use crate::api_types::FlowStatus;
use microseg_flowstore::{FlowRecord, FlowStore, Timestamp};
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Records per insert.
pub const INSERT_BATCH: usize = 5_000;
/// The longest wait between two attempts at an unavailable store.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const EXPIRE_EVERY: Duration = Duration::from_secs(3600);
/// How long an upload waits for room in a full queue while the store works: the agent's
/// next batch waits for the answer, so this slows agents to what the store takes instead
/// of dropping (back-pressure). A store that fails gets no wait: its outage fills the queue,
/// and what is over the bound is dropped and counted at once.
pub const ROOM_WAIT: Duration = Duration::from_secs(5);

/// The error and its causes, on one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[derive(Default)]
struct Counts {
    received: AtomicU64,
    stored: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
}

pub struct FlowIngest {
    backend: &'static str,
    bound: usize,
    queue: Mutex<VecDeque<FlowRecord>>,
    queued: Notify,
    /// Told when the writer took records out of the queue.
    freed: Notify,
    store: RwLock<Option<Arc<dyn FlowStore>>>,
    /// The last failure, None while the store works (or before the first attempt).
    error: Mutex<Option<String>>,
    counts: Counts,
    /// Per node, the records its agent says it dropped.
    agent_dropped: Mutex<BTreeMap<String, u64>>,
}

impl FlowIngest {
    pub fn new(backend: &'static str, bound: usize) -> Arc<FlowIngest> {
        Arc::new(FlowIngest {
            backend,
            bound: bound.max(1),
            queue: Mutex::new(VecDeque::new()),
            queued: Notify::new(),
            freed: Notify::new(),
            store: RwLock::new(None),
            error: Mutex::new(None),
            counts: Counts::default(),
            agent_dropped: Mutex::new(BTreeMap::new()),
        })
    }

    /// The store, once open.
    pub fn store(&self) -> Result<Arc<dyn FlowStore>, String> {
        let open = self.store.read().ok().and_then(|s| s.clone());
        open.ok_or_else(|| {
            let why = self.error.lock().ok().and_then(|e| e.clone());
            format!(
                "the {} flow store is not open: {}",
                self.backend,
                why.unwrap_or_else(|| "not opened yet".into())
            )
        })
    }

    /// Queues a node's records, waiting up to [`ROOM_WAIT`] for room while the store
    /// works; those that still find none are dropped and counted. Returns how many were
    /// queued.
    pub async fn push(&self, records: Vec<FlowRecord>, rejected: u64) -> u64 {
        let n = records.len() as u64;
        self.counts.received.fetch_add(n + rejected, Relaxed);
        self.counts.rejected.fetch_add(rejected, Relaxed);
        let mut rest = records.into_iter().peekable();
        let deadline = tokio::time::Instant::now() + ROOM_WAIT;
        loop {
            // Registered before the queue is looked at, so a drain in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Ok(mut q) = self.queue.lock() {
                let room = self.bound.saturating_sub(q.len());
                q.extend(rest.by_ref().take(room));
            }
            self.queued.notify_one();
            if rest.peek().is_none() || self.failing() {
                break;
            }
            tokio::select! {
                _ = &mut freed => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let dropped = rest.count() as u64;
        if dropped > 0 {
            self.counts.dropped.fetch_add(dropped, Relaxed);
        }
        n - dropped
    }

    /// Whether the store is not open or its last operation failed.
    fn failing(&self) -> bool {
        let open = self.store.read().is_ok_and(|s| s.is_some());
        !open || self.error.lock().map_or(true, |e| e.is_some())
    }

    pub fn agent_dropped(&self, node: &str, total: u64) {
        if let Ok(mut m) = self.agent_dropped.lock() {
            m.insert(node.to_string(), total);
        }
    }

    pub fn status(&self) -> FlowStatus {
        let open = self.store.read().is_ok_and(|s| s.is_some());
        let mut error = self.error.lock().ok().and_then(|e| e.clone());
        if !open && error.is_none() {
            error = Some("not opened yet".into());
        }
        FlowStatus {
            agent_dropped: self
                .agent_dropped
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default(),
            backend: self.backend.to_string(),
            dropped: self.counts.dropped.load(Relaxed),
            ok: error.is_none(),
            error,
            queue_bound: self.bound as u64,
            queued: self.queue.lock().map(|q| q.len() as u64).unwrap_or(0),
            received: self.counts.received.load(Relaxed),
            rejected: self.counts.rejected.load(Relaxed),
            stored: self.counts.stored.load(Relaxed),
        }
    }

    /// Records the outcome of a store operation: logs the first failure of an outage
    /// and the recovery, not every retry.
    fn outcome(&self, what: &str, r: Result<(), String>) {
        let Ok(mut last) = self.error.lock() else {
            return;
        };
        match (r, last.is_some()) {
            (Ok(()), true) => {
                tracing::info!(backend = self.backend, "flow store {what}: it works again");
                *last = None;
            }
            (Ok(()), false) => {}
            (Err(e), was_failing) => {
                if !was_failing {
                    tracing::error!(backend = self.backend, "flow store {what}: {e}");
                }
                *last = Some(e);
            }
        }
    }

    /// Opens the store at `url`, retrying with backoff until it answers (or `stop`),
    /// then writes and expires until `stop`.
    pub fn spawn(
        self: &Arc<Self>,
        url: String,
        opened: Option<Box<dyn FlowStore>>,
        retention: Duration,
        stop: watch::Receiver<bool>,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let store = match opened {
                Some(s) => me.opened(s),
                None => match me.open(&url, stop.clone()).await {
                    Some(s) => s,
                    None => return,
                },
            };
            tokio::spawn(expire(me.clone(), store.clone(), retention, stop.clone()));
            me.write(store, stop).await;
        });
    }

    fn opened(&self, s: Box<dyn FlowStore>) -> Arc<dyn FlowStore> {
        let s: Arc<dyn FlowStore> = Arc::from(s);
        tracing::info!(backend = self.backend, "flow store opened");
        if let Ok(mut slot) = self.store.write() {
            *slot = Some(s.clone());
        }
        self.outcome("open", Ok(()));
        s
    }

    async fn open(&self, url: &str, mut stop: watch::Receiver<bool>) -> Option<Arc<dyn FlowStore>> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match microseg_flowstore::open(url).await {
                Ok(s) => return Some(self.opened(s)),
                Err(e) => self.outcome("open", Err(chain(&e))),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.wait_for(|s| *s) => return None,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The oldest queued records, at most [`INSERT_BATCH`], copied: they leave the queue
    /// only once stored.
    fn peek(&self) -> Vec<FlowRecord> {
        self.queue
            .lock()
            .map(|q| q.iter().take(INSERT_BATCH).cloned().collect())
            .unwrap_or_default()
    }

    async fn write(&self, store: Arc<dyn FlowStore>, mut stop: watch::Receiver<bool>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let batch = self.peek();
            if batch.is_empty() {
                tokio::select! {
                    _ = self.queued.notified() => continue,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
            let r = tokio::select! {
                r = store.insert(&batch) => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            match r {
                Ok(()) => {
                    if let Ok(mut q) = self.queue.lock() {
                        let n = batch.len().min(q.len());
                        q.drain(..n);
                    }
                    self.freed.notify_waiters();
                    self.counts.stored.fetch_add(batch.len() as u64, Relaxed);
                    self.outcome("insert", Ok(()));
                    backoff = FIRST_BACKOFF;
                }
                Err(e) => {
                    self.outcome("insert", Err(chain(&e)));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// At start and every hour: removes what is older than `retention`.
async fn expire(
    ingest: Arc<FlowIngest>,
    store: Arc<dyn FlowStore>,
    retention: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(EXPIRE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let before = Timestamp::now().minus(retention);
        if let Err(e) = store.expire(before).await {
            tracing::error!(
                backend = ingest.backend,
                "flow store: expiring records before {before}: {}",
                chain(&e)
            );
        }
    }
}
