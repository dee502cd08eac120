//! `policy apply`, `list`, `get` and `delete` against the controller.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use microseg_controller::client::encode;
use serde_json::Value;

use super::output::{print, selector, text};
use super::{
    call, check_name, client, delete, finish, format, get_one, list, ClientArgs, Fail, Format,
};

fn revision_of(item: &Value) -> String {
    text(&item["metadata"]["annotations"]["microseg.io/revision"])
}

fn rules(v: &Value) -> String {
    match v.as_array() {
        Some(a) => a.len().to_string(),
        None => "-".into(),
    }
}

fn policy_rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|p| {
            vec![
                text(&p["metadata"]["name"]),
                text(&p["spec"]["priority"]),
                text(&p["spec"]["mode"]),
                selector(&p["spec"]["selector"]),
                rules(&p["spec"]["ingress"]),
                rules(&p["spec"]["egress"]),
                revision_of(p),
            ]
        })
        .collect()
}

const POLICY_HEADER: &[&str] = &[
    "NAME", "PRIORITY", "MODE", "SELECTOR", "INGRESS", "EGRESS", "REVISION",
];
/// A progress bar on stderr, drawn only on a terminal (or with MICROSEG_PROGRESS=1).
struct Progress {
    total: usize,
    done: usize,
    on: bool,
}

impl Progress {
    fn new(total: usize) -> Progress {
        let forced = std::env::var("MICROSEG_PROGRESS").is_ok_and(|v| v == "1");
        Progress {
            total,
            done: 0,
            on: total >= 20 && (forced || std::io::stderr().is_terminal()),
        }
    }

    fn add(&mut self, n: usize) {
        self.done += n;
        if !self.on {
            return;
        }
        let width = 30;
        let filled = width * self.done / self.total.max(1);
        eprint!(
            "\r[{}{}] {}/{} resources",
            "#".repeat(filled),
            ".".repeat(width - filled),
            self.done,
            self.total
        );
        let _ = std::io::stderr().flush();
    }

    fn end(&self) {
        if self.on {
            eprintln!();
        }
    }
}

pub fn apply(files: &[PathBuf], c: &ClientArgs) -> ExitCode {
    finish((|| {
        let f = format(c)?;
        let cl = client(c)?;
        let (paths, unreadable) = microseg_policy::policy_files(files);
        if !unreadable.is_empty() {
            let msg: Vec<String> = unreadable.iter().map(ToString::to_string).collect();
            return Err(Fail(msg.join("\n"), 2));
        }
        // Everything is checked before anything is sent: an error in one file applies none.
        if let Err(diags) = microseg_policy::load_paths(&paths) {
            let mut msg: Vec<String> = diags.iter().map(ToString::to_string).collect();
            msg.push(format!("{} error(s); nothing applied", diags.len()));
            return Err(Fail(msg.join("\n"), 2));
        }
        let mut texts = Vec::new();
        let mut total = 0;
        for p in &paths {
            let t =
                std::fs::read_to_string(p).map_err(|e| Fail(format!("{}: {e}", p.display()), 2))?;
            let (res, _) = microseg_policy::parse_str(&p.display().to_string(), &t);
            total += res.len();
            texts.push((p, t, res.len()));
        }
        let mut progress = Progress::new(total);
        let mut results = Vec::new();
        let mut revision = Value::Null;
        for (p, t, n) in texts {
            if n == 0 {
                continue;
            }
            let path = format!("/v1/apply?file={}", encode(&p.display().to_string()));
            let r = call(&cl, "POST", &path, Some(("application/yaml", t.as_bytes())));
            let body = match r {
                Ok(b) => b,
                Err(e) => {
                    progress.end();
                    for a in &results {
                        print_applied(a);
                    }
                    return Err(e);
                }
            };
            revision = body["revision"].clone();
            results.extend(body["applied"].as_array().cloned().unwrap_or_default());
            progress.add(n);
        }
        progress.end();
        match f {
            Format::Table => {
                for a in &results {
                    print_applied(a);
                }
                println!("revision {}", text(&revision));
            }
            _ => print(
                &serde_json::json!({"revision": revision, "applied": results}),
                f,
            ),
        }
        Ok(())
    })())
}

fn print_applied(a: &Value) {
    println!(
        "{}/{} {}",
        text(&a["kind"]).to_ascii_lowercase(),
        text(&a["name"]),
        text(&a["action"])
    );
}

pub fn policy_list(c: &ClientArgs) -> ExitCode {
    finish(list(c, "/v1/policies", POLICY_HEADER, policy_rows))
}

pub fn policy_get(name: &str, c: &ClientArgs) -> ExitCode {
    finish(check_name(name).and_then(|_| {
        get_one(
            c,
            &format!("/v1/policies/{name}"),
            POLICY_HEADER,
            policy_rows,
        )
    }))
}

pub fn policy_delete(name: &str, c: &ClientArgs) -> ExitCode {
    finish(
        check_name(name).and_then(|_| delete(c, "policy", &format!("/v1/policies/{name}"), name)),
    )
}
