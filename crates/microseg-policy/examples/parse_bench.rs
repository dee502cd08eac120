//! The quick YAML reader against the general one, on the inputs users apply, next to
//! the compile of the same set.
//!
//! cargo run --release -p microseg-policy --example parse_bench [-- --reps N]
//!
//! Each input is parsed with `parse_str` as it is (quick reader first) and without the
//! quick reader, alternating, in one process; the figures are medians.

use std::time::{Duration, Instant};

use microseg_policy::{compile, parse_str_with, Resource, ResourceSet};

const SMALL: &str = concat!(
    include_str!("../../../examples/demo/workloads.yaml"),
    "---\n",
    include_str!("../../../examples/demo/policies.yaml")
);

/// Workloads with interfaces, labelled `app: app-N`, so that the policies select them.
fn workloads(n: usize) -> String {
    let mut y = String::new();
    for w in 0..n {
        y += &format!(
            "apiVersion: microseg.io/v1\nkind: Workload\nmetadata:\n  name: app-{w}\n  labels: {{app: app-{w}, env: prod}}\nspec:\n  interface: veth{w}\n  ips: [10.200.{}.{}]\n---\n",
            w / 250,
            w % 250 + 1
        );
    }
    y
}

/// 30,000 policies of two rules each in block style, with 300 workloads: a large
/// cluster's whole set in one file, as `microseg apply -f` sends it.
fn many_policies() -> String {
    let mut y = workloads(300);
    for i in 0..30_000 {
        y += &format!(
            "apiVersion: microseg.io/v1\nkind: Policy\nmetadata:\n  name: team-{i}\nspec:\n  selector:\n    matchLabels: {{app: app-{}}}\n  priority: {}\n  ingress:\n    - action: allow\n      from:\n        - selector: {{matchLabels: {{app: app-{}}}}}\n        - cidr: 10.{}.0.0/16\n      ports: [{{protocol: TCP, port: {}}}]\n    - action: deny\n      ports: [{{protocol: UDP, port: 53}}]\n---\n",
            i % 300,
            i % 1000,
            (i + 1) % 300,
            i % 200,
            8000 + i % 1000
        );
    }
    y
}

/// 100 policies of 1,000 flow-style rules each (100,000 rules), with three workloads.
fn many_rules() -> String {
    let mut y = workloads(3);
    for p in 0..100 {
        y += &format!(
            "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: big-{p}}}\nspec:\n  selector: {{matchLabels: {{app: app-{}}}}}\n  ingress:\n",
            p % 3
        );
        for port in 20_000..21_000 {
            y += &format!(
                "    - action: allow\n      from: [{{selector: {{matchLabels: {{app: app-{}}}}}}}]\n      ports: [{{protocol: TCP, port: {port}}}]\n",
                (p + 1) % 3
            );
        }
        y += "---\n";
    }
    y
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn parse(text: &str, quick_reader: bool) -> (Vec<Resource>, Duration) {
    let t = Instant::now();
    let (resources, diags) = parse_str_with("bench.yaml", text, quick_reader);
    let took = t.elapsed();
    assert!(diags.is_empty(), "{}", diags[0]);
    (resources, took)
}

fn secs(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.3} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.3} s", d.as_secs_f64())
    }
}

fn run(name: &str, text: &str, reps: usize) {
    let (mut quick, mut general, mut compiles) = (Vec::new(), Vec::new(), Vec::new());
    let mut count = 0;
    for rep in 0..reps {
        // Alternate which reader goes first, so neither always finds a warm cache.
        let order = if rep % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let mut results = Vec::new();
        for quick_reader in order {
            let (resources, took) = parse(text, quick_reader);
            if quick_reader {
                quick.push(took);
            } else {
                general.push(took);
            }
            results.push(resources);
        }
        assert!(results[0] == results[1], "{name}: the readers disagree");
        let set: ResourceSet = results.pop().unwrap().into_iter().collect();
        count = set.policies.len() + set.workloads.len();
        let t = Instant::now();
        let (compiled, problems) = compile::compile_everywhere(&set);
        compiles.push(t.elapsed());
        assert!(problems.is_empty(), "{name}: {}", problems[0]);
        drop(compiled);
    }
    let (q, g, c) = (median(quick), median(general), median(compiles));
    let size = match text.len() {
        n if n < 100_000 => format!("{:.1} kB", n as f64 / 1e3),
        n => format!("{:.1} MB", n as f64 / 1e6),
    };
    println!(
        "{name:<24} {size:>11} {count:>7} {:>11} {:>11} {:>6.2}x {:>11} {:>11}",
        secs(q),
        secs(g),
        g.as_secs_f64() / q.as_secs_f64(),
        secs(g.saturating_sub(q)),
        secs(c),
    );
}

fn main() {
    let mut reps = 7;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--reps", Some(n)) if n > 0 => reps = n,
            _ => {
                eprintln!("usage: parse_bench [--reps N]  (N > 0, default 7)");
                std::process::exit(2);
            }
        }
    }
    println!(
        "medians of {reps} alternating runs (the small file: {} runs)",
        reps * 100
    );
    println!(
        "{:<24} {:>11} {:>7} {:>11} {:>11} {:>7} {:>11} {:>11}",
        "input", "size", "res.", "quick", "general", "ratio", "saving", "compile"
    );
    run("30,000 policies", &many_policies(), reps);
    run("100,000 rules", &many_rules(), reps);
    run("demo (examples/demo)", SMALL, reps * 100);
}
