//! Stored rows turned into typed [`Row`]s: each document parsed once, when it enters
//! the live state in memory (`live.rs`).

use super::{Reported, Row, StoreError};
use crate::resources;
use microseg_policy::{parse_str, Resource};
use std::collections::BTreeMap;
use std::sync::Arc;

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

/// The typed row of `raw`, its document parsed.
pub(crate) fn typed(raw: RawRow) -> Row {
    let parsed = (!raw.deleted).then(|| parse(&raw));
    let (resource, reported) = match (parsed, reported(&raw)) {
        (Some(p), Ok(rep)) => (Some(p), rep),
        (_, Err(e)) => (Some(Err(e)), None),
        (None, Ok(rep)) => (None, rep),
    };
    finish(raw, resource, reported)
}

/// A typed row from its parts (a write), its document parsed.
pub(crate) fn row_of(
    kind: String,
    name: String,
    json: String,
    node: String,
    reported: Option<Reported>,
    revision: u64,
    deleted: bool,
) -> Row {
    let raw = RawRow {
        kind,
        name,
        json,
        node,
        reported: None,
        revision,
        deleted,
    };
    let resource = (!deleted).then(|| parse(&raw));
    finish(raw, resource, reported)
}

fn finish(raw: RawRow, resource: Option<Parsed>, reported: Option<Reported>) -> Row {
    // Other nodes receive a discovered workload without its interface.
    let peer_json = match &resource {
        Some(Ok(r)) if !raw.node.is_empty() => match &**r {
            Resource::Workload(w) if w.interface.is_some() => {
                let mut w = w.clone();
                w.interface = None;
                Some(resources::workload_json(&w).to_string())
            }
            _ => None,
        },
        _ => None,
    };
    Row {
        reported,
        resource,
        peer_json,
        kind: raw.kind,
        name: raw.name,
        json: raw.json,
        node: raw.node,
        revision: raw.revision,
        deleted: raw.deleted,
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
        let parsed = |rows: &crate::store::Rows| -> Vec<Arc<microseg_policy::Resource>> {
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
