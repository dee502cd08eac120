//! Reading Workload and Policy resources from YAML/JSON text and files.

use crate::diagnostics::Diagnostic;
use crate::model::{Mode, Policy, ResourceSet, Workload, MAX_LABELS};
use crate::tree::{Mapping, Node};
use crate::validate::{
    check_interface, check_label_key, check_label_value, check_name, validate_set,
};
use crate::yaml::{entries, is_null, load_documents, Ctx};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const API_VERSION: &str = "microseg.io/v1";

/// One parsed resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    Workload(Workload),
    /// Shared: a reload hands out the policies of unchanged files without copying them,
    /// and the compiler tells them apart from changed ones by pointer.
    Policy(Arc<Policy>),
}

impl Extend<Resource> for ResourceSet {
    fn extend<I: IntoIterator<Item = Resource>>(&mut self, resources: I) {
        for r in resources {
            match r {
                Resource::Workload(w) => self.workloads.push(w),
                Resource::Policy(p) => self.policies.push(p),
            }
        }
    }
}

impl FromIterator<Resource> for ResourceSet {
    fn from_iter<I: IntoIterator<Item = Resource>>(resources: I) -> ResourceSet {
        let mut set = ResourceSet::default();
        set.extend(resources);
        set
    }
}

/// Parses every document of one file. Only resources without errors are returned;
/// all errors are collected, in file order.
pub fn parse_str(file: &str, text: &str) -> (Vec<Resource>, Vec<Diagnostic>) {
    parse_str_with(file, text, true)
}

/// [`parse_str`], with (`quick_reader`) or without the quick YAML reader: for the
/// reader benchmark (`examples/parse_bench.rs`) only.
#[doc(hidden)]
pub fn parse_str_with(
    file: &str,
    text: &str,
    quick_reader: bool,
) -> (Vec<Resource>, Vec<Diagnostic>) {
    // Fast path for JSON; anything it finds wrong is reported by the YAML path, which
    // knows every position.
    if let Some(node) = crate::json::document(text) {
        let mut ctx = Ctx::new(file);
        let items = top_level_items(&mut ctx, &node);
        let out: Vec<Resource> = items
            .into_iter()
            .filter_map(|item| parse_resource(&mut ctx, item))
            .collect();
        if ctx.diags.is_empty() {
            return (out, Vec::new());
        }
    }
    // The quick YAML reader first; errors are reported from the full loader's tree,
    // whose positions are exact everywhere.
    match parse_yaml(file, text, quick_reader) {
        (_, diags, true) if !diags.is_empty() => {
            let (out, diags, _) = parse_yaml(file, text, false);
            (out, diags)
        }
        (out, diags, _) => (out, diags),
    }
}

fn parse_yaml(file: &str, text: &str, fast: bool) -> (Vec<Resource>, Vec<Diagnostic>, bool) {
    let mut diags = Vec::new();
    let (docs, fast_used) = load_documents(file, text, &mut diags, fast);
    let mut ctx = Ctx::new(file);
    let mut out = Vec::new();
    for doc in &docs {
        ctx.line_off = doc.line_off;
        for item in top_level_items(&mut ctx, &doc.node) {
            if let Some(r) = parse_resource(&mut ctx, item) {
                out.push(r);
            }
        }
    }
    diags.extend(ctx.diags);
    crate::yaml::keep_inside(text, &mut diags);
    diags.sort_by_key(|d| (d.line, d.col));
    (out, diags, fast_used)
}

/// A document is one resource, a list of them, or a `kind: List` wrapper.
pub(crate) fn top_level_items<'n>(ctx: &mut Ctx, node: &'n Node) -> Vec<&'n Node> {
    match node {
        Node::Sequence(s) => s.iter().collect(),
        Node::Mapping(m) if m.get_scalar("kind").is_some_and(|k| k.as_str() == "List") => {
            match m.get_node("items") {
                Some(items) => ctx
                    .seq(items, "items")
                    .map(|s| s.iter().collect())
                    .unwrap_or_default(),
                None => Vec::new(),
            }
        }
        _ => vec![node],
    }
}

fn parse_resource(ctx: &mut Ctx, node: &Node) -> Option<Resource> {
    let before = ctx.diags.len();
    let map = ctx.map(node, "a resource")?;
    let kind = ctx
        .required(map, "kind", "resource")
        .and_then(|k| ctx.str(k, "kind").map(|s| (k, s)));
    let (kind_node, kind) = kind?;
    if kind != "Workload" && kind != "Policy" {
        ctx.err(
            kind_node.span(),
            format!("unknown kind \"{kind}\"; allowed: Workload, Policy"),
        );
        return None;
    }
    match map.get_node("apiVersion") {
        None => ctx.err(
            crate::yaml::map_start(map),
            format!("missing field \"apiVersion\"; apiVersion must be {API_VERSION}"),
        ),
        Some(v) => {
            if let Node::Scalar(s) = v {
                if s.as_str() != API_VERSION {
                    ctx.err(v.span(), format!("apiVersion must be {API_VERSION}"));
                }
            } else {
                ctx.err(v.span(), format!("apiVersion must be {API_VERSION}"));
            }
        }
    }
    ctx.check_fields(map, kind, &["apiVersion", "kind", "metadata", "spec"]);
    let origin = ctx.origin(node);
    let (name, labels) = parse_metadata(ctx, map, kind);
    let spec = map.get_node("spec");
    let res = if kind == "Workload" {
        let mut w = Workload {
            name,
            labels,
            interface: None,
            ips: Vec::new(),
            mode: Mode::Enforce,
            origin,
        };
        if let Some(spec) = spec.filter(|s| !is_null(s)) {
            parse_workload_spec(ctx, spec, &mut w);
        }
        Resource::Workload(w)
    } else {
        let spec = match spec {
            Some(s) => s,
            None => {
                ctx.err(
                    crate::yaml::map_start(map),
                    "missing field \"spec\" in Policy",
                );
                return None;
            }
        };
        Resource::Policy(Arc::new(crate::parse_policy::parse_policy_spec(
            ctx, spec, name, origin,
        )?))
    };
    (ctx.diags.len() == before).then_some(res)
}

fn parse_metadata(ctx: &mut Ctx, map: &Mapping, kind: &str) -> (String, BTreeMap<String, String>) {
    let mut name = String::new();
    let mut labels = BTreeMap::new();
    let Some(meta) = ctx
        .required(map, "metadata", kind)
        .and_then(|m| ctx.map(m, "metadata"))
    else {
        return (name, labels);
    };
    ctx.check_fields(meta, "metadata", &["name", "labels", "annotations"]);
    if let Some(n) = ctx.required(meta, "name", "metadata") {
        if let Some(s) = ctx.str(n, "name") {
            if let Some(e) = check_name(s) {
                ctx.err(n.span(), e);
            }
            name = s.to_string();
        }
    }
    if let Some(l) = meta.get_node("labels") {
        labels = parse_labels(ctx, l, "labels");
    }
    if let Some(a) = meta.get_node("annotations") {
        if !is_null(a) {
            ctx.map(a, "annotations");
        }
    }
    (name, labels)
}

/// A label map; keys and values are checked. Null counts as empty.
pub(crate) fn parse_labels(ctx: &mut Ctx, node: &Node, what: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if is_null(node) {
        return out;
    }
    let Some(map) = ctx.map(node, what) else {
        return out;
    };
    if let Some(past) = map.keys().nth(MAX_LABELS) {
        let msg = crate::yaml::too_many(what, map.len(), MAX_LABELS);
        ctx.err(past.span(), msg);
        return out;
    }
    for (k, v) in entries(map) {
        if let Some(e) = check_label_key(k.as_str()) {
            ctx.err(k.span(), e);
        }
        let value = match v {
            _ if is_null(v) => "",
            Node::Scalar(s) => s.as_str(),
            _ => {
                ctx.err(
                    v.span(),
                    format!(
                        "label value must be a string, found {}",
                        crate::yaml::describe(v)
                    ),
                );
                continue;
            }
        };
        if let Some(e) = check_label_value(value) {
            ctx.err(v.span(), e);
        }
        out.insert(k.as_str().to_string(), value.to_string());
    }
    out
}

pub(crate) fn parse_mode(ctx: &mut Ctx, node: &Node) -> Mode {
    match ctx
        .str(node, "mode")
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("enforce") => Mode::Enforce,
        Some("audit") => Mode::Audit,
        Some(_) => {
            let s = crate::yaml::describe(node);
            ctx.err(
                node.span(),
                format!("invalid mode {s}; allowed: enforce, audit"),
            );
            Mode::Enforce
        }
        None => Mode::Enforce,
    }
}

fn parse_workload_spec(ctx: &mut Ctx, spec: &Node, w: &mut Workload) {
    let Some(spec) = ctx.map(spec, "spec") else {
        return;
    };
    ctx.check_fields(spec, "Workload spec", &["interface", "ips", "mode"]);
    if let Some(n) = spec.get_node("interface").filter(|n| !is_null(n)) {
        if let Some(s) = ctx.str(n, "interface") {
            if let Some(e) = check_interface(s) {
                ctx.err(n.span(), e);
            }
            w.interface = Some(s.to_string());
        }
    }
    if let Some(n) = spec.get_node("ips") {
        // A set, not a scan of the list so far: that is quadratic in a long list.
        let mut seen = std::collections::HashSet::new();
        for ip in ctx.seq(n, "ips").unwrap_or_default() {
            let Some(s) = ctx.str(ip, "an entry of ips") else {
                continue;
            };
            match s.parse::<IpAddr>() {
                Ok(a) if crate::parse_policy::is_v4_mapped(&a) => ctx.err(
                    ip.span(),
                    format!("address {a} is IPv4-mapped; write the IPv4 address instead"),
                ),
                Ok(a) if seen.contains(&a) => {
                    ctx.err(ip.span(), format!("duplicate address {a} in ips"))
                }
                Ok(a) => {
                    seen.insert(a);
                    w.ips.push(a)
                }
                Err(_) => ctx.err(
                    ip.span(),
                    format!("invalid IP address \"{s}\": must be an IPv4 or IPv6 address"),
                ),
            }
        }
    }
    if let Some(n) = spec.get_node("mode") {
        w.mode = parse_mode(ctx, n);
    }
}

/// Collects the files a path names: the file itself, or a directory's
/// *.yaml, *.yml and *.json files (sorted, recursing but skipping hidden entries).
fn collect_files(path: &Path, out: &mut Vec<PathBuf>, diags: &mut Vec<Diagnostic>) {
    if !path.is_dir() {
        out.push(path.to_path_buf());
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::new(
                &path.display().to_string(),
                1,
                1,
                format!("cannot read directory: {e}"),
            ));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            collect_files(&p, out, diags);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        {
            out.push(p);
        }
    }
}

/// Reads files and directories of resources (see [`Loader`]); every problem as a
/// diagnostic with its position.
pub fn load_paths(paths: &[impl AsRef<Path>]) -> Result<ResourceSet, Vec<Diagnostic>> {
    Loader::default().load(paths)
}

/// The resource files under `paths`: files as named, and the `*.yaml`, `*.yml` and
/// `*.json` files of directories (recursively, hidden entries skipped), sorted.
pub fn policy_files(paths: &[impl AsRef<Path>]) -> (Vec<std::path::PathBuf>, Vec<Diagnostic>) {
    let (mut files, mut diags) = (Vec::new(), Vec::new());
    for p in paths {
        collect_files(p.as_ref(), &mut files, &mut diags);
    }
    (files, diags)
}

fn parse_file(f: &Path) -> (Vec<Resource>, Vec<Diagnostic>) {
    let name = f.display().to_string();
    match std::fs::read(f) {
        Ok(b) => match String::from_utf8(b) {
            Ok(t) => parse_str(&name, &t),
            Err(_) => (
                Vec::new(),
                vec![Diagnostic::new(&name, 1, 1, "file is not valid UTF-8")],
            ),
        },
        Err(e) => (
            Vec::new(),
            vec![Diagnostic::new(
                &name,
                1,
                1,
                format!("cannot read file: {e}"),
            )],
        ),
    }
}

/// Loads resource files, parsing again only the files whose size or modification time
/// changed since its last load: a one-line edit next to a large policy file costs the
/// small file's parse, not the large one's.
#[derive(Default)]
pub struct Loader {
    parsed: std::collections::HashMap<std::path::PathBuf, ParsedFile>,
}

/// A file as last parsed: its modification time and size, what it held, what was wrong.
struct ParsedFile {
    mtime: Option<std::time::SystemTime>,
    len: u64,
    resources: Vec<Resource>,
    diagnostics: Vec<Diagnostic>,
}

impl Loader {
    pub fn load(&mut self, paths: &[impl AsRef<Path>]) -> Result<ResourceSet, Vec<Diagnostic>> {
        let (files, mut diags) = policy_files(paths);
        let mut set = ResourceSet::default();
        let mut seen = std::collections::HashSet::new();
        for f in files {
            let meta = std::fs::metadata(&f).ok();
            let (mtime, len) = (
                meta.as_ref().and_then(|m| m.modified().ok()),
                meta.map_or(0, |m| m.len()),
            );
            let fresh = matches!(self.parsed.get(&f), Some(p) if p.mtime == mtime && p.len == len && mtime.is_some());
            if !fresh {
                let (res, d) = parse_file(&f);
                self.parsed.insert(
                    f.clone(),
                    ParsedFile {
                        mtime,
                        len,
                        resources: res,
                        diagnostics: d,
                    },
                );
            }
            let p = &self.parsed[&f];
            set.extend(p.resources.iter().cloned());
            diags.extend(p.diagnostics.iter().cloned());
            seen.insert(f);
        }
        self.parsed.retain(|f, _| seen.contains(f));
        diags.extend(validate_set(&set));
        if diags.is_empty() {
            Ok(set)
        } else {
            Err(diags)
        }
    }
}
