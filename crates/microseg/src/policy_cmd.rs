//! `microseg policy check` and `microseg policy import`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use microseg_policy::compile::compile_everywhere;
use microseg_policy::{import_k8s, load_paths, policies_to_yaml};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate files; every error as FILE:LINE:COL: message; exit 2 on any.
    Check {
        #[arg(short = 'f', long = "file", required = true, num_args = 1.., value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Convert Kubernetes NetworkPolicies into microseg Policies (printed as YAML).
    Import {
        /// Source format: k8s.
        #[arg(long = "from", value_name = "FORMAT")]
        from: String,
        #[arg(short = 'f', long = "file", required = true, num_args = 1.., value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Create or replace Policies (and Workloads) on the controller from files or dirs.
    Apply {
        #[arg(short = 'f', long = "file", required = true, num_args = 1.., value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        client: crate::client::ClientArgs,
    },
    /// Policies stored on the controller.
    List {
        #[command(flatten)]
        client: crate::client::ClientArgs,
    },
    /// One policy from the controller (-o yaml gives a document `apply` takes back).
    Get {
        name: String,
        #[command(flatten)]
        client: crate::client::ClientArgs,
    },
    /// Delete a policy on the controller.
    Delete {
        name: String,
        #[command(flatten)]
        client: crate::client::ClientArgs,
    },
}

pub fn run(cmd: PolicyCommand) -> ExitCode {
    match cmd {
        PolicyCommand::Check { files } => check(&files),
        PolicyCommand::Import { from, files } => import(&from, &files),
        PolicyCommand::Apply { files, client } => crate::client::apply(&files, &client),
        PolicyCommand::List { client } => crate::client::policy_list(&client),
        PolicyCommand::Get { name, client } => crate::client::policy_get(&name, &client),
        PolicyCommand::Delete { name, client } => crate::client::policy_delete(&name, &client),
    }
}

fn check(files: &[PathBuf]) -> ExitCode {
    let loaded = load_paths(files).and_then(|set| {
        let (compiled, problems) = compile_everywhere(&set);
        if problems.is_empty() {
            Ok((set, compiled))
        } else {
            Err(problems)
        }
    });
    let (set, compiled) = match loaded {
        Ok(x) => x,
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            eprintln!("{} error(s)", diags.len());
            return ExitCode::from(2);
        }
    };
    // What the policy costs, compiled as if every workload with an interface were local.
    let s = compiled.tables.sizes();
    println!(
        "ok: {} workload(s), {} policies, {} rule(s)",
        set.workloads.len(),
        set.policies.len(),
        compiled.rules.len()
    );
    println!(
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
        eprintln!("error: --from {from}: the only supported source is k8s");
        return ExitCode::from(2);
    }
    let mut policies = Vec::new();
    let mut problems = 0;
    for f in files {
        let name = f.display().to_string();
        let text = match std::fs::read_to_string(f) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{name}: {e}");
                problems += 1;
                continue;
            }
        };
        let (ps, diags) = import_k8s(&name, &text);
        for d in &diags {
            eprintln!("{d}");
        }
        problems += diags.len();
        policies.extend(ps);
    }
    print!("{}", policies_to_yaml(&policies));
    if problems > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
