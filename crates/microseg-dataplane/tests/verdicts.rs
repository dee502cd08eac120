//! Policies compiled and loaded into the kernel program give the contract's verdicts.

mod common;

use common::resources;
use microseg_dataplane::{packet::*, Dataplane, Hook, LoadOptions};
use microseg_policy::compile::*;

const BASE: &str = r#"
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: db, labels: {app: db}}
spec: {interface: lo, ips: [10.1.0.3, "fd00::3"]}
---
apiVersion: microseg.io/v1
kind: Workload
metadata: {name: web, labels: {app: web}}
spec: {interface: web0, ips: [10.1.0.2, "fd00::2"]}
---
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-ingress}
spec:
  selector: {matchLabels: {app: db}}
  ingress:
    - action: allow
      from: [{selector: {matchLabels: {app: web}}}]
      ports: [{protocol: TCP, port: 5432}]
"#;

#[test]
fn selector_rule_allows_web_and_default_denies_others() {
    let set = resources(BASE);
    let mut c = Compiler::new();
    let compiled = c.compile(
        &set,
        &[LocalEndpoint {
            workload: "db".into(),
            ifindex: 1,
        }],
    );
    let mut dp = Dataplane::load(&LoadOptions {
        sessions: 4096,
        ..Default::default()
    })
    .unwrap();
    dp.apply(&compiled.tables).unwrap();
    let web = "10.1.0.2".parse().unwrap();
    let db = "10.1.0.3".parse().unwrap();
    let other = "10.9.9.9".parse().unwrap();
    let ok = dp
        .test_run(
            Hook::ToWorkload,
            &Frame::tcp(web, db, 40000, 5432, TCP_SYN).bytes(),
            1,
            1,
        )
        .unwrap();
    assert!(ok.passed());
    let bad_port = dp
        .test_run(
            Hook::ToWorkload,
            &Frame::tcp(web, db, 40001, 5433, TCP_SYN).bytes(),
            1,
            1,
        )
        .unwrap();
    assert!(!bad_port.passed());
    let bad_peer = dp
        .test_run(
            Hook::ToWorkload,
            &Frame::tcp(other, db, 40002, 5432, TCP_SYN).bytes(),
            1,
            1,
        )
        .unwrap();
    assert!(!bad_peer.passed());
    // The reply of the allowed connection passes db's egress (no egress policy: open anyway).
    let reply = dp
        .test_run(
            Hook::FromWorkload,
            &Frame::tcp(db, web, 5432, 40000, TCP_SYN | TCP_ACK).bytes(),
            1,
            1,
        )
        .unwrap();
    assert!(reply.passed());
    let st = dp.stats().unwrap();
    assert_eq!(st.denied(), 2);
    assert_eq!(st.allowed(), 2);
}
