//! Workload reports that arrive together are written together: one writer takes every
//! report waiting and runs them in one transaction, one revision (docs/CONTROLLER.md
//! "Sizing"). A thousand agents starting at once then make a few revisions, not a
//! thousand, and each stream sends a few deltas. Under churn the writer paces itself:
//! a report revision at most every [`REPORT_INTERVAL`], and not before the streams have
//! taken the last one (waiting at most [`MAX_PACE`]), so the reports of that time are one
//! revision, sent to and acked by every node once, and a policy change is not queued
//! behind a backlog of them (docs/CONTROLLER.md "Sizing").

use super::health::Skipped;
use super::report::{replace, Checked};
use crate::error::Error;
use crate::store::{publish, Snapshot, Store, StoreError, TxFn};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// The least time between two revisions of workload reports.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_millis(100);

/// The longest a report revision waits for the streams still sending an earlier one (a
/// node that does not read must not hold up the others' reports).
const MAX_PACE: Duration = Duration::from_secs(1);

/// How many streams are sending a revision (`sync_stream.rs` counts them).
#[derive(Default)]
pub struct Sending(AtomicUsize);

impl Sending {
    /// Counts a stream as sending until the guard is dropped.
    pub fn start(self: &Arc<Sending>) -> SendingGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        SendingGuard(self.clone())
    }

    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

pub struct SendingGuard(Arc<Sending>);

impl Drop for SendingGuard {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits until [`REPORT_INTERVAL`] after `last` and no stream sends, at most [`MAX_PACE`].
async fn pace(last: Option<Instant>, sending: &Sending) {
    let Some(last) = last else { return };
    let interval = REPORT_INTERVAL.saturating_sub(last.elapsed());
    if !interval.is_zero() {
        tokio::time::sleep(interval).await;
    }
    let give_up = last + MAX_PACE;
    while sending.count() > 0 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The most workloads one transaction takes from waiting reports (a larger report goes
/// alone).
const BATCH_WORKLOADS: usize = 50_000;

pub(super) struct Pending {
    pub node: String,
    pub report: Vec<Checked>,
    /// What the writer skipped of it (an address or name another holds).
    pub skipped: Arc<Mutex<Skipped>>,
    pub done: oneshot::Sender<Result<u64, Error>>,
}

/// The writer's queue; the writer starts with the first report.
#[derive(Default)]
pub(super) struct Reports {
    tx: std::sync::OnceLock<mpsc::UnboundedSender<Pending>>,
}

impl Reports {
    pub fn send(
        &self,
        store: &Arc<dyn Store>,
        rev: &Arc<watch::Sender<u64>>,
        sending: &Arc<Sending>,
        p: Pending,
    ) {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(writer(store.clone(), rev.clone(), sending.clone(), rx));
            tx
        });
        if let Err(mpsc::error::SendError(p)) = tx.send(p) {
            let _ = p
                .done
                .send(Err(Error::http(503, "the controller is stopping")));
        }
    }
}

async fn writer(
    store: Arc<dyn Store>,
    rev: Arc<watch::Sender<u64>>,
    sending: Arc<Sending>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let mut next: Option<Pending> = None;
    let mut last: Option<Instant> = None;
    loop {
        let first = match next.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        // Reports that arrive meanwhile join this batch.
        pace(last, &sending).await;
        let mut size = first.report.len();
        let mut batch = vec![first];
        while let Ok(p) = rx.try_recv() {
            if size + p.report.len() > BATCH_WORKLOADS {
                next = Some(p);
                break;
            }
            size += p.report.len();
            batch.push(p);
        }
        let fs: Vec<TxFn<'_>> = batch
            .iter()
            .map(|p| {
                let f: TxFn<'_> =
                    Box::new(move |snap: &Snapshot| replace(&p.node, &p.report, snap, &p.skipped));
                f
            })
            .collect();
        let result = store.transact_all(fs).await;
        last = Some(Instant::now());
        match result {
            Ok((r, outcomes)) => {
                publish(&rev, r);
                for (p, o) in batch.into_iter().zip(outcomes) {
                    let _ = p.done.send(o.map(|()| r));
                }
            }
            Err(e) => {
                let text = e.to_string();
                for p in batch {
                    let e = Error::Store(StoreError::Batch(text.clone()));
                    let _ = p.done.send(Err(e));
                }
            }
        }
    }
}
