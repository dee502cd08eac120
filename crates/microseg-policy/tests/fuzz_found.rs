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

/// YAML breaks lines at a lone "\r" too (YAML 1.2, 5.4), and the loader counts lines so;
/// the split into documents did not: a "---" after one was no separator, and a position
/// after one was counted in two ways.
#[test]
fn a_lone_carriage_return_breaks_lines_for_the_document_split_too() {
    let w = |name: &str| {
        format!(
            "apiVersion: microseg.io/v1\rkind: Workload\rmetadata: {{name: {name}}}\rspec: {{}}\r"
        )
    };
    let text = format!("{}---\r{}", w("a"), w("b"));
    let (res, diags) = parse_str("f.yaml", &text);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(res.len(), 2);
    // An error in the second document, on its fourth line: line 9 of the file.
    let text = format!("{}---\r{}", w("a"), w("b").replace("spec: {}", "spec: {x"));
    let (_, diags) = parse_str("f.yaml", &text);
    assert!(
        diags.iter().all(|d| d.line == 9 || d.line == 10),
        "{diags:?}"
    );
    let crash = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\nspec: {iapiVersion: ntefa:er cveth\rdb1, apiVersion: networking\n";
    let yaml_lines = |t: &str| -> Vec<usize> {
        t.replace("\r\n", "\n")
            .split(['\n', '\r'])
            .map(|l| l.chars().count())
            .collect()
    };
    for d in import_k8s("f.yaml", crash).1 {
        let w = yaml_lines(crash);
        assert!(
            d.line <= w.len() && d.col <= w[d.line - 1] + 1,
            "{d} outside {w:?}"
        );
    }
}

/// What the import writes must be a policy microseg reads: a namespace becomes the value
/// of the `k8s.namespace` label, and namespaceSelector keys get a prefix; either could pass
/// the import and then fail `microseg policy check`.
#[test]
fn the_import_refuses_what_would_make_an_invalid_policy() {
    let long_ns = "a".repeat(64);
    let np = format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: db, namespace: {long_ns}}}\nspec: {{podSelector: {{}}}}\n");
    let (policies, diags) = import_k8s("np.yaml", &np);
    assert!(policies.is_empty(), "{policies:?}");
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!((diags[0].line, diags[0].col), (3, 33), "{}", diags[0]);

    let long_key = "k".repeat(240);
    let np = format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: db, namespace: shop}}\nspec:\n  podSelector: {{}}\n  ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{{long_key}: x}}}}}}]}}]\n");
    let (_, diags) = import_k8s("np.yaml", &np);
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert!(
        diags[0].message.contains("namespaceSelector"),
        "{}",
        diags[0]
    );

    // Within the bounds, what is imported reads back.
    let np = np.replace(&long_key, "team");
    let (policies, diags) = import_k8s("np.yaml", &np);
    assert!(diags.is_empty(), "{diags:?}");
    let (_, diags) = parse_str("out.yaml", &policies_to_yaml(&policies));
    assert!(diags.is_empty(), "{diags:?}");
}

/// The YAML loader stopped reading at a NUL without an error, so a rule after one was left
/// out silently (here a deny); the quick reader read on, so the two disagreed.
#[test]
fn a_nul_character_is_an_error_where_it_is() {
    let p = "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: p}\nspec:\n  selector: {}\n  ingress:\n    - action: allow\n";
    for (extra, line, col) in [
        ("\0\n    - action: deny\n", 8, 1),
        ("    - action: deny # \0\n", 8, 22),
        (
            "    - {action: deny, from: [{cidr: 10.0.0.0/8}]}\0\n",
            8,
            49,
        ),
    ] {
        let text = format!("{p}{extra}");
        let (res, diags) = parse_str("f.yaml", &text);
        assert!(res.is_empty(), "{extra:?}: {res:?}");
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!((diags[0].line, diags[0].col), (line, col), "{}", diags[0]);
        assert_eq!(diags[0].message, "a NUL character is not allowed");
        assert_eq!(import_k8s("f.yaml", &text).1, diags);
        // The quick reader leaves such text to the loader: both read it the same.
        assert_eq!(parse_str_with("f.yaml", &text, false).1, diags);
    }
}

/// Some errors at the end of input came a column past the last line's end.
#[test]
fn an_error_at_the_end_of_input_is_not_past_the_last_line() {
    let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n|\n\n       &&&&&&&&&&&\u{20c}ey$d";
    assert_inside(text, &import_k8s("f.yaml", text).1);
    assert_inside(text, &parse_str("f.yaml", text).1);
}
