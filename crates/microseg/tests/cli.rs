//! The command line's contract: exit codes and error formats (no root needed).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_microseg");

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("mseg-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn policy_check_accepts_the_demo_and_reports_its_cost() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/demo");
    let (code, out, err) = run(&["policy", "check", "-f", demo]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok: 3 workload(s), 4 policies"), "{out}");
    assert!(out.contains("policy entries"), "{out}");
}

#[test]
fn policy_check_names_file_line_and_column_of_every_error_and_exits_2() {
    let f = temp(
        "bad.yaml",
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: bad}\nspec:\n  selector: {}\n  ingress:\n    - action: allow\n      from: [{cidr: 10.0.0.0/33}]\n      ports: [{protocol: TCP, port: 80, endPort: 70}]\n",
    );
    let (code, _, err) = run(&["policy", "check", "-f", &f]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!("{f}:8:")) && err.contains("10.0.0.0/33"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{f}:9:")) && err.contains("endPort"),
        "{err}"
    );
}

#[test]
fn source_ports_compile_and_more_than_a_peer_can_hold_are_refused() {
    let policy = |sports: &str| {
        format!("apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: w}}\nspec: {{interface: w0, ips: [10.0.0.1]}}\n---\napiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: sp}}\nspec:\n  selector: {{}}\n  ingress:\n    - action: allow\n      ports: [{{protocol: UDP, port: 53}}]\n      sourcePorts: [{sports}]\n")
    };
    let ok = temp(
        "sport.yaml",
        &policy("{port: 53}, {port: 1024, endPort: 2048}"),
    );
    let (code, out, err) = run(&["policy", "check", "-f", &ok]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok:"), "{out}");
    let many: Vec<String> = (1..=17).map(|p| format!("{{port: {p}}}")).collect();
    let too_many = temp("sport-many.yaml", &policy(&many.join(", ")));
    let (code, _, err) = run(&["policy", "check", "-f", &too_many]);
    assert_eq!(code, 2);
    assert!(
        err.contains("sourcePorts") && err.contains("at most 16"),
        "{err}"
    );
}

#[test]
fn kubernetes_network_policies_import_and_named_ports_are_reported() {
    let f = temp(
        "np.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: api, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: api}}\n  ingress:\n    - from: [{podSelector: {matchLabels: {app: web}}}]\n      ports: [{protocol: TCP, port: 8080}, {protocol: TCP, port: http}]\n",
    );
    let (code, out, err) = run(&["policy", "import", "--from", "k8s", "-f", &f]);
    assert_eq!(code, 2, "a named port cannot be expressed: {err}");
    assert!(err.contains("http"), "{err}");
    assert!(out.contains("shop.api") && out.contains("8080"), "{out}");
    let converted = temp("converted.yaml", &out);
    let (code, _, err) = run(&["policy", "check", "-f", &converted]);
    assert_eq!(code, 0, "the output is valid microseg YAML: {err}");
}

#[test]
fn usage_errors_exit_2_and_a_missing_agent_exits_1() {
    assert_eq!(run(&["policy", "frobnicate"]).0, 2);
    assert_eq!(run(&["agent"]).0, 2);
    let (code, _, err) = run(&["stats", "--socket", "/nonexistent/agent.sock"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the agent"), "{err}");
}
