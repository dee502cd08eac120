//! IP protocols the parser has no ports for, judged by protocol rules and defaults.

use microseg_dataplane::{common::*, packet::*, Hook};

use crate::common::*;
use crate::helpers::*;

#[test]
fn unknown_ip_protocols_are_judged_by_protocol_rules_and_defaults() {
    let mut env = env();
    // Every verdict, allowed ones too, read from its NEW event.
    env.dp.set_report_start(true).unwrap();
    let gre = |s, d| Frame::new(s, d, 47, vec![0u8; 24]);
    let nonext = |s, d| Frame::new(s, d, 59, vec![0u8; 24]);
    assert!(
        ingress(&env, &gre(web4(), db4())),
        "GRE allowed by {{protocol: 47}}"
    );
    assert!(
        ingress(&env, &gre(web6(), db6())),
        "GRE over IPv6 allowed by {{protocol: 47}}"
    );
    assert!(
        !ingress(&env, &nonext(web4(), db4())),
        "protocol 59 default-denied"
    );
    assert!(
        !ingress(&env, &nonext(web6(), db6())),
        "IPv6 no-next-header default-denied"
    );
    let ev = env.new_events();
    assert_eq!(ev.len(), 4);
    let rule = env.rule_id("db-ingress", microseg_policy::Direction::Ingress, 0);
    assert_eq!(
        (ev[0].protocol, ev[0].verdict, ev[0].rule_id),
        (47, verdict::ALLOW, rule)
    );
    assert_eq!(
        (ev[1].protocol, ev[1].verdict, ev[1].rule_id),
        (47, verdict::ALLOW, rule)
    );
    assert_eq!(
        (ev[2].protocol, ev[2].verdict, ev[2].rule_id),
        (59, verdict::DENY, RULE_DEFAULT_DENY)
    );
    assert_eq!(
        (ev[3].protocol, ev[3].verdict, ev[3].rule_id),
        (59, verdict::DENY, RULE_DEFAULT_DENY)
    );
    // db's egress has no policy: open, for unknown protocols too (to a peer with no
    // session: web's protocol-59 "connection" was denied, and so is its reply direction).
    assert!(passes(
        &env,
        Hook::FromWorkload,
        &nonext(db4(), ip("10.9.9.9")).bytes()
    ));
    assert!(!passes(
        &env,
        Hook::FromWorkload,
        &nonext(db4(), web4()).bytes()
    ));
    assert_eq!(stats(&env).parse_errors, 0);
}
