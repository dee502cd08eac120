//! Inputs the fuzzer (fuzz/, scripts/fuzz.sh) found, kept as regression tests: every error
//! names a position inside the input (docs/POLICY.md, "Errors").

use microseg_policy::*;

/// Each line's width in characters, lines split on "\n" (a "\r" before it is the break's).
fn widths(text: &str) -> Vec<usize> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).chars().count())
        .collect()
}

fn assert_inside(text: &str, diags: &[Diagnostic]) {
    assert!(!diags.is_empty(), "expected an error for {text:?}");
    let w = widths(text);
    for d in diags {
        assert!(
            d.line >= 1 && d.line <= w.len() && d.col >= 1 && d.col <= w[d.line - 1] + 1,
            "{d} is outside {text:?} (line widths {w:?})"
        );
    }
}

#[test]
fn an_error_at_the_end_of_a_file_without_a_final_newline_points_at_its_last_line() {
    for text in [
        "{a: b",
        "a: {b: c",
        "kind: Policy\nspec: [x",
        "- [",
        "a: 'b",
    ] {
        assert_inside(text, &parse_str("f.yaml", text).1);
        assert_inside(text, &import_k8s("f.yaml", text).1);
    }
}

#[test]
fn an_empty_value_on_the_last_line_is_reported_on_that_line() {
    let np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\napiVersion: # none\n  ";
    assert_inside(np, &import_k8s("f.yaml", np).1);
    for text in [
        "apiVersion: microseg.io/v1\nkind: Workload\nmetadata:",
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  selector: {}\n  priority:",
        "apiVersion: microseg.io/v1\nkind:\n  ",
    ] {
        assert_inside(text, &parse_str("f.yaml", text).1);
    }
}
