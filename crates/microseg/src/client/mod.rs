//! Client commands against the controller's REST API: `policy apply/diff/list/get/delete`,
//! `workload list/get/label/delete`, `status`, and the flows the controller collected.
//! This module holds what they share: the flags, the token, the HTTP call, and how lists
//! of resources are shown.
//!
//! Exit status: 0 success, 1 runtime failure (connection, server error), 2 bad input
//! (usage, invalid resources, any 4xx answer).

mod diff;
mod error;
mod flows;
pub(crate) mod output;
mod policy;
mod selector;
mod status;
mod workload;

pub use diff::diff;
pub use error::CommandError;
pub use flows::{check_filters, endpoint, record_header, record_line, remote_flows, RemoteFlows};
pub use policy::{apply, policy_delete, policy_get, policy_list, policy_promote};
pub use status::status;
pub use workload::{workload, WorkloadCommand};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use microseg_controller::api_types::{
    DeleteRequest, DeleteResponse, Document, List, ResourceRef, Stored,
};
use microseg_controller::client::{Client, Reply, TlsFiles};
use serde::de::DeserializeOwned;
use serde::Serialize;

use output::{cell, esc, print, table, Output, Report};

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

type Out = Result<(), CommandError>;

fn finish(r: Out) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", e.report());
            ExitCode::from(e.exit_code())
        }
    }
}

/// Invalid resources in the files: exit 2 with every problem.
fn invalid(closing: &'static str) -> impl Fn(Vec<microseg_policy::Diagnostic>) -> CommandError {
    move |diags| CommandError::Invalid { diags, closing }
}

const LOCAL_TOKEN: &str = "/var/lib/microseg/controller.token";

fn token(c: &ClientArgs) -> Result<Option<String>, CommandError> {
    token_for(&c.server, c.token_file.as_deref())
}

/// The bearer token for `server`: `token_file`, else MICROSEG_TOKEN, else the local
/// controller's own for a loopback server only.
pub(crate) fn token_for(
    server: &str,
    token_file: Option<&std::path::Path>,
) -> Result<Option<String>, CommandError> {
    if let Some(p) = token_file {
        return std::fs::read_to_string(p)
            .map(|t| Some(t.trim().to_string()))
            .map_err(|source| CommandError::TokenFile {
                path: p.to_path_buf(),
                source,
            });
    }
    if let Ok(t) = std::env::var("MICROSEG_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(Some(t.trim().to_string()));
        }
    }
    // The local controller's own token goes only to a controller on this machine: sent to
    // any --server, it would hand that server the keys of this one.
    if !is_loopback_url(server) {
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

fn client(c: &ClientArgs) -> Result<Client, CommandError> {
    Ok(Client::with_tls(&c.server, token(c)?, c.tls.files())?)
}

/// One request whose answer is read as `T`; a non-2xx answer becomes a failure.
fn call<T: DeserializeOwned>(
    cl: &Client,
    method: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> Result<T, CommandError> {
    answer(cl, path, cl.call(method, path, body)?)
}

fn answer<T: DeserializeOwned>(cl: &Client, path: &str, r: Reply) -> Result<T, CommandError> {
    if !r.ok() {
        let mut message = r.error_text();
        if r.status == 401 {
            message.push_str(
                "\n(give the controller's token with --token-file PATH or MICROSEG_TOKEN)",
            );
        }
        return Err(CommandError::Refused {
            status: r.status,
            message,
        });
    }
    r.parse().map_err(|source| CommandError::Answer {
        url: cl.url().to_string(),
        path: path.to_string(),
        source,
    })
}

/// A request with a JSON body.
fn send_json<T: DeserializeOwned>(
    cl: &Client,
    method: &str,
    path: &str,
    body: &impl Serialize,
) -> Result<T, CommandError> {
    // These bodies are plain structs and maps: serializing them cannot fail.
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    call(cl, method, path, Some(("application/json", &bytes)))
}

/// `path`, with `?dryRun=true` for a dry run.
fn dry_run_path(path: &str, dry_run: bool) -> String {
    if dry_run {
        format!("{path}?dryRun=true")
    } else {
        path.to_string()
    }
}

/// A table's header and rows for some resources: plain, or wide (more columns).
type Rows<T> = fn(&[Stored<T>], bool) -> (&'static [&'static str], Vec<Vec<String>>);

/// Some resources of a list answer at `revision`, chosen by the caller.
fn show_list<T: Document>(revision: u64, items: Vec<Stored<T>>, out: Output, rows: Rows<T>) {
    match out {
        Output::Table | Output::Wide => {
            let (header, r) = rows(&items, out == Output::Wide);
            table(header, &r);
        }
        Output::Json => print(&List { items, revision }, false),
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

fn get_one<T: Document>(c: &ClientArgs, path: &str, out: Output, rows: Rows<T>) -> Out {
    let stored: Stored<T> = call(&client(c)?, "GET", path, None)?;
    match out {
        Output::Table | Output::Wide => {
            let (header, r) = rows(std::slice::from_ref(&stored), out == Output::Wide);
            table(header, &r);
        }
        Output::Json => print(&stored, false),
        Output::Yaml => print(&stored, true),
    }
    Ok(())
}

/// Deletes every resource of `refs` in one request: all of them, or none when one is
/// missing.
fn delete_all(c: &ClientArgs, refs: Vec<ResourceRef>, dry_run: bool, out: Report) -> Out {
    if refs.is_empty() {
        return Err(CommandError::NothingToDelete);
    }
    for r in &refs {
        check_name(&r.name)?;
    }
    let path = dry_run_path("/v1/delete", dry_run);
    let body: DeleteResponse = send_json(
        &client(c)?,
        "POST",
        &path,
        &DeleteRequest { resources: refs },
    )?;
    if out == Report::Json {
        print(&body, false);
        return Ok(());
    }
    let done = if dry_run {
        "(dry run)".to_string()
    } else {
        format!("(revision {})", body.revision)
    };
    for d in &body.deleted {
        outln!("{} deleted {done}", resource_ref(&d.kind, &d.name));
    }
    Ok(())
}

/// `policy/NAME`, escaped.
fn resource_ref(kind: &str, name: &str) -> String {
    let r = format!("{}/{}", kind.to_ascii_lowercase(), cell(name));
    esc(&r).into_owned()
}

fn check_name(name: &str) -> Out {
    match microseg_policy::check_name(name) {
        Some(e) => Err(CommandError::BadName(e)),
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
