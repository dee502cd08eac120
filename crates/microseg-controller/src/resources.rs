//! Resources in their JSON form (the contract's `apiVersion/kind/metadata/spec` documents),
//! written from the parsed model so that what is stored and sent is canonical.

use microseg_policy::{
    protocol_name, LabelSelector, Peer, Policy, PortRange, Resource, Rule, Workload, API_VERSION,
};
use serde_json::{json, Map, Value};

pub const POLICY: &str = "Policy";
pub const WORKLOAD: &str = "Workload";

pub fn kind(r: &Resource) -> &'static str {
    match r {
        Resource::Workload(_) => WORKLOAD,
        Resource::Policy(_) => POLICY,
    }
}

pub fn name(r: &Resource) -> &str {
    match r {
        Resource::Workload(w) => &w.name,
        Resource::Policy(p) => &p.name,
    }
}

pub fn to_json(r: &Resource) -> Value {
    match r {
        Resource::Workload(w) => workload_json(w),
        Resource::Policy(p) => policy_json(p),
    }
}

pub fn workload_json(w: &Workload) -> Value {
    let mut spec = Map::new();
    if let Some(i) = &w.interface {
        spec.insert("interface".into(), json!(i));
    }
    let ips: Vec<String> = w.ips.iter().map(ToString::to_string).collect();
    spec.insert("ips".into(), json!(ips));
    spec.insert("mode".into(), json!(w.mode.to_string()));
    json!({
        "apiVersion": API_VERSION,
        "kind": WORKLOAD,
        "metadata": {"name": w.name, "labels": w.labels},
        "spec": spec,
    })
}

fn selector_json(s: &LabelSelector) -> Value {
    let mut m = Map::new();
    if !s.match_labels.is_empty() {
        m.insert("matchLabels".into(), json!(s.match_labels));
    }
    if !s.match_expressions.is_empty() {
        let exprs: Vec<Value> = s
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
        m.insert("matchExpressions".into(), Value::Array(exprs));
    }
    Value::Object(m)
}

fn range_into(m: &mut Map<String, Value>, r: &PortRange) {
    m.insert("port".into(), json!(r.start));
    if r.end != r.start {
        m.insert("endPort".into(), json!(r.end));
    }
}

fn rule_json(r: &Rule, peer_key: &str) -> Value {
    let mut m = Map::new();
    m.insert("action".into(), json!(r.action.to_string()));
    if !r.peers.is_empty() {
        let peers: Vec<Value> = r
            .peers
            .iter()
            .map(|p| match p {
                Peer::Selector(s) => json!({"selector": selector_json(s)}),
                Peer::Cidr { cidr, except } => {
                    let mut c = json!({"cidr": cidr.to_string()});
                    if !except.is_empty() {
                        let ex: Vec<String> = except.iter().map(ToString::to_string).collect();
                        c["except"] = json!(ex);
                    }
                    c
                }
            })
            .collect();
        m.insert(peer_key.into(), Value::Array(peers));
    }
    if !r.ports.is_empty() {
        let ports: Vec<Value> = r
            .ports
            .iter()
            .map(|pm| {
                let mut p = Map::new();
                let proto = match protocol_name(pm.protocol) {
                    Some(n) => json!(n),
                    None => json!(pm.protocol),
                };
                p.insert("protocol".into(), proto);
                if let Some(r) = &pm.ports {
                    range_into(&mut p, r);
                }
                Value::Object(p)
            })
            .collect();
        m.insert("ports".into(), Value::Array(ports));
    }
    if !r.source_ports.is_empty() {
        let sp: Vec<Value> = r
            .source_ports
            .iter()
            .map(|r| {
                let mut p = Map::new();
                range_into(&mut p, r);
                Value::Object(p)
            })
            .collect();
        m.insert("sourcePorts".into(), Value::Array(sp));
    }
    Value::Object(m)
}

pub fn policy_json(p: &Policy) -> Value {
    let mut spec = Map::new();
    spec.insert("selector".into(), selector_json(&p.selector));
    spec.insert("priority".into(), json!(p.priority));
    spec.insert("mode".into(), json!(p.mode.to_string()));
    if let Some(rules) = &p.ingress {
        let r: Vec<Value> = rules.iter().map(|r| rule_json(r, "from")).collect();
        spec.insert("ingress".into(), Value::Array(r));
    }
    if let Some(rules) = &p.egress {
        let r: Vec<Value> = rules.iter().map(|r| rule_json(r, "to")).collect();
        spec.insert("egress".into(), Value::Array(r));
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": POLICY,
        "metadata": {"name": p.name},
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use microseg_policy::{load_paths, parse_str};

    #[test]
    fn the_json_form_reads_back_as_the_same_resources() {
        let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/demo");
        let set = load_paths(&[demo]).expect("demo loads");
        let mut all: Vec<Resource> = set.workloads.into_iter().map(Resource::Workload).collect();
        all.extend(set.policies.into_iter().map(Resource::Policy));
        assert!(all.len() > 3);
        let text = r#"
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: wide}
spec:
  selector: {matchExpressions: [{key: env, operator: In, values: [a, b]}, {key: x, operator: Exists}]}
  priority: 7
  mode: audit
  ingress:
    - action: log
      from: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}, {selector: {}}]
      ports: [{protocol: TCP, port: 8000, endPort: 8100}, {protocol: 47}, {protocol: ICMPv6}]
  egress: []
"#;
        let (extra, d) = parse_str("wide.yaml", text);
        assert!(d.is_empty(), "{d:?}");
        all.extend(extra);
        for r in all {
            let doc = to_json(&r).to_string();
            let (back, d) = parse_str("back.json", &doc);
            assert!(d.is_empty(), "{doc}: {d:?}");
            assert_eq!(back.len(), 1);
            let strip = |r: &Resource| {
                let mut r = r.clone();
                match &mut r {
                    Resource::Workload(w) => w.origin = Default::default(),
                    Resource::Policy(p) => std::sync::Arc::make_mut(p).origin = Default::default(),
                }
                r
            };
            assert_eq!(strip(&back[0]), strip(&r), "{doc}");
        }
    }
}
