//! Errors tied to a position in an input file.

use std::borrow::Cow;
use std::fmt::{self, Write};

/// One problem in an input file; line and column are 1-based.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, thiserror::Error,
)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl Diagnostic {
    pub fn new(file: &str, line: usize, col: usize, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_string(),
            line,
            col,
            message: message.into(),
        }
    }
}

/// File names and messages quote the input, which may hold escape sequences or line
/// breaks: shown raw, they would drive the terminal or forge log lines.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            escape_control(&self.file),
            self.line,
            self.col,
            escape_control(&self.message)
        )
    }
}

/// `s` with every character that could move the cursor, recolour, break the line or
/// reorder the text shown escaped: C0 controls and DEL (`\n`, `\r`, `\t`, `\x1b`), C1
/// controls, line and paragraph separators and the bidirectional marks, embeddings,
/// overrides and isolates (`\u{202e}`). Borrowed when there is none.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_ascii() && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

pub(crate) fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' // Arabic letter mark
                | '\u{200e}'..='\u{200f}' // left-to-right and right-to-left marks
                | '\u{2028}'..='\u{2029}' // line and paragraph separators
                | '\u{202a}'..='\u{202e}' // embeddings and overrides
                | '\u{2066}'..='\u{2069}' // isolates
        )
}
