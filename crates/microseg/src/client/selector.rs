//! `-l`: a label selector as kubectl takes it, `key=value`, `key==value`, `key!=value`,
//! `key` and `!key`, comma-separated, all of which must hold.

use microseg_policy::{check_label_key, check_label_value, LabelSelector, Operator, Requirement};

/// A `-l` the command cannot use: the selector, its term at fault and why.
#[derive(Debug, thiserror::Error)]
#[error("-l {text:?}: {term:?}: {why}")]
pub struct SelectorError {
    pub text: String,
    pub term: String,
    pub why: String,
}

/// Parses `-l`; the error names the term that is wrong.
pub fn parse(text: &str) -> Result<LabelSelector, SelectorError> {
    let mut sel = LabelSelector::default();
    for term in text.split(',').map(str::trim) {
        let (key, op, value) = if let Some(k) = term.strip_prefix('!') {
            (k, Operator::DoesNotExist, None)
        } else if let Some((k, v)) = term.split_once("!=") {
            (k, Operator::NotIn, Some(v))
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (k, Operator::In, Some(v))
        } else {
            (term, Operator::Exists, None)
        };
        let key = key.trim();
        let bad = |why: String| SelectorError {
            text: text.to_string(),
            term: term.to_string(),
            why,
        };
        if let Some(e) = check_label_key(key) {
            return Err(bad(e));
        }
        let values = match value.map(str::trim) {
            Some(v) => match check_label_value(v) {
                Some(e) => return Err(bad(e)),
                None => vec![v.to_string()],
            },
            None => Vec::new(),
        };
        if op == Operator::In {
            sel.match_labels.insert(key.to_string(), values[0].clone());
        } else {
            sel.match_expressions.push(Requirement {
                key: key.to_string(),
                operator: op,
                values,
            });
        }
    }
    Ok(sel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_parse_as_kubectl_takes_them() {
        let s = parse("app=web, tier==front,env!=prod,team,!legacy").unwrap();
        let yes = labels(&[("app", "web"), ("tier", "front"), ("team", "a")]);
        assert!(s.matches(&yes));
        let mut prod = yes.clone();
        prod.insert("env".into(), "prod".into());
        assert!(!s.matches(&prod));
        let mut legacy = yes.clone();
        legacy.insert("legacy".into(), String::new());
        assert!(!s.matches(&legacy));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "front")])));
        for bad in ["", "a=b,", "Not A Key=x", "app=not a value"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
