//! What `-f` names: files, directories of `*.yaml`, `*.yml` and `*.json` files, or `-`
//! for standard input, read into memory once so each command checks and sends the same
//! text.

use std::io::Read;
use std::path::PathBuf;

use microseg_policy::{parse_str, policy_files, validate_set, Diagnostic, Resource, ResourceSet};

/// The name diagnostics give standard input (`-f -`).
pub const STDIN: &str = "<stdin>";

/// One input: the name its diagnostics carry and its text.
pub struct Source {
    pub name: String,
    pub text: String,
}

/// Reads every file the arguments name, in order (directories sorted); `-` reads standard
/// input once. Every unreadable file or directory is a diagnostic.
pub fn read(args: &[PathBuf]) -> Result<Vec<Source>, Vec<Diagnostic>> {
    let (mut out, mut diags) = (Vec::new(), Vec::new());
    let mut stdin_read = false;
    for a in args {
        if a.as_os_str() == "-" {
            if !stdin_read {
                stdin_read = true;
                let mut bytes = Vec::new();
                match std::io::stdin().read_to_end(&mut bytes) {
                    Ok(_) => push_text(STDIN, bytes, &mut out, &mut diags),
                    Err(e) => diags.push(Diagnostic::new(STDIN, 1, 1, format!("cannot read: {e}"))),
                }
            }
            continue;
        }
        let (files, unreadable) = policy_files(std::slice::from_ref(a));
        diags.extend(unreadable);
        for f in files {
            let name = f.display().to_string();
            match std::fs::read(&f) {
                Ok(bytes) => push_text(&name, bytes, &mut out, &mut diags),
                Err(e) => diags.push(Diagnostic::new(
                    &name,
                    1,
                    1,
                    format!("cannot read file: {e}"),
                )),
            }
        }
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

fn push_text(name: &str, bytes: Vec<u8>, out: &mut Vec<Source>, diags: &mut Vec<Diagnostic>) {
    match String::from_utf8(bytes) {
        Ok(text) => out.push(Source {
            name: name.to_string(),
            text,
        }),
        Err(_) => diags.push(Diagnostic::new(name, 1, 1, "file is not valid UTF-8")),
    }
}

/// Every resource of the sources, in order; the set is validated as a whole (names,
/// addresses and interfaces unique), as the agent and the controller do.
pub fn resources(sources: &[Source]) -> Result<Vec<Resource>, Vec<Diagnostic>> {
    let (mut all, mut diags) = (Vec::new(), Vec::new());
    for s in sources {
        let (res, d) = parse_str(&s.name, &s.text);
        all.extend(res);
        diags.extend(d);
    }
    let set: ResourceSet = all.iter().cloned().collect();
    diags.extend(validate_set(&set));
    if diags.is_empty() {
        Ok(all)
    } else {
        Err(diags)
    }
}

/// Reads and checks: the resources, or every problem.
pub fn load(args: &[PathBuf]) -> Result<Vec<Resource>, Vec<Diagnostic>> {
    resources(&read(args)?)
}

/// The resources as one set (for the compiler).
pub fn set(resources: Vec<Resource>) -> ResourceSet {
    resources.into_iter().collect()
}
