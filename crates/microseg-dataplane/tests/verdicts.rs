//! Policies compiled and loaded into the kernel program give the contract's verdicts.

mod common;

use common::*;
use microseg_dataplane::{packet::*, Hook};

const DB_INGRESS: &str = r#"
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
    let env = Env::new(&with(DB_INGRESS), "db");
    let (web, db, other) = (web4(), db4(), ip("10.9.9.9"));
    let to_db = |f: Frame| passes(&env, Hook::ToWorkload, &f.bytes());
    assert!(to_db(Frame::tcp(web, db, 40000, 5432, TCP_SYN)));
    assert!(
        !to_db(Frame::tcp(web, db, 40001, 5433, TCP_SYN)),
        "another port"
    );
    assert!(
        !to_db(Frame::tcp(other, db, 40002, 5432, TCP_SYN)),
        "another peer"
    );
    // The reply of the allowed connection passes db's egress (no egress policy: open anyway).
    let reply = Frame::tcp(db, web, 5432, 40000, TCP_SYN | TCP_ACK);
    assert!(passes(&env, Hook::FromWorkload, &reply.bytes()));
    let st = env.dp.stats().unwrap();
    assert_eq!(st.denied(), 2);
    assert_eq!(st.allowed(), 2);
}
