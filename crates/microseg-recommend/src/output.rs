//! The proposed policies as documents: the Policy format of docs/POLICY.md, with the
//! evidence of every rule in `metadata.annotations`, written by the project's one YAML
//! writer (`microseg_policy::value_to_yaml`).

use serde_json::{json, Map, Value};

use microseg_policy::{protocol_name, LabelSelector, Peer, Rule, API_VERSION};

use crate::group::describe;
use crate::{Evidence, Proposed, Recommendation};

/// The annotation naming the group a policy was recommended for.
pub const GROUP_ANNOTATION: &str = "microseg.io/recommended-for";
/// The workloads of the group seen in the window.
pub const WORKLOADS_ANNOTATION: &str = "microseg.io/recommended-workloads";
/// Prefix of each rule's evidence: `microseg.io/evidence.ingress.0` for ingress rule 0.
pub const EVIDENCE_PREFIX: &str = "microseg.io/evidence";

const LISTED_WORKLOADS: usize = 20;

fn selector(sel: &LabelSelector) -> Value {
    let mut m = Map::new();
    if !sel.match_labels.is_empty() {
        m.insert("matchLabels".into(), json!(sel.match_labels));
    }
    if !sel.match_expressions.is_empty() {
        let list = sel
            .match_expressions
            .iter()
            .map(|r| {
                let mut e = json!({"key": r.key, "operator": r.operator.to_string()});
                if !r.values.is_empty() {
                    e["values"] = json!(r.values);
                }
                e
            })
            .collect();
        m.insert("matchExpressions".into(), Value::Array(list));
    }
    Value::Object(m)
}

fn rule(r: &Rule, peer_key: &str) -> Value {
    let peers: Vec<Value> = r
        .peers
        .iter()
        .map(|p| match p {
            Peer::Selector(s) => json!({"selector": selector(s)}),
            Peer::Cidr { cidr, except } if except.is_empty() => json!({"cidr": cidr.to_string()}),
            Peer::Cidr { cidr, except } => json!({
                "cidr": cidr.to_string(),
                "except": except.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }),
        })
        .collect();
    let ports: Vec<Value> = r
        .ports
        .iter()
        .map(|pm| {
            let mut p = Map::new();
            p.insert(
                "protocol".into(),
                protocol_name(pm.protocol).map_or_else(|| json!(pm.protocol), |n| json!(n)),
            );
            if let Some(range) = pm.ports {
                p.insert("port".into(), json!(range.start));
                if range.end != range.start {
                    p.insert("endPort".into(), json!(range.end));
                }
            }
            Value::Object(p)
        })
        .collect();
    let mut m = Map::new();
    m.insert("action".into(), json!(r.action.to_string()));
    m.insert(peer_key.into(), Value::Array(peers));
    m.insert("ports".into(), Value::Array(ports));
    Value::Object(m)
}

/// `12 connections, first 2026-12-07T10:00:00.000000Z, last ...`, then the notes.
pub fn evidence_text(e: &Evidence) -> String {
    let mut s = format!(
        "{} connections, first {}, last {}",
        e.connections, e.first_seen, e.last_seen
    );
    for n in &e.notes {
        s.push_str("; ");
        s.push_str(n);
    }
    s
}

/// One proposed policy's document.
pub fn document(p: &Proposed, group_by: &[String]) -> Value {
    let mut ann = Map::new();
    ann.insert(GROUP_ANNOTATION.into(), json!(describe(&p.group, group_by)));
    let mut listed: Vec<&str> = p
        .members
        .iter()
        .take(LISTED_WORKLOADS)
        .map(String::as_str)
        .collect();
    let more = p.members.len().saturating_sub(LISTED_WORKLOADS);
    let extra = format!("and {more} more");
    if more > 0 {
        listed.push(&extra);
    }
    ann.insert(WORKLOADS_ANNOTATION.into(), json!(listed.join(", ")));
    let mut spec = Map::new();
    spec.insert("selector".into(), selector(&p.policy.selector));
    spec.insert("priority".into(), json!(p.policy.priority));
    spec.insert("mode".into(), json!(p.policy.mode.to_string()));
    for (key, peer_key, rules, evidence) in [
        ("ingress", "from", &p.policy.ingress, &p.ingress),
        ("egress", "to", &p.policy.egress, &p.egress),
    ] {
        let rules = rules.as_deref().unwrap_or_default();
        spec.insert(
            key.into(),
            Value::Array(rules.iter().map(|r| rule(r, peer_key)).collect()),
        );
        for (i, e) in evidence.iter().enumerate() {
            ann.insert(
                format!("{EVIDENCE_PREFIX}.{key}.{i}"),
                json!(evidence_text(e)),
            );
        }
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "Policy",
        "metadata": {"name": p.policy.name, "annotations": ann},
        "spec": spec,
    })
}

/// Every proposed policy's document, in name order.
pub fn documents(rec: &Recommendation) -> Vec<Value> {
    rec.policies
        .iter()
        .map(|p| document(p, &rec.group_by))
        .collect()
}

/// Multi-document YAML: the same flows give the same bytes. The spec in the order
/// docs/POLICY.md documents it (`policies_to_yaml`), the metadata with the annotations.
pub fn to_yaml(rec: &Recommendation) -> String {
    let docs: Vec<String> = rec
        .policies
        .iter()
        .map(|p| policy_yaml(p, &rec.group_by))
        .collect();
    docs.join("---\n")
}

/// One proposed policy's YAML document, as [`to_yaml`] writes it.
pub fn policy_yaml(p: &Proposed, group_by: &[String]) -> String {
    let body = microseg_policy::policies_to_yaml(std::slice::from_ref(&p.policy));
    let meta = &document(p, group_by)["metadata"];
    let meta = microseg_policy::value_to_yaml(&json!({ "metadata": meta }));
    splice_metadata(&body, &meta)
}

/// `body` with its top-level `metadata` entry replaced by `meta`.
fn splice_metadata(body: &str, meta: &str) -> String {
    let mut out = String::with_capacity(body.len() + meta.len());
    let mut in_meta = false;
    for line in body.split_inclusive('\n') {
        if line.starts_with("metadata:") {
            in_meta = true;
            out.push_str(meta);
            continue;
        }
        if in_meta && line.starts_with(' ') {
            continue;
        }
        in_meta = false;
        out.push_str(line);
    }
    out
}

/// A `kind: List` of the documents, which `policy apply -f` and `policy check` read too.
pub fn to_json_list(rec: &Recommendation) -> Value {
    json!({"apiVersion": API_VERSION, "kind": "List", "items": documents(rec)})
}
