//! Apply and delete, each one transaction: however many files and resources a request
//! carries, it is all or nothing and raises the revision at most once. Parsing and
//! validation run on the blocking pool and against a snapshot read before the store's
//! lock is taken, so a large request holds neither an async worker nor that lock while
//! it is checked; should the state change meanwhile, the check is redone under the lock.

use crate::api_types::Change;
pub use crate::api_types::{Applied, ResourceRef, SourceFile};
use crate::core::Core;
use crate::error::{printable, Error};
use crate::resources::{self, POLICY, WORKLOAD};
use crate::store::{Row, Rows, Snapshot, Store, Write};
use microseg_policy::{parse_str, validate_set, Resource, ResourceSet};
use microseg_proto::MAX_RESOURCE_BYTES;
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use tokio::sync::Semaphore;

/// What an endpoint takes: one kind only (`/v1/policies`), one name (a PUT's URL).
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub kind: Option<&'static str>,
    pub name: Option<String>,
}

/// What a change did, or with a dry run would do: the revision after it (for a dry run,
/// the current one) and the resources.
#[derive(Debug)]
pub struct Outcome<T> {
    pub revision: u64,
    pub items: Vec<T>,
}

/// How many requests parse and validate at once, one per core: more would only queue
/// for the same cores, each holding its request's parsed resources.
fn cpu_permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS
        .get_or_init(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())))
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::Http {
        status: 500,
        message: format!("processing the request failed: {e}"),
        details: Vec::new(),
    }
}

/// Runs CPU-bound work of a request (decoding, parsing, validation) off the async workers.
pub(crate) async fn compute<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    let _permit = cpu_permits()
        .acquire()
        .await
        .map_err(|_| Error::http(503, "the controller is shutting down"))?;
    tokio::task::spawn_blocking(f).await.map_err(join_error)
}

/// Runs a store call off the async workers: SQLite's calls block, a transaction may
/// validate under its lock, and a listing decorates every document.
pub(crate) async fn off_workers<T: Send + 'static>(
    f: impl FnOnce(&tokio::runtime::Handle) -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || f(&handle))
        .await
        .map_err(join_error)?
}

struct Doc {
    kind: &'static str,
    name: String,
    json: String,
}

/// A request's resources, parsed and checked on their own.
struct Prepared {
    /// The request's file names: the validator's messages about these are the request's.
    files: HashSet<String>,
    new_set: ResourceSet,
    docs: Vec<Doc>,
}

fn origin(r: &Resource) -> String {
    match r {
        Resource::Workload(w) => w.origin.to_string(),
        Resource::Policy(p) => p.origin.to_string(),
    }
}

/// Parses every file and checks what needs no stored state: the endpoint's kind and name,
/// the size of each resource, what the agents could not compile.
fn prepare(files: Vec<SourceFile>, scope: &Scope, max_bytes: usize) -> Result<Prepared, Error> {
    if files.is_empty() {
        return Err(Error::bad("no files in the request"));
    }
    let mut parsed = Vec::new();
    let mut problems = Vec::new();
    for (i, f) in files.iter().enumerate() {
        if f.name.is_empty() {
            problems.push(format!("files[{i}]: the name is empty"));
            continue;
        }
        let (resources, diags) = parse_str(&f.name, &f.content);
        parsed.extend(resources);
        problems.extend(diags.iter().map(ToString::to_string));
    }
    if !problems.is_empty() {
        return Err(Error::invalid(problems));
    }
    if parsed.is_empty() {
        return Err(Error::bad("no resources in the request body"));
    }
    for r in &parsed {
        let kind = resources::kind(r);
        if let Some(k) = scope.kind.filter(|k| *k != kind) {
            problems.push(format!(
                "{}: this endpoint takes {k} resources, found a {kind}",
                origin(r)
            ));
        }
        if let Some(n) = scope.name.as_deref().filter(|n| *n != resources::name(r)) {
            problems.push(format!(
                "{}: metadata.name \"{}\" does not match \"{n}\" in the URL",
                origin(r),
                resources::name(r)
            ));
        }
    }
    if scope.name.is_some() && parsed.len() > 1 {
        problems.push(format!("{}: PUT takes one resource", files[0].name));
    }
    let files: HashSet<String> = files.into_iter().map(|f| f.name).collect();
    let docs: Vec<Doc> = parsed
        .iter()
        .map(|r| Doc {
            kind: resources::kind(r),
            name: resources::name(r).to_string(),
            json: resources::to_json(r).to_string(),
        })
        .collect();
    // Each resource travels to the agents in one message.
    let oversized: Vec<String> = parsed
        .iter()
        .zip(&docs)
        .filter(|(_, d)| d.json.len() > max_bytes)
        .map(|(r, d)| {
            format!(
                "{}: {} \"{}\" is {} bytes as JSON, more than the {max_bytes} one resource may have",
                origin(r),
                d.kind,
                d.name,
                d.json.len()
            )
        })
        .collect();
    if let Some(first) = oversized.first() {
        return Err(Error::Http {
            status: 413,
            message: first.clone(),
            details: oversized,
        });
    }
    let mut new_set = ResourceSet::default();
    for r in parsed {
        match r {
            Resource::Workload(w) => new_set.workloads.push(w),
            Resource::Policy(p) => new_set.policies.push(p),
        }
    }
    // What the agents would refuse to compile (a capacity limit), refused here first.
    problems.extend(
        microseg_policy::compile::check(&new_set)
            .iter()
            .map(ToString::to_string),
    );
    if !problems.is_empty() {
        return Err(Error::invalid(problems));
    }
    Ok(Prepared {
        files,
        new_set,
        docs,
    })
}

/// The stored resources as one set for the validator (parsed when read, not here);
/// discovered workloads lose their interface (interface names repeat across nodes).
fn stored_set<'r>(rows: impl Iterator<Item = &'r Row>) -> Result<ResourceSet, Error> {
    let mut set = ResourceSet::default();
    for r in rows {
        match r.resource()? {
            Resource::Workload(w) => {
                let mut w = w.clone();
                if !r.node.is_empty() {
                    w.interface = None;
                }
                set.workloads.push(w)
            }
            Resource::Policy(p) => set.policies.push(p.clone()),
        }
    }
    Ok(set)
}

/// Checks the request against the stored `rows` and says what each resource would become.
fn check(p: &Prepared, rows: &Rows) -> Result<Vec<Applied>, Error> {
    for d in &p.docs {
        if let Some(r) = rows.get(d.kind, &d.name) {
            if !r.node.is_empty() {
                return Err(Error::Conflict(format!(
                    "workload \"{}\" was discovered on node \"{}\"; choose another name",
                    d.name, r.node
                )));
            }
        }
    }
    let replaced: HashSet<(&str, &str)> =
        p.docs.iter().map(|d| (d.kind, d.name.as_str())).collect();
    let mut set = stored_set(
        rows.iter()
            .filter(|r| !replaced.contains(&(r.kind.as_str(), r.name.as_str()))),
    )?;
    set.workloads.extend(p.new_set.workloads.iter().cloned());
    set.policies.extend(p.new_set.policies.iter().cloned());
    let diags: Vec<String> = validate_set(&set)
        .into_iter()
        .filter(|d| p.files.contains(&d.file))
        .map(|d| d.to_string())
        .collect();
    if !diags.is_empty() {
        return Err(Error::invalid(diags));
    }
    Ok(p.docs
        .iter()
        .map(|d| Applied {
            kind: d.kind.to_string(),
            name: d.name.clone(),
            action: match rows.get(d.kind, &d.name) {
                Some(r) if r.json == d.json => Change::Unchanged,
                Some(_) => Change::Configured,
                None => Change::Created,
            },
        })
        .collect())
}

fn puts(p: &Prepared, applied: &[Applied]) -> Vec<Write> {
    p.docs
        .iter()
        .zip(applied)
        .filter(|(_, a)| a.action != Change::Unchanged)
        .map(|(d, _)| Write::Put {
            kind: d.kind.to_string(),
            name: d.name.clone(),
            json: d.json.clone(),
            node: String::new(),
            reported: None,
        })
        .collect()
}

/// Checks a delete against the stored `rows`: every resource must exist and be the API's.
fn deletes(refs: &[ResourceRef], rows: &Rows) -> Result<Vec<Write>, Error> {
    let missing: Vec<String> = refs
        .iter()
        .filter(|r| rows.get(&r.kind, &r.name).is_none())
        .map(|r| format!("{} \"{}\"", r.kind, r.name))
        .collect();
    if let Some(first) = missing.first() {
        return Err(Error::NotFound(match missing.len() {
            1 => format!("{first} not found"),
            n if n <= 10 => format!("not found: {}", missing.join(", ")),
            n => format!(
                "not found: {} and {} more",
                missing[..10].join(", "),
                n - 10
            ),
        }));
    }
    let mut writes = Vec::new();
    for r in refs {
        let Some(row) = rows.get(&r.kind, &r.name) else {
            continue;
        };
        if !row.node.is_empty() {
            return Err(Error::Conflict(format!(
                "workload \"{}\" is reported by the agent on node \"{}\"; it goes away with its namespace",
                r.name, row.node
            )));
        }
        writes.push(Write::Delete {
            kind: r.kind.clone(),
            name: r.name.clone(),
        });
    }
    Ok(writes)
}

/// The first files of an apply, for its log line: `a.yaml,b.yaml` (`,+N` for the rest).
fn file_list(names: &[String]) -> String {
    let shown: Vec<String> = names
        .iter()
        .take(5)
        .map(|n| printable(n).into_owned())
        .collect();
    match names.len() {
        n if n > 5 => format!("{},+{}", shown.join(","), n - 5),
        _ => shown.join(","),
    }
}

async fn snapshot(store: &Arc<dyn Store>) -> Result<(u64, Rows), Error> {
    let store = store.clone();
    off_workers(move |rt| rt.block_on(store.full())).await
}

impl Core {
    /// Creates or replaces the resources of `files` (YAML or JSON: one resource, a list or
    /// a `kind: List` each) in one transaction, validated together with the stored set.
    /// With `dry_run`, only checks and says what would happen.
    pub async fn apply(
        &self,
        files: Vec<SourceFile>,
        scope: Scope,
        dry_run: bool,
    ) -> Result<Outcome<Applied>, Error> {
        let names: Vec<String> = files.iter().map(|f| f.name.clone()).collect();
        let result = self.apply_checked(files, scope, dry_run).await;
        match &result {
            Ok(o) if !dry_run => tracing::info!(
                files = %file_list(&names),
                revision = o.revision,
                resources = o.items.len(),
                changed = o
                    .items
                    .iter()
                    .filter(|a| a.action != Change::Unchanged)
                    .count(),
                "applied"
            ),
            Ok(_) => {}
            Err(e) => tracing::info!(
                files = %file_list(&names),
                error = %printable(&e.to_string()),
                "apply refused"
            ),
        }
        result
    }

    async fn apply_checked(
        &self,
        files: Vec<SourceFile>,
        scope: Scope,
        dry_run: bool,
    ) -> Result<Outcome<Applied>, Error> {
        let prepared =
            Arc::new(compute(move || prepare(files, &scope, MAX_RESOURCE_BYTES)).await??);
        let (seen, rows) = snapshot(&self.store).await?;
        let p = prepared.clone();
        let applied = compute(move || check(&p, &rows)).await??;
        if dry_run {
            return Ok(Outcome {
                revision: seen,
                items: applied,
            });
        }
        let store = self.store.clone();
        let (revision, applied) = off_workers(move |rt| {
            let mut applied = applied;
            let out = &mut applied;
            let tx = Box::new(move |snap: &Snapshot| {
                if snap.revision != seen {
                    // Changed since the check: check again, now under the lock.
                    *out = check(&prepared, &snap.rows)?;
                }
                Ok(puts(&prepared, out))
            });
            let rev = rt.block_on(store.transact(tx))?;
            Ok((rev, applied))
        })
        .await?;
        Ok(Outcome {
            revision: self.published(revision),
            items: applied,
        })
    }

    /// Deletes every resource of `refs` in one transaction, or none if one is missing
    /// (404) or discovered by an agent (409). With `dry_run`, only checks.
    pub async fn delete(
        &self,
        refs: Vec<ResourceRef>,
        dry_run: bool,
    ) -> Result<Outcome<ResourceRef>, Error> {
        if refs.is_empty() {
            return Err(Error::bad("no resources to delete"));
        }
        let unknown: Vec<String> = refs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind != POLICY && r.kind != WORKLOAD)
            .map(|(i, r)| {
                format!(
                    "resources[{i}]: unknown kind \"{}\"; allowed: {POLICY}, {WORKLOAD}",
                    r.kind
                )
            })
            .collect();
        if !unknown.is_empty() {
            return Err(Error::invalid(unknown));
        }
        let mut seen_refs = HashSet::new();
        let refs: Vec<ResourceRef> = refs
            .into_iter()
            .filter(|r| seen_refs.insert(r.clone()))
            .collect();
        if dry_run {
            let (revision, rows) = snapshot(&self.store).await?;
            deletes(&refs, &rows)?;
            return Ok(Outcome {
                revision,
                items: refs,
            });
        }
        let store = self.store.clone();
        let (revision, refs) = off_workers(move |rt| {
            let tx = Box::new(|snap: &Snapshot| deletes(&refs, &snap.rows));
            let rev = rt.block_on(store.transact(tx))?;
            Ok((rev, refs))
        })
        .await?;
        tracing::info!(resources = refs.len(), revision, "deleted");
        Ok(Outcome {
            revision: self.published(revision),
            items: refs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, content: &str) -> SourceFile {
        SourceFile {
            name: name.into(),
            content: content.into(),
        }
    }

    #[test]
    fn a_resource_larger_than_the_bound_is_refused_with_413_naming_it() {
        let small = "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: small}\nspec: {selector: {}}\n";
        let ports = vec!["{protocol: 58}"; 50].join(", ");
        let big = format!(
            "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: big}}\nspec:\n  selector: {{}}\n  ingress: [{{action: allow, ports: [{ports}]}}]\n"
        );
        let files = vec![file("a.yaml", small), file("b.yaml", &big)];
        let Err(Error::Http {
            status,
            message,
            details,
        }) = prepare(files, &Scope::default(), 1000)
        else {
            panic!("refused")
        };
        assert_eq!(status, 413);
        assert_eq!(details.len(), 1, "{details:?}");
        assert!(
            message.starts_with("b.yaml:1:1: Policy \"big\" is ") && message.contains("1000"),
            "{message}"
        );
        assert!(prepare(vec![file("b.yaml", &big)], &Scope::default(), 10_000).is_ok());
    }

    #[test]
    fn errors_of_each_file_carry_its_own_name() {
        let bad = |port: u32| {
            format!("apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: p{port}}}\nspec:\n  selector: {{}}\n  ingress: [{{action: allow, ports: [{{protocol: TCP, port: {port}}}]}}]\n")
        };
        let files = vec![file("one.yaml", &bad(70000)), file("two.yaml", &bad(80000))];
        let Err(Error::BadInput { details, .. }) = prepare(files, &Scope::default(), 1 << 20)
        else {
            panic!("refused")
        };
        assert_eq!(details.len(), 2, "{details:?}");
        assert!(details[0].starts_with("one.yaml:6:"), "{details:?}");
        assert!(details[1].starts_with("two.yaml:6:"), "{details:?}");
    }
}
