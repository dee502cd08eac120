//! Client commands against the controller's REST API: `policy apply/list/get/delete`,
//! `workload list/get/label/delete`, `status`, and the flows the controller collected.
//!
//! Exit status: 0 success, 1 runtime failure (connection, server error), 2 bad input
//! (usage, invalid resources, any 4xx answer).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use microseg_controller::client::{encode, Client, Reply, TlsFiles};
use serde_json::Value;

/// Where the controller is and how to talk to it.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// Controller URL.
    #[arg(long, default_value = "http://127.0.0.1:7070", value_name = "URL")]
    pub server: String,
    /// File holding the bearer token (default: $MICROSEG_TOKEN, else the local
    /// controller's /var/lib/microseg/controller.token when readable).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Output format: table (default), json or yaml.
    #[arg(
        short = 'o',
        long = "output",
        default_value = "table",
        value_name = "FORMAT"
    )]
    pub output: String,
}

/// Certificates for an https:// controller.
#[derive(Args, Clone, Default)]
pub struct TlsArgs {
    /// The CA certificates (PEM) that issued the controller's certificate (default: the
    /// system's CA bundle). https:// only.
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,
    /// Mutual TLS: the client certificate chain (PEM), with --tls-key.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Mutual TLS: the client's private key (PEM), with --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    fn files(&self) -> TlsFiles<'_> {
        TlsFiles {
            ca: self.tls_ca.as_deref(),
            cert: self.tls_cert.as_deref(),
            key: self.tls_key.as_deref(),
        }
    }
}

#[derive(Subcommand)]
pub enum WorkloadCommand {
    /// Workloads known to the controller (applied and discovered) with their labels.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One workload.
    Get {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set labels: KEY=VALUE sets (KEY= sets the empty value), KEY- removes. On a
    /// discovered workload these labels win over the agent's and persist.
    Label {
        name: String,
        #[arg(required = true, value_name = "KEY=VALUE|KEY-")]
        labels: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a workload created through the API.
    Delete {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// A failure: the message and the exit status.
struct Fail(String, u8);

type Out = Result<(), Fail>;

fn finish(r: Out) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg, code)) => {
            eprintln!("{msg}");
            ExitCode::from(code)
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Table,
    Json,
    Yaml,
}

fn format(c: &ClientArgs) -> Result<Format, Fail> {
    match c.output.as_str() {
        "table" | "wide" => Ok(Format::Table),
        "json" => Ok(Format::Json),
        "yaml" => Ok(Format::Yaml),
        o => Err(Fail(format!("error: -o {o}: use table, json or yaml"), 2)),
    }
}

const LOCAL_TOKEN: &str = "/var/lib/microseg/controller.token";

fn token(c: &ClientArgs) -> Result<Option<String>, Fail> {
    if let Some(p) = &c.token_file {
        return std::fs::read_to_string(p)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|e| Fail(format!("error: --token-file {}: {e}", p.display()), 2));
    }
    if let Ok(t) = std::env::var("MICROSEG_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(Some(t.trim().to_string()));
        }
    }
    // The local controller's own token goes only to a controller on this machine: sent to
    // any --server, it would hand that server the keys of this one.
    if !is_loopback_url(&c.server) {
        return Ok(None);
    }
    Ok(std::fs::read_to_string(LOCAL_TOKEN)
        .ok()
        .map(|t| t.trim().to_string()))
}

/// Whether `url`'s host is this machine: `localhost` or a loopback address.
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn client(c: &ClientArgs) -> Result<Client, Fail> {
    Client::with_tls(&c.server, token(c)?, c.tls.files())
        .map_err(|e| Fail(format!("error: {e}"), 2))
}

/// One request; a non-2xx answer becomes a failure (4xx: exit 2, otherwise 1).
fn call(cl: &Client, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Result<Value, Fail> {
    let r: Reply = cl
        .call(method, path, body)
        .map_err(|e| Fail(format!("error: cannot reach the controller: {e}"), 1))?;
    if r.ok() {
        return Ok(r.body);
    }
    let mut msg = r.error_text();
    if r.status == 401 {
        msg.push_str("\n(give the controller's token with --token-file PATH or MICROSEG_TOKEN)");
    }
    let code = if (400..500).contains(&r.status) { 2 } else { 1 };
    Err(Fail(
        if msg.lines().count() > 1 {
            msg
        } else {
            format!("error: {msg}")
        },
        code,
    ))
}

fn print(v: &Value, f: Format) {
    match f {
        Format::Json => println!("{}", serde_json::to_string_pretty(v).unwrap_or_default()),
        _ => print!("{}", to_yaml(v)),
    }
}

// ---- YAML output -------------------------------------------------------------------

fn plain(s: &str) -> bool {
    let reserved = matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~" | "y" | "n"
    );
    !s.is_empty()
        && !reserved
        && s.parse::<f64>().is_err()
        && s.bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'/')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) if plain(s) => s.clone(),
        Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
        other => other.to_string(),
    }
}

fn yaml_into(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (i, (k, val)) in m.iter().enumerate() {
                if i > 0 || !out.ends_with("- ") {
                    out.push_str(&pad);
                }
                out.push_str(&scalar(&Value::String(k.clone())));
                out.push(':');
                match val {
                    Value::Object(x) if !x.is_empty() => {
                        out.push('\n');
                        yaml_into(val, indent + 2, out);
                    }
                    Value::Array(x) if !x.is_empty() => {
                        out.push('\n');
                        yaml_into(val, indent, out);
                    }
                    _ => {
                        out.push(' ');
                        yaml_into(val, 0, out);
                    }
                }
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for item in a {
                out.push_str(&pad);
                out.push_str("- ");
                match item {
                    Value::Object(x) if !x.is_empty() => yaml_into(item, indent + 2, out),
                    Value::Array(x) if !x.is_empty() => {
                        out.push('\n');
                        yaml_into(item, indent + 2, out)
                    }
                    _ => yaml_into(item, 0, out),
                }
            }
        }
        Value::Object(_) => out.push_str("{}\n"),
        Value::Array(_) => out.push_str("[]\n"),
        _ => {
            out.push_str(&scalar(v));
            out.push('\n');
        }
    }
}

/// A JSON value as block YAML (a list of resources as several documents).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    yaml_into(v, 0, &mut out);
    out
}

// ---- tables ------------------------------------------------------------------------

fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn labels(v: &Value) -> String {
    let l: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    if l.is_empty() {
        "-".into()
    } else {
        l.join(",")
    }
}

fn selector(v: &Value) -> String {
    let mut parts = Vec::new();
    for (k, val) in v["matchLabels"].as_object().into_iter().flatten() {
        parts.push(format!("{k}={}", val.as_str().unwrap_or_default()));
    }
    for e in v["matchExpressions"].as_array().into_iter().flatten() {
        let vals: Vec<String> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(text)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "Exists" => text(&e["key"]),
            "DoesNotExist" => format!("!{}", text(&e["key"])),
            op => format!("{} {op} ({})", text(&e["key"]), vals.join(",")),
        });
    }
    if parts.is_empty() {
        "(all)".into()
    } else {
        parts.join(",")
    }
}

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
const WORKLOAD_HEADER: &[&str] = &["NAME", "NODE", "INTERFACE", "IPS", "MODE", "LABELS"];

fn workload_rows(items: &[Value]) -> Vec<Vec<String>> {
    items
        .iter()
        .map(|w| {
            let ips: Vec<String> = w["spec"]["ips"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            vec![
                text(&w["metadata"]["name"]),
                text(&w["metadata"]["annotations"]["microseg.io/node"]),
                text(&w["spec"]["interface"]),
                if ips.is_empty() {
                    "-".into()
                } else {
                    ips.join(",")
                },
                text(&w["spec"]["mode"]),
                labels(&w["metadata"]["labels"]),
            ]
        })
        .collect()
}

// ---- policy ------------------------------------------------------------------------

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

fn list(
    c: &ClientArgs,
    path: &str,
    header: &[&str],
    rows: fn(&[Value]) -> Vec<Vec<String>>,
) -> Out {
    let f = format(c)?;
    let body = call(&client(c)?, "GET", path, None)?;
    let items = body["items"].as_array().cloned().unwrap_or_default();
    match f {
        Format::Table => table(header, &rows(&items)),
        Format::Json => print(&body, f),
        // Several documents that `policy apply -f` takes back.
        Format::Yaml => {
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    println!("---");
                }
                print(it, f);
            }
        }
    }
    Ok(())
}

fn get_one(
    c: &ClientArgs,
    path: &str,
    header: &[&str],
    rows: fn(&[Value]) -> Vec<Vec<String>>,
) -> Out {
    let f = format(c)?;
    let body = call(&client(c)?, "GET", path, None)?;
    match f {
        Format::Table => table(header, &rows(std::slice::from_ref(&body))),
        _ => print(&body, f),
    }
    Ok(())
}

fn delete(c: &ClientArgs, kind: &str, path: &str, name: &str) -> Out {
    let f = format(c)?;
    let body = call(&client(c)?, "DELETE", path, None)?;
    match f {
        Format::Table => println!(
            "{kind}/{name} deleted (revision {})",
            text(&body["revision"])
        ),
        _ => print(&body, f),
    }
    Ok(())
}

fn check_name(name: &str) -> Out {
    match microseg_policy::check_name(name) {
        Some(e) => Err(Fail(format!("error: {e}"), 2)),
        None => Ok(()),
    }
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

// ---- workload ----------------------------------------------------------------------

/// KEY=VALUE sets, KEY- removes.
fn label_changes(args: &[String]) -> Result<serde_json::Map<String, Value>, Fail> {
    let mut m = serde_json::Map::new();
    for a in args {
        if let Some((k, v)) = a.split_once('=') {
            m.insert(k.to_string(), Value::String(v.to_string()));
        } else if let Some(k) = a.strip_suffix('-') {
            m.insert(k.to_string(), Value::Null);
        } else {
            return Err(Fail(
                format!("error: {a:?}: use KEY=VALUE to set a label or KEY- to remove it"),
                2,
            ));
        }
    }
    Ok(m)
}

pub fn workload(cmd: WorkloadCommand) -> ExitCode {
    finish(match cmd {
        WorkloadCommand::List { client } => {
            list(&client, "/v1/workloads", WORKLOAD_HEADER, workload_rows)
        }
        WorkloadCommand::Get { name, client } => check_name(&name).and_then(|_| {
            get_one(
                &client,
                &format!("/v1/workloads/{name}"),
                WORKLOAD_HEADER,
                workload_rows,
            )
        }),
        WorkloadCommand::Delete { name, client } => check_name(&name)
            .and_then(|_| delete(&client, "workload", &format!("/v1/workloads/{name}"), &name)),
        WorkloadCommand::Label {
            name,
            labels,
            client: c,
        } => (|| {
            check_name(&name)?;
            let f = format(&c)?;
            let changes = label_changes(&labels)?;
            let body = serde_json::json!({ "labels": changes }).to_string();
            let r = call(
                &client(&c)?,
                "PUT",
                &format!("/v1/workloads/{name}/labels"),
                Some(("application/json", body.as_bytes())),
            )?;
            match f {
                Format::Table => println!(
                    "workload/{name} labeled (revision {}): {}",
                    text(&r["revision"]),
                    labels_fmt(&r["labels"])
                ),
                _ => print(&r, f),
            }
            Ok(())
        })(),
    })
}

fn labels_fmt(v: &Value) -> String {
    labels(v)
}

// ---- status ------------------------------------------------------------------------

pub fn status(c: &ClientArgs) -> ExitCode {
    finish((|| {
        let f = format(c)?;
        let body = call(&client(c)?, "GET", "/v1/nodes", None)?;
        if f != Format::Table {
            print(&body, f);
            return Ok(());
        }
        let items = body["items"].as_array().cloned().unwrap_or_default();
        println!(
            "controller {}: revision {}, {} node(s)",
            c.server,
            text(&body["revision"]),
            items.len()
        );
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|n| {
                vec![
                    text(&n["name"]),
                    text(&n["revision"]),
                    text(&n["lag"]),
                    if n["connected"] == true { "yes" } else { "no" }.into(),
                    text(&n["lastSeen"]),
                    text(&n["error"]),
                ]
            })
            .collect();
        table(
            &["NODE", "ENFORCED", "LAG", "CONNECTED", "LAST SEEN", "ERROR"],
            &rows,
        );
        Ok(())
    })())
}

// ---- flows from the controller -----------------------------------------------------

/// Recent flows the controller collected from its agents (`microseg flows --server`),
/// filtered like the agent's; calls `each` for every record, oldest first.
pub fn remote_flows(
    server: &str,
    token_file: Option<&Path>,
    tls: TlsArgs,
    verdict: Option<&str>,
    workload: Option<&str>,
    since_s: Option<f64>,
    mut each: impl FnMut(Value),
) -> ExitCode {
    let c = ClientArgs {
        server: server.to_string(),
        token_file: token_file.map(Path::to_path_buf),
        tls,
        output: "json".into(),
    };
    finish((|| {
        let mut q = Vec::new();
        if let Some(v) = verdict {
            q.push(format!("verdict={}", encode(v)));
        }
        if let Some(w) = workload {
            q.push(format!("workload={}", encode(w)));
        }
        if let Some(s) = since_s {
            q.push(format!("since={s}"));
        }
        let path = if q.is_empty() {
            "/v1/flows".to_string()
        } else {
            format!("/v1/flows?{}", q.join("&"))
        };
        let body = call(&client(&c)?, "GET", &path, None)?;
        for f in body["items"].as_array().cloned().unwrap_or_default() {
            each(f);
        }
        Ok(())
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_token_goes_only_to_a_local_controller() {
        for local in [
            "http://127.0.0.1:7070",
            "https://localhost:7070/",
            "http://[::1]:7070",
            "127.0.0.2:7070",
        ] {
            assert!(is_loopback_url(local), "{local}");
        }
        for remote in [
            "http://10.0.0.1:7070",
            "https://ctl.example:7070",
            "http://localhost.evil.example:7070",
            "http://127.0.0.1@evil.example:7070",
            "http://[2001:db8::1]:7070",
        ] {
            assert!(!is_loopback_url(remote), "{remote}");
        }
    }

    #[test]
    fn yaml_output_reads_back_as_the_same_resource() {
        let doc = serde_json::json!({
            "apiVersion": "microseg.io/v1", "kind": "Policy",
            "metadata": {"name": "p", "annotations": {"microseg.io/revision": "3"}},
            "spec": {"selector": {}, "priority": 10, "mode": "enforce",
                "ingress": [{"action": "allow", "from": [{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]},
                    {"selector": {"matchLabels": {"app": "web", "k8s.io/x": ""}}}],
                    "ports": [{"protocol": "TCP", "port": 80, "endPort": 90}]}],
                "egress": []}
        });
        let y = to_yaml(&doc);
        let (res, d) = microseg_policy::parse_str("out.yaml", &y);
        assert!(d.is_empty(), "{y}\n{d:?}");
        let (res2, _) = microseg_policy::parse_str("in.json", &doc.to_string());
        let strip = |r: &microseg_policy::Resource| {
            format!("{r:?}").split("origin").next().map(str::to_string)
        };
        assert_eq!(strip(&res[0]), strip(&res2[0]), "{y}");
        assert!(
            y.contains("metadata:\n  annotations:\n") && y.contains("\n  name: p\n"),
            "{y}"
        );
        assert!(y.contains("  - action: allow\n"), "{y}");
    }

    #[test]
    fn labels_parse_set_and_remove() {
        let m = label_changes(&["a=1".into(), "b=".into(), "c-".into()])
            .ok()
            .unwrap();
        assert_eq!(
            Value::Object(m),
            serde_json::json!({"a": "1", "b": "", "c": null})
        );
        assert!(label_changes(&["nope".into()]).is_err());
    }
}
