//! Label selectors follow Kubernetes semantics.

use microseg_policy::*;
use std::collections::BTreeMap;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn req(key: &str, operator: Operator, values: &[&str]) -> LabelSelector {
    LabelSelector {
        match_labels: BTreeMap::new(),
        match_expressions: vec![Requirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }],
    }
}

#[test]
fn empty_selector_matches_everything() {
    assert!(LabelSelector::default().matches(&labels(&[])));
    assert!(LabelSelector::default().matches(&labels(&[("a", "b")])));
}

#[test]
fn match_labels_need_every_pair() {
    let s = LabelSelector {
        match_labels: labels(&[("app", "db"), ("env", "prod")]),
        match_expressions: vec![],
    };
    assert!(s.matches(&labels(&[("app", "db"), ("env", "prod"), ("x", "y")])));
    assert!(!s.matches(&labels(&[("app", "db")])));
    assert!(!s.matches(&labels(&[("app", "db"), ("env", "dev")])));
}

#[test]
fn operator_in() {
    let s = req("env", Operator::In, &["prod", "staging"]);
    assert!(s.matches(&labels(&[("env", "prod")])));
    assert!(!s.matches(&labels(&[("env", "dev")])));
    assert!(!s.matches(&labels(&[])), "In needs the key");
}

#[test]
fn operator_not_in_matches_absent_keys() {
    let s = req("env", Operator::NotIn, &["prod"]);
    assert!(!s.matches(&labels(&[("env", "prod")])));
    assert!(s.matches(&labels(&[("env", "dev")])));
    assert!(s.matches(&labels(&[])));
}

#[test]
fn operators_exists_and_does_not_exist() {
    let e = req("env", Operator::Exists, &[]);
    let d = req("env", Operator::DoesNotExist, &[]);
    assert!(e.matches(&labels(&[("env", "")])));
    assert!(!e.matches(&labels(&[])));
    assert!(!d.matches(&labels(&[("env", "x")])));
    assert!(d.matches(&labels(&[("other", "x")])));
}

#[test]
fn labels_and_expressions_are_anded() {
    let mut s = req("tier", Operator::Exists, &[]);
    s.match_labels = labels(&[("app", "web")]);
    assert!(s.matches(&labels(&[("app", "web"), ("tier", "1")])));
    assert!(!s.matches(&labels(&[("app", "web")])));
    assert!(!s.matches(&labels(&[("tier", "1")])));
}
