//! The quick reader against the loader, and the cost of its duplicate-key check.

use super::*;
use marked_yaml::loader::{parse_yaml_with_options, LoaderOptions};

/// The loader's tree, for comparison.
fn loader(text: &str) -> Option<Node> {
    let o = || {
        LoaderOptions::default()
            .error_on_duplicate_keys(true)
            .prevent_coercion(true)
    };
    parse_yaml_with_options(0, text, o())
        .or_else(|_| parse_yaml_with_options(0, text, o().toplevel_sequence()))
        .ok()
        .map(|n| Node::from(&n))
}

/// Values, quoting and scalar positions must all match.
fn same(a: &Node, b: &Node) -> bool {
    match (a, b) {
        (Node::Scalar(x), Node::Scalar(y)) => {
            x.as_str() == y.as_str()
                && x.may_coerce() == y.may_coerce()
                && (x.as_str().is_empty()
                    || x.span().start().map(|m| (m.line(), m.column()))
                        == y.span().start().map(|m| (m.line(), m.column())))
        }
        (Node::Sequence(x), Node::Sequence(y)) => {
            x.as_slice().len() == y.as_slice().len()
                && x.iter().zip(y.iter()).all(|(p, q)| same(p, q))
        }
        (Node::Mapping(x), Node::Mapping(y)) => {
            x.keys().count() == y.keys().count()
                && x.iter().zip(y.iter()).all(|((k1, v1), (k2, v2))| {
                    same(&Node::Scalar(k1.clone()), &Node::Scalar(k2.clone())) && same(v1, v2)
                })
        }
        _ => false,
    }
}

/// Whether the quick reader took `text`; when it did, its tree must be the loader's.
fn agrees(text: &str) -> bool {
    let fast = parse(text);
    let slow = loader(text);
    match (&fast, &slow) {
        (Some(f), Some(s)) => assert!(same(f, s), "trees differ for:\n{text}\n{f:#?}\n{s:#?}"),
        (Some(f), None) => panic!("accepted what the loader refuses:\n{text}\n{f:#?}"),
        _ => {}
    }
    fast.is_some()
}

#[test]
fn policy_files_read_the_same_as_with_the_loader() {
    let text = "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: web, labels: {a: 'x''y', \"b\": \"c d\"}}\nspec:\n  selector:\n    matchLabels: {app: web}   # comment\n  priority: 10\n  ingress:\n    - action: allow\n      from: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}, {selector: {matchLabels: {}}}]\n      ports: [{protocol: TCP, port: 80}, {protocol: UDP, port: 1000-2000}]\n    -\n      action: deny\n      from:\n      - cidr: fd00::/64\n      ports: []\n    - action: log\n  egress:\n  - action: allow\n    to:\n      - {cidr: \"::/0\"}\n  empty:\n  nothing: ~\n";
    assert!(agrees(text), "the quick reader declined:\n{text}");
}

#[test]
fn the_demo_files_are_read_by_the_quick_reader_as_by_the_loader() {
    let files = [
        include_str!("../../../examples/demo/workloads.yaml"),
        include_str!("../../../examples/demo/policies.yaml"),
    ];
    let docs: Vec<&str> = files.iter().flat_map(|f| f.split("---\n")).collect();
    assert!(docs.len() >= 7, "{} documents", docs.len());
    for doc in docs {
        assert!(agrees(doc), "the quick reader declined:\n{doc}");
    }
}

#[test]
fn what_it_does_not_read_is_left_to_the_loader() {
    for text in [
        "a: &x 1\nb: *x\n",
        "a: !tag 1\n",
        "a: |\n  text\n",
        "a: one\n  two\n",
        "a: [1,\n 2]\n",
        "a: \"x\\ny\"\n",
        "a: 1\na: 2\n",
        "- - a\n",
        "? a\n: b\n",
        "a: b: c\n",
        "a:\tb\n",
        "just a scalar\n",
        // Markers and directives, after content the reader has already taken.
        "a: 1\n...\n",
        "a:\n  b: 1\n  ---c\n",
        "a: 1\n%YAML 1.2\n",
    ] {
        assert!(parse(text).is_none(), "{text}");
    }
}

/// Lines outside the subset, each valid YAML the loader reads (after any generated
/// document, whose keys are `kN`).
const OUTSIDE: [&str; 7] = [
    "z: &anchor 1\n",
    "z: !tag 1\n",
    "z: |\n  block\n",
    "z: \"esc\\tape\"\n",
    "z: [1,\n  2]\n",
    "z: plain\n  continued\n",
    "z: caf\u{e9}\n",
];

#[test]
fn random_documents_in_the_subset_read_the_same_as_with_the_loader() {
    // Small generated documents mixing every construct the reader takes.
    let scalars = [
        "a",
        "TCP",
        "10.0.0.0/8",
        "fd00::1",
        "'q'",
        "\"d d\"",
        "1-2",
        "-1",
        "x:y",
        "''",
    ];
    let mut seed: u64 = 7;
    let mut rnd = |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as usize) % n
    };
    const CASES: usize = 2000;
    let mut taken = 0;
    for _ in 0..CASES {
        let mut t = String::new();
        for k in 0..1 + rnd(3) {
            match rnd(4) {
                0 => t += &format!("k{k}: {}\n", scalars[rnd(scalars.len())]),
                1 => t += &format!("k{k}: [{}, {{x: {}}}]\n", scalars[rnd(5)], scalars[rnd(5)]),
                2 => {
                    t += &format!("k{k}:\n");
                    let ind = if rnd(2) == 0 { "" } else { "  " };
                    for j in 0..1 + rnd(3) {
                        t += &format!(
                            "{ind}- n{j}: {}\n{ind}  m: {}\n",
                            scalars[rnd(scalars.len())],
                            scalars[rnd(4)]
                        );
                    }
                }
                _ => {
                    t += &format!(
                        "k{k}:   # c\n  inner: {{}}\n  list: []\n  v: {}  # c\n",
                        scalars[rnd(scalars.len())]
                    )
                }
            }
        }
        // One document in four also gets a line the quick reader must leave to the loader.
        let outside = rnd(4) == 0;
        if outside {
            t += OUTSIDE[rnd(OUTSIDE.len())];
        }
        let accepted = agrees(&t);
        assert!(accepted != outside, "accepted: {accepted}, for:\n{t}");
        taken += usize::from(accepted);
    }
    // Most documents are in the subset: the comparisons above were mostly of two trees.
    assert!(
        taken >= CASES / 2,
        "only {taken} of {CASES} read by the quick reader"
    );
}

/// Key hashes and comparisons the reader's duplicate check does for `text`.
fn key_work(text: &str) -> u64 {
    crate::tree::key_work::take();
    assert!(parse(text).is_some());
    crate::tree::key_work::take()
}

#[test]
fn duplicate_keys_cost_linear_work_in_the_mapping_size() {
    let block = |n: usize| {
        let keys: String = (0..n).map(|i| format!("  k{i}: v\n")).collect();
        format!("labels:\n{keys}")
    };
    let flow = |n: usize| {
        let keys: Vec<String> = (0..n).map(|i| format!("k{i}: v")).collect();
        format!("labels: {{{}}}\n", keys.join(", "))
    };
    for doc in [block, flow] {
        let (small, large) = (key_work(&doc(20_000)), key_work(&doc(40_000)));
        assert!(small >= 20_000, "every key is looked at: {small}");
        // Quadratic work would be four times as much.
        assert!(
            large <= small * 5 / 2,
            "twice the keys, {small} then {large}"
        );
    }
}

#[test]
fn a_repeated_key_in_a_large_mapping_is_left_to_the_loader() {
    let mut text: String = (0..1000).map(|i| format!("k{i}: v\n")).collect();
    assert!(parse(&text).is_some());
    text.push_str("k500: w\n");
    assert!(parse(&text).is_none());
    let flow: Vec<String> = (0..100).map(|i| format!("k{}: v", i % 99)).collect();
    assert!(parse(&format!("m: {{{}}}\n", flow.join(", "))).is_none());
}
