//! Workload reports that arrive together are written together: one writer takes every
//! report waiting and runs them in one transaction, one revision (docs/CONTROLLER.md
//! "Sizing"). A thousand agents starting at once then make a few revisions, not a
//! thousand, and each stream sends a few deltas.

use super::health::Skipped;
use super::report::{replace, Checked};
use crate::error::Error;
use crate::store::{publish, Snapshot, Store, StoreError, TxFn};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot, watch};

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
    pub fn send(&self, store: &Arc<dyn Store>, rev: &Arc<watch::Sender<u64>>, p: Pending) {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(writer(store.clone(), rev.clone(), rx));
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
    mut rx: mpsc::UnboundedReceiver<Pending>,
) {
    let mut next: Option<Pending> = None;
    loop {
        let first = match next.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
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
