//! Label maps and selectors have bounds, reported at the first entry past them; large
//! inputs within them read in time proportional to their size.

use microseg_policy::*;

fn workload_with_labels(n: usize) -> String {
    let labels: String = (0..n).map(|i| format!("    k{i}: v\n")).collect();
    format!("apiVersion: microseg.io/v1\nkind: Workload\nmetadata:\n  name: w\n  labels:\n{labels}")
}

fn messages(file: &str, text: &str) -> Vec<String> {
    let (res, diags) = parse_str(file, text);
    if !diags.is_empty() {
        assert!(res.is_empty(), "the resource in error is dropped");
    }
    diags.iter().map(|d| d.to_string()).collect()
}

#[test]
fn eighty_thousand_labels_are_one_located_error() {
    // Line 6 holds the first label, so the 257th is on line 262.
    let text = workload_with_labels(80_000);
    assert_eq!(
        messages("w.yaml", &text),
        ["w.yaml:262:5: labels has 80000 entries; at most 256 are allowed"]
    );
    // The same through the general loader (a non-ASCII comment keeps the quick reader off).
    let text = format!("# é\n{text}");
    assert_eq!(
        messages("w.yaml", &text),
        ["w.yaml:263:5: labels has 80000 entries; at most 256 are allowed"]
    );
}

#[test]
fn as_many_labels_as_the_bound_are_accepted() {
    let (res, diags) = parse_str("w.yaml", &workload_with_labels(MAX_LABELS));
    assert!(diags.is_empty(), "{diags:?}");
    let [Resource::Workload(w)] = res.as_slice() else {
        panic!("one workload: {res:?}")
    };
    assert_eq!(w.labels.len(), MAX_LABELS);
}

#[test]
fn selectors_are_bounded() {
    let policy = |selector: &str| {
        format!("apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: p}}\nspec:\n  selector:\n{selector}")
    };
    let pairs: Vec<String> = (0..=MAX_LABELS).map(|i| format!("k{i}: v")).collect();
    let text = policy(&format!("    matchLabels: {{{}}}\n", pairs.join(", ")));
    let col = 19
        + pairs[..MAX_LABELS]
            .iter()
            .map(|p| p.len() + 2)
            .sum::<usize>();
    assert_eq!(
        messages("p.yaml", &text),
        [format!(
            "p.yaml:6:{col}: matchLabels has 257 entries; at most 256 are allowed"
        )]
    );

    let exprs: String = (0..=MAX_MATCH_EXPRESSIONS)
        .map(|i| format!("      - {{key: k{i}, operator: Exists}}\n"))
        .collect();
    let text = policy(&format!("    matchExpressions:\n{exprs}"));
    assert_eq!(
        messages("p.yaml", &text),
        ["p.yaml:263:10: matchExpressions has 257 entries; at most 256 are allowed"]
    );

    let values: String = (0..=MAX_VALUES)
        .map(|i| format!("          - v{i}\n"))
        .collect();
    let text = policy(&format!(
        "    matchExpressions:\n      - key: k\n        operator: In\n        values:\n{values}"
    ));
    assert_eq!(
        messages("p.yaml", &text),
        ["p.yaml:1034:13: values has 1025 entries; at most 1024 are allowed"]
    );
}

#[test]
fn the_kubernetes_import_has_the_same_bounds() {
    let pairs: Vec<String> = (0..=MAX_LABELS).map(|i| format!("k{i}: v")).collect();
    let text = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np}}\nspec:\n  podSelector:\n    matchLabels: {{{}}}\n",
        pairs.join(", ")
    );
    let (policies, diags) = import_k8s("np.yaml", &text);
    assert!(policies.is_empty());
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert!(
        diags[0]
            .message
            .starts_with("matchLabels has 257 entries; at most 256"),
        "{diags:?}"
    );
}

#[test]
fn a_long_address_list_still_finds_its_duplicate() {
    let ips: String = (0..20_000)
        .map(|i| format!("    - 10.0.{}.{}\n", i / 256, i % 256))
        .collect();
    let text = format!(
        "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: w}}\nspec:\n  ips:\n{ips}    - 10.0.3.7\n"
    );
    assert_eq!(
        messages("w.yaml", &text),
        ["w.yaml:20006:7: duplicate address 10.0.3.7 in ips"]
    );
}

#[test]
fn a_repeated_key_in_json_is_reported_where_it_is() {
    let text = "{\"apiVersion\": \"microseg.io/v1\", \"kind\": \"Workload\",\n \"metadata\": {\"name\": \"a\", \"name\": \"b\"}}";
    assert_eq!(
        messages("w.json", text),
        ["w.json:2:28: duplicate key \"name\""]
    );
    // In a large object too.
    let labels: Vec<String> = (0..2000)
        .map(|i| format!("\"k{}\": \"v\"", i % 1999))
        .collect();
    let text = format!(
        "{{\"apiVersion\": \"microseg.io/v1\", \"kind\": \"Workload\", \"metadata\": {{\"name\": \"a\", \"labels\": {{{}}}}}}}",
        labels.join(", ")
    );
    let m = messages("w.json", &text);
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(m[0].contains("duplicate key \"k0\""), "{m:?}");
}
