//! A compile that reuses the previous one must give exactly the tables a compile from
//! scratch gives (with the same numbering), and its changes must turn the previous tables
//! into the new ones. Checked over random policy sets and random edits of them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use microseg_common::tables::Tables;
use microseg_policy::compile::{Compiler, LocalEndpoint};
use microseg_policy::{
    Action, IpNet, LabelSelector, Mode, Origin, Peer, Policy, PortMatch, PortRange, ResourceSet,
    Rule, Workload,
};
use proptest::prelude::*;

const CIDRS: [&str; 6] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.3/32",
    "192.168.0.0/24",
    "fd00::/64",
    "0.0.0.0/0",
];
const APPS: [&str; 3] = ["web", "db", "cache"];

fn cidr(i: usize) -> IpNet {
    let (a, l) = CIDRS[i].split_once('/').unwrap();
    IpNet::new(a.parse().unwrap(), l.parse().unwrap()).unwrap()
}

fn labels(app: usize) -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), APPS[app].to_string())])
}

fn selector(app: usize) -> LabelSelector {
    LabelSelector {
        match_labels: labels(app),
        ..Default::default()
    }
}

#[derive(Clone, Debug)]
enum PeerSpec {
    Any,
    Cidr(usize, Option<usize>),
    App(usize),
}

#[derive(Clone, Debug)]
struct RuleSpec {
    action: u8,
    peer: PeerSpec,
    /// (protocol, first port, width); None = any protocol.
    port: Option<(u8, u16, u16)>,
    source_port: Option<u16>,
}

#[derive(Clone, Debug)]
struct PolicySpec {
    app: usize,
    priority: u32,
    audit: bool,
    ingress: Vec<RuleSpec>,
    egress: Option<Vec<RuleSpec>>,
}

#[derive(Clone, Debug)]
enum Edit {
    /// Replace rule `rule` of policy `policy` (indices taken modulo the lengths).
    Rule(usize, usize, RuleSpec),
    AddRule(usize, RuleSpec),
    DropRule(usize, usize),
    Priority(usize, u32),
    AddPolicy(PolicySpec),
    DropPolicy(usize),
    /// Workload `w` gets app label `app`: identities change.
    Relabel(usize, usize),
}

fn peer() -> impl Strategy<Value = PeerSpec> {
    prop_oneof![
        Just(PeerSpec::Any),
        (0..CIDRS.len(), prop::option::weighted(0.2, 0..CIDRS.len()))
            .prop_map(|(c, e)| PeerSpec::Cidr(c, e)),
        (0..APPS.len()).prop_map(PeerSpec::App),
    ]
}

fn rule() -> impl Strategy<Value = RuleSpec> {
    (
        0..3u8,
        peer(),
        prop::option::weighted(
            0.8,
            (
                prop::sample::select(vec![6u8, 17, 1]),
                prop::sample::select(vec![80u16, 443, 1000]),
                prop::sample::select(vec![0u16, 0, 5, 100]),
            ),
        ),
        prop::option::weighted(0.15, prop::sample::select(vec![53u16, 2000])),
    )
        .prop_map(|(action, peer, port, source_port)| RuleSpec {
            action,
            peer,
            port,
            source_port,
        })
}

fn policy() -> impl Strategy<Value = PolicySpec> {
    (
        0..APPS.len(),
        prop::sample::select(vec![10u32, 1000]),
        prop::bool::weighted(0.2),
        prop::collection::vec(rule(), 0..5),
        prop::option::of(prop::collection::vec(rule(), 0..3)),
    )
        .prop_map(|(app, priority, audit, ingress, egress)| PolicySpec {
            app,
            priority,
            audit,
            ingress,
            egress,
        })
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (0..8usize, 0..8usize, rule()).prop_map(|(p, r, s)| Edit::Rule(p, r, s)),
        3 => (0..8usize, rule()).prop_map(|(p, s)| Edit::AddRule(p, s)),
        2 => (0..8usize, 0..8usize).prop_map(|(p, r)| Edit::DropRule(p, r)),
        1 => (0..8usize, prop::sample::select(vec![5u32, 10, 1000])).prop_map(|(p, v)| Edit::Priority(p, v)),
        1 => policy().prop_map(Edit::AddPolicy),
        1 => (0..8usize).prop_map(Edit::DropPolicy),
        1 => (0..4usize, 0..APPS.len()).prop_map(|(w, a)| Edit::Relabel(w, a)),
    ]
}

fn to_rule(r: &RuleSpec) -> Rule {
    Rule {
        action: [Action::Allow, Action::Deny, Action::Log][r.action as usize],
        peers: match &r.peer {
            PeerSpec::Any => vec![],
            PeerSpec::Cidr(c, e) => vec![Peer::Cidr {
                cidr: cidr(*c),
                except: e
                    .map(cidr)
                    .filter(|x| *x != cidr(*c) && cidr(*c).contains_net(x))
                    .into_iter()
                    .collect(),
            }],
            PeerSpec::App(a) => vec![Peer::Selector(selector(*a))],
        },
        ports: match r.port {
            None => vec![],
            Some((1, _, _)) => vec![PortMatch {
                protocol: 1,
                ports: None,
            }],
            Some((p, start, width)) => vec![PortMatch {
                protocol: p,
                ports: Some(PortRange {
                    start,
                    end: start + width,
                }),
            }],
        },
        source_ports: r
            .source_port
            .filter(|_| !matches!(r.port, Some((1, _, _))))
            .map(|s| PortRange { start: s, end: s })
            .into_iter()
            .collect(),
    }
}

fn to_policy(name: &str, p: &PolicySpec) -> Policy {
    Policy {
        name: name.to_string(),
        selector: selector(p.app),
        priority: p.priority,
        mode: if p.audit { Mode::Audit } else { Mode::Enforce },
        ingress: Some(p.ingress.iter().map(to_rule).collect()),
        egress: p.egress.as_ref().map(|e| e.iter().map(to_rule).collect()),
        origin: Origin::default(),
    }
}

fn workloads(apps: &[usize; 4]) -> Vec<Workload> {
    let ips: [&[&str]; 4] = [
        &["10.1.2.3"],
        &["10.1.9.9", "fd00::9"],
        &["192.168.0.7"],
        &["172.16.0.1"],
    ];
    (0..4)
        .map(|i| Workload {
            name: format!("w{i}"),
            labels: labels(apps[i]),
            interface: (i < 3).then(|| format!("if{i}")),
            ips: ips[i]
                .iter()
                .map(|s| s.parse::<IpAddr>().unwrap())
                .collect(),
            mode: Mode::Enforce,
            origin: Origin::default(),
        })
        .collect()
}

/// Applies an edit; a policy that did not change keeps its `Arc`, as the loader keeps it.
fn edit_set(specs: &mut Vec<(String, PolicySpec)>, apps: &mut [usize; 4], e: &Edit, n: &mut usize) {
    let len = specs.len();
    match e {
        Edit::Rule(p, r, s) if len > 0 => {
            let rules = &mut specs[p % len].1.ingress;
            if !rules.is_empty() {
                let i = r % rules.len();
                rules[i] = s.clone();
            }
        }
        Edit::AddRule(p, s) if len > 0 => specs[p % len].1.ingress.push(s.clone()),
        Edit::DropRule(p, r) if len > 0 => {
            let rules = &mut specs[p % len].1.ingress;
            if !rules.is_empty() {
                let i = r % rules.len();
                rules.remove(i);
            }
        }
        Edit::Priority(p, v) if len > 0 => specs[p % len].1.priority = *v,
        Edit::AddPolicy(s) => {
            *n += 1;
            specs.push((format!("p{n}"), s.clone()));
        }
        Edit::DropPolicy(p) if len > 0 => {
            specs.remove(p % len);
        }
        Edit::Relabel(w, a) => apps[*w] = *a,
        _ => {}
    }
}

fn check(initial: Vec<PolicySpec>, edits: Vec<Edit>) -> Result<usize, TestCaseError> {
    let local: Vec<LocalEndpoint> = (0..3)
        .map(|i| LocalEndpoint {
            workload: format!("w{i}"),
            ifindex: 10 + i,
        })
        .collect();
    let mut n = 0;
    let mut specs: Vec<(String, PolicySpec)> = initial
        .into_iter()
        .map(|s| {
            n += 1;
            (format!("p{n}"), s)
        })
        .collect();
    let mut apps = [0, 1, 2, 0];
    let mut compiler = Compiler::new();
    let mut previous = Tables::default();
    let mut built: BTreeMap<String, (String, Arc<Policy>)> = BTreeMap::new();
    let mut incremental = 0;
    for step in 0..=edits.len() {
        if step > 0 {
            edit_set(&mut specs, &mut apps, &edits[step - 1], &mut n);
        }
        // Unchanged policies keep their Arc, as the loader hands them out.
        let mut policies = Vec::new();
        let mut next = BTreeMap::new();
        for (name, spec) in &specs {
            let text = format!("{spec:?}");
            let p = match built.get(name) {
                Some((t, p)) if *t == text => p.clone(),
                _ => Arc::new(to_policy(name, spec)),
            };
            next.insert(name.clone(), (text, p.clone()));
            policies.push(p);
        }
        built = next;
        let set = ResourceSet {
            workloads: workloads(&apps),
            policies,
        };
        let out = compiler.compile(&set, &local);
        incremental += out.incremental as usize;
        prop_assert_eq!(out.changes.is_some(), out.incremental);
        if let Some(changes) = &out.changes {
            let mut applied = previous.clone();
            applied.apply(changes);
            prop_assert_eq!(
                &applied,
                &*out.tables,
                "step {}: changes do not lead to the tables",
                step
            );
        }
        let mut scratch = compiler.clone();
        scratch.start_over();
        let again = scratch.compile(&set, &local);
        prop_assert!(!again.incremental);
        prop_assert_eq!(
            &*again.tables,
            &*out.tables,
            "step {}: differs from a compile from scratch",
            step
        );
        prop_assert_eq!(&again.rules, &out.rules);
        prop_assert_eq!(&again.problems, &out.problems);
        previous = (*out.tables).clone();
    }
    Ok(incremental)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn an_update_gives_the_tables_of_a_compile_from_scratch(
        initial in prop::collection::vec(policy(), 1..5),
        edits in prop::collection::vec(edit(), 1..12),
    ) {
        check(initial, edits)?;
    }
}

#[test]
fn edits_that_keep_the_identities_are_compiled_incrementally() {
    let base = PolicySpec {
        app: 1,
        priority: 1000,
        audit: false,
        ingress: vec![RuleSpec {
            action: 0,
            peer: PeerSpec::Cidr(2, None),
            port: Some((6, 80, 0)),
            source_port: None,
        }],
        egress: None,
    };
    let tweak = RuleSpec {
        action: 1,
        peer: PeerSpec::Cidr(2, None),
        port: Some((6, 443, 0)),
        source_port: None,
    };
    let edits = vec![
        Edit::AddRule(0, tweak.clone()),
        Edit::Rule(0, 0, tweak),
        Edit::DropRule(0, 1),
        Edit::AddPolicy(base.clone()),
        Edit::DropPolicy(1),
    ];
    let incremental = check(vec![base], edits).unwrap();
    assert_eq!(incremental, 5, "every edit after the first compile");
}
