//! Every validation error names file, line and column of the offending node.

use microseg_policy::*;

/// Errors of `text` as "LINE:COL: message" strings.
fn errors(text: &str) -> Vec<String> {
    let (res, diags) = parse_str("f.yaml", text);
    for d in &diags {
        assert_eq!(d.file, "f.yaml");
    }
    assert!(!diags.is_empty() || !res.is_empty());
    diags
        .iter()
        .map(|d| format!("{}:{}: {}", d.line, d.col, d.message))
        .collect()
}

const HEAD: &str =
    "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  selector: {}\n";

/// A policy whose spec continues with `rest` (starting at line 6).
fn policy(rest: &str) -> Vec<String> {
    errors(&format!("{HEAD}{rest}"))
}

fn one(errs: Vec<String>, expected: &str) {
    assert_eq!(errs, vec![expected.to_string()]);
}

#[test]
fn display_is_file_line_col_message() {
    let d = Diagnostic::new("a.yaml", 3, 7, "boom");
    assert_eq!(d.to_string(), "a.yaml:3:7: boom");
}

#[test]
fn unknown_field_in_rule_points_at_the_key() {
    one(
        policy("  ingress:\n    - action: allow\n      prots: []\n"),
        "8:7: unknown field \"prots\" in rule; allowed: action, from, to, ports, sourcePorts",
    );
}

#[test]
fn invalid_cidr_prefix() {
    one(
        policy("  egress:\n    - action: allow\n      to: [{cidr: 10.0.0.0/33}]\n"),
        "8:19: invalid CIDR \"10.0.0.0/33\": prefix length must be 0-32 for IPv4",
    );
    one(
        policy("  egress:\n    - action: allow\n      to:\n        - cidr: \"fd00::/129\"\n"),
        "9:17: invalid CIDR \"fd00::/129\": prefix length must be 0-128 for IPv6",
    );
}

#[test]
fn port_errors() {
    one(
        policy("  ingress:\n    - action: allow\n      ports:\n        - {protocol: TCP, port: 8080, endPort: 80}\n"),
        "9:48: endPort 80 is below port 8080",
    );
    one(
        policy("  ingress:\n    - action: allow\n      ports:\n        - port: 70000\n"),
        "9:17: port 70000 out of range 1-65535",
    );
    one(
        policy("  ingress:\n    - action: allow\n      ports:\n        - protocol: TCPP\n"),
        "9:21: unknown protocol \"TCPP\"; allowed: TCP, UDP, SCTP, ICMP, ICMPv6 or a number 0-255",
    );
    one(
        policy(
            "  ingress:\n    - action: allow\n      ports:\n        - {protocol: ICMP, port: 8}\n",
        ),
        "9:34: port is only allowed with TCP, UDP or SCTP",
    );
    one(
        policy("  ingress:\n    - action: allow\n      ports:\n        - {protocol: UDP, endPort: 8}\n"),
        "9:36: endPort requires port",
    );
    one(
        policy("  ingress:\n    - action: allow\n      ports:\n        - {protocol: TCP, port: http}\n"),
        "9:33: port must be a number 1-65535, found \"http\" (named ports are not supported)",
    );
    one(
        policy("  ingress:\n    - action: allow\n      ports:\n        - {protocol: 256}\n"),
        "9:22: unknown protocol \"256\"; allowed: TCP, UDP, SCTP, ICMP, ICMPv6 or a number 0-255",
    );
}

#[test]
fn selector_expression_errors() {
    let text = HEAD.replace(
        "selector: {}",
        "selector:\n    matchExpressions:\n      - {key: a, operator: In}",
    );
    one(
        errors(&text),
        "7:28: operator In requires a non-empty values list",
    );
    let text = HEAD.replace(
        "selector: {}",
        "selector:\n    matchExpressions:\n      - {key: a, operator: Exists, values: [x]}",
    );
    one(errors(&text), "7:44: operator Exists must not have values");
    let text = HEAD.replace(
        "selector: {}",
        "selector:\n    matchExpressions:\n      - {key: a, operator: Has}",
    );
    one(
        errors(&text),
        "7:28: unknown operator \"Has\"; allowed: In, NotIn, Exists, DoesNotExist",
    );
}

#[test]
fn resource_header_errors() {
    one(
        errors("apiVersion: v1\nkind: Policy\nmetadata: {name: p}\nspec: {selector: {}}\n"),
        "1:13: apiVersion must be microseg.io/v1",
    );
    one(
        errors("apiVersion: microseg.io/v1\nkind: Foo\n"),
        "2:7: unknown kind \"Foo\"; allowed: Workload, Policy",
    );
    one(
        errors("apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: Web_1}\n"),
        "3:18: invalid name \"Web_1\": lowercase letters, digits, '-' and '.', up to 253 characters",
    );
    let long = "a".repeat(254);
    assert_eq!(
        errors(&format!(
            "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: {long}}}\n"
        ))
        .len(),
        1
    );
    one(
        errors("apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: w}\nspex: {}\n"),
        "4:1: unknown field \"spex\" in Workload; allowed: apiVersion, kind, metadata, spec",
    );
    one(
        errors("apiVersion: microseg.io/v1\nkind: Workload\n"),
        "1:1: missing field \"metadata\" in Workload",
    );
}

#[test]
fn label_errors() {
    one(
        errors("apiVersion: microseg.io/v1\nkind: Workload\nmetadata:\n  name: w\n  labels: {\"a b\": x}\n"),
        "5:12: invalid label key \"a b\": letters, digits and '-', '_', '.', '/', ':', 1 to 253 characters",
    );
    let v = "v".repeat(64);
    one(
        errors(&format!("apiVersion: microseg.io/v1\nkind: Workload\nmetadata:\n  name: w\n  labels: {{a: {v}}}\n")),
        &format!("5:15: invalid label value \"{v}\": letters, digits, '-', '_' and '.', up to 63 characters"),
    );
    // Allowed: the full key alphabet and an empty value.
    assert!(errors("apiVersion: microseg.io/v1\nkind: Workload\nmetadata:\n  name: w\n  labels: {\"k8s.io/a_b:c-d\": \"\"}\n").is_empty());
}

#[test]
fn direction_keys_name_the_right_one() {
    one(
        policy("  ingress:\n    - action: allow\n      to: []\n"),
        "8:7: \"to\" is not allowed in an ingress rule; use \"from\"",
    );
    one(
        policy("  egress:\n    - action: allow\n      from: []\n"),
        "8:7: \"from\" is not allowed in an egress rule; use \"to\"",
    );
}

#[test]
fn peer_errors() {
    one(
        policy("  egress:\n    - action: allow\n      to:\n        - {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}\n"),
        "9:39: except 11.0.0.0/16 is not inside cidr 10.0.0.0/8",
    );
    one(
        policy("  egress:\n    - action: allow\n      to:\n        - {cidr: 10.0.0.0/8, except: [\"fd00::/8\"]}\n"),
        "9:39: except fd00::/8 is not of the same address family as cidr 10.0.0.0/8",
    );
    one(
        policy("  egress:\n    - action: allow\n      to:\n        - {cidr: 10.0.0.0/8, selector: {}}\n"),
        "9:12: a peer needs exactly one of \"selector\" or \"cidr\"",
    );
    one(
        policy("  egress:\n    - action: allow\n      to:\n        - {}\n"),
        "9:11: a peer needs exactly one of \"selector\" or \"cidr\"",
    );
}

#[test]
fn value_errors() {
    one(
        policy("  mode: strict\n"),
        "6:9: invalid mode \"strict\"; allowed: enforce, audit",
    );
    one(
        policy("  priority: 1000000001\n"),
        "6:13: priority 1000000001 out of range 0-1000000000",
    );
    one(
        policy("  priority: high\n"),
        "6:13: priority must be an integer, found \"high\"",
    );
    one(
        policy("  ingress:\n    - action: permit\n"),
        "7:15: invalid action \"permit\"; allowed: allow, deny, log",
    );
    one(
        errors("apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: w}\nspec:\n  ips: [10.0.0.1, 10.0.0.300]\n"),
        "5:19: invalid IP address \"10.0.0.300\": must be an IPv4 or IPv6 address",
    );
}

#[test]
fn types_are_checked() {
    one(
        policy("  ingress: allow\n"),
        "6:12: ingress must be a list, found \"allow\"",
    );
    one(
        errors("apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  selector: app=db\n"),
        "5:13: selector must be a mapping, found \"app=db\"",
    );
    one(
        policy("  ingress:\n    - action: [allow]\n"),
        "7:15: action must be a string, found a list",
    );
}

#[test]
fn all_errors_are_collected_in_file_order() {
    let errs = policy("  priority: -1\n  mode: x\n  ingress:\n    - action: allow\n      ports: [{port: 0}]\n---\napiVersion: microseg.io/v1\nkind: Bar\n");
    assert_eq!(
        errs,
        vec![
            "6:13: priority -1 out of range 0-1000000000",
            "7:9: invalid mode \"x\"; allowed: enforce, audit",
            "10:22: port 0 out of range 1-65535",
            "13:7: unknown kind \"Bar\"; allowed: Workload, Policy",
        ]
    );
}

#[test]
fn yaml_syntax_errors_have_positions() {
    let (res, diags) = parse_str(
        "f.yaml",
        "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: w\n",
    );
    assert!(res.is_empty());
    assert_eq!(diags.len(), 1);
    assert!(diags[0].line >= 3, "{diags:?}");
    assert!(diags[0].message.starts_with("invalid YAML"), "{diags:?}");
    let (_, diags) = parse_str("f.yaml", "a: 1\na: 2\n");
    assert_eq!(diags[0].to_string(), "f.yaml:2:1: duplicate key \"a\"");
}

#[test]
fn nesting_deep_enough_to_overflow_the_stack_is_an_error_not_a_crash() {
    // 200,000 levels of "- ": recursing into them would abort the whole process.
    let deep = format!("{}x\n", "- ".repeat(200_000));
    let errs = errors(&deep);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("1:400001: nested deeper than 512 columns"),
        "{}",
        errs[0]
    );
    // The same by indentation, one column per line, in the second document.
    let mut stairs = String::from("---\n");
    for depth in 0..600 {
        stairs.push_str(&format!("{}k{depth}:\n", " ".repeat(depth)));
    }
    let errs = errors(&format!("{HEAD}  ingress: []\n{stairs}"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("521:514: nested"), "{}", errs[0]);
}
