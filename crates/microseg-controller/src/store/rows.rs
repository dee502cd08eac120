//! The live rows, indexed so that a transaction or a workload report costs what it
//! touches, not the fleet (docs/CONTROLLER.md "Sizing"). Cheap to clone: a clone shares
//! the index until one side changes it.

use super::Row;
use crate::resources::WORKLOAD;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

type Key = (String, String);

#[derive(Clone, Default, Debug)]
struct Index {
    by_key: BTreeMap<Key, Arc<Row>>,
    /// Discovered workloads' names by node.
    by_node: HashMap<String, BTreeSet<String>>,
    /// Workloads' names by address (one name, but a node may repeat an address).
    by_addr: HashMap<IpAddr, Vec<String>>,
}

/// The live (not deleted) rows, sorted by kind and name.
#[derive(Clone, Default, Debug)]
pub struct Rows(Arc<Index>);

impl Rows {
    pub fn iter(&self) -> impl Iterator<Item = &Row> {
        self.0.by_key.values().map(|r| &**r)
    }

    /// The rows, shared.
    pub fn shared(&self) -> impl Iterator<Item = &Arc<Row>> {
        self.0.by_key.values()
    }

    pub fn len(&self) -> usize {
        self.0.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.by_key.is_empty()
    }

    pub fn get(&self, kind: &str, name: &str) -> Option<&Row> {
        self.0
            .by_key
            .get(&(kind.to_string(), name.to_string()))
            .map(|r| &**r)
    }

    /// The workloads discovered on `node`.
    pub fn of_node<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a Row> + 'a {
        self.0
            .by_node
            .get(node)
            .into_iter()
            .flatten()
            .filter_map(|n| self.get(WORKLOAD, n))
    }

    /// The workloads that have `ip`.
    pub fn with_address(&self, ip: &IpAddr) -> impl Iterator<Item = &Row> {
        self.0
            .by_addr
            .get(ip)
            .into_iter()
            .flatten()
            .filter_map(|n| self.get(WORKLOAD, n))
    }

    /// Rows in kind and name order from a list (sorted here).
    pub fn from_rows(rows: impl IntoIterator<Item = Row>) -> Rows {
        let mut r = Rows::default();
        for row in rows {
            r.put(Arc::new(row));
        }
        r
    }

    /// Inserts or replaces a row (a deleted one removes it).
    pub(crate) fn put(&mut self, row: Arc<Row>) {
        self.remove(&row.kind, &row.name);
        if row.deleted {
            return;
        }
        let ix = Arc::make_mut(&mut self.0);
        if row.kind == WORKLOAD {
            if !row.node.is_empty() {
                ix.by_node
                    .entry(row.node.clone())
                    .or_default()
                    .insert(row.name.clone());
            }
            if let Ok(w) = row.workload() {
                for ip in &w.ips {
                    ix.by_addr.entry(*ip).or_default().push(row.name.clone());
                }
            }
        }
        ix.by_key.insert((row.kind.clone(), row.name.clone()), row);
    }

    pub(crate) fn remove(&mut self, kind: &str, name: &str) {
        let key = (kind.to_string(), name.to_string());
        if !self.0.by_key.contains_key(&key) {
            return;
        }
        let ix = Arc::make_mut(&mut self.0);
        let Some(old) = ix.by_key.remove(&key) else {
            return;
        };
        if old.kind != WORKLOAD {
            return;
        }
        if let Some(set) = ix.by_node.get_mut(&old.node) {
            set.remove(&old.name);
            if set.is_empty() {
                ix.by_node.remove(&old.node);
            }
        }
        if let Ok(w) = old.workload() {
            for ip in &w.ips {
                if let Some(names) = ix.by_addr.get_mut(ip) {
                    names.retain(|n| *n != old.name);
                    if names.is_empty() {
                        ix.by_addr.remove(ip);
                    }
                }
            }
        }
    }
}

impl<'a> IntoIterator for &'a Rows {
    type Item = &'a Row;
    type IntoIter = std::iter::Map<
        std::collections::btree_map::Values<'a, Key, Arc<Row>>,
        fn(&'a Arc<Row>) -> &'a Row,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.by_key.values().map(|r| &**r)
    }
}
