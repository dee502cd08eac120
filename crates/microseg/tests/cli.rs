//! The command line's contract: exit codes and error formats (no root needed).

use microseg_testsupport::TempDir;
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

/// `text` written as `name` in `dir` (removed with it when the test ends).
fn temp(dir: &TempDir, name: &str, text: &str) -> String {
    let p = dir.0.join(name);
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
    let dir = TempDir::new("cli");
    let f = temp(
        &dir,
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
    let dir = TempDir::new("cli");
    let policy = |sports: &str| {
        format!("apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: w}}\nspec: {{interface: w0, ips: [10.0.0.1]}}\n---\napiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: sp}}\nspec:\n  selector: {{}}\n  ingress:\n    - action: allow\n      ports: [{{protocol: UDP, port: 53}}]\n      sourcePorts: [{sports}]\n")
    };
    let ok = temp(
        &dir,
        "sport.yaml",
        &policy("{port: 53}, {port: 1024, endPort: 2048}"),
    );
    let (code, out, err) = run(&["policy", "check", "-f", &ok]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok:"), "{out}");
    let many: Vec<String> = (1..=17).map(|p| format!("{{port: {p}}}")).collect();
    let too_many = temp(&dir, "sport-many.yaml", &policy(&many.join(", ")));
    let (code, _, err) = run(&["policy", "check", "-f", &too_many]);
    assert_eq!(code, 2);
    assert!(
        err.contains("sourcePorts") && err.contains("at most 16"),
        "{err}"
    );
}

#[test]
fn kubernetes_network_policies_import_and_named_ports_are_reported() {
    let dir = TempDir::new("cli");
    let f = temp(
        &dir,
        "np.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: api, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: api}}\n  ingress:\n    - from: [{podSelector: {matchLabels: {app: web}}}]\n      ports: [{protocol: TCP, port: 8080}, {protocol: TCP, port: http}]\n",
    );
    let (code, out, err) = run(&["policy", "import", "--from", "k8s", "-f", &f]);
    assert_eq!(code, 2, "a named port cannot be expressed: {err}");
    assert!(err.contains("http"), "{err}");
    assert!(out.contains("shop.api") && out.contains("8080"), "{out}");
    let converted = temp(&dir, "converted.yaml", &out);
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

/// Runs `microseg ARGS` with `input` on its standard input.
fn run_with_stdin(args: &[&str], input: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BAD_CIDR: &str = "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: bad}\nspec:\n  selector: {}\n  ingress:\n    - action: allow\n      from: [{cidr: 10.0.0.0/33}]\n";

#[test]
fn check_and_import_read_standard_input_as_dash() {
    let demo = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/demo/policies.yaml"
    );
    let text = std::fs::read_to_string(demo).unwrap();
    let (code, out, err) = run_with_stdin(&["policy", "check", "-f", "-"], &text);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("ok: "), "{out}");
    let (code, _, err) = run_with_stdin(&["policy", "check", "-f", "-"], BAD_CIDR);
    assert_eq!(code, 2);
    assert!(
        err.contains("<stdin>:8:") && err.contains("10.0.0.0/33"),
        "{err}"
    );
    let np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: api, namespace: shop}\nspec:\n  podSelector: {matchLabels: {app: api}}\n  ingress:\n    - ports: [{protocol: TCP, port: 8080}]\n";
    let (code, out, err) = run_with_stdin(&["policy", "import", "--from", "k8s", "-f", "-"], np);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("shop.api") && out.contains("8080"), "{out}");
}

#[test]
fn control_characters_in_names_and_file_names_are_escaped() {
    let dir = TempDir::new("cli");
    // A name with a colour escape and a newline, in a file whose name holds another.
    let f = temp(
        &dir,
        "evil\x1b[2J.yaml",
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: \"a\\e[31mred\\nb\"}\nspec: {selector: {}}\n",
    );
    let (code, _, err) = run(&["policy", "check", "-f", &f]);
    assert_eq!(code, 2, "{err}");
    assert!(
        !err.contains('\x1b'),
        "a raw escape reached stderr: {err:?}"
    );
    assert!(err.contains("evil\\x1b[2J.yaml:3:"), "{err}");
    assert!(err.contains("a\\x1b[31mred\\nb"), "{err}");
    assert_eq!(
        err.lines().count(),
        2,
        "one line per error and the count: {err}"
    );
    // An unreadable file names itself, escaped.
    let (code, _, err) = run(&["policy", "check", "-f", "/nonexistent/x\x1b[31m.yaml"]);
    assert_eq!(code, 2);
    assert!(
        !err.contains('\x1b') && err.contains("x\\x1b[31m.yaml"),
        "{err:?}"
    );
}

/// Runs `args` with its stdout a pipe whose reader has already gone, as after `| head
/// -1` exits: every write meets the closed end, and the command must end quietly with
/// status 0.
fn into_a_closed_pipe(args: &[&str]) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
    assert!(err.is_empty(), "{args:?}: {err}");
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let dir = TempDir::new("cli");
    let mut np = String::new();
    for i in 0..400 {
        np.push_str(&format!("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: api{i}, namespace: shop}}\nspec:\n  podSelector: {{matchLabels: {{app: api}}}}\n  ingress:\n    - from: [{{podSelector: {{matchLabels: {{app: web}}}}}}]\n      ports: [{{protocol: TCP, port: 8080}}, {{protocol: UDP, port: 53}}]\n"));
    }
    let f = temp(&dir, "many-np.yaml", &np);
    into_a_closed_pipe(&["policy", "import", "--from", "k8s", "-f", &f]);
    for shell in ["bash", "zsh", "fish"] {
        into_a_closed_pipe(&["completion", shell]);
    }
}

#[test]
fn no_table_header_before_a_missing_agent_and_the_error_names_the_socket() {
    for cmd in ["flows", "sessions"] {
        let (code, out, err) = run(&[cmd, "--socket", "/nonexistent/agent.sock"]);
        assert_eq!(code, 1, "{err}");
        assert!(out.is_empty(), "{cmd}: {out}");
        assert!(
            err.contains("cannot reach the agent at /nonexistent/agent.sock"),
            "{err}"
        );
    }
    // --limit keeps the most recent flows; with --follow there is no end to count from.
    assert_eq!(run(&["flows", "--limit", "3", "--follow"]).0, 2);
}

#[test]
fn output_formats_a_command_cannot_print_are_refused() {
    for args in [
        &["policy", "delete", "x", "-o", "yaml"][..],
        &["policy", "apply", "-f", "x.yaml", "-o", "wide"],
        &["status", "-o", "yaml"],
        &["stats", "-o", "wide"],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("invalid value"), "{args:?}: {err}");
    }
    // delete needs names or -f.
    assert_eq!(run(&["policy", "delete"]).0, 2);
}

#[test]
fn shell_completion_scripts() {
    for (shell, marker) in [
        ("bash", "_microseg()"),
        ("zsh", "#compdef microseg"),
        ("fish", "complete -c microseg"),
    ] {
        let (code, out, err) = run(&["completion", shell]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(
            out.contains("workload") && out.contains("dry-run"),
            "{shell}"
        );
    }
    assert_eq!(run(&["completion", "tcsh"]).0, 2);
}

#[test]
fn an_apply_of_nothing_is_refused_before_anything_is_sent() {
    let empty = TempDir::new("cli-empty");
    let dir = &empty.0;
    let (code, _, err) = run(&[
        "policy",
        "apply",
        "-f",
        dir.to_str().unwrap(),
        "--server",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nothing applied"), "{err}");
}
