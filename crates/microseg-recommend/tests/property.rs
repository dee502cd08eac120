//! Property test over random workloads, labels and traffic (docs/RECOMMEND.md
//! "Guarantees"): the recommendation allows every observed allowed connection, denies a
//! connection between groups never seen talking, writes the same bytes for the same flows
//! in any order, and never selects by a per-instance label.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use microseg_flowstore::{Edge, Endpoint, Protocol, Timestamp, Verdict};
use microseg_policy::{
    evaluate, parse_str, Direction, Mode, Packet, Peer, Policy, ResourceSet, Verdict as V, Workload,
};
use microseg_recommend::{preview, recommend, to_yaml, Input, Options, PER_INSTANCE_LABELS};
use proptest::prelude::*;

/// (source workload, destination: workload or address, protocol, port, verdict)
type Traffic = (usize, (bool, usize), u8, u16, u8);

#[derive(Debug, Clone)]
struct Spec {
    /// Per workload: its app (None: no app label) and tier.
    workloads: Vec<(Option<u8>, Option<u8>)>,
    traffic: Vec<Traffic>,
}

fn spec() -> impl Strategy<Value = Spec> {
    let workload = (
        prop::option::weighted(0.85, 0u8..4),
        prop::option::of(0u8..2),
    );
    (prop::collection::vec(workload, 2..9)).prop_flat_map(|workloads| {
        let n = workloads.len();
        let dst = (any::<bool>(), 0usize..16).prop_map(move |(to_workload, i)| {
            if to_workload {
                (true, i % n)
            } else {
                (false, i)
            }
        });
        let proto = prop::sample::select(vec![6u8, 17, 1, 58]);
        let port = prop::sample::select(vec![
            22u16, 53, 80, 443, 5432, 8000, 8001, 8002, 8003, 8005, 8006, 8007, 8008, 8009, 9000,
        ]);
        let t = (0..n, dst, proto, port, 0u8..4);
        (Just(workloads), prop::collection::vec(t, 1..40))
            .prop_map(|(workloads, traffic)| Spec { workloads, traffic })
    })
}

fn name(i: usize) -> String {
    format!("w{i}")
}

/// Workloads 10.1.0.i; addresses elsewhere (192.0.2.0/24, 198.51.100.0/24, 2001:db8::/64).
fn build(s: &Spec) -> (Vec<Workload>, Vec<Edge>) {
    let workloads: Vec<Workload> = s
        .workloads
        .iter()
        .enumerate()
        .map(|(i, (app, tier))| {
            let mut labels = BTreeMap::new();
            labels.insert("netns".to_string(), name(i));
            labels.insert("pod-template-hash".to_string(), format!("h{i}x"));
            if let Some(a) = app {
                labels.insert("app".to_string(), format!("app{a}"));
            }
            if let Some(t) = tier {
                labels.insert("tier".to_string(), format!("t{t}"));
            }
            Workload {
                name: name(i),
                labels,
                interface: None,
                ips: vec![format!("10.1.0.{}", i + 1).parse().unwrap()],
                mode: Mode::Enforce,
                origin: Default::default(),
            }
        })
        .collect();
    let end = |w: &Workload| Endpoint::Workload {
        workload: w.name.clone(),
        labels: w.labels.clone(),
    };
    let edges = s
        .traffic
        .iter()
        .enumerate()
        .map(|(k, &(src, (to_wl, d), proto, port, verdict))| {
            let dst = if to_wl {
                end(&workloads[d])
            } else if proto == 58 {
                Endpoint::Address {
                    ip: format!("2001:db8::{}", d + 1),
                }
            } else if d < 10 {
                Endpoint::Address {
                    ip: format!("192.0.2.{}", d + 1),
                }
            } else {
                Endpoint::Address {
                    ip: format!("198.51.100.{}", d),
                }
            };
            // ICMPv6 only to IPv6 addresses: a workload here has only IPv4.
            let proto = if proto == 58 && to_wl { 1 } else { proto };
            Edge {
                src: end(&workloads[src]),
                dst,
                protocol: Protocol(proto),
                dst_port: if proto == 1 || proto == 58 { 0 } else { port },
                verdict: [Verdict::Allow, Verdict::Log, Verdict::Audit, Verdict::Deny]
                    [verdict as usize],
                policy: None,
                connections: 1 + k as u64 % 3,
                packets: 5,
                bytes: 500,
                first_seen: Timestamp(1_800_000_000_000_000 + k as i64),
                last_seen: Timestamp(1_800_000_000_000_000 + 10 * k as i64),
            }
        })
        .collect();
    (workloads, edges)
}

fn ip_of(set: &ResourceSet, end: &Endpoint) -> IpAddr {
    match end {
        Endpoint::Workload { workload, .. } => set.workload(workload).unwrap().ips[0],
        Endpoint::Address { ip } => ip.parse().unwrap(),
    }
}

fn denied(v: V) -> bool {
    matches!(v, V::Deny | V::Audit)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn recommendations_hold_their_guarantees(s in spec()) {
        let (workloads, edges) = build(&s);
        let input = Input { edges: &edges, workloads: &workloads, policies: &[] };
        let rec = match recommend(input, &Options::default()) {
            Ok(r) => r,
            Err(e) => {
                // Only bad input may refuse: a window of denied traffic only, or no
                // workload with the grouping label.
                let only_denied = edges.iter().all(|e| e.verdict == Verdict::Deny);
                let no_app = workloads.iter().all(|w| !w.labels.contains_key("app"));
                prop_assert!(only_denied || no_app, "{e}");
                return Ok(());
            }
        };
        let yaml = to_yaml(&rec);

        // It reads back as it was meant.
        let (parsed, diags) = parse_str("r.yaml", &yaml);
        prop_assert!(diags.is_empty(), "{diags:?}\n{yaml}");
        prop_assert_eq!(parsed.len(), rec.policies.len());

        // The same bytes whatever the order of the edges and workloads.
        let mut shuffled = edges.clone();
        shuffled.reverse();
        shuffled.rotate_left(edges.len() / 3);
        let mut wl_rev = workloads.clone();
        wl_rev.reverse();
        let again = recommend(Input { edges: &shuffled, workloads: &wl_rev, policies: &[] }, &Options::default()).unwrap();
        prop_assert_eq!(&yaml, &to_yaml(&again));

        // No per-instance label in any selector.
        let policies: Vec<Arc<Policy>> = rec.policies.iter().map(|p| {
            let mut p = p.policy.clone();
            p.mode = Mode::Enforce;
            Arc::new(p)
        }).collect();
        for p in &policies {
            let mut sels = vec![&p.selector];
            for r in p.ingress.iter().chain(&p.egress).flatten() {
                for peer in &r.peers {
                    if let Peer::Selector(s) = peer { sels.push(s); }
                }
            }
            for sel in sels {
                let keys = sel.match_labels.keys().chain(sel.match_expressions.iter().map(|r| &r.key));
                for k in keys {
                    prop_assert!(!PER_INSTANCE_LABELS.contains(&k.as_str()), "{k} in\n{yaml}");
                }
            }
        }

        // Every observed connection that passed passes the proposed policies (enforced).
        let set = ResourceSet { workloads: workloads.clone(), policies };
        let mut talked: BTreeSet<(String, String)> = BTreeSet::new();
        for e in edges.iter().filter(|e| e.verdict != Verdict::Deny) {
            let packet = Packet { src: ip_of(&set, &e.src), dst: ip_of(&set, &e.dst), protocol: e.protocol.0, src_port: 40000, dst_port: e.dst_port };
            for (end, dir) in [(&e.src, Direction::Egress), (&e.dst, Direction::Ingress)] {
                if let Endpoint::Workload { workload, .. } = end {
                    let d = evaluate(&set, set.workload(workload).unwrap(), dir, &packet);
                    prop_assert!(!denied(d.verdict), "{e:?} denied at {workload} {dir}: {d:?}\n{yaml}");
                }
            }
            if let (Endpoint::Workload { workload: a, .. }, Endpoint::Workload { workload: b, .. }) = (&e.src, &e.dst) {
                talked.insert((a.clone(), b.clone()));
            }
        }
        prop_assert_eq!(preview(&rec, &edges, &[]).would_deny(), 0);

        // Groups never seen talking (in that direction) are denied where a policy applies.
        let group = |w: &Workload| (w.labels.get("app").cloned(), if w.labels.contains_key("app") { None } else { w.labels.get("tier").cloned() });
        let talked_groups: BTreeSet<_> = talked.iter().map(|(a, b)| (group(set.workload(a).unwrap()), group(set.workload(b).unwrap()))).collect();
        let selected = |w: &Workload| set.policies.iter().any(|p| p.selector.matches(&w.labels));
        for a in &workloads {
            for b in &workloads {
                if talked_groups.contains(&(group(a), group(b))) {
                    continue;
                }
                let packet = Packet { src: a.ips[0], dst: b.ips[0], protocol: 6, src_port: 40000, dst_port: 5432 };
                if selected(a) {
                    let d = evaluate(&set, a, Direction::Egress, &packet);
                    prop_assert!(denied(d.verdict), "{} -> {} allowed at egress: {d:?}\n{yaml}", a.name, b.name);
                }
                if selected(b) {
                    let d = evaluate(&set, b, Direction::Ingress, &packet);
                    prop_assert!(denied(d.verdict), "{} -> {} allowed at ingress: {d:?}\n{yaml}", a.name, b.name);
                }
            }
        }
    }
}
