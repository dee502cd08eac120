//! Helpers shared by the data-plane integration tests: resources from YAML, a loaded data
//! plane with them applied, addresses, frames run into and out of the local workload and
//! the verdict they got.
#![allow(dead_code)]

use std::net::IpAddr;

use microseg_dataplane::{common::*, packet::Frame, Dataplane, Hook, LoadOptions};
use microseg_policy::{compile::*, parse_str, ResourceSet};

/// ifindex of `lo`: the local workload of every test sits on it.
pub const LO: u32 = 1;

pub fn resources(yaml: &str) -> ResourceSet {
    let (res, diags) = parse_str("test.yaml", yaml);
    assert!(diags.is_empty(), "diagnostics for:\n{yaml}\n{diags:?}");
    let set: ResourceSet = res.into_iter().collect();
    let diags = microseg_policy::validate_set(&set);
    assert!(diags.is_empty(), "diagnostics for:\n{yaml}\n{diags:?}");
    set
}

pub fn load() -> Dataplane {
    load_with_sessions(4096)
}

pub fn load_with_sessions(sessions: u32) -> Dataplane {
    load_with_tables(sessions, capacity::DENIED)
}

/// Room for `sessions` sessions and `denied` denied tuples (`MSEG_DENIED`).
pub fn load_with_tables(sessions: u32, denied: u32) -> Dataplane {
    Dataplane::load(&LoadOptions {
        sessions,
        denied,
        ..Default::default()
    })
    .expect("load the data plane")
}

/// A data plane, a compiler and the compile of `yaml` for the local workload `local`, applied.
pub struct Env {
    pub dp: Dataplane,
    pub compiler: Compiler,
    pub compiled: Compiled,
    pub local: String,
}

impl Env {
    pub fn new(yaml: &str, local: &str) -> Env {
        Env::with_sessions(yaml, local, 4096)
    }

    /// As `new`, with `REPORT_START` set: for tests that read every verdict, allowed ones
    /// too, from its NEW event.
    pub fn reporting(yaml: &str, local: &str) -> Env {
        let mut env = Env::new(yaml, local);
        env.dp.set_report_start(true).expect("set REPORT_START");
        env
    }

    /// As `new`, with room for `sessions` sessions.
    pub fn with_sessions(yaml: &str, local: &str, sessions: u32) -> Env {
        Env::with_tables(yaml, local, sessions, capacity::DENIED)
    }

    /// As `new`, with room for `sessions` sessions and `denied` denied tuples.
    pub fn with_tables(yaml: &str, local: &str, sessions: u32, denied: u32) -> Env {
        let mut dp = load_with_tables(sessions, denied);
        let mut compiler = Compiler::new();
        let compiled = compiler.compile(
            &resources(yaml),
            &[LocalEndpoint {
                workload: local.into(),
                ifindex: LO,
            }],
        );
        dp.apply(&compiled.tables).expect("apply");
        Env {
            dp,
            compiler,
            compiled,
            local: local.into(),
        }
    }

    /// Compiles and applies another resource set (a policy change).
    pub fn reapply(&mut self, yaml: &str) {
        let local = self.local.clone();
        self.compiled = self.compiler.compile(
            &resources(yaml),
            &[LocalEndpoint {
                workload: local,
                ifindex: LO,
            }],
        );
        self.dp.apply(&self.compiled.tables).expect("apply");
    }

    /// Rule id of rule `index` in `policy`'s section for `direction`.
    pub fn rule_id(&self, policy: &str, direction: microseg_policy::Direction, index: u32) -> u32 {
        *self
            .compiled
            .rules
            .iter()
            .find(|(_, r)| &*r.policy == policy && r.direction == direction && r.index == index)
            .unwrap_or_else(|| panic!("no rule {policy}/{direction:?}/{index}"))
            .0
    }

    pub fn policy_of(&self, rule_id: u32) -> Option<String> {
        rule_policy_name(&self.compiled.rules, rule_id)
    }

    /// The NEW events waiting, oldest first.
    pub fn new_events(&mut self) -> Vec<FlowEvent> {
        self.dp
            .drain_events()
            .into_iter()
            .filter(|e| e.kind == event_kind::NEW)
            .collect()
    }
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| panic!("bad address {s}"))
}

/// The two workloads most tests use: db on `lo` (the local endpoint) and web elsewhere.
pub const WORKLOADS: &str = r#"
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: db, labels: {app: db}}
spec: {interface: lo, ips: [10.1.0.3, "fd00::3"]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: web, labels: {app: web}}
spec: {interface: web0, ips: [10.1.0.2, "fd00::2"]}
"#;

/// db accepts web on TCP 5432 and nothing else.
pub const DB_ALLOWS_WEB: &str = r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-ingress}
spec:
  selector: {matchLabels: {app: db}}
  ingress: [{action: allow, from: [{selector: {matchLabels: {app: web}}}], ports: [{protocol: TCP, port: 5432}]}]
"#;

/// db accepts nothing.
pub const DB_DENIES_ALL: &str = r#"apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-ingress}
spec:
  selector: {matchLabels: {app: db}}
  ingress: []
"#;

/// [`WORKLOADS`] followed by `policies`.
pub fn with(policies: &str) -> String {
    format!("{WORKLOADS}---\n{policies}")
}

pub fn db4() -> IpAddr {
    ip("10.1.0.3")
}
pub fn web4() -> IpAddr {
    ip("10.1.0.2")
}
/// web:40000 → db:5432 over TCP: the connection most tests follow.
pub fn web_to_db(tcp_flags: u8) -> Frame {
    Frame::tcp(web4(), db4(), 40000, 5432, tcp_flags)
}
/// Its reply, db:5432 → web:40000.
pub fn db_to_web(tcp_flags: u8) -> Frame {
    Frame::tcp(db4(), web4(), 5432, 40000, tcp_flags)
}
pub fn db6() -> IpAddr {
    ip("fd00::3")
}
pub fn web6() -> IpAddr {
    ip("fd00::2")
}

/// Runs one frame through `hook` of the endpoint on `lo`; true when it passed.
pub fn passes(env: &Env, hook: Hook, frame: &[u8]) -> bool {
    env.dp
        .test_run(hook, frame, LO, 1)
        .expect("test run")
        .passed()
}

/// Runs `f` into the local workload (db in most tests); true when it passed.
pub fn into_db(env: &Env, f: &Frame) -> bool {
    passes(env, Hook::ToWorkload, &f.bytes())
}

/// Runs `f` out of the local workload (db in most tests); true when it passed.
pub fn from_db(env: &Env, f: &Frame) -> bool {
    passes(env, Hook::FromWorkload, &f.bytes())
}

/// The single NEW event of the last packet: (verdict, rule id). An allowed one is sent only
/// under `REPORT_START` (see [`Env::reporting`]).
pub fn verdict_of(env: &mut Env) -> (u8, u32) {
    let ev = env.new_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    (ev[0].verdict, ev[0].rule_id)
}
