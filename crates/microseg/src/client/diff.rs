//! `policy diff -f FILE`: what applying the files would change, as a unified diff of each
//! stored resource's YAML against the file's (both canonical, as the controller stores
//! them). Exit status as `kubectl diff`: 0 no difference, 1 differences, 2 an error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use microseg_controller::api_types::{Document, List, Stored};
use microseg_controller::resources;
use microseg_policy::Resource;

use super::output::{esc, to_yaml};
use super::{call, client, invalid, ClientArgs, CommandError};

/// Lines of context around each change.
const CONTEXT: usize = 3;

pub fn diff(files: &[PathBuf], c: &ClientArgs) -> ExitCode {
    let run = || -> Result<bool, CommandError> {
        let res = crate::sources::load(files).map_err(invalid(""))?;
        let cl = client(c)?;
        // Each stored list read once, not one request per resource in the files.
        let mut stored = BTreeMap::new();
        for (kind, collection) in [
            (resources::POLICY, "/v1/policies"),
            (resources::WORKLOAD, "/v1/workloads"),
        ] {
            if res.iter().any(|r| resources::kind(r) == kind) {
                let list: List<Stored<Resource>> = call(&cl, "GET", collection, None)?;
                for s in list.items {
                    let name = resources::name(&s.resource).to_string();
                    stored.insert((kind, name), s.resource);
                }
            }
        }
        let mut differ = false;
        for r in &res {
            let (kind, name) = (resources::kind(r), resources::name(r));
            let old = stored
                .get(&(kind, name.to_string()))
                .map(|s| to_yaml(&s.to_document()));
            let new = to_yaml(&resources::to_json(r));
            if old.as_deref() == Some(new.as_str()) {
                continue;
            }
            differ = true;
            let what = format!("{}/{name}", kind.to_ascii_lowercase());
            outln!("--- {} (stored)", esc(&what));
            outln!("+++ {} ({})", esc(&what), esc(origin(r)));
            out!("{}", unified(old.as_deref().unwrap_or(""), &new));
        }
        Ok(differ)
    };
    match run() {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(1),
        Err(e) => {
            eprintln!("{}", e.report());
            ExitCode::from(2)
        }
    }
}

fn origin(r: &Resource) -> &str {
    match r {
        Resource::Workload(w) => &w.origin.file,
        Resource::Policy(p) => &p.origin.file,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Same,
    Del,
    Add,
}

/// The edit script from `a` to `b` by longest common subsequence; inputs too large for
/// the table are shown as a whole replaced.
fn edits<'t>(a: &[&'t str], b: &[&'t str]) -> Vec<(Op, &'t str)> {
    let (n, m) = (a.len(), b.len());
    if n.saturating_mul(m) > 16_000_000 {
        let del = a.iter().map(|l| (Op::Del, *l));
        return del.chain(b.iter().map(|l| (Op::Add, *l))).collect();
    }
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::with_capacity(n + m));
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push((Op::Same, a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push((Op::Del, a[i]));
            i += 1;
        } else {
            out.push((Op::Add, b[j]));
            j += 1;
        }
    }
    out
}

/// Hunks of `-`/`+` lines with `CONTEXT` lines around them, each under an `@@` header;
/// lines escaped for the terminal.
fn unified(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let ops = edits(&a, &b);
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != Op::Same).collect();
    let mut out = String::new();
    let mut k = 0;
    while k < changed.len() {
        // One hunk: changes closer than two contexts apart run together.
        let start = changed[k].saturating_sub(CONTEXT);
        let mut last = changed[k];
        while k + 1 < changed.len() && changed[k + 1] <= last + 2 * CONTEXT {
            k += 1;
            last = changed[k];
        }
        let end = (last + CONTEXT + 1).min(ops.len());
        let before = |op: Op| ops[..start].iter().filter(|(o, _)| *o != op).count();
        let count = |op: Op| ops[start..end].iter().filter(|(o, _)| *o != op).count();
        let (old_len, new_len) = (count(Op::Add), count(Op::Del));
        out.push_str(&format!(
            "@@ -{},{old_len} +{},{new_len} @@\n",
            before(Op::Add) + usize::from(old_len > 0),
            before(Op::Del) + usize::from(new_len > 0),
        ));
        for (op, line) in &ops[start..end] {
            let mark = match op {
                Op::Same => ' ',
                Op::Del => '-',
                Op::Add => '+',
            };
            out.push(mark);
            out.push_str(&esc(line));
            out.push('\n');
        }
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unified;

    #[test]
    fn a_changed_line_shows_as_minus_and_plus_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\ni\nj\n";
        let d = unified(old, new);
        assert_eq!(
            d,
            "@@ -2,8 +2,9 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n i\n+j\n"
        );
        assert_eq!(unified(old, old), "");
        assert_eq!(unified("", "x\n"), "@@ -0,0 +1,1 @@\n+x\n");
    }
}
