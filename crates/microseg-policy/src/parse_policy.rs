//! Policy specs: selectors, rules, peers and ports.

use crate::model::*;
use crate::parse::{parse_labels, parse_mode};
use crate::tree::{Mapping, Node};
use crate::validate::{check_label_key, check_label_value};
use crate::yaml::{describe, is_null, Ctx};

const RULE_FIELDS: &[&str] = &["action", "from", "to", "ports", "sourcePorts"];

pub(crate) fn parse_policy_spec(
    ctx: &mut Ctx,
    spec: &Node,
    name: String,
    origin: Origin,
) -> Option<Policy> {
    let spec = ctx.map(spec, "spec")?;
    ctx.check_fields(
        spec,
        "Policy spec",
        &["selector", "priority", "mode", "ingress", "egress"],
    );
    let selector = match spec.get_node("selector") {
        Some(s) => parse_selector(ctx, s, "selector"),
        None => {
            ctx.err(
                crate::yaml::map_start(spec),
                "missing field \"selector\" in Policy spec (use {} to select every workload)",
            );
            LabelSelector::default()
        }
    };
    let mut priority = DEFAULT_PRIORITY;
    if let Some(n) = spec.get_node("priority") {
        if let Some(p) = ctx.int(n, "priority") {
            if (0..=i128::from(MAX_PRIORITY)).contains(&p) {
                priority = p as u32;
            } else {
                ctx.err(
                    n.span(),
                    format!("priority {p} out of range 0-{MAX_PRIORITY}"),
                );
            }
        }
    }
    let mode = spec
        .get_node("mode")
        .map_or(Mode::Enforce, |n| parse_mode(ctx, n));
    let ingress = spec
        .get_node("ingress")
        .map(|n| parse_rules(ctx, n, Direction::Ingress));
    let egress = spec
        .get_node("egress")
        .map(|n| parse_rules(ctx, n, Direction::Egress));
    Some(Policy {
        name,
        selector,
        priority,
        mode,
        ingress,
        egress,
        origin,
    })
}

/// A label selector; null counts as `{}` (select all).
pub(crate) fn parse_selector(ctx: &mut Ctx, node: &Node, what: &str) -> LabelSelector {
    let mut sel = LabelSelector::default();
    if is_null(node) {
        return sel;
    }
    let Some(map) = ctx.map(node, what) else {
        return sel;
    };
    ctx.check_fields(map, what, &["matchLabels", "matchExpressions"]);
    if let Some(l) = map.get_node("matchLabels") {
        sel.match_labels = parse_labels(ctx, l, "matchLabels");
    }
    if let Some(e) = map.get_node("matchExpressions") {
        let items = ctx.seq(e, "matchExpressions").unwrap_or_default();
        if !ctx.within(items, MAX_MATCH_EXPRESSIONS, "matchExpressions") {
            return sel;
        }
        for item in items {
            if let Some(r) = parse_requirement(ctx, item) {
                sel.match_expressions.push(r);
            }
        }
    }
    sel
}

fn parse_requirement(ctx: &mut Ctx, node: &Node) -> Option<Requirement> {
    let map = ctx.map(node, "a matchExpressions entry")?;
    ctx.check_fields(
        map,
        "matchExpressions entry",
        &["key", "operator", "values"],
    );
    let key_node = ctx.required(map, "key", "matchExpressions entry");
    let key = key_node.and_then(|k| ctx.str(k, "key"));
    if let (Some(k), Some(n)) = (key, key_node) {
        if let Some(e) = check_label_key(k) {
            ctx.err(n.span(), e);
        }
    }
    let op_node = ctx.required(map, "operator", "matchExpressions entry")?;
    let op = match ctx.str(op_node, "operator")? {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => {
            ctx.err(
                op_node.span(),
                format!("unknown operator \"{other}\"; allowed: In, NotIn, Exists, DoesNotExist"),
            );
            return None;
        }
    };
    let mut values = Vec::new();
    let values_node = map.get_node("values");
    if let Some(vn) = values_node {
        let items = ctx.seq(vn, "values").unwrap_or_default();
        if !ctx.within(items, MAX_VALUES, "values") {
            return None;
        }
        for v in items {
            let s = if is_null(v) {
                Some("")
            } else {
                ctx.str(v, "a value")
            };
            if let Some(s) = s {
                if let Some(e) = check_label_value(s) {
                    ctx.err(v.span(), e);
                }
                values.push(s.to_string());
            }
        }
    }
    match op {
        Operator::In | Operator::NotIn if values.is_empty() => {
            let at = values_node.unwrap_or(op_node);
            ctx.err(
                at.span(),
                format!("operator {op} requires a non-empty values list"),
            );
        }
        Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
            let at = values_node.unwrap_or(op_node);
            ctx.err(at.span(), format!("operator {op} must not have values"));
        }
        _ => {}
    }
    Some(Requirement {
        key: key?.to_string(),
        operator: op,
        values,
    })
}

fn parse_rules(ctx: &mut Ctx, node: &Node, dir: Direction) -> Vec<Rule> {
    let what = match dir {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    };
    let items = ctx.seq(node, what).unwrap_or_default();
    let mut rules = Vec::with_capacity(items.len());
    for item in items {
        if let Some(r) = parse_rule(ctx, item, dir) {
            rules.push(r);
        }
    }
    rules
}

fn parse_rule(ctx: &mut Ctx, node: &Node, dir: Direction) -> Option<Rule> {
    let map = ctx.map(node, "a rule")?;
    ctx.check_fields(map, "rule", RULE_FIELDS);
    let (peer_key, wrong_key) = match dir {
        Direction::Ingress => ("from", "to"),
        Direction::Egress => ("to", "from"),
    };
    if let Some((k, _)) = map.get_key_value(wrong_key) {
        ctx.err(
            k.span(),
            format!("\"{wrong_key}\" is not allowed in an {dir} rule; use \"{peer_key}\""),
        );
    }
    let action = match ctx
        .required(map, "action", "rule")
        .map(|n| (n, ctx.str(n, "action")))
    {
        Some((n, Some(s))) => match s {
            _ if s.eq_ignore_ascii_case("allow") => Some(Action::Allow),
            _ if s.eq_ignore_ascii_case("deny") => Some(Action::Deny),
            _ if s.eq_ignore_ascii_case("log") => Some(Action::Log),
            _ => {
                ctx.err(
                    n.span(),
                    format!("invalid action \"{s}\"; allowed: allow, deny, log"),
                );
                None
            }
        },
        _ => None,
    };
    // Vectors of the lists' sizes: kept for as long as the policy is (the loader keeps
    // them), and a first push would make room for four.
    let mut peers = Vec::new();
    if let Some(n) = map.get_node(peer_key) {
        let items = ctx.seq(n, peer_key).unwrap_or_default();
        peers.reserve_exact(items.len());
        for p in items {
            if let Some(p) = parse_peer(ctx, p) {
                peers.push(p);
            }
        }
    }
    let mut ports = Vec::new();
    if let Some(n) = map.get_node("ports") {
        let items = ctx.seq(n, "ports").unwrap_or_default();
        ports.reserve_exact(items.len());
        for p in items {
            if let Some(p) = parse_port_match(ctx, p) {
                ports.push(p);
            }
        }
    }
    let mut source_ports = Vec::new();
    if let Some(n) = map.get_node("sourcePorts") {
        for p in ctx.seq(n, "sourcePorts").unwrap_or_default() {
            let Some(m) = ctx.map(p, "a sourcePorts entry") else {
                continue;
            };
            ctx.check_fields(m, "sourcePorts entry", &["port", "endPort"]);
            if m.get_node("port").is_none() {
                ctx.err(
                    crate::yaml::map_start(m),
                    "missing field \"port\" in sourcePorts entry",
                );
            } else if let Some(r) = parse_range(ctx, m) {
                source_ports.push(r);
            }
        }
    }
    Some(Rule {
        action: action?,
        peers,
        ports,
        source_ports,
    })
}

fn parse_peer(ctx: &mut Ctx, node: &Node) -> Option<Peer> {
    let map = ctx.map(node, "a peer")?;
    ctx.check_fields(map, "peer", &["selector", "cidr", "except"]);
    match (map.get_node("selector"), map.get_node("cidr")) {
        (Some(s), None) => {
            if let Some((k, _)) = map.get_key_value("except") {
                ctx.err(
                    k.span(),
                    "\"except\" is only allowed together with \"cidr\"",
                );
            }
            Some(Peer::Selector(parse_selector(ctx, s, "selector")))
        }
        (None, Some(c)) => {
            let cidr = parse_cidr(ctx, c)?;
            let mut except = Vec::new();
            if let Some(e) = map.get_node("except") {
                for x in ctx.seq(e, "except").unwrap_or_default() {
                    let Some(net) = parse_cidr(ctx, x) else {
                        continue;
                    };
                    if net.addr.is_ipv4() != cidr.addr.is_ipv4() {
                        ctx.err(
                            x.span(),
                            format!(
                                "except {net} is not of the same address family as cidr {cidr}"
                            ),
                        );
                    } else if !cidr.contains_net(&net) {
                        ctx.err(x.span(), format!("except {net} is not inside cidr {cidr}"));
                    } else {
                        except.push(net);
                    }
                }
            }
            Some(Peer::Cidr { cidr, except })
        }
        _ => {
            ctx.err(
                crate::yaml::map_start(map),
                "a peer needs exactly one of \"selector\" or \"cidr\"",
            );
            None
        }
    }
}

pub(crate) fn parse_cidr(ctx: &mut Ctx, node: &Node) -> Option<IpNet> {
    let s = ctx.str(node, "cidr")?;
    match s.parse::<IpNet>() {
        // The data plane keeps IPv4 in ::ffff:0:0/96, and such addresses never appear in
        // real IPv6 packets: a CIDR inside that range would silently match IPv4 traffic.
        Ok(n) if n.prefix_len > 96 && is_v4_mapped(&n.addr) => {
            ctx.err(
                node.span(),
                format!("CIDR \"{s}\" lies in the IPv4-mapped range ::ffff:0:0/96; write the IPv4 CIDR instead"),
            );
            None
        }
        Ok(n) => Some(n),
        Err(e) => {
            ctx.err(node.span(), format!("invalid CIDR \"{s}\": {e}"));
            None
        }
    }
}

fn parse_port_match(ctx: &mut Ctx, node: &Node) -> Option<PortMatch> {
    let map = ctx.map(node, "a ports entry")?;
    ctx.check_fields(map, "ports entry", &["protocol", "port", "endPort"]);
    let protocol = match map.get_node("protocol") {
        None => PROTO_TCP,
        Some(n) => {
            let s = ctx.str(n, "protocol")?;
            match parse_protocol(s) {
                Some(p) => p,
                None => {
                    ctx.err(
                        n.span(),
                        format!("unknown protocol \"{s}\"; allowed: TCP, UDP, SCTP, ICMP, ICMPv6 or a number 0-255"),
                    );
                    return None;
                }
            }
        }
    };
    if !protocol_has_ports(protocol) {
        for key in ["port", "endPort"] {
            if let Some(n) = map.get_node(key) {
                ctx.err(
                    n.span(),
                    format!("{key} is only allowed with TCP, UDP or SCTP"),
                );
            }
        }
        return Some(PortMatch {
            protocol,
            ports: None,
        });
    }
    if map.get_node("port").is_none() {
        if let Some(n) = map.get_node("endPort") {
            ctx.err(n.span(), "endPort requires port");
            return None;
        }
        return Some(PortMatch {
            protocol,
            ports: None,
        });
    }
    let ports = Some(parse_range(ctx, map)?);
    Some(PortMatch { protocol, ports })
}

/// `port` and optional `endPort` of a mapping; `port` must be present.
fn parse_range(ctx: &mut Ctx, map: &Mapping) -> Option<PortRange> {
    let pn = map.get_node("port")?;
    let start = parse_port(ctx, pn, "port");
    let end = match map.get_node("endPort") {
        Some(en) => {
            let end = parse_port(ctx, en, "endPort")?;
            if let Some(s) = start {
                if end < s {
                    ctx.err(en.span(), format!("endPort {end} is below port {s}"));
                    return None;
                }
            }
            end
        }
        None => start?,
    };
    Some(PortRange { start: start?, end })
}

fn parse_port(ctx: &mut Ctx, node: &Node, what: &str) -> Option<u16> {
    if let Node::Scalar(s) = node {
        let plain_number = s.may_coerce() && s.as_str().parse::<i128>().is_ok();
        if !plain_number && !is_null(node) && !s.as_str().is_empty() {
            ctx.err(
                node.span(),
                format!(
                    "{what} must be a number 1-65535, found {} (named ports are not supported)",
                    describe(node)
                ),
            );
            return None;
        }
    }
    let n = ctx.int(node, what)?;
    if (1..=65535).contains(&n) {
        Some(n as u16)
    } else {
        ctx.err(node.span(), format!("{what} {n} out of range 1-65535"));
        None
    }
}

/// Whether an IPv6 address is IPv4-mapped (`::ffff:a.b.c.d`).
pub(crate) fn is_v4_mapped(addr: &std::net::IpAddr) -> bool {
    matches!(addr, std::net::IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some())
}
