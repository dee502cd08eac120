//! What the input says reaches a terminal or a log escaped: no control character, no
//! line break, no bidirectional override gets through a diagnostic.

use microseg_policy::compile::Problem;
use microseg_policy::*;

/// C0 controls, DEL, C1 controls, line separators and bidirectional formatting.
fn is_dangerous(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'
                ..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn assert_clean(shown: &str) {
    assert!(!shown.chars().any(is_dangerous), "raw control in {shown:?}");
}

#[test]
fn a_policy_name_with_escapes_is_shown_escaped() {
    let text = "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: \"a\\x1b[31mred\\nb\"}\nspec: {selector: {}}\n";
    let (res, diags) = parse_str("p.yaml", text);
    assert!(res.is_empty());
    let shown = diags[0].to_string();
    assert_clean(&shown);
    assert!(
        shown.starts_with("p.yaml:3:18: invalid name \"a\\x1b[31mred\\nb\""),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 1);
}

#[test]
fn file_name_and_message_are_both_escaped() {
    let d = Diagnostic::new(
        "x\u{1b}]0;title\u{7}\r.yaml",
        2,
        3,
        "tab\there \u{7f} c1 \u{9b}31m \u{202e}txt.exe\u{2066} line\u{2028}sep",
    );
    let shown = d.to_string();
    assert_clean(&shown);
    assert_eq!(
        shown,
        "x\\x1b]0;title\\x07\\r.yaml:2:3: tab\\there \\x7f c1 \\u{9b}31m \\u{202e}txt.exe\\u{2066} line\\u{2028}sep"
    );
    // The fields themselves keep what was read.
    assert_eq!(d.message.chars().filter(|c| *c == '\u{202e}').count(), 1);
}

#[test]
fn text_without_controls_is_left_as_it_is() {
    let plain = "ünïcödé \\x1b stays, as do quotes \" and tabs written out";
    assert!(matches!(
        escape_control(plain),
        std::borrow::Cow::Borrowed(s) if s == plain
    ));
    assert_eq!(escape_control("a\u{0}b"), "a\\x00b");
}

#[test]
fn origins_and_compile_problems_are_escaped_too() {
    let origin = Origin {
        file: "evil\n.yaml".into(),
        line: 1,
        col: 1,
    };
    assert_eq!(origin.to_string(), "evil\\n.yaml:1:1");
    let problem = Problem {
        workload: "w\u{1b}[2J".into(),
        message: "too many\nrules".into(),
    };
    let shown = problem.to_string();
    assert_clean(&shown);
    assert_eq!(shown, "workload \"w\\x1b[2J\": too many\\nrules");
}

#[test]
fn a_file_name_with_an_escape_sequence_is_escaped() {
    let dir = std::env::temp_dir().join(format!("microseg-escape-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad\u{1b}[31m\n.yaml");
    std::fs::write(&file, "kind: Nothing\n").unwrap();
    let result = load_paths(&[&file]);
    std::fs::remove_dir_all(&dir).unwrap();
    let diags = result.expect_err("an unknown kind");
    let shown = diags[0].to_string();
    assert_clean(&shown);
    assert!(shown.contains("bad\\x1b[31m\\n.yaml:1:7: "), "{shown}");
}
