//! `stats` latency on the agent's local API while idle and while a 100,000-rule policy is
//! compiled and applied, interleaved in one run (root: it loads the data plane on a veth
//! of its own). Each round enforces 100,000 rules, asking for `stats` until the answer
//! comes with the new revision, then one rule again, and asks while idle.
//!
//! cargo run --release -p microseg-agent --example stats_latency [-- --rounds N]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{hundred_thousand_rules, one_rule, Agent};

const STATS: &str = r#"{"cmd":"stats"}"#;
const STATUS: &str = r#"{"cmd":"status"}"#;
/// Between two requests, as a reader polling now and then would leave.
const GAP: Duration = Duration::from_millis(1);
/// Idle requests per round.
const IDLE: usize = 100;

/// Prints the agent's reload lines (how long each compile and apply took) and errors; it
/// receives each log line whole.
struct ReloadLines;

impl std::io::Write for ReloadLines {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(line);
        if text.contains("reloaded") || text.contains("ERROR") {
            print!("  agent: {text}");
        }
        Ok(line.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: u64 = match args.iter().position(|a| a == "--rounds") {
        Some(i) => args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| {
                eprintln!("--rounds N: how many 100,000-rule compiles");
                std::process::exit(2)
            }),
        None => 5,
    };
    let lines = tracing_subscriber::fmt()
        .without_time()
        .with_target(false)
        .with_writer(|| ReloadLines)
        .finish();
    let _ = tracing::subscriber::set_global_default(lines);
    let agent = Agent::start("bn", &one_rule());
    let (mut idle, mut during) = (Vec::new(), Vec::new());
    let big = hundred_thousand_rules();
    for round in 0..rounds {
        let in_force = 1 + 2 * round;
        agent.write_policy("policy.yaml", &big);
        agent.wait_for("the 100,000-rule update to be under way", |a| {
            a.request(STATUS)["updating"] == true
        });
        loop {
            std::thread::sleep(GAP);
            let (latency, revision) = timed(&agent);
            if revision != in_force {
                break; // answered with the new policy in force: the compile had ended
            }
            during.push(latency);
        }
        agent.write_policy("policy.yaml", &one_rule());
        agent.wait_for("one rule again", |a| {
            a.request(STATUS)["revision"] == in_force + 2
        });
        for _ in 0..IDLE {
            std::thread::sleep(GAP);
            idle.push(timed(&agent).0);
        }
    }
    println!(
        "stats latency through the local API ({rounds} rounds, one reader, {} ms between requests)",
        GAP.as_millis()
    );
    report("idle (1 rule)", &mut idle);
    report("during the compile", &mut during);
}

/// One `stats` request: its latency and the revision it was answered with.
fn timed(agent: &Agent) -> (Duration, u64) {
    let started = Instant::now();
    let answer = agent.request(STATS);
    let latency = started.elapsed();
    assert!(answer.get("error").is_none(), "{answer}");
    (latency, answer["revision"].as_u64().unwrap_or(0))
}

fn report(what: &str, latencies: &mut [Duration]) {
    if latencies.is_empty() {
        return println!("{what:>20}: no request answered");
    }
    latencies.sort();
    let at = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what:>20}: {:>5} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        ms(at(50)),
        ms(at(99)),
        ms(latencies[latencies.len() - 1])
    );
}
