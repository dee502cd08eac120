//! Client commands against the controller's REST API: `policy apply/list/get/delete`,
//! `workload list/get/label/delete`, `status`, and the flows the controller collected.
//! This module holds what they share: the flags, the token, and the HTTP call.
//!
//! Exit status: 0 success, 1 runtime failure (connection, server error), 2 bad input
//! (usage, invalid resources, any 4xx answer).

mod flows;
mod output;
mod policy;
mod status;
mod workload;

pub use flows::remote_flows;
pub use policy::{apply, policy_delete, policy_get, policy_list};
pub use status::status;
pub use workload::{workload, WorkloadCommand};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use microseg_controller::client::{Client, Reply, TlsFiles};
use serde_json::Value;

use output::{print, table, text};

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
