//! The parsers never panic, whatever the input.

use microseg_policy::*;
use proptest::prelude::*;

const VALID: &str = r#"apiVersion: microseg.io/v1
kind: Workload
metadata: {name: db-1, labels: {app: db}}
spec: {interface: veth-db1, ips: [10.210.0.3, "fd10::3"], mode: audit}
---
apiVersion: microseg.io/v1
kind: Policy
metadata:
  name: db-ingress
spec:
  selector:
    matchLabels: {app: db}
    matchExpressions:
      - {key: env, operator: In, values: [prod, staging]}
  priority: 100
  ingress:
    - action: allow
      from:
        - selector: {matchLabels: {app: web}}
        - cidr: 10.0.0.0/8
          except: [10.1.0.0/16]
      ports:
        - {protocol: TCP, port: 8000, endPort: 8100}
      sourcePorts: [{port: 1}]
  egress:
    - action: deny
      to: [{cidr: "::/0"}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: ns}
spec:
  podSelector: {}
  ingress: [{from: [{namespaceSelector: {}}, {ipBlock: {cidr: 10.0.0.0/8}}], ports: [{port: http}]}]
"#;

fn check(text: &str) {
    let _ = parse_str("f.yaml", text);
    let _ = import_k8s("f.yaml", text);
}

const PIECES: &[&str] = &[
    "",
    " ",
    "\n",
    "-",
    "---",
    ":",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "&a",
    "*a",
    "!tag",
    "|",
    ">",
    "#",
    "?",
    "\t",
    "null",
    "~",
    "99999999999999999999",
    "-1",
    "0",
    "ä",
    "\u{feff}",
    "%YAML 1.2",
    "...",
    "{}",
    "[]",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_strings_do_not_panic(s in ".{0,200}") {
        check(&s);
    }

    #[test]
    fn mutated_valid_documents_do_not_panic(
        edits in proptest::collection::vec((0usize..2000, 0usize..8, 0usize..PIECES.len()), 1..6)
    ) {
        let mut text = VALID.to_string();
        for (pos, del, piece) in edits {
            let mut at = pos % (text.len() + 1);
            while !text.is_char_boundary(at) { at -= 1; }
            let mut end = (at + del).min(text.len());
            while !text.is_char_boundary(end) { end -= 1; }
            text.replace_range(at..end, PIECES[piece]);
        }
        check(&text);
    }
}

#[test]
fn edge_inputs_do_not_panic() {
    for s in [
        "*a",
        "&a x",
        "&a [*a]",
        "a: &x 1\nb: *x",
        "- - -",
        "? [a]\n: b",
        "!!str x",
        "{a: {b: [",
        "\"\\u{d800}\"",
        "--- |\n  x",
    ] {
        check(s);
    }
}
