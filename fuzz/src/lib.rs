//! The properties the fuzz targets check, shared by them (and runnable on one input from a
//! test). docs/POLICY.md ("Errors"): every problem is reported as FILE:LINE:COL; here the
//! position must lie inside the input, and nothing may panic.

use microseg_policy::compile::{compile_everywhere, Compiler, LocalEndpoint};
use microseg_policy::{
    import_k8s, parse_str, parse_str_with, policies_to_yaml, validate_set, Diagnostic, Origin,
    Policy, Resource, ResourceSet, Workload,
};

/// The file name every input is parsed under.
pub const FILE: &str = "fuzz.yaml";

/// Inputs past this size are parsed and validated but not compiled (the compile of a large
/// random policy says little more and slows every run).
const MAX_COMPILED_LEN: usize = 16 * 1024;

/// Each line's length in characters, lines split as YAML does: at "\r\n", "\n" and "\r".
fn line_widths(text: &str) -> Vec<usize> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.replace("\r\n", "\n")
        .split(['\n', '\r'])
        .map(|l| l.chars().count())
        .collect()
}

/// A position (1-based) that points into `text`: at a character, or just past a line's end.
fn assert_inside(text: &str, what: &str, line: usize, col: usize) {
    let widths = line_widths(text);
    assert!(
        line >= 1 && col >= 1 && line <= widths.len() && col <= widths[line - 1] + 1,
        "{what} at {line}:{col} is outside the input ({} lines; that line has {:?} characters)",
        widths.len(),
        widths.get(line.wrapping_sub(1))
    );
}

fn assert_diagnostics(text: &str, diags: &[Diagnostic]) {
    for d in diags {
        assert_eq!(d.file, FILE, "diagnostic names another file: {d}");
        assert!(!d.message.is_empty(), "diagnostic without a message: {d:?}");
        assert_inside(text, &format!("diagnostic {d:?}"), d.line, d.col);
    }
}

fn assert_origin(text: &str, o: &Origin) {
    assert_eq!(o.file, FILE, "resource from another file: {o}");
    assert_inside(text, &format!("resource origin {o}"), o.line, o.col);
}

fn without_origin(p: &Policy) -> Policy {
    Policy {
        origin: Origin::default(),
        ..p.clone()
    }
}

/// Policies written back as YAML (what `microseg policy get` and the controller store)
/// read back the same.
fn assert_round_trip(policies: &[Policy]) {
    if policies.is_empty() {
        return;
    }
    let yaml = policies_to_yaml(policies);
    let (again, diags) = parse_str("emitted.yaml", &yaml);
    assert!(
        diags.is_empty(),
        "emitted policies do not parse: {diags:?}\n{yaml}"
    );
    let again: Vec<Policy> = again
        .iter()
        .filter_map(|r| match r {
            Resource::Policy(p) => Some(without_origin(p)),
            Resource::Workload(_) => None,
        })
        .collect();
    let want: Vec<Policy> = policies.iter().map(without_origin).collect();
    assert_eq!(
        want, again,
        "emitted policies read back differently:\n{yaml}"
    );
}

/// Parse, validate, and when both are clean compile: never a panic, every error inside
/// the input, and what compiles compiles the same again (the incremental path).
pub fn policy(text: &str) {
    let (resources, diags) = parse_str(FILE, text);
    assert_diagnostics(text, &diags);
    let set: ResourceSet = resources.into_iter().collect();
    for w in &set.workloads {
        assert_origin(text, &w.origin);
    }
    for p in &set.policies {
        assert_origin(text, &p.origin);
    }
    let invalid = validate_set(&set);
    assert_diagnostics(text, &invalid);
    let policies: Vec<Policy> = set.policies.iter().map(|p| (**p).clone()).collect();
    assert_round_trip(&policies);
    if !invalid.is_empty() || text.len() > MAX_COMPILED_LEN {
        return;
    }
    // Refused (a Problem, reported at the workload), never a panic.
    let (compiled, problems) = compile_everywhere(&set);
    assert_eq!(compiled.problems.len(), problems.len());
    assert_diagnostics(text, &problems);
    let local: Vec<LocalEndpoint> = set
        .workloads
        .iter()
        .enumerate()
        .map(|(i, w)| LocalEndpoint {
            workload: w.name.clone(),
            ifindex: i as u32 + 1,
        })
        .collect();
    let mut compiler = Compiler::new();
    let first = compiler.compile(&set, &local);
    let tables = (*first.tables).clone();
    let problems = first.problems.clone();
    drop(first);
    let second = compiler.compile(&set, &local);
    assert_eq!(problems, second.problems, "a second compile disagrees");
    assert!(
        tables == *second.tables,
        "a second compile of the same resources gives other tables"
    );
}

/// The Kubernetes import: never a panic, every error inside the input, and what it
/// imports is a policy microseg reads back unchanged.
pub fn k8s_import(text: &str) {
    let (policies, diags) = import_k8s(FILE, text);
    assert_diagnostics(text, &diags);
    for p in &policies {
        assert_origin(text, &p.origin);
    }
    assert_round_trip(&policies);
}

/// A resource with its position left out: the quick reader's are approximate.
fn positionless(r: &Resource) -> Resource {
    match r {
        Resource::Workload(w) => Resource::Workload(Workload {
            origin: Origin::default(),
            ..w.clone()
        }),
        Resource::Policy(p) => Resource::Policy(without_origin(p).into()),
    }
}

/// The quick YAML reader and the full loader read every input the same: the same
/// resources and the same errors (the quick reader hands anything it finds wrong to the
/// loader, so what it accepts alone must be what the loader accepts).
pub fn readers(text: &str) {
    let (quick, quick_diags) = parse_str_with(FILE, text, true);
    let (full, full_diags) = parse_str_with(FILE, text, false);
    assert_eq!(
        quick_diags, full_diags,
        "the readers report different errors"
    );
    let quick: Vec<Resource> = quick.iter().map(positionless).collect();
    let full: Vec<Resource> = full.iter().map(positionless).collect();
    assert_eq!(quick, full, "the readers read different resources");
}
