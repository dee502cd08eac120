//! The controller and the client commands end to end: `microseg controller` on a random
//! loopback port, `microseg policy/workload/status/flows` against it (no root needed).

mod ctl;

use std::path::Path;
use std::process::Command;

use ctl::{demo, free_port, json, policy, revision, run, Controller, BIN};

#[path = "../../microseg-controller/tests/common/pki.rs"]
mod pki;

/// The controller over mutual TLS with certificates made here; the client commands with
/// the CA and a client certificate, without one, and with one of another CA.
#[test]
fn client_commands_over_mutual_tls() {
    let pki = std::cell::OnceCell::new();
    let c = Controller::start_with("mtls", |dir| {
        let p = pki.get_or_init(|| pki::Pki::write(&dir.join("pki"), &["127.0.0.1"]));
        let s = |p: &Path| p.to_string_lossy().into_owned();
        vec![
            "--tls-cert".into(),
            s(&p.server_cert),
            "--tls-key".into(),
            s(&p.server_key),
            "--tls-client-ca".into(),
            s(&p.ca),
        ]
    });
    let pki = pki.get().unwrap();
    assert!(c.url.starts_with("https://"), "{}", c.url);
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let (ca, cert, key) = (path(&pki.ca), path(&pki.client_cert), path(&pki.client_key));
    let mtls = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]);
        c.cli(&all)
    };
    let f = c.file("p.yaml", &policy("db-ingress", 5432));
    let (code, out, err) = mtls(&["policy", "apply", "-f", &f]);
    assert_eq!(code, 0, "{out}{err}{}", c.log());
    let (code, out, err) = mtls(&["policy", "list", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["items"][0]["metadata"]["name"], "db-ingress");
    let (code, out, err) = mtls(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revision 1"), "{out}");
    let (code, _, err) = mtls(&["workload", "list"]);
    assert_eq!(code, 0, "{err}");
    // flows --server takes the same flags (and its own --server).
    let tf = c.token_file();
    let (code, out, err) = run(Command::new(BIN)
        .args(["flows", "-o", "json", "--server", &c.url, "--token-file"])
        .arg(&tf)
        .args(["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key])
        .output()
        .unwrap());
    assert_eq!(code, 0, "{out}{err}");

    // Without a client certificate, or with one of another CA: refused (exit 1).
    let (code, _, err) = c.cli(&["status", "--tls-ca", &ca]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot reach the controller"), "{err}");
    let (other_cert, other_key) = (path(&pki.other_cert), path(&pki.other_key));
    let (code, _, err) = c.cli(&[
        "policy",
        "delete",
        "db-ingress",
        "--tls-ca",
        &ca,
        "--tls-cert",
        &other_cert,
        "--tls-key",
        &other_key,
    ]);
    assert_eq!(code, 1, "{err}");
    // A client that trusts another CA refuses the controller.
    let other_ca = path(&pki.other_ca);
    let (code, _, err) = c.cli(&[
        "status",
        "--tls-ca",
        &other_ca,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    // Nothing was deleted.
    let (code, out, _) = mtls(&["policy", "get", "db-ingress", "-o", "json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["metadata"]["name"], "db-ingress");

    // Usage errors: TLS flags with http://, --tls-cert without --tls-key (exit 2).
    let tf = tf.to_str().unwrap().to_string();
    let http = c.url.replace("https://", "http://");
    let (code, _, err) = run(Command::new(BIN)
        .args([
            "status",
            "--server",
            &http,
            "--token-file",
            &tf,
            "--tls-ca",
            &ca,
        ])
        .output()
        .unwrap());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("https://"), "{err}");
    let (code, _, err) = c.cli(&["status", "--tls-ca", &ca, "--tls-cert", &cert]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn policy_and_workload_commands_against_the_controller() {
    let c = Controller::start("crud");
    // Apply a directory of Workloads and Policies.
    let (code, out, err) = c.cli(&["policy", "apply", "-f", &demo()]);
    assert_eq!(code, 0, "{err}\n{}", c.log());
    assert!(out.contains("policy/web-ingress created"), "{out}");
    assert!(out.contains("workload/web created"), "{out}");
    assert!(out.contains("revision "), "{out}");
    let (code, out, _) = c.cli(&["policy", "apply", "-f", &demo()]);
    assert_eq!(code, 0);
    assert!(out.contains("policy/web-ingress unchanged"), "{out}");

    // list: table, json, yaml.
    let (code, out, _) = c.cli(&["policy", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("NAME") && out.contains("web-ingress"),
        "{out}"
    );
    let (_, out, _) = c.cli(&["policy", "list", "-o", "json"]);
    let v = json(&out);
    assert!(v["items"].as_array().unwrap().len() >= 3, "{v}");
    let (code, out, _) = c.cli(&["policy", "list", "-o", "yaml"]);
    assert_eq!(code, 0);
    assert!(out.contains("kind: Policy") && out.contains("---"), "{out}");

    // get -o yaml gives a document that applies back unchanged.
    let (code, y, _) = c.cli(&["policy", "get", "web-ingress", "-o", "yaml"]);
    assert_eq!(code, 0);
    assert!(y.contains("microseg.io/revision"), "{y}");
    let f = c.file("roundtrip.yaml", &y);
    let (code, out, err) = c.cli(&["policy", "apply", "-f", &f]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("policy/web-ingress unchanged"), "{out}");
    let (code, out, _) = c.cli(&["policy", "get", "web-ingress"]);
    assert_eq!(code, 0);
    assert!(
        out.lines().count() == 2 && out.contains("web-ingress"),
        "{out}"
    );

    // Bad input: FILE:LINE:COL, exit 2, nothing applied (not even the good file).
    let good = c.file("in/a-good.yaml", &policy("fresh", 80));
    let bad = c.file(
        "in/b-bad.yaml",
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: bad}\nspec:\n  selector: {}\n  ingress:\n    - action: allow\n      from: [{cidr: 10.0.0.0/33}]\n",
    );
    let (code, _, err) = c.cli(&["policy", "apply", "-f", &good, &bad]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{bad}:8:")) && err.contains("10.0.0.0/33"),
        "{err}"
    );
    assert_eq!(c.cli(&["policy", "get", "fresh"]).0, 2, "404 is exit 2");
    // Refused by the server (an address used by a stored workload): exit 2 with why.
    let dup = c.file(
        "dup.yaml",
        "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: dup}\nspec: {ips: [10.210.0.10]}\n",
    );
    let (code, _, err) = c.cli(&["policy", "apply", "-f", &dup]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{dup}:1:1")) && err.contains("already used"),
        "{err}"
    );
    assert_eq!(c.cli(&["workload", "get", "dup"]).0, 2);

    // delete.
    let (code, out, _) = c.cli(&["policy", "delete", "web-ingress"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("policy/web-ingress deleted (revision"),
        "{out}"
    );
    assert_eq!(c.cli(&["policy", "delete", "web-ingress"]).0, 2);
    assert_eq!(c.cli(&["policy", "get", "Bad_Name"]).0, 2);

    // workloads and labels: KEY=VALUE sets, KEY- removes.
    let (code, out, _) = c.cli(&["workload", "list"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("NAME") && out.contains("web"), "{out}");
    let (code, out, err) = c.cli(&["workload", "label", "web", "env=prod", "tier=", "app-"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("workload/web labeled") && out.contains("env=prod"),
        "{out}"
    );
    let (_, out, _) = c.cli(&["workload", "get", "web", "-o", "json"]);
    let labels = &json(&out)["metadata"]["labels"];
    assert_eq!(labels["env"], "prod");
    assert_eq!(labels["tier"], "");
    assert!(labels.get("app").is_none(), "{labels}");
    assert_eq!(c.cli(&["workload", "label", "web", "nonsense"]).0, 2);
    assert_eq!(c.cli(&["workload", "label", "nope", "a=b"]).0, 2);

    // status and flows from the controller.
    let (code, out, _) = c.cli(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("revision") && out.contains("NODE"), "{out}");
    let (_, out, _) = c.cli(&["status", "-o", "json"]);
    assert!(json(&out)["revision"].as_u64().unwrap() >= 3);
    let (code, out, err) = c.cli(&["flows", "-o", "json", "--verdict", "deny"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().is_empty(), "no agent uploaded flows: {out}");
}

#[test]
fn tokens_and_exit_codes() {
    let c = Controller::start("auth");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(c.token_file()).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        c.log().contains("controller.token"),
        "the token's path is logged: {}",
        c.log()
    );

    // The token from MICROSEG_TOKEN works; a wrong one is exit 2 and changes nothing.
    let token = std::fs::read_to_string(c.token_file()).unwrap();
    let f = c.file("p.yaml", &policy("p", 80));
    let with_env = |t: &str, args: &[&str]| {
        run(Command::new(BIN)
            .args(args)
            .args(["--server", &c.url])
            .env("MICROSEG_TOKEN", t)
            .output()
            .unwrap())
    };
    let (code, _, err) = with_env("wrong", &["policy", "apply", "-f", &f]);
    assert_eq!(code, 2);
    assert!(err.contains("token"), "{err}");
    let (code, out, _) = with_env(token.trim(), &["policy", "list", "-o", "json"]);
    assert_eq!(code, 0);
    assert_eq!(json(&out)["items"].as_array().unwrap().len(), 0);
    assert_eq!(with_env(token.trim(), &["policy", "apply", "-f", &f]).0, 0);

    // A node's own agent token, derived from the controller's agent token.
    let node_token = |args: &[&str]| {
        run(Command::new(BIN)
            .arg("node-token")
            .args(args)
            .output()
            .unwrap())
    };
    let state = c.dir.join("state");
    let (code, out, err) = node_token(&["node-a", "--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let agent_token = std::fs::read_to_string(state.join("agent.token")).unwrap();
    assert_eq!(
        microseg_controller::node_token::token_node(agent_token.trim(), out.trim()),
        Some("node-a")
    );
    let (code, _, err) = node_token(&["Not A Name", "--state-dir", state.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let empty = c.dir.join("no-state");
    let (code, _, err) = node_token(&["node-a", "--state-dir", empty.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("no agent token"), "{err}");
    assert!(!empty.exists(), "nothing created");

    // Nobody listening: exit 1, naming the URL tried. A bad --server or -o: exit 2.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = run(Command::new(BIN)
        .args(["status", "--server", &closed])
        .output()
        .unwrap());
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("cannot reach the controller at {closed}: ")),
        "{err}"
    );
    assert_eq!(
        run(Command::new(BIN)
            .args(["status", "--server", "ftp://x"])
            .output()
            .unwrap())
        .0,
        2
    );
    assert_eq!(c.cli(&["status", "-o", "xml"]).0, 2);

    // Many files: one request, one revision.
    let dir = c.dir.join("many");
    for i in 0..25 {
        c.file(
            &format!("many/p{i:02}.yaml"),
            &policy(&format!("many-{i}"), 1000 + i),
        );
    }
    let before = revision(&c);
    let (code, out, err) = c.cli(&["policy", "apply", "-f", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines().filter(|l| l.ends_with(" created")).count(),
        25,
        "{out}"
    );
    assert_eq!(revision(&c), before + 1, "{out}");
}

#[test]
fn controller_flags_and_signals() {
    let dir = std::env::temp_dir().join(format!("msctl-cli-{}-flags", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (code, _, err) = run(Command::new(BIN)
        .args([
            "controller",
            "--listen",
            "127.0.0.1:0",
            "--db",
            "mysql://x",
            "--state-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap());
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(Command::new(BIN)
        .args([
            "controller",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            "/nonexistent/t",
            "--state-dir",
        ])
        .arg(&dir)
        .output()
        .unwrap());
    assert_eq!(code, 2, "{err}");
    let _ = std::fs::remove_dir_all(&dir);

    // SIGTERM: a clean exit.
    let mut c = Controller::start("signal");
    let child = c.child.take().unwrap();
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?} {}", out.status, c.log());
    assert!(c.log().contains("stopping"), "{}", c.log());
    let _ = Path::new(&c.dir);
}

/// A path with a terminal escape and a newline reaches the log escaped, on its line.
#[test]
fn log_lines_escape_control_characters() {
    let c = Controller::start("log\x1b[31m\nFAKE");
    let log = c.log();
    assert!(log.contains("log\\x1b[31m\\nFAKE"), "{log}");
    assert!(!log.contains('\x1b'), "{log:?}");
    assert!(!log.lines().any(|l| l.starts_with("FAKE")), "{log:?}");
}
