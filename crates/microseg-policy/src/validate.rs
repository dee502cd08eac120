//! Field format rules and cross-resource checks.

use crate::diagnostics::Diagnostic;
use crate::model::{Origin, ResourceSet};
use std::collections::HashMap;
use std::net::IpAddr;

/// Resource names: lowercase letters, digits, '-' and '.', 1-253 characters.
pub fn check_name(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    (!ok).then(|| {
        format!(
            "invalid name \"{s}\": lowercase letters, digits, '-' and '.', up to 253 characters"
        )
    })
}

/// Label keys: letters, digits and `-_./:`, 1-253 characters.
pub fn check_label_key(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:".contains(&b));
    (!ok).then(|| format!("invalid label key \"{s}\": letters, digits and '-', '_', '.', '/', ':', 1 to 253 characters"))
}

/// Label values: up to 63 letters, digits, `-_.` (empty allowed).
pub fn check_label_value(s: &str) -> Option<String> {
    let ok = s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    (!ok).then(|| {
        format!(
            "invalid label value \"{s}\": letters, digits, '-', '_' and '.', up to 63 characters"
        )
    })
}

/// Linux interface names: 1-15 bytes, no '/', ':' or whitespace.
pub fn check_interface(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    (!ok).then(|| {
        format!("invalid interface name \"{s}\": 1 to 15 characters, no '/', ':' or whitespace")
    })
}

fn diag(o: &Origin, msg: String) -> Diagnostic {
    Diagnostic {
        file: o.file.clone(),
        line: o.line,
        col: o.col,
        message: msg,
    }
}

/// Checks that span resources: unique names per kind, an address or an
/// interface belongs to one workload only. Errors point at the later resource.
pub fn validate_set(set: &ResourceSet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut names: HashMap<&str, &Origin> = HashMap::new();
    let mut ips: HashMap<IpAddr, (&str, &Origin)> = HashMap::new();
    let mut ifaces: HashMap<&str, (&str, &Origin)> = HashMap::new();
    for w in &set.workloads {
        if let Some(first) = names.get(w.name.as_str()) {
            out.push(diag(
                &w.origin,
                format!(
                    "duplicate Workload name \"{}\" (first defined at {first})",
                    w.name
                ),
            ));
            continue;
        }
        names.insert(&w.name, &w.origin);
        for ip in &w.ips {
            if let Some((other, o)) = ips.get(ip) {
                out.push(diag(
                    &w.origin,
                    format!("address {ip} of workload \"{}\" is already used by workload \"{other}\" ({o})", w.name),
                ));
            } else {
                ips.insert(*ip, (&w.name, &w.origin));
            }
        }
        if let Some(i) = &w.interface {
            if let Some((other, o)) = ifaces.get(i.as_str()) {
                out.push(diag(
                    &w.origin,
                    format!("interface {i} of workload \"{}\" is already used by workload \"{other}\" ({o})", w.name),
                ));
            } else {
                ifaces.insert(i, (&w.name, &w.origin));
            }
        }
    }
    let mut names: HashMap<&str, &Origin> = HashMap::new();
    for p in &set.policies {
        if let Some(first) = names.get(p.name.as_str()) {
            out.push(diag(
                &p.origin,
                format!(
                    "duplicate Policy name \"{}\" (first defined at {first})",
                    p.name
                ),
            ));
        } else {
            names.insert(&p.name, &p.origin);
        }
        if p.name == "default-deny" {
            // Reserved: verdicts of the implicit deny are attributed to it.
            out.push(diag(
                &p.origin,
                "the Policy name \"default-deny\" is reserved".to_string(),
            ));
        }
    }
    out
}
