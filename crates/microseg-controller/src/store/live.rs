//! The live state in memory: every live row parsed once and indexed, the label overlays,
//! and a log of the recent revisions' changed rows that the agents' streams share
//! (docs/CONTROLLER.md "Sizing"). The back ends keep it in step with the database: read
//! whole at the first use (or after a failed write), then only the rows other
//! controllers changed, and each transaction's own writes applied as they commit.

use super::parsed::{self, RawRow};
use super::{Outcomes, Row, Rows, Snapshot, TxFn, Write};
use crate::error::Error;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tokio::sync::{RwLock, RwLockWriteGuard};

/// The most changed rows the log keeps: a stream further behind gets a full state.
const LOG_ROWS: usize = 200_000;

/// The rows one or more revisions changed (tombstones for deletions), in `(from, to]`.
#[derive(Debug)]
struct Change {
    from: u64,
    to: u64,
    rows: Arc<Vec<Arc<Row>>>,
}

/// What a stream at some revision needs to reach the newest.
pub enum Changes {
    /// Nothing newer.
    None,
    /// The rows changed since, up to revision `to`: each list in order, a later row of a
    /// kind and name replacing an earlier one.
    Rows {
        to: u64,
        lists: Vec<Arc<Vec<Arc<Row>>>>,
    },
    /// Older than the log: only a full state will do.
    TooOld,
}

#[derive(Default)]
pub struct State {
    pub snap: Snapshot,
    log: VecDeque<Change>,
    log_rows: usize,
    loaded: bool,
    /// A write failed after the memory took it: read the database whole again.
    stale: bool,
    /// The rows this transaction changed so far, by kind and name.
    pending: BTreeMap<(String, String), Arc<Row>>,
}

#[derive(Default)]
pub struct Live {
    state: RwLock<State>,
    /// The rows of the newest full state asked for, shared by the streams that send it.
    full: std::sync::Mutex<Option<(u64, FullRows)>>,
}

/// Every live row at one revision, in kind and name order.
pub type FullRows = Arc<Vec<Arc<Row>>>;

impl Live {
    /// The live rows and their revision (shared: cheap).
    pub async fn snapshot(&self) -> Result<(u64, Rows), Error> {
        let st = self.state.read().await;
        Ok((st.snap.revision, st.snap.rows.clone()))
    }

    /// Every live row and their revision, for a full state: a list of the shared rows
    /// (made once per revision), so that a stream sending it slowly holds no copy of the
    /// indexes while the state moves on.
    pub async fn full_state(&self) -> (u64, FullRows) {
        let st = self.state.read().await;
        let rev = st.snap.revision;
        let mut cached = self.full.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((r, rows)) = cached.as_ref().filter(|(r, _)| *r == rev && !st.stale) {
            return (*r, rows.clone());
        }
        let rows: FullRows = Arc::new(st.snap.rows.shared().cloned().collect());
        *cached = Some((rev, rows.clone()));
        (rev, rows)
    }

    pub async fn revision(&self) -> u64 {
        self.state.read().await.snap.revision
    }

    /// Whether the memory must be read again from the database whatever its revision.
    pub async fn needs_load(&self) -> bool {
        self.state.read().await.needs_load()
    }

    /// The changes after revision `last`, from the log.
    pub async fn changes_since(&self, last: u64) -> Changes {
        let st = self.state.read().await;
        if st.needs_load() {
            return Changes::TooOld;
        }
        if last >= st.snap.revision {
            return Changes::None;
        }
        let newer: Vec<&Change> = st.log.iter().filter(|c| c.to > last).collect();
        match newer.first() {
            Some(c) if c.from <= last => Changes::Rows {
                to: st.snap.revision,
                lists: newer.iter().map(|c| c.rows.clone()).collect(),
            },
            _ => Changes::TooOld,
        }
    }

    /// `f` of the live state, under the read lock; None while the memory must be read
    /// again from the database.
    pub async fn read<R>(&self, f: impl FnOnce(&Snapshot) -> R) -> Option<R> {
        let st = self.state.read().await;
        (!st.needs_load()).then(|| f(&st.snap))
    }

    /// The state for a writer (one at a time; readers wait while it writes).
    pub async fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().await
    }
}

/// A typed row from a write at `revision`.
fn written(w: &Write, revision: u64) -> Option<Row> {
    match w {
        Write::Put {
            kind,
            name,
            json,
            node,
            reported,
        } => Some(parsed::row_of(
            kind.clone(),
            name.clone(),
            json.clone(),
            node.clone(),
            reported.clone(),
            revision,
            false,
        )),
        Write::Delete { kind, name } => Some(parsed::row_of(
            kind.clone(),
            name.clone(),
            String::new(),
            String::new(),
            None,
            revision,
            true,
        )),
        Write::Overlay { .. } => None,
    }
}

impl State {
    pub fn needs_load(&self) -> bool {
        !self.loaded || self.stale
    }

    /// Replaces everything with the database's live rows.
    pub(crate) fn load(
        &mut self,
        revision: u64,
        raw: Vec<RawRow>,
        overlays: BTreeMap<String, BTreeMap<String, Option<String>>>,
    ) {
        let rows = Rows::from_rows(raw.into_iter().map(parsed::typed));
        self.snap = Snapshot {
            revision,
            rows,
            overlays,
        };
        self.log.clear();
        self.log_rows = 0;
        self.loaded = true;
        self.stale = false;
    }

    /// Takes the rows other controllers changed up to `revision` (`raw`: those of the
    /// database changed after this memory's revision).
    pub(crate) fn catch_up(&mut self, revision: u64, raw: Vec<RawRow>) {
        let rows: Vec<Arc<Row>> = raw
            .into_iter()
            .map(|r| Arc::new(parsed::typed(r)))
            .collect();
        for r in &rows {
            self.snap.rows.put(r.clone());
        }
        let from = self.snap.revision;
        self.snap.revision = revision;
        self.record(from, revision, rows);
    }

    pub(crate) fn set_overlays(
        &mut self,
        overlays: BTreeMap<String, BTreeMap<String, Option<String>>>,
    ) {
        self.snap.overlays = overlays;
    }

    fn record(&mut self, from: u64, to: u64, rows: Vec<Arc<Row>>) {
        self.log_rows += rows.len();
        self.log.push_back(Change {
            from,
            to,
            rows: Arc::new(rows),
        });
        while self.log_rows > LOG_ROWS && self.log.len() > 1 {
            if let Some(old) = self.log.pop_front() {
                self.log_rows -= old.rows.len();
            }
        }
    }

    /// Runs the closures in turn on the live state, each seeing the writes of those
    /// before (taken into memory at once, as of the next revision: [`State::commit`]
    /// or [`State::abort`] must follow). Returns every write, in order.
    pub(crate) fn run(&mut self, fs: Vec<TxFn<'_>>) -> (Vec<Write>, Outcomes) {
        let next = self.snap.revision + 1;
        let mut all = Vec::new();
        let mut outcomes = Vec::with_capacity(fs.len());
        for f in fs {
            match f(&self.snap) {
                Ok(writes) => {
                    for w in &writes {
                        if let Write::Overlay { name, labels } = w {
                            if labels.is_empty() {
                                self.snap.overlays.remove(name);
                            } else {
                                self.snap.overlays.insert(name.clone(), labels.clone());
                            }
                        }
                        if let Some(row) = written(w, next) {
                            let row = Arc::new(row);
                            self.snap.rows.put(row.clone());
                            self.pending
                                .insert((row.kind.clone(), row.name.clone()), row);
                        }
                    }
                    all.extend(writes);
                    outcomes.push(Ok(()));
                }
                Err(e) => outcomes.push(Err(e)),
            }
        }
        (all, outcomes)
    }

    /// The database committed the writes of [`State::run`] as `revision`.
    pub(crate) fn commit(&mut self, revision: u64) {
        let rows: Vec<Arc<Row>> = std::mem::take(&mut self.pending).into_values().collect();
        if rows.is_empty() {
            return;
        }
        let from = self.snap.revision;
        self.snap.revision = revision;
        self.record(from, revision, rows);
    }

    /// The database refused the writes of [`State::run`]: the memory no longer matches it.
    pub(crate) fn abort(&mut self) {
        self.pending.clear();
        self.stale = true;
    }
}

#[cfg(test)]
mod tests {
    use super::Changes;
    use crate::error::Error;
    use crate::resources::POLICY;
    use crate::store::sqlite::Sqlite;
    use crate::store::{Snapshot, Store, TxFn, Write};

    fn put(name: &str, priority: u32) -> Write {
        Write::Put {
            kind: POLICY.into(),
            name: name.into(),
            json: format!(
                r#"{{"apiVersion":"microseg.io/v1","kind":"Policy","metadata":{{"name":"{name}"}},"spec":{{"selector":{{}},"priority":{priority}}}}}"#
            ),
            node: String::new(),
            reported: None,
        }
    }

    #[tokio::test]
    async fn changes_batched_together_make_one_revision_and_see_each_other() {
        let store = Sqlite::open(std::path::Path::new(":memory:")).unwrap();
        let fs: Vec<TxFn<'_>> = vec![
            Box::new(|_: &Snapshot| Ok(vec![put("a", 1)])),
            // Sees a, written by the closure before it in the same transaction.
            Box::new(|s: &Snapshot| match s.get(POLICY, "a") {
                Some(_) => Ok(vec![put("b", 1)]),
                None => Err(Error::bad("a is not there")),
            }),
            // Refuses: its write is not made, the others' are.
            Box::new(|_: &Snapshot| Err(Error::bad("no"))),
        ];
        let (rev, outcomes) = store.transact_all(fs).await.unwrap();
        assert_eq!(rev, 1);
        assert!(outcomes[0].is_ok() && outcomes[1].is_ok() && outcomes[2].is_err());
        let (rev, rows) = store.full().await.unwrap();
        assert_eq!(rev, 1);
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let Changes::Rows { to, lists } = store.live().changes_since(0).await else {
            panic!("the log has revision 1")
        };
        assert_eq!((to, lists.len(), lists[0].len()), (1, 1, 2));
        assert!(matches!(store.live().changes_since(1).await, Changes::None));
    }

    #[tokio::test]
    async fn what_another_writer_of_the_database_changed_is_read_into_memory() {
        let dir = microseg_testsupport::TempDir::new("live-two-writers");
        let path = dir.0.join("c.db");
        let (one, two) = (Sqlite::open(&path).unwrap(), Sqlite::open(&path).unwrap());
        let write = |w: Write| -> TxFn<'static> { Box::new(move |_: &Snapshot| Ok(vec![w])) };
        one.transact(write(put("a", 1))).await.unwrap();
        assert_eq!(two.full().await.unwrap().1.len(), 1);
        one.transact(write(put("a", 2))).await.unwrap();
        one.transact(write(put("b", 1))).await.unwrap();
        // The second writer's transaction builds on the first's rows.
        let rev = two
            .transact(Box::new(|s: &Snapshot| {
                assert_eq!(s.revision, 3);
                let a = s.get(POLICY, "a").expect("a").resource().unwrap().clone();
                let microseg_policy::Resource::Policy(p) = a else {
                    panic!("a policy")
                };
                assert_eq!(p.priority, 2);
                Ok(vec![Write::Delete {
                    kind: POLICY.into(),
                    name: "b".into(),
                }])
            }))
            .await
            .unwrap();
        assert_eq!(rev, 4);
        let Changes::Rows { to, lists } = two.live().changes_since(1).await else {
            panic!("the log spans revisions 2-4")
        };
        assert_eq!(to, 4);
        let rows: Vec<(&str, bool)> = lists
            .iter()
            .flat_map(|l| l.iter())
            .map(|r| (r.name.as_str(), r.deleted))
            .collect();
        assert_eq!(rows, [("a", false), ("b", false), ("b", true)]);
        assert_eq!(one.full().await.unwrap().1.len(), 1, "b is gone for both");
    }
}
