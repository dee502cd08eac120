//! Acks (and "seen" marks) that arrive together are written together: one transaction
//! for every one waiting (a thousand nodes ack each revision within moments, and each
//! connected node is marked seen every 10 s), each call answered once it is stored, so
//! `/v1/nodes` shows it as before (docs/CONTROLLER.md "Sizing").

use crate::error::Error;
use crate::store::{AckRow, Store, StoreError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// An ack, or a node seen at a time (`AckRow::revision` and `error` unused).
pub(super) enum NodeWrite {
    Ack(AckRow),
    Seen(AckRow),
}

type Waiting = (NodeWrite, oneshot::Sender<Result<(), Error>>);

/// The writer's queue; the writer starts with the first ack.
#[derive(Default)]
pub(super) struct Acks {
    tx: std::sync::OnceLock<mpsc::UnboundedSender<Waiting>>,
}

impl Acks {
    pub async fn write(&self, store: &Arc<dyn Store>, ack: NodeWrite) -> Result<(), Error> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(writer(store.clone(), rx));
            tx
        });
        let (done, result) = oneshot::channel();
        if tx.send((ack, done)).is_err() {
            return Err(Error::http(503, "the controller is stopping"));
        }
        result
            .await
            .map_err(|_| Error::http(503, "the controller is stopping"))?
    }
}

async fn writer(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Waiting>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(w) = rx.try_recv() {
            batch.push(w);
            if batch.len() >= 10_000 {
                break;
            }
        }
        let (mut acks, mut seen, mut waiting) = (Vec::new(), Vec::new(), Vec::new());
        for (w, done) in batch {
            match w {
                NodeWrite::Ack(a) => acks.push(a),
                NodeWrite::Seen(a) => seen.push((a.node, a.now)),
            }
            waiting.push(done);
        }
        let mut result = Ok(());
        if !seen.is_empty() {
            result = store.touch_all(seen).await;
        }
        if result.is_ok() && !acks.is_empty() {
            result = store.ack_all(acks).await;
        }
        match result {
            Ok(()) => waiting.into_iter().for_each(|w| {
                let _ = w.send(Ok(()));
            }),
            Err(e) => {
                let text = e.to_string();
                for w in waiting {
                    let _ = w.send(Err(Error::Store(StoreError::Batch(text.clone()))));
                }
            }
        }
    }
}
