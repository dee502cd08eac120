//! Kubernetes NetworkPolicy import.

use crate::diagnostics::Diagnostic;
use crate::model::*;
use crate::parse::top_level_items;
use crate::parse_policy::{parse_cidr, parse_selector};
use crate::tree::{Mapping, Node};
use crate::validate::{check_label_key, check_label_value, check_name};
use crate::yaml::{describe, is_null, load_documents, Ctx};

pub const NAMESPACE_LABEL: &str = "k8s.namespace";
pub const NAMESPACE_LABELS_PREFIX: &str = "k8s.namespace.labels/";

/// Converts the NetworkPolicies of one file. Namespace objects are accepted
/// and need no conversion: their labels live on the workloads.
pub fn import_k8s(file: &str, text: &str) -> (Vec<Policy>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let (docs, _) = load_documents(file, text, &mut diags, false);
    let mut ctx = Ctx::new(file);
    let mut out = Vec::new();
    for doc in &docs {
        ctx.line_off = doc.line_off;
        let (items, implied) = objects(&mut ctx, &doc.node);
        for item in items {
            if let Some(p) = import_object(&mut ctx, item, implied) {
                out.push(p);
            }
        }
    }
    diags.extend(ctx.diags);
    crate::yaml::keep_inside(text, &mut diags);
    diags.sort_by_key(|d| (d.line, d.col));
    (out, diags)
}

/// The list kinds kubectl and the API server write, and the kind of their items.
const TYPED_LISTS: &[(&str, &str)] = &[
    ("NetworkPolicyList", "NetworkPolicy"),
    ("NamespaceList", "Namespace"),
];

/// What the items of a typed list are when they do not say: the API server leaves
/// `kind` and `apiVersion` out of a list's items.
#[derive(Clone, Copy)]
struct Implied<'n> {
    kind: &'static str,
    api: Option<&'n str>,
}

/// The objects of a document: one, a sequence, a `kind: List`, or a typed list.
fn objects<'n>(ctx: &mut Ctx, node: &'n Node) -> (Vec<&'n Node>, Option<Implied<'n>>) {
    let Node::Mapping(m) = node else {
        return (top_level_items(ctx, node), None);
    };
    let kind = m.get_scalar("kind").map(|k| k.as_str());
    let Some(&(_, item_kind)) = TYPED_LISTS.iter().find(|(list, _)| Some(*list) == kind) else {
        return (top_level_items(ctx, node), None);
    };
    let items = match m.get_node("items") {
        Some(items) => ctx
            .seq(items, "items")
            .map(|s| s.iter().collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let implied = Implied {
        kind: item_kind,
        api: m.get_scalar("apiVersion").map(|s| s.as_str()),
    };
    (items, Some(implied))
}

fn import_object(ctx: &mut Ctx, node: &Node, implied: Option<Implied>) -> Option<Policy> {
    let map = ctx.map(node, "an object")?;
    let kind = match implied {
        Some(i) if map.get_node("kind").is_none() => i.kind,
        _ => {
            let kind_node = ctx.required(map, "kind", "object")?;
            let kind = ctx.str(kind_node, "kind")?;
            if kind != "Namespace" && kind != "NetworkPolicy" {
                ctx.err(
                    kind_node.span(),
                    format!("unsupported kind \"{kind}\"; allowed: NetworkPolicy, Namespace"),
                );
                return None;
            }
            kind
        }
    };
    if kind == "Namespace" {
        return None;
    }
    let api = match map.get_scalar("apiVersion") {
        Some(s) => Some(s.as_str()),
        None => implied.and_then(|i| i.api),
    };
    if api != Some("networking.k8s.io/v1") {
        let at = map.get_node("apiVersion").map_or(map.span(), |n| n.span());
        ctx.err(at, "NetworkPolicy apiVersion must be networking.k8s.io/v1");
        return None;
    }
    let meta = ctx
        .required(map, "metadata", "NetworkPolicy")
        .and_then(|m| ctx.map(m, "metadata"))?;
    let name_node = ctx.required(meta, "name", "metadata")?;
    let name = ctx.str(name_node, "name")?.to_string();
    let ns = match meta.get_node("namespace").filter(|n| !is_null(n)) {
        Some(n) => {
            let ns = ctx.str(n, "namespace")?.to_string();
            // It becomes the value of the `k8s.namespace` label.
            if let Some(e) = check_label_value(&ns) {
                ctx.err(n.span(), format!("namespace: {e}"));
                return None;
            }
            ns
        }
        None => "default".to_string(),
    };
    let full = format!("{ns}.{name}");
    if let Some(e) = check_name(&full) {
        ctx.err(name_node.span(), e);
        return None;
    }
    let before = ctx.diags.len();
    let empty = Mapping::new_empty(*map.span());
    let spec = match map.get_node("spec") {
        Some(s) if !is_null(s) => ctx.map(s, "spec")?,
        _ => &empty,
    };
    let mut selector = match spec.get_node("podSelector") {
        Some(s) => parse_selector(ctx, s, "podSelector"),
        None => LabelSelector::default(),
    };
    add_namespace(&mut selector, &ns);

    // As in Kubernetes: without policyTypes, egress is isolated only by egress rules.
    let has_egress_rules = spec
        .get_node("egress")
        .is_some_and(|n| matches!(n, Node::Sequence(rules) if !rules.as_slice().is_empty()));
    let (mut want_in, mut want_eg) = (true, has_egress_rules);
    if let Some(pt) = spec.get_node("policyTypes") {
        if let Some(types) = ctx.seq(pt, "policyTypes") {
            (want_in, want_eg) = (false, false);
            for t in types {
                match ctx.str(t, "a policyTypes entry") {
                    Some("Ingress") => want_in = true,
                    Some("Egress") => want_eg = true,
                    Some(o) => ctx.err(
                        t.span(),
                        format!("unknown policy type \"{o}\"; allowed: Ingress, Egress"),
                    ),
                    None => {}
                }
            }
        }
    }
    let conv = Conv {
        ns: &ns,
        object: format!("NetworkPolicy {ns}/{name}"),
    };
    let ingress = want_in.then(|| conv.rules(ctx, spec.get_node("ingress"), "from"));
    let egress = want_eg.then(|| conv.rules(ctx, spec.get_node("egress"), "to"));
    let origin = ctx.origin(node);
    let policy = Policy {
        name: full,
        selector,
        priority: DEFAULT_PRIORITY,
        mode: Mode::Enforce,
        ingress,
        egress,
        origin,
    };
    // Named ports only drop what they cover; any other error drops the object.
    let fatal = ctx.diags[before..]
        .iter()
        .any(|d| !d.message.contains("named port"));
    (!fatal).then_some(policy)
}

/// Adds `k8s.namespace: ns`, as a requirement if the key is already taken.
fn add_namespace(sel: &mut LabelSelector, ns: &str) {
    match sel.match_labels.get(NAMESPACE_LABEL) {
        None => {
            sel.match_labels.insert(NAMESPACE_LABEL.into(), ns.into());
        }
        Some(v) if v == ns => {}
        Some(_) => sel.match_expressions.push(Requirement {
            key: NAMESPACE_LABEL.into(),
            operator: Operator::In,
            values: vec![ns.into()],
        }),
    }
}

struct Conv<'a> {
    ns: &'a str,
    object: String,
}

impl Conv<'_> {
    fn rules(&self, ctx: &mut Ctx, node: Option<&Node>, peer_key: &str) -> Vec<Rule> {
        let mut out = Vec::new();
        let Some(node) = node else { return out };
        for r in ctx.seq(node, "rules").unwrap_or_default() {
            let Some(m) = ctx.map(r, "a rule") else {
                continue;
            };
            let mut peers = Vec::new();
            if let Some(p) = m.get_node(peer_key) {
                for peer in ctx.seq(p, peer_key).unwrap_or_default() {
                    if let Some(p) = self.peer(ctx, peer) {
                        peers.push(p);
                    }
                }
            }
            let mut ports = Vec::new();
            let mut named = false;
            if let Some(p) = m.get_node("ports") {
                for port in ctx.seq(p, "ports").unwrap_or_default() {
                    match self.port(ctx, port) {
                        Ok(pm) => ports.push(pm),
                        Err(true) => named = true,
                        Err(false) => {}
                    }
                }
            }
            if named && ports.is_empty() {
                // Dropping every port would widen the rule to all ports: leave it out.
                ctx.err(
                    crate::yaml::start(r),
                    format!("{}: rule left out: it only has named ports", self.object),
                );
                continue;
            }
            out.push(Rule {
                action: Action::Allow,
                peers,
                ports,
                source_ports: Vec::new(),
            });
        }
        out
    }

    fn peer(&self, ctx: &mut Ctx, node: &Node) -> Option<Peer> {
        let m = ctx.map(node, "a peer")?;
        if let Some(ib) = m.get_node("ipBlock") {
            let ib = ctx.map(ib, "ipBlock")?;
            let cn = ctx.required(ib, "cidr", "ipBlock")?;
            let cidr = parse_cidr(ctx, cn)?;
            let mut except = Vec::new();
            if let Some(e) = ib.get_node("except") {
                for x in ctx.seq(e, "except").unwrap_or_default() {
                    if let Some(n) = parse_cidr(ctx, x) {
                        if cidr.contains_net(&n) {
                            except.push(n);
                        } else {
                            ctx.err(x.span(), format!("except {n} is not inside cidr {cidr}"));
                        }
                    }
                }
            }
            return Some(Peer::Cidr { cidr, except });
        }
        let pod = m
            .get_node("podSelector")
            .map(|s| parse_selector(ctx, s, "podSelector"));
        let nsel_node = m.get_node("namespaceSelector");
        let nsel = nsel_node.map(|s| parse_selector(ctx, s, "namespaceSelector"));
        // Its keys get a prefix, which must leave them valid label keys.
        if let (Some(node), Some(n)) = (nsel_node, &nsel) {
            let keys = n
                .match_labels
                .keys()
                .chain(n.match_expressions.iter().map(|r| &r.key));
            for k in keys {
                if let Some(e) = check_label_key(&format!("{NAMESPACE_LABELS_PREFIX}{k}")) {
                    ctx.err(node.span(), format!("namespaceSelector: {e}"));
                    return None;
                }
            }
        }
        let mut sel = pod.unwrap_or_default();
        match nsel {
            None => add_namespace(&mut sel, self.ns),
            Some(n) => {
                for (k, v) in n.match_labels {
                    sel.match_labels
                        .insert(format!("{NAMESPACE_LABELS_PREFIX}{k}"), v);
                }
                for r in n.match_expressions {
                    sel.match_expressions.push(Requirement {
                        key: format!("{NAMESPACE_LABELS_PREFIX}{}", r.key),
                        ..r
                    });
                }
                sel.match_expressions.push(Requirement {
                    key: NAMESPACE_LABEL.into(),
                    operator: Operator::Exists,
                    values: Vec::new(),
                });
            }
        }
        Some(Peer::Selector(sel))
    }

    /// Err(true) for a named port (reported), Err(false) for other errors.
    fn port(&self, ctx: &mut Ctx, node: &Node) -> Result<PortMatch, bool> {
        let m = ctx.map(node, "a ports entry").ok_or(false)?;
        let protocol = match m.get_node("protocol") {
            None => PROTO_TCP,
            Some(n) => {
                let s = ctx.str(n, "protocol").ok_or(false)?;
                match s {
                    "TCP" => PROTO_TCP,
                    "UDP" => PROTO_UDP,
                    "SCTP" => PROTO_SCTP,
                    _ => {
                        ctx.err(
                            n.span(),
                            format!("unknown protocol \"{s}\"; allowed: TCP, UDP, SCTP"),
                        );
                        return Err(false);
                    }
                }
            }
        };
        let Some(pn) = m.get_node("port").filter(|n| !is_null(n)) else {
            return Ok(PortMatch {
                protocol,
                ports: None,
            });
        };
        let start = match pn {
            Node::Scalar(s) if s.may_coerce() && s.as_str().parse::<i128>().is_ok() => {
                number(ctx, pn, "port")?
            }
            Node::Scalar(s) => {
                ctx.err(
                    pn.span(),
                    format!(
                        "{}: named port \"{}\" cannot be expressed in microseg; left out",
                        self.object,
                        s.as_str()
                    ),
                );
                return Err(true);
            }
            _ => {
                ctx.err(
                    pn.span(),
                    format!("port must be a number or a name, found {}", describe(pn)),
                );
                return Err(false);
            }
        };
        let end = match m.get_node("endPort").filter(|n| !is_null(n)) {
            Some(en) => {
                let end = number(ctx, en, "endPort")?;
                if end < start {
                    ctx.err(en.span(), format!("endPort {end} is below port {start}"));
                    return Err(false);
                }
                end
            }
            None => start,
        };
        Ok(PortMatch {
            protocol,
            ports: Some(PortRange { start, end }),
        })
    }
}

fn number(ctx: &mut Ctx, node: &Node, what: &str) -> Result<u16, bool> {
    let n = ctx.int(node, what).ok_or(false)?;
    if (1..=65535).contains(&n) {
        Ok(n as u16)
    } else {
        ctx.err(node.span(), format!("{what} {n} out of range 1-65535"));
        Err(false)
    }
}
