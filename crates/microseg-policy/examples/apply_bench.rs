//! The agent's read and compile of the compare tool's 100,000-rule file (one policy of
//! `/32` CIDR rules), as a standalone agent does them: an empty policy first, then the
//! large file in its place (docs/PERFORMANCE.md section 12).
//!
//! cargo run --release -p microseg-policy --example apply_bench [-- --reps N --rules N]
//!
//! Each repetition uses a fresh `Loader` and `Compiler`; printed per repetition and as
//! medians: wall time and this thread's CPU time of the read (parse and validate) and of
//! the compile. With the agent's allocator (mimalloc) and, like the agent, without
//! transparent huge pages.

use std::time::{Duration, Instant};

use microseg_policy::compile::{Compiler, LocalEndpoint};
use microseg_policy::Loader;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORKLOADS: &str = "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: client, labels: {app: client}}\nspec: {interface: veth-cli, ips: [10.91.1.2]}\n---\napiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: server, labels: {app: server}}\nspec: {interface: veth-srv, ips: [10.91.2.2]}\n";

const HEAD: &str = "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: bench}\nspec:\n  selector: {matchLabels: {app: server}}\n";

/// The compare tool's policy of `n` rules (crates/microseg-compare/src/rules.rs).
fn policy(n: Option<usize>) -> String {
    let mut s = String::from(HEAD);
    let Some(n) = n else {
        s.push_str("  ingress: []\n");
        return s;
    };
    s.push_str("  ingress:\n");
    for i in 0..n - 1 {
        let a = 0xAC10_0000u32 + i as u32 + 1;
        let port = 1024 + (i % 60000) as u16;
        s.push_str(&format!(
            "    - action: allow\n      from: [{{cidr: {}.{}.{}.{}/32}}]\n      ports: [{{protocol: TCP, port: {port}}}]\n",
            a >> 24,
            (a >> 16) & 255,
            (a >> 8) & 255,
            a & 255
        ));
    }
    s.push_str("    - action: allow\n      from: [{cidr: 10.91.1.2/32}]\n      ports: [{protocol: TCP, port: 5201}, {protocol: TCP, port: 5202}, {protocol: UDP, port: 5203}, {protocol: TCP, port: 5204}]\n");
    s
}

/// This thread's CPU time so far (`CLOCK_THREAD_CPUTIME_ID`, from the C library std
/// links anyway).
fn thread_cpu() -> Duration {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: a valid clock id and a pointer to a timespec of the C layout.
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.sec as u64, ts.nsec as u32)
}

fn median(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    (ms(v[v.len() / 2]), ms(v[0]), ms(v[v.len() - 1]))
}

fn main() {
    extern "C" {
        fn prctl(option: i32, arg2: u64, arg3: u64, arg4: u64, arg5: u64) -> i32;
    }
    const PR_SET_THP_DISABLE: i32 = 41;
    // SAFETY: a plain flag for this process, as the agent sets it (its runtime.rs).
    unsafe { prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    let (mut reps, mut rules) = (7usize, 100_000usize);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().and_then(|v| v.parse().ok())) {
            ("--reps", Some(n)) if n > 0 => reps = n,
            ("--rules", Some(n)) if n > 0 => rules = n,
            _ => {
                eprintln!("usage: apply_bench [--reps N] [--rules N]");
                std::process::exit(2);
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("apply-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("workloads.yaml"), WORKLOADS).unwrap();
    let big = policy(Some(rules));
    let small = policy(None);
    let local = [
        LocalEndpoint {
            workload: "client".into(),
            ifindex: 2,
        },
        LocalEndpoint {
            workload: "server".into(),
            ifindex: 3,
        },
    ];
    let file = dir.join("policy.yaml");
    let mut cols: [Vec<Duration>; 4] = Default::default();
    println!("rep   read wall  read cpu  compile wall  compile cpu   (ms)");
    for rep in 0..reps {
        std::fs::write(&file, &small).unwrap();
        let mut loader = Loader::default();
        let mut compiler = Compiler::new();
        let set = loader.load(&[&dir]).expect("empty policy");
        assert!(compiler.compile(&set, &local).problems.is_empty());
        std::fs::write(&file, &big).unwrap();
        // A different length than the small file, so the loader reads it again.
        let (t, c) = (Instant::now(), thread_cpu());
        let set = loader.load(&[&dir]).expect("large policy");
        let (read, read_cpu) = (t.elapsed(), thread_cpu() - c);
        let (t, c) = (Instant::now(), thread_cpu());
        let compiled = compiler.compile(&set, &local);
        let (comp, comp_cpu) = (t.elapsed(), thread_cpu() - c);
        assert!(compiled.problems.is_empty(), "{}", compiled.problems[0]);
        assert_eq!(compiled.new_rule_ids.len(), rules);
        drop((compiled, set, compiler, loader));
        let row = [read, read_cpu, comp, comp_cpu];
        println!(
            "{rep:>3} {:>10.1} {:>9.1} {:>13.1} {:>12.1}",
            row[0].as_secs_f64() * 1e3,
            row[1].as_secs_f64() * 1e3,
            row[2].as_secs_f64() * 1e3,
            row[3].as_secs_f64() * 1e3
        );
        for (c, v) in cols.iter_mut().zip(row) {
            c.push(v);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let names = ["read wall", "read cpu", "compile wall", "compile cpu"];
    for (name, col) in names.iter().zip(cols) {
        let (m, lo, hi) = median(col);
        println!("{name:<13} median {m:7.1} ms  ({lo:.1}-{hi:.1})");
    }
}
