//! The REST API's requests and answers as types: the handlers read and build them, and
//! the `microseg` client commands build and read them, so the two cannot disagree on a
//! shape.
//!
//! The fields of each struct are in alphabetical order of their JSON names: the answers
//! keep the key order they had when they were built as JSON objects.

use crate::resources::{self, POLICY, WORKLOAD};
use microseg_policy::{Policy, Resource, Workload};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The annotation naming the revision that last changed a resource.
pub const REVISION_ANNOTATION: &str = "microseg.io/revision";
/// The annotation naming the node whose agent discovered a workload.
pub const NODE_ANNOTATION: &str = "microseg.io/node";

/// `GET /v1/policies`, `/v1/workloads` and `/v1/nodes`: the controller's revision and the
/// items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    pub items: Vec<T>,
    pub revision: u64,
}

/// `GET /v1/flows`: stored flow records, oldest first, and the cursor that continues
/// after them (`after=CURSOR`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowPage {
    pub items: Vec<microseg_flowstore::FlowRecord>,
    pub cursor: String,
}

/// `GET /v1/flows/edges`: who talked to whom over the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeList {
    pub items: Vec<microseg_flowstore::Edge>,
}

/// `GET /v1/flows/status`: how the flow record is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStatus {
    /// Per node, the records its agent dropped (its upload buffer full) since it started.
    pub agent_dropped: BTreeMap<String, u64>,
    /// `sqlite`, `postgres` or `clickhouse`.
    pub backend: String,
    /// Dropped by the controller: its queue was full.
    pub dropped: u64,
    /// The store's last failure (None while it works).
    pub error: Option<String>,
    pub ok: bool,
    /// The most records the queue holds.
    pub queue_bound: u64,
    /// Waiting to be stored.
    pub queued: u64,
    /// Records uploaded, rejected ones included.
    pub received: u64,
    /// Records that were no valid flow (bad verdict, address, ...).
    pub rejected: u64,
    pub stored: u64,
}

/// What an apply did to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Created,
    Configured,
    Unchanged,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Change::Created => "created",
            Change::Configured => "configured",
            Change::Unchanged => "unchanged",
        })
    }
}

/// One resource of an apply and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub action: Change,
    pub kind: String,
    pub name: String,
}

/// A resource by kind and name: what a delete names, and what it deleted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceRef {
    pub kind: String,
    pub name: String,
}

/// One file of an apply: the name its errors give (FILE in FILE:LINE:COL) and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    pub content: String,
    pub name: String,
}

/// `POST /v1/apply/files`: files applied together, in one revision or not at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyFilesRequest {
    pub files: Vec<SourceFile>,
}

/// `POST /v1/delete`: resources deleted together, all or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    pub resources: Vec<ResourceRef>,
}

/// `PUT /v1/workloads/NAME/labels`: `Some` sets a label, `None` (null) removes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelRequest {
    pub labels: BTreeMap<String, Option<String>>,
}

/// The answer to an apply: the revision after it (for a dry run, the current one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyResponse {
    pub applied: Vec<Applied>,
    pub dry_run: bool,
    pub revision: u64,
}

/// The answer to `POST /v1/delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteResponse {
    pub deleted: Vec<ResourceRef>,
    pub dry_run: bool,
    pub revision: u64,
}

/// The answer to `DELETE /v1/{policies,workloads}/NAME`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOneResponse {
    pub deleted: ResourceRef,
    pub dry_run: bool,
    pub revision: u64,
}

/// The answer to `PUT /v1/workloads/NAME/labels`: the workload's labels now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelResponse {
    pub labels: BTreeMap<String, String>,
    pub name: String,
    pub revision: u64,
}

/// One node in `GET /v1/nodes`: the revision it enforces and how it is doing. The fields
/// added later default when absent, so `microseg status` reads an older controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Connected and not in sync for longer than `--node-behind-after`.
    #[serde(default)]
    pub behind: bool,
    /// While it lags: when the first revision it lacks was seen by this controller (its
    /// start, for older ones).
    #[serde(default)]
    pub behind_since: Option<String>,
    pub connected: bool,
    pub controller_revision: u64,
    /// Why its last update failed; None when it did not.
    pub error: Option<String>,
    pub in_sync: bool,
    pub lag: u64,
    pub last_ack: Option<String>,
    pub last_seen: String,
    pub name: String,
    /// Its workload reports since this controller started; None before the first.
    #[serde(default)]
    pub reports: Option<NodeReports>,
    /// The revision it enforces.
    pub revision: u64,
}

/// A node's workload reports as this controller received them (docs/CONTROLLER.md "Bad
/// nodes").
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReports {
    /// Its latest report was refused, whole or in part.
    pub last_refused: bool,
    /// The latest report refused, whole or in part.
    pub last_refusal: Option<Refusal>,
    pub received: u64,
    /// Refused whole (over the limit) or in part (some workloads skipped).
    pub refused: u64,
    pub workloads_skipped: u64,
}

/// Why a report was refused: `reason` is `over_limit` (refused whole), `invalid` or
/// `conflict` (some of its workloads skipped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub at: String,
    pub message: String,
    pub reason: String,
}

/// Every error answer (4xx and 5xx): the message and, for invalid input, one line per
/// problem (`FILE:LINE:COL: message` where positioned).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub details: Vec<String>,
    pub error: String,
}

/// A kind of resource the API serves, and how it is written as a document and read back.
pub trait Document: Sized {
    /// `Policy`, `Workload`, or either.
    const KIND: &'static str;
    /// The resource if it is of this kind.
    fn from_resource(r: Resource) -> Option<Self>;
    /// Its canonical document (`apiVersion`, `kind`, `metadata`, `spec`).
    fn to_document(&self) -> Value;
}

impl Document for Resource {
    const KIND: &'static str = "resource";
    fn from_resource(r: Resource) -> Option<Self> {
        Some(r)
    }
    fn to_document(&self) -> Value {
        resources::to_json(self)
    }
}

impl Document for Workload {
    const KIND: &'static str = WORKLOAD;
    fn from_resource(r: Resource) -> Option<Self> {
        match r {
            Resource::Workload(w) => Some(w),
            Resource::Policy(_) => None,
        }
    }
    fn to_document(&self) -> Value {
        resources::workload_json(self)
    }
}

impl Document for Arc<Policy> {
    const KIND: &'static str = POLICY;
    fn from_resource(r: Resource) -> Option<Self> {
        match r {
            Resource::Policy(p) => Some(p),
            Resource::Workload(_) => None,
        }
    }
    fn to_document(&self) -> Value {
        resources::policy_json(self)
    }
}

/// A stored resource as the API shows it: its document, with annotations for the
/// revision that last changed it and, for a workload an agent discovered, its node.
/// It reads back through the policy parser, as a file would.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored<T> {
    pub resource: T,
    pub revision: u64,
    /// The node whose agent discovered it; None for one applied through the API.
    pub node: Option<String>,
}

/// Where the parser's messages place a resource read from an answer.
const ANSWER: &str = "the controller's answer";

impl<T: Document> Serialize for Stored<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut doc = self.resource.to_document();
        if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
            let mut ann = Map::new();
            ann.insert(REVISION_ANNOTATION.into(), self.revision.to_string().into());
            if let Some(node) = &self.node {
                ann.insert(NODE_ANNOTATION.into(), node.clone().into());
            }
            meta.insert("annotations".into(), Value::Object(ann));
        }
        doc.serialize(s)
    }
}

impl<'de, T: Document> Deserialize<'de> for Stored<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let doc = Value::deserialize(d)?;
        let annotations = &doc["metadata"]["annotations"];
        let revision = annotations[REVISION_ANNOTATION]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "metadata.annotations: no revision (\"{REVISION_ANNOTATION}\": \"N\")"
                ))
            })?;
        let node = annotations[NODE_ANNOTATION].as_str().map(str::to_string);
        let (parsed, diags) = microseg_policy::parse_str(ANSWER, &doc.to_string());
        if let Some(d) = diags.first() {
            return Err(D::Error::custom(d));
        }
        let mut parsed = parsed.into_iter();
        let resource = match (parsed.next(), parsed.next()) {
            (Some(r), None) => T::from_resource(r),
            _ => None,
        }
        .ok_or_else(|| D::Error::custom(format!("expected one {} document", T::KIND)))?;
        Ok(Stored {
            resource,
            revision,
            node,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Resource {
        let (mut r, d) = microseg_policy::parse_str("t.yaml", text);
        assert!(d.is_empty(), "{d:?}");
        r.remove(0)
    }

    /// Origins differ between a file and an answer; the rest must not.
    fn without_origin(r: &Resource) -> Resource {
        let mut r = r.clone();
        match &mut r {
            Resource::Workload(w) => w.origin = Default::default(),
            Resource::Policy(p) => Arc::make_mut(p).origin = Default::default(),
        }
        r
    }

    #[test]
    fn a_stored_resource_reads_back_as_it_was_written() {
        let workload = parsed(
            "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: db, labels: {app: db}}\nspec: {interface: veth1, ips: [10.0.0.2], mode: audit}\n",
        );
        let policy = parsed(
            "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  selector: {matchLabels: {app: db}}\n  ingress: [{action: allow, from: [{cidr: 10.0.0.0/8}], ports: [{protocol: TCP, port: 80, endPort: 90}]}]\n",
        );
        for (resource, node) in [(workload, Some("node-a".to_string())), (policy, None)] {
            let stored = Stored {
                resource: resource.clone(),
                revision: 7,
                node: node.clone(),
            };
            let doc = serde_json::to_value(&stored).unwrap();
            assert_eq!(doc["metadata"]["annotations"][REVISION_ANNOTATION], "7");
            assert_eq!(
                doc["metadata"]["annotations"][NODE_ANNOTATION].as_str(),
                node.as_deref()
            );
            let back: Stored<Resource> = serde_json::from_value(doc.clone()).unwrap();
            assert_eq!((back.revision, back.node), (7, node));
            assert_eq!(without_origin(&back.resource), without_origin(&resource));
        }
    }

    #[test]
    fn a_document_of_another_kind_or_without_its_revision_is_refused() {
        let doc = serde_json::json!({
            "apiVersion": microseg_policy::API_VERSION,
            "kind": "Workload",
            "metadata": {"name": "w", "annotations": {REVISION_ANNOTATION: "3"}},
            "spec": {"ips": ["10.0.0.1"]},
        });
        assert!(serde_json::from_value::<Stored<Workload>>(doc.clone()).is_ok());
        let e = serde_json::from_value::<Stored<Arc<Policy>>>(doc.clone()).unwrap_err();
        assert!(e.to_string().contains("expected one Policy"), "{e}");
        let mut bare = doc.clone();
        bare["metadata"]["annotations"] = Value::Null;
        let e = serde_json::from_value::<Stored<Workload>>(bare).unwrap_err();
        assert!(e.to_string().contains("no revision"), "{e}");
        let mut bad = doc;
        bad["spec"]["ips"] = serde_json::json!(["not an address"]);
        let e = serde_json::from_value::<Stored<Workload>>(bad).unwrap_err();
        assert!(e.to_string().starts_with(ANSWER), "{e}");
    }
}
