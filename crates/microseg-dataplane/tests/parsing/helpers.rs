//! What every parsing test shares: db accepting a few protocols, and ways to run and count frames.

use microseg_dataplane::{common::Stats, packet::Frame, Hook};

use crate::common::*;

/// db (on lo) accepts TCP 80, UDP 53, SCTP 9000, ICMP, ICMPv6 and GRE (47) from anyone;
/// anything else is default-denied. Its egress is open (no policy has an egress section).
pub const POLICY: &str = r#"
apiVersion: microseg.io/v1
kind: Policy
metadata: {name: db-ingress}
spec:
  selector: {matchLabels: {app: db}}
  ingress:
    - action: allow
      ports:
        - {protocol: TCP, port: 80}
        - {protocol: UDP, port: 53}
        - {protocol: SCTP, port: 9000}
        - {protocol: ICMP}
        - {protocol: ICMPv6}
        - {protocol: 47}
"#;

pub fn env() -> Env {
    Env::new(&with(POLICY), "db")
}

pub fn ingress(env: &Env, frame: &Frame) -> bool {
    passes(env, Hook::ToWorkload, &frame.bytes())
}

pub fn stats(env: &Env) -> Stats {
    env.dp.stats().expect("stats")
}

/// Runs `frame` into db and asserts it is dropped as malformed (parse_errors +1, no verdict
/// from policy: neither allowed nor denied counters move).
pub fn assert_malformed(env: &Env, hook: Hook, frame: &[u8], what: &str) {
    let before = stats(env);
    assert!(!passes(env, hook, frame), "{what}: passed");
    let after = stats(env);
    assert_eq!(
        after.parse_errors,
        before.parse_errors + 1,
        "{what}: parse_errors"
    );
    assert_eq!(after.allowed(), before.allowed(), "{what}: judged allowed");
    assert_eq!(
        after.session_misses, before.session_misses,
        "{what}: reached the policy path"
    );
}
