//! microseg-policy: the Workload and Policy resources, their parser and
//! validator, the reference verdict evaluator and the Kubernetes import.

pub mod compile;
mod diagnostics;
mod emit;
mod evaluate;
mod fast_yaml;
mod json;
mod k8s;
mod model;
mod parse;
mod parse_policy;
mod selector;
mod tree;
mod validate;
mod yaml;

pub use diagnostics::{escape_control, Diagnostic};
pub use emit::{policies_to_yaml, value_to_yaml};
pub use evaluate::{
    action_rank, evaluate, peer_matches, port_match_matches, rule_matches, Decision, Packet,
    RuleRef, Verdict, DEFAULT_DENY,
};
pub use k8s::import_k8s;
pub use model::*;
pub use parse::{
    load_paths, parse_str, parse_str_with, policy_files, Loader, Resource, API_VERSION,
};
pub use validate::{check_interface, check_label_key, check_label_value, check_name, validate_set};
