//! Client commands against the controller's REST API: `policy apply/diff/list/get/delete`,
//! `workload list/get/label/delete`, `status`, and the flows the controller collected.
//! This module holds what they share: the flags, the token, the HTTP call, and how lists
//! of resources are shown.
//!
//! Exit status: 0 success, 1 runtime failure (connection, server error), 2 bad input
//! (usage, invalid resources, any 4xx answer).

mod diff;
mod flows;
pub(crate) mod output;
mod policy;
mod selector;
mod status;
mod workload;

pub use diff::diff;
pub use flows::{remote_flows, RemoteFlows};
pub use policy::{apply, policy_delete, policy_get, policy_list};
pub use status::status;
pub use workload::{workload, WorkloadCommand};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use microseg_controller::client::{Client, Reply, TlsFiles};
use serde_json::{json, Value};

use output::{esc, print, table, text, Output, Report};

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
}

/// `-o` of the commands that show resources.
#[derive(Args, Clone, Copy)]
pub struct ShowArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table, value_name = "FORMAT")]
    pub output: Output,
}

/// `-o` of the commands that change something or show a state.
#[derive(Args, Clone, Copy)]
pub struct ReportArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Report::Table, value_name = "FORMAT")]
    pub output: Report,
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

/// A failure: the message (already escaped) and the exit status.
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

/// Diagnostics, one per line, and a closing count: exit 2.
fn diagnostics(diags: &[microseg_policy::Diagnostic], closing: &str) -> Fail {
    let mut msg: Vec<String> = diags
        .iter()
        .map(|d| esc(&d.to_string()).into_owned())
        .collect();
    msg.push(format!("{} error(s){closing}", diags.len()));
    Fail(msg.join("\n"), 2)
}

const LOCAL_TOKEN: &str = "/var/lib/microseg/controller.token";

fn token(c: &ClientArgs) -> Result<Option<String>, Fail> {
    if let Some(p) = &c.token_file {
        return std::fs::read_to_string(p)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|e| {
                let msg = format!("error: --token-file {}: {e}", p.display());
                Fail(esc(&msg).into_owned(), 2)
            });
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
        .map_err(|e| Fail(format!("error: {}", esc(&e.to_string())), 2))
}

/// One request; a non-2xx answer becomes a failure (4xx: exit 2, otherwise 1).
fn call(cl: &Client, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Result<Value, Fail> {
    answer(send(cl, method, path, body)?)
}

fn send(cl: &Client, method: &str, path: &str, body: Option<(&str, &[u8])>) -> Result<Reply, Fail> {
    // The client's error names the controller's URL and the cause.
    cl.call(method, path, body)
        .map_err(|e| Fail(format!("error: {}", esc(&e.to_string())), 1))
}

/// A stored resource, or None when the controller has none of that name.
fn get_if_stored(cl: &Client, path: &str) -> Result<Option<Value>, Fail> {
    let r = send(cl, "GET", path, None)?;
    if r.status == 404 {
        return Ok(None);
    }
    answer(r).map(Some)
}

fn answer(r: Reply) -> Result<Value, Fail> {
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

/// A JSON request body.
fn post_json(cl: &Client, path: &str, body: &Value) -> Result<Value, Fail> {
    let bytes = body.to_string();
    call(
        cl,
        "POST",
        path,
        Some(("application/json", bytes.as_bytes())),
    )
}

/// `path`, with `?dryRun=true` for a dry run.
fn dry_run_path(path: &str, dry_run: bool) -> String {
    if dry_run {
        format!("{path}?dryRun=true")
    } else {
        path.to_string()
    }
}

/// A table's header and rows for some documents: plain, or wide (more columns).
type Rows = fn(&[Value], bool) -> (&'static [&'static str], Vec<Vec<String>>);

/// A list answer (`{"revision", "items"}`) whose items were chosen by the caller.
fn show_list(body: &Value, items: Vec<Value>, out: Output, rows: Rows) {
    match out {
        Output::Table | Output::Wide => {
            let (header, r) = rows(&items, out == Output::Wide);
            table(header, &r);
        }
        Output::Json => print(
            &json!({"revision": body["revision"], "items": items}),
            false,
        ),
        // Several documents that `policy apply -f` takes back.
        Output::Yaml => {
            for (i, it) in items.iter().enumerate() {
                if i > 0 {
                    outln!("---");
                }
                print(it, true);
            }
        }
    }
}

fn get_one(c: &ClientArgs, path: &str, out: Output, rows: Rows) -> Out {
    let body = call(&client(c)?, "GET", path, None)?;
    match out {
        Output::Table | Output::Wide => {
            let (header, r) = rows(std::slice::from_ref(&body), out == Output::Wide);
            table(header, &r);
        }
        Output::Json => print(&body, false),
        Output::Yaml => print(&body, true),
    }
    Ok(())
}

/// Deletes every `(kind, name)` in one request: all of them, or none when one is missing.
fn delete_all(c: &ClientArgs, refs: &[(String, String)], dry_run: bool, out: Report) -> Out {
    if refs.is_empty() {
        return Err(Fail("error: the files name nothing to delete".into(), 2));
    }
    for (_, name) in refs {
        check_name(name)?;
    }
    let resources: Vec<Value> = refs
        .iter()
        .map(|(kind, name)| json!({"kind": kind, "name": name}))
        .collect();
    let path = dry_run_path("/v1/delete", dry_run);
    let body = post_json(&client(c)?, &path, &json!({ "resources": resources }))?;
    if out == Report::Json {
        print(&body, false);
        return Ok(());
    }
    let done = if dry_run {
        "(dry run)".to_string()
    } else {
        format!("(revision {})", text(&body["revision"]))
    };
    for d in body["deleted"].as_array().into_iter().flatten() {
        outln!("{} deleted {done}", resource_ref(d));
    }
    Ok(())
}

/// `policy/NAME` of a `{"kind", "name"}` object, escaped.
fn resource_ref(v: &Value) -> String {
    let r = format!(
        "{}/{}",
        text(&v["kind"]).to_ascii_lowercase(),
        text(&v["name"])
    );
    esc(&r).into_owned()
}

fn check_name(name: &str) -> Out {
    match microseg_policy::check_name(name) {
        Some(e) => Err(Fail(format!("error: {}", esc(&e)), 2)),
        None => Ok(()),
    }
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
}
