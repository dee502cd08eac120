//! The writer against the readers: what it writes, both readers read back as the value
//! it was given.

use super::*;
use crate::tree::Node;
use proptest::prelude::*;
use serde_json::json;

/// Several documents, separated by `---` lines.
fn values_to_yaml(values: &[Value]) -> String {
    let docs: Vec<String> = values.iter().map(value_to_yaml).collect();
    docs.join("---\n")
}

/// A document's tree as a JSON value: quoted scalars are strings; plain ones are null,
/// booleans and numbers as YAML 1.2's core schema reads them, strings otherwise.
fn value(node: &Node) -> Value {
    match node {
        Node::Scalar(s) if s.may_coerce() => match s.as_str() {
            "" | "~" | "null" | "Null" | "NULL" => Value::Null,
            "true" | "True" | "TRUE" => Value::Bool(true),
            "false" | "False" | "FALSE" => Value::Bool(false),
            t => number(t).unwrap_or_else(|| Value::String(t.into())),
        },
        Node::Scalar(s) => Value::String(s.as_str().into()),
        Node::Sequence(s) => Value::Array(s.iter().map(value).collect()),
        Node::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.as_str().to_string(), value(v)))
                .collect(),
        ),
    }
}

/// A JSON number (std's float parsing, which is exact, unlike serde_json's default).
fn number(t: &str) -> Option<Value> {
    serde_json::from_str::<serde_json::Number>(t).ok()?;
    if let Ok(i) = t.parse::<i64>() {
        return Some(i.into());
    }
    if let Ok(u) = t.parse::<u64>() {
        return Some(u.into());
    }
    serde_json::Number::from_f64(t.parse().ok()?).map(Value::Number)
}

/// The documents of `text`, read with the quick reader first and with the loader alone:
/// both must agree and find no error.
fn read_back(text: &str) -> Vec<Value> {
    let mut reads = Vec::new();
    for quick in [true, false] {
        let mut diags = Vec::new();
        let (docs, _) = crate::yaml::load_documents("t.yaml", text, &mut diags, quick);
        assert!(diags.is_empty(), "{}\nin:\n{text}", diags[0]);
        reads.push(docs.iter().map(|d| value(&d.node)).collect::<Vec<_>>());
    }
    assert_eq!(reads[0], reads[1], "the readers differ on:\n{text}");
    reads.pop().unwrap()
}

fn round_trip(v: &Value) {
    let text = value_to_yaml(v);
    assert_eq!(read_back(&text), vec![v.clone()], "written as:\n{text}");
}

#[test]
fn strings_that_would_read_as_something_else_are_quoted() {
    let v = json!({
        "bool": "true", "word": "yes", "int": "1", "float": "1.5", "exp": "1e3", "hex": "0x1F",
        "date": "2026-12-07", "nothing": "null", "tilde": "~", "empty": "", "infinite": "inf",
        "ip": "10.0.0.1", "cidr": "10.0.0.0/8", "v6": "fd00::1", "name": "web-1.prod",
        "comment": "a #b", "colon": "a: b", "dash": "- a", "lead": " a"
    });
    let text = value_to_yaml(&v);
    for quoted in [
        "bool: \"true\"",
        "word: \"yes\"",
        "int: \"1\"",
        "float: \"1.5\"",
        "exp: \"1e3\"",
        "hex: \"0x1F\"",
        "date: \"2026-12-07\"",
        "nothing: \"null\"",
        "tilde: \"~\"",
        "empty: \"\"",
        "infinite: \"inf\"",
        "v6: \"fd00::1\"",
        "comment: \"a #b\"",
        "colon: \"a: b\"",
        "dash: \"- a\"",
        "lead: \" a\"",
    ] {
        assert!(text.lines().any(|l| l == quoted), "{quoted} in:\n{text}");
    }
    for plain in ["ip: 10.0.0.1", "cidr: 10.0.0.0/8", "name: web-1.prod"] {
        assert!(text.lines().any(|l| l == plain), "{plain} in:\n{text}");
    }
    round_trip(&v);
}

#[test]
fn keys_empty_collections_and_other_types() {
    let v = json!({
        "a b": 1, "": 2, "x:y": -3, "1": 1.5, "m": {}, "l": [], "none": null, "t": true, "null": 0,
        "nested": {"list": [[], [1, [2]], {}, {"k": "v", "deep": {"x": [true]}}]}
    });
    let text = value_to_yaml(&v);
    for line in [
        "\"\": 2",
        "\"1\": 1.5",
        "\"a b\": 1",
        "l: []",
        "m: {}",
        "none: null",
        "\"null\": 0",
        "\"x:y\": -3",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }
    round_trip(&v);
    round_trip(&json!([]));
    round_trip(&json!({}));
    round_trip(&json!([{"a": 1}, [1, 2], "x", null]));
}

#[test]
fn control_and_formatting_characters_are_escaped() {
    let v = json!({"k": "a\u{1b}[31m\u{7}\u{7f}\u{85}\u{202e}\u{2028}\u{feff}\t\r\"\\é"});
    let text = value_to_yaml(&v);
    assert_eq!(
        text,
        "k: \"a\\u001B[31m\\u0007\\u007F\\u0085\\u202E\\u2028\\uFEFF\\t\\r\\\"\\\\é\"\n"
    );
    round_trip(&v);
}

#[test]
fn multi_line_strings_are_literal_blocks_when_they_can_be() {
    let v = json!({"script": "line 1\n  line 2\n\n# not a comment\n", "list": ["a\nb"]});
    let text = value_to_yaml(&v);
    assert_eq!(
        text,
        "list:\n  - |-\n    a\n    b\nscript: |\n  line 1\n    line 2\n\n  # not a comment\n"
    );
    round_trip(&v);
    // Leading blanks, several final line breaks, tabs: double-quoted instead.
    for s in [" a\nb", "a\nb\n\n", "\na", "a\tb\nc", "a\n"] {
        let v = json!({ "k": s });
        assert!(value_to_yaml(&v).starts_with("k: \""), "{s:?}");
        round_trip(&v);
    }
}

#[test]
fn the_demo_resources_round_trip() {
    let files = [
        include_str!("../../../examples/demo/workloads.yaml"),
        include_str!("../../../examples/demo/policies.yaml"),
    ];
    for text in files {
        let values = read_back(text);
        assert!(values.len() >= 3);
        let written = values_to_yaml(&values);
        assert_eq!(read_back(&written), values, "written as:\n{written}");
        let resources = |t: &str| {
            let (res, diags) = crate::parse_str("demo.yaml", t);
            assert!(diags.is_empty(), "{}", diags[0]);
            res.into_iter()
                .map(|r| {
                    format!("{r:?}")
                        .split(", origin")
                        .next()
                        .unwrap()
                        .to_string()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(resources(&written), resources(text));
    }
}

#[test]
fn a_policy_is_written_in_its_documented_order() {
    let text = "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: db-ingress}\nspec:\n  selector:\n    matchLabels: {app: db}\n    matchExpressions: [{key: env, operator: In, values: [prod]}]\n  ingress:\n    - action: allow\n      from: [{selector: {matchLabels: {app: web}}}, {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]\n      ports: [{protocol: TCP, port: 5432}, {protocol: 200}]\n      sourcePorts: [{port: 1024, endPort: 65535}]\n  egress: []\n";
    let (res, diags) = crate::parse_str("p.yaml", text);
    assert!(diags.is_empty(), "{}", diags[0]);
    let crate::Resource::Policy(p) = &res[0] else {
        panic!("{res:?}")
    };
    assert_eq!(
        policies_to_yaml(std::slice::from_ref(&**p)),
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: db-ingress}\nspec:\n  selector:\n    matchLabels: {app: db}\n    matchExpressions:\n      - key: env\n        operator: In\n        values: [prod]\n  priority: 1000\n  mode: enforce\n  ingress:\n    - action: allow\n      from:\n        - selector:\n            matchLabels: {app: web}\n        - cidr: 10.0.0.0/8\n          except: [10.1.0.0/16]\n      ports:\n        - {protocol: TCP, port: 5432}\n        - {protocol: 200}\n      sourcePorts:\n        - {port: 1024, endPort: 65535}\n  egress: []\n"
    );
}

/// Strings of every kind the writer must tell apart: plain-looking words, what reads as
/// another type, YAML's indicators, line breaks, controls and any text at all.
fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9./_-]{0,8}",
        prop::sample::select(vec![
            "true",
            "False",
            "yes",
            "NO",
            "on",
            "y",
            "null",
            "Null",
            "~",
            "",
            "0",
            "-1",
            "1.5",
            "1e3",
            ".inf",
            "-.Inf",
            ".NaN",
            "nan",
            "0x1F",
            "0o17",
            "1_000",
            "12:30",
            "2026-12-07",
            "10.0.0.1",
            "fd00::1",
            "-",
            "- a",
            "? a",
            ": a",
            "a: b",
            "#c",
            "a #c",
            "'q'",
            "\"d\"",
            "[x]",
            "{y}",
            "&a",
            "*a",
            "!t",
            "|",
            ">",
            "%x",
            "@",
            "`",
            "---",
            "...",
            "--- a",
            " lead",
            "trail ",
            "a\nb",
            "a\n\nb\n",
            "x\n  y",
        ])
        .prop_map(str::to_string),
        prop::collection::vec("[a-z #:'\"-]{0,5}", 1..4)
            .prop_map(|lines| lines.join("\n"))
            .prop_flat_map(|s| prop_oneof![Just(s.clone()), Just(s + "\n")]),
        "[ -~\t\n\r\u{0}-\u{1f}\u{7f}\u{85}\u{a0}\u{2028}\u{202e}\u{feff}é中🙂]{0,12}",
        any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A document: the readers take a mapping or a list at the top.
fn json_document() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::collection::btree_map(string(), json_value(), 0..6)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        prop::collection::vec(json_value(), 0..6).prop_map(Value::Array),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_json_values_read_back_equal(v in json_document()) {
        round_trip(&v);
    }
}
