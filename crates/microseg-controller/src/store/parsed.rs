//! Stored rows parsed once: each back end reads rows as text and turns them into typed
//! [`Row`]s here, reusing the resource parsed at an earlier read when the row has not
//! changed since (same revision), so an apply or a report parses only what changed.

use super::{Reported, Row, StoreError};
use crate::resources;
use microseg_policy::{parse_str, Resource};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// A row as the database holds it.
pub(crate) struct RawRow {
    pub kind: String,
    pub name: String,
    pub json: String,
    pub node: String,
    pub reported: Option<String>,
    pub revision: u64,
    pub deleted: bool,
}

/// A stored row that does not read back as the resource it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored {kind} \"{name}\" (revision {revision}) does not read back: {problem}; apply a corrected {kind} \"{name}\", or delete it")]
pub struct BadRow {
    pub kind: String,
    pub name: String,
    pub revision: u64,
    pub problem: String,
}

type Parsed = Result<Arc<Resource>, BadRow>;

/// A resource parsed at an earlier read, and the revision and text length of its row.
struct Cached {
    revision: u64,
    len: usize,
    parsed: Parsed,
}

/// The resources parsed at earlier reads, by kind and name, with the revision and the
/// length of the text they were parsed from.
#[derive(Default)]
pub(crate) struct ParsedRows {
    cache: Mutex<HashMap<(String, String), Cached>>,
}

fn bad(raw: &RawRow, problem: impl Into<String>) -> BadRow {
    BadRow {
        kind: raw.kind.clone(),
        name: raw.name.clone(),
        revision: raw.revision,
        problem: problem.into(),
    }
}

fn parse(raw: &RawRow) -> Parsed {
    let (mut parsed, diags) = parse_str(&format!("stored {}/{}", raw.kind, raw.name), &raw.json);
    if let Some(d) = diags.first() {
        return Err(bad(raw, d.message.clone()));
    }
    match parsed.pop() {
        Some(r)
            if parsed.is_empty()
                && resources::kind(&r) == raw.kind
                && resources::name(&r) == raw.name =>
        {
            Ok(Arc::new(r))
        }
        _ => Err(bad(
            raw,
            "the document is not one resource of this kind and name",
        )),
    }
}

/// What the agent reported for a discovered workload (small: read at every read).
fn reported(raw: &RawRow) -> Result<Option<Reported>, BadRow> {
    raw.reported
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| bad(raw, format!("its reported name and labels: {e}")))
}

impl ParsedRows {
    /// The typed rows of `raw`. `complete`: `raw` is every live row, so what it lacks is
    /// forgotten.
    pub fn rows(&self, raw: Vec<RawRow>, complete: bool) -> Result<Vec<Row>, StoreError> {
        let mut known: Vec<Option<Parsed>> = {
            let cache = self.cache.lock().map_err(|_| StoreError::Poisoned)?;
            raw.iter()
                .map(|r| match cache.get(&(r.kind.clone(), r.name.clone())) {
                    Some(c) if c.revision == r.revision && c.len == r.json.len() => {
                        Some(c.parsed.clone())
                    }
                    _ => None,
                })
                .collect()
        };
        // Parsed without the lock: a large first read holds up no other.
        for (r, k) in raw.iter().zip(&mut known) {
            if k.is_none() && !r.deleted {
                *k = Some(parse(r));
            }
        }
        let mut cache = self.cache.lock().map_err(|_| StoreError::Poisoned)?;
        if complete {
            cache.clear();
        }
        let mut rows = Vec::with_capacity(raw.len());
        for (r, parsed) in raw.into_iter().zip(known) {
            let key = (r.kind.clone(), r.name.clone());
            match &parsed {
                Some(p) => {
                    let cached = Cached {
                        revision: r.revision,
                        len: r.json.len(),
                        parsed: p.clone(),
                    };
                    cache.insert(key, cached);
                }
                None => {
                    cache.remove(&key);
                }
            }
            let (resource, reported) = match (parsed, reported(&r)) {
                (Some(p), Ok(rep)) => (Some(p), rep),
                (_, Err(e)) => (Some(Err(e)), None),
                (None, Ok(rep)) => (None, rep),
            };
            rows.push(Row {
                reported,
                resource,
                kind: r.kind,
                name: r.name,
                json: r.json,
                node: r.node,
                revision: r.revision,
                deleted: r.deleted,
            });
        }
        Ok(rows)
    }
}

/// A label overlay as stored: key → value, or null to remove the key.
pub(crate) fn overlay(
    name: &str,
    text: &str,
) -> Result<BTreeMap<String, Option<String>>, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::BadOverlay {
        name: name.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use crate::apply::{ResourceRef, Scope, SourceFile};
    use crate::core::Core;
    use crate::resources::POLICY;
    use crate::store::sqlite::Sqlite;
    use crate::store::{Snapshot, Store, Write};
    use std::sync::Arc;
    use tokio::sync::watch;

    fn put(name: &str, json: &str) -> Write {
        Write::Put {
            kind: POLICY.into(),
            name: name.into(),
            json: json.into(),
            node: String::new(),
            reported: None,
        }
    }

    fn policy(name: &str, priority: u32) -> String {
        format!(
            r#"{{"apiVersion":"microseg.io/v1","kind":"Policy","metadata":{{"name":"{name}"}},"spec":{{"selector":{{}},"priority":{priority}}}}}"#
        )
    }

    fn core(store: Arc<Sqlite>) -> Core {
        let (rev, _) = watch::channel(0);
        let (_stop, shutdown) = watch::channel(false);
        Core::new(
            store,
            Arc::new(rev),
            crate::flow_ingest::FlowIngest::new("sqlite", 10),
            shutdown,
        )
    }

    async fn write(store: &Sqlite, writes: Vec<Write>) {
        let tx = Box::new(move |_: &Snapshot| Ok(writes));
        store.transact(tx).await.unwrap();
    }

    #[tokio::test]
    async fn an_unchanged_row_is_parsed_once() {
        let store = Sqlite::open(std::path::Path::new(":memory:")).unwrap();
        write(
            &store,
            vec![put("a", &policy("a", 1)), put("b", &policy("b", 1))],
        )
        .await;
        let parsed = |rows: &[crate::store::Row]| -> Vec<Arc<microseg_policy::Resource>> {
            rows.iter()
                .map(|r| r.resource.clone().unwrap().unwrap())
                .collect()
        };
        let first = parsed(&store.full().await.unwrap().1);
        write(&store, vec![put("b", &policy("b", 2))]).await;
        let second = parsed(&store.full().await.unwrap().1);
        assert!(Arc::ptr_eq(&first[0], &second[0]), "a is not parsed again");
        assert!(
            !Arc::ptr_eq(&first[1], &second[1]),
            "b changed: parsed again"
        );
        let microseg_policy::Resource::Policy(b) = &*second[1] else {
            panic!("a policy")
        };
        assert_eq!(b.priority, 2);
    }

    #[tokio::test]
    async fn a_row_that_does_not_parse_is_an_error_naming_it_and_can_be_deleted() {
        let store = Arc::new(Sqlite::open(std::path::Path::new(":memory:")).unwrap());
        let broken = r#"{"apiVersion":"microseg.io/v1","kind":"Policy","metadata":{"name":"broken"},"spec":{"selector":{},"priority":"high"}}"#;
        write(
            &store,
            vec![put("good", &policy("good", 1)), put("broken", broken)],
        )
        .await;
        let core = core(store.clone());
        let named = |e: crate::error::Error| {
            let text = e.to_string();
            assert!(
                text.contains("stored Policy \"broken\" (revision 1)") && text.contains("priority"),
                "{text}"
            );
        };
        named(core.list(POLICY).await.unwrap_err());
        named(core.get(POLICY, "broken").await.unwrap_err());
        assert!(core.get(POLICY, "good").await.is_ok());
        // Validating against the stored set needs every row: the apply says which failed.
        let file = SourceFile {
            name: "p.json".into(),
            content: policy("other", 1),
        };
        named(
            core.apply(vec![file.clone()], Scope::default(), false)
                .await
                .unwrap_err(),
        );
        // Replacing or deleting the row needs no parse of it.
        let refs = vec![ResourceRef {
            kind: POLICY.into(),
            name: "broken".into(),
        }];
        assert_eq!(core.delete(refs, false).await.unwrap().revision, 2);
        let applied = core.apply(vec![file], Scope::default(), false).await;
        assert_eq!(applied.unwrap().revision, 3);
        assert_eq!(core.list(POLICY).await.unwrap().1.len(), 2);
    }
}
