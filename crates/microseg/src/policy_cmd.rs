//! `microseg policy`: `check` and `import` here, on files; the rest against the
//! controller (crate::client).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use microseg_policy::compile::compile_everywhere;
use microseg_policy::{import_k8s, policies_to_yaml};

use crate::client::output::esc;
use crate::client::{ClientArgs, ReportArgs, ShowArgs};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate files; every error as FILE:LINE:COL: message; exit 2 on any.
    Check {
        /// A file or directory of Workloads and Policies (repeatable; - reads standard
        /// input).
        #[arg(short = 'f', long = "file", required = true, num_args = 1.., value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Convert Kubernetes NetworkPolicies into microseg Policies (printed as YAML).
    Import {
        /// Source format: k8s.
        #[arg(long = "from", value_name = "FORMAT")]
        from: String,
        /// A file of NetworkPolicies (repeatable; - reads standard input).
        #[arg(short = 'f', long = "file", required = true, num_args = 1.., value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Create or replace Policies (and Workloads) on the controller from files or dirs:
    /// all of them in one revision, or none.
    Apply {
        /// A file or directory of Workloads and Policies (repeatable; - reads standard
        /// input).
        #[arg(short = 'f', long = "file", required = true, num_args = 1.., value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Show what would change; store nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        report: ReportArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show what `apply` would change: each stored resource's YAML against the file's, as
    /// a unified diff; exit 0 when equal, 1 when different, 2 on an error.
    Diff {
        /// A file or directory of Workloads and Policies (repeatable; - reads standard
        /// input).
        #[arg(short = 'f', long = "file", required = true, num_args = 1.., value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Policies stored on the controller.
    List {
        /// Only the policies that select a stored workload whose labels match:
        /// key=value, key!=value, key, !key, comma-separated (all must hold).
        #[arg(short = 'l', long = "selector", value_name = "SELECTOR")]
        selector: Option<String>,
        #[command(flatten)]
        show: ShowArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One policy from the controller (-o yaml gives a document `apply` takes back).
    Get {
        /// The policy's name.
        name: String,
        #[command(flatten)]
        show: ShowArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Promote an audit policy (a recommendation applied in `mode: audit`) to enforce on
    /// the controller, as one change; exit 2 when it is unknown or already enforcing.
    Promote {
        /// The policy's name.
        name: String,
        /// Check that it can be promoted; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        report: ReportArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete policies on the controller: all that are named, or none.
    #[command(group = clap::ArgGroup::new("what").required(true).multiple(true))]
    Delete {
        /// Policies to delete.
        #[arg(value_name = "NAME", group = "what")]
        names: Vec<String>,
        /// Also delete every Policy and Workload these files or directories name, as
        /// `apply -f` applies them (- reads standard input).
        #[arg(short = 'f', long = "file", num_args = 1.., value_name = "FILE", group = "what")]
        files: Vec<PathBuf>,
        /// Show what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        report: ReportArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub fn run(cmd: PolicyCommand) -> ExitCode {
    use crate::client;
    match cmd {
        PolicyCommand::Check { files } => check(&files),
        PolicyCommand::Import { from, files } => import(&from, &files),
        PolicyCommand::Apply {
            files,
            dry_run,
            report,
            client: c,
        } => client::apply(&files, dry_run, &c, report.output),
        PolicyCommand::Diff { files, client: c } => client::diff(&files, &c),
        PolicyCommand::List {
            selector,
            show,
            client: c,
        } => client::policy_list(selector.as_deref(), &c, show.output),
        PolicyCommand::Get {
            name,
            show,
            client: c,
        } => client::policy_get(&name, &c, show.output),
        PolicyCommand::Promote {
            name,
            dry_run,
            report,
            client: c,
        } => client::policy_promote(&name, dry_run, &c, report.output),
        PolicyCommand::Delete {
            names,
            files,
            dry_run,
            report,
            client: c,
        } => client::policy_delete(&names, &files, dry_run, &c, report.output),
    }
}

/// Every diagnostic on stderr (a diagnostic escapes itself), then the count: exit 2.
fn report_diagnostics(diags: &[microseg_policy::Diagnostic]) -> ExitCode {
    for d in diags {
        eprintln!("{d}");
    }
    eprintln!("{} error(s)", diags.len());
    ExitCode::from(2)
}

fn check(files: &[PathBuf]) -> ExitCode {
    let loaded = crate::sources::load(files).and_then(|res| {
        let set = crate::sources::set(res);
        let (compiled, problems) = compile_everywhere(&set);
        if problems.is_empty() {
            Ok((set, compiled))
        } else {
            Err(problems)
        }
    });
    let (set, compiled) = match loaded {
        Ok(x) => x,
        Err(diags) => return report_diagnostics(&diags),
    };
    // What the policy costs, compiled as if every workload with an interface were local.
    let s = compiled.tables.sizes();
    outln!(
        "ok: {} workload(s), {} policies, {} rule(s)",
        set.workloads.len(),
        set.policies.len(),
        compiled.rules.len()
    );
    outln!(
        "compiled for {} workload(s) with an interface: {} policy entries, {} port-range tables, {} source-port tables, {} identities over {} prefixes, {} profile(s)",
        compiled.endpoints.len(),
        s.policy,
        s.port_ranges,
        s.source_ports,
        compiled.identities,
        s.identities,
        compiled.profiles
    );
    ExitCode::SUCCESS
}

fn import(from: &str, files: &[PathBuf]) -> ExitCode {
    if !from.eq_ignore_ascii_case("k8s") && !from.eq_ignore_ascii_case("kubernetes") {
        eprintln!(
            "error: --from {}: the only supported source is k8s",
            esc(from)
        );
        return ExitCode::from(2);
    }
    let sources = match crate::sources::read(files) {
        Ok(s) => s,
        Err(diags) => return report_diagnostics(&diags),
    };
    let mut policies = Vec::new();
    let mut problems = 0;
    for s in &sources {
        let (ps, diags) = import_k8s(&s.name, &s.text);
        for d in &diags {
            eprintln!("{d}");
        }
        problems += diags.len();
        policies.extend(ps);
    }
    out!("{}", policies_to_yaml(&policies));
    if problems > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
