//! The client commands as kubectl users expect them, against a real controller: one
//! revision per apply or delete, all or nothing, dry runs, standard input, selectors,
//! diff and wide output (no root needed).

mod ctl;

use ctl::{cli_stdin, demo, json, policy, revision, Controller};

/// A directory where one file is refused by the controller applies nothing: not the
/// files before it either, and nothing is printed as created.
#[test]
fn an_apply_is_all_or_nothing_in_one_revision() {
    let c = Controller::start("atomic");
    let (code, _, err) = c.cli(&["policy", "apply", "-f", &demo()]);
    assert_eq!(code, 0, "{err}");
    let before = revision(&c);
    let deny_all = "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: a-first}\nspec:\n  selector: {}\n  ingress: []\n  egress: []\n";
    c.file("dir/a.yaml", deny_all);
    // web's address, already stored.
    let b = c.file(
        "dir/b.yaml",
        "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: intruder}\nspec: {ips: [10.210.0.20]}\n",
    );
    let dir = c.dir.join("dir");
    let (code, out, err) = c.cli(&["policy", "apply", "-f", dir.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(!out.contains("created"), "{out}");
    assert!(
        err.contains(&format!("{b}:1:1")) && err.contains("already used"),
        "{err}"
    );
    assert_eq!(c.cli(&["policy", "get", "a-first"]).0, 2, "nothing stored");
    assert_eq!(revision(&c), before);

    // The demo again after a change: one revision for all its files.
    assert_eq!(
        c.cli(&["policy", "delete", "web-ingress", "db-ingress"]).0,
        0
    );
    let before = revision(&c);
    let (code, out, err) = c.cli(&["policy", "apply", "-f", &demo()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("policy/web-ingress created"), "{out}");
    assert_eq!(revision(&c), before + 1, "{out}");

    // --dry-run: what would change, nothing stored.
    std::fs::remove_file(&b).unwrap();
    let (code, out, err) = c.cli(&["policy", "apply", "--dry-run", "-f", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "policy/a-first created (dry run)");
    assert_eq!(c.cli(&["policy", "get", "a-first"]).0, 2);
    assert_eq!(revision(&c), before + 1);
}

/// The names in a list answer (`-o json`).
fn names(out: &str) -> Vec<String> {
    json(out)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

/// A controller holding the demo's resources.
fn with_demo(test: &str) -> Controller {
    let c = Controller::start(test);
    let (code, _, err) = c.cli(&["policy", "apply", "-f", &demo()]);
    assert_eq!(code, 0, "{err}");
    c
}

#[test]
fn standard_input_selectors_and_wide_output() {
    let c = Controller::start("habits");
    // -f - reads standard input; its errors name <stdin>.
    let text = std::fs::read_to_string(format!("{}/policies.yaml", demo())).unwrap()
        + "---\n"
        + &std::fs::read_to_string(format!("{}/workloads.yaml", demo())).unwrap();
    let (code, out, err) = cli_stdin(&c, &["policy", "apply", "-f", "-"], &text);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("policy/web-ingress created"), "{out}");
    let bad = "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: x}\nspec: {selector: {}, priority: -1}\n";
    let (code, _, err) = cli_stdin(&c, &["policy", "apply", "-f", "-"], bad);
    assert_eq!(code, 2);
    assert!(err.contains("<stdin>:4:"), "{err}");

    // -l on workloads: their labels; on policies: those selecting a matching workload.
    let (code, out, err) = c.cli(&["workload", "list", "-l", "app=db", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(names(&out), ["db"]);
    let (_, out, _) = c.cli(&["workload", "list", "-l", "app!=db,app", "-o", "json"]);
    let mut others = names(&out);
    others.sort();
    assert_eq!(others, ["client", "web"]);
    let (_, out, _) = c.cli(&["workload", "list", "-l", "!app", "-o", "json"]);
    assert!(names(&out).is_empty(), "{out}");
    let (code, out, err) = c.cli(&["policy", "list", "-l", "app=db", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let db_policies = names(&out);
    assert!(db_policies.contains(&"db-ingress".to_string()), "{out}");
    assert!(!db_policies.contains(&"web-ingress".to_string()), "{out}");
    let (code, _, err) = c.cli(&["workload", "list", "-l", "Not A Key=x"]);
    assert_eq!(code, 2, "{err}");

    // -o wide has more columns than the table.
    for kind in ["policy", "workload"] {
        let (_, table, _) = c.cli(&[kind, "list"]);
        let (code, wide, err) = c.cli(&[kind, "list", "-o", "wide"]);
        assert_eq!(code, 0, "{err}");
        let columns = |t: &str| t.lines().next().unwrap().split_whitespace().count();
        assert!(columns(&wide) > columns(&table), "{table}\n{wide}");
    }
    let (_, wide, _) = c.cli(&["policy", "get", "db-ingress", "-o", "wide"]);
    assert!(
        wide.contains("ingress allow from app=web TCP/5432"),
        "{wide}"
    );
}

#[test]
fn diff_shows_what_an_apply_would_change() {
    let c = with_demo("diff");
    // diff: 0 when equal, 1 with -/+ lines when not.
    let (code, out, err) = c.cli(&["policy", "diff", "-f", &demo()]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let demo_policies = std::fs::read_to_string(format!("{}/policies.yaml", demo())).unwrap();
    let changed = c.file(
        "changed.yaml",
        &demo_policies.replace("port: 5432", "port: 5433").replace(
            "matchLabels: {app: db}",
            "matchLabels: {app: db, tier: data}",
        ),
    );
    let (code, out, err) = c.cli(&["policy", "diff", "-f", &changed]);
    assert_eq!(code, 1, "{err}");
    assert!(
        out.starts_with("--- policy/db-ingress (stored)\n+++ policy/db-ingress ("),
        "{out}"
    );
    assert!(
        out.contains(
            "\n-        - {port: 5432, protocol: TCP}\n+        - {port: 5433, protocol: TCP}\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("\n-    matchLabels: {app: db}\n+    matchLabels: {app: db, tier: data}\n"),
        "{out}"
    );
    assert!(!out.contains("web-ingress"), "only what differs: {out}");
    let fresh = c.file("fresh.yaml", &policy("fresh", 80));
    let (code, out, _) = c.cli(&["policy", "diff", "-f", &fresh]);
    assert_eq!(code, 1);
    assert!(
        out.contains("\n+metadata: {name: fresh}\n") && !out.contains("\n-"),
        "{out}"
    );
    assert_eq!(c.cli(&["policy", "diff", "-f", "/nonexistent.yaml"]).0, 2);
}

#[test]
fn deletes_of_several_names_or_of_what_files_name_are_all_or_nothing() {
    let c = with_demo("delete");
    // delete: several names in one request; a missing one deletes none.
    let (code, _, err) = c.cli(&["policy", "delete", "web-ingress", "nope"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(c.cli(&["policy", "get", "web-ingress"]).0, 0, "not deleted");
    let (code, out, err) = c.cli(&["policy", "delete", "--dry-run", "web-ingress", "db-ingress"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("policy/db-ingress deleted (dry run)"), "{out}");
    assert_eq!(c.cli(&["policy", "get", "db-ingress"]).0, 0, "a dry run");
    let before = revision(&c);
    let (code, out, err) = c.cli(&["policy", "delete", "web-ingress", "db-ingress"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.lines()
            .filter(|l| l.contains(" deleted (revision"))
            .count(),
        2,
        "{out}"
    );
    assert_eq!(revision(&c), before + 1);
    // -f: workload delete takes the Workloads the files name, policy delete everything.
    let workloads = format!("{}/workloads.yaml", demo());
    let (code, out, err) = c.cli(&[
        "workload",
        "delete",
        "-f",
        &format!("{}/policies.yaml", demo()),
    ]);
    assert_eq!(code, 2, "the policies file names no workload: {out}{err}");
    let (code, out, err) = c.cli(&["workload", "delete", "-f", &workloads]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("workload/web deleted"), "{out}");
    let (code, out, err) = c.cli(&["policy", "delete", "-f", &demo(), "-o", "json"]);
    assert_eq!(code, 2, "the workloads are gone already: {out}{err}");
    // What is left, as `get -o yaml` prints it, deleted through standard input.
    let (_, rest, _) = c.cli(&["policy", "list", "-o", "yaml"]);
    let (code, out, err) = cli_stdin(&c, &["policy", "delete", "-f", "-", "-o", "json"], &rest);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["deleted"].as_array().unwrap().len(), 2, "{out}");
    let (_, out, _) = c.cli(&["policy", "list", "-o", "json"]);
    assert!(names(&out).is_empty(), "{out}");
}
