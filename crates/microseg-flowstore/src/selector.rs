//! Label selectors as `kubectl -l` takes them: `key=value`, `key!=value`, `key`, `!key`,
//! comma-separated, all of which must hold.

use crate::record::Labels;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector(pub Vec<Requirement>);

/// Why a selector does not parse: the part at fault, and what is allowed there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("{selector:?}: an empty requirement (key=value[,key=value...])")]
    EmptyRequirement { selector: String },
    #[error("label key {0:?}: letters, digits, '-', '_', '.' and '/' (key=value[,key=value...])")]
    BadKey(String),
    #[error("label value {0:?}: at most 63 letters, digits, '-', '_' and '.'")]
    BadValue(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl Selector {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses `app=web,env!=dev,tier,!legacy`. Keys are `[prefix/]name` of letters, digits,
    /// `-`, `_`, `.` and `/`; values the same without `/`, possibly empty.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let mut reqs = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(SelectorError::EmptyRequirement {
                    selector: text.to_string(),
                });
            }
            let req = if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(key(k)?, value(v)?)
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Equals(key(k)?, value(v)?)
            } else if let Some(k) = part.strip_prefix('!') {
                Requirement::Absent(key(k)?)
            } else {
                Requirement::Exists(key(part)?)
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::Absent(k) => !labels.contains_key(k),
        })
    }
}

impl Requirement {
    /// The text that, preceded by `{` or `,`, occurs in the stored labels (compact JSON of
    /// a flat string map) exactly when the key (with that value) is there: keys and values
    /// hold no `"` or `\`, and every quote inside a JSON string is escaped, so a `{"` or
    /// `,"` in the stored text always opens a key.
    pub(crate) fn needle(&self) -> (String, bool) {
        match self {
            Requirement::Equals(k, v) => (format!("\"{k}\":\"{v}\""), true),
            Requirement::NotEquals(k, v) => (format!("\"{k}\":\"{v}\""), false),
            Requirement::Exists(k) => (format!("\"{k}\":"), true),
            Requirement::Absent(k) => (format!("\"{k}\":"), false),
        }
    }
}

fn key(k: &str) -> Result<String, SelectorError> {
    let k = k.trim();
    let ok = !k.is_empty()
        && k.len() <= 316
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_./".contains(&c));
    if ok {
        Ok(k.to_string())
    } else {
        Err(SelectorError::BadKey(k.to_string()))
    }
}

fn value(v: &str) -> Result<String, SelectorError> {
    let v = v.trim();
    let ok = v.len() <= 63
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c));
    if ok {
        Ok(v.to_string())
    } else {
        Err(SelectorError::BadValue(v.to_string()))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match r {
                Requirement::Equals(k, v) => write!(f, "{k}={v}")?,
                Requirement::NotEquals(k, v) => write!(f, "{k}!={v}")?,
                Requirement::Exists(k) => write!(f, "{k}")?,
                Requirement::Absent(k) => write!(f, "!{k}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches() {
        let s = Selector::parse("app=web, env!=dev,tier,!legacy").unwrap();
        assert_eq!(s.to_string(), "app=web,env!=dev,tier,!legacy");
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "front")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "f"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "f"), ("legacy", "")])));
        assert!(!s.matches(&labels(&[("app", "db"), ("tier", "f")])));
        assert_eq!(
            Selector::parse("a==b").unwrap(),
            Selector::parse("a=b").unwrap()
        );
    }

    #[test]
    fn rejects_what_it_cannot_match_exactly() {
        let key = |k: &str| SelectorError::BadKey(k.into());
        let value = |v: &str| SelectorError::BadValue(v.into());
        let empty = |s: &str| SelectorError::EmptyRequirement { selector: s.into() };
        let cases = [
            ("", empty("")),
            ("a=b,", empty("a=b,")),
            ("a\"=b", key("a\"")),
            ("a=b\\c", value("b\\c")),
            ("=b", key("")),
            ("a=b c", value("b c")),
        ];
        for (bad, want) in cases {
            assert_eq!(Selector::parse(bad), Err(want), "{bad:?}");
        }
        assert_eq!(
            Selector::parse("a=b c").unwrap_err().to_string(),
            "label value \"b c\": at most 63 letters, digits, '-', '_' and '.'"
        );
    }
}
