//! Rules from edges: peers as group selectors or CIDRs, ports as seen, summarised only
//! where docs/RECOMMEND.md ("Rules") says, and each rule's evidence.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use microseg_flowstore::{Edge, Endpoint};
use microseg_policy::{
    protocol_has_ports, protocol_name, Action, IpNet, Peer, Policy, PortMatch, PortRange, Rule,
    DEFAULT_PRIORITY,
};

use crate::group::{describe, GroupKey, World};
use crate::{Error, Evidence, Options, Proposed};

/// At least this many addresses of one network (/24, /64), with the same ports, become
/// one prefix.
pub const SUMMARY_MIN_ADDRESSES: usize = 8;
/// A run of ports with gaps becomes one range only with at least this many ports seen...
pub const DENSE_MIN_PORTS: usize = 8;
/// ...filling at least 3/4 of the range.
const DENSE_NUM: usize = 3;
const DENSE_DEN: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum PeerKey {
    Group(GroupKey),
    Addr(IpAddr),
}

/// Per (protocol, port) the evidence; port 0 for protocols without ports.
type Ports = BTreeMap<(u8, u16), Evidence>;
/// Addresses by their ports and network: the candidates for one prefix.
type Networks = BTreeMap<(Vec<(u8, u16)>, IpNet), Vec<(IpAddr, Ports)>>;

#[derive(Default)]
struct Sides {
    ingress: BTreeMap<PeerKey, Ports>,
    egress: BTreeMap<PeerKey, Ports>,
    members: BTreeSet<String>,
}

fn add(side: &mut BTreeMap<PeerKey, Ports>, peer: PeerKey, port: (u8, u16), ev: &Evidence) {
    side.entry(peer)
        .or_default()
        .entry(port)
        .and_modify(|e| e.add(ev))
        .or_insert_with(|| ev.clone());
}

pub(crate) fn build(
    world: &World,
    edges: &[&Edge],
    opts: &Options,
    notes: &mut Vec<String>,
) -> Result<Vec<Proposed>, Error> {
    let mut sides: BTreeMap<GroupKey, Sides> = BTreeMap::new();
    let mut bad_addresses = BTreeSet::new();
    for e in edges {
        let peer = |end: &Endpoint| match end {
            Endpoint::Workload { workload, .. } => {
                world.group(workload).cloned().map(PeerKey::Group)
            }
            Endpoint::Address { ip } => ip.parse().ok().map(PeerKey::Addr),
        };
        let (Some(src), Some(dst)) = (peer(&e.src), peer(&e.dst)) else {
            for end in [&e.src, &e.dst] {
                if let Endpoint::Address { ip } = end {
                    bad_addresses.insert(ip.clone());
                }
            }
            continue;
        };
        let proto = e.protocol.0;
        let port = (
            proto,
            if protocol_has_ports(proto) {
                e.dst_port
            } else {
                0
            },
        );
        let ev = Evidence::of(e);
        if let (Endpoint::Workload { workload, .. }, PeerKey::Group(g)) = (&e.src, &src) {
            let s = sides.entry(g.clone()).or_default();
            s.members.insert(workload.clone());
            add(&mut s.egress, dst.clone(), port, &ev);
        }
        if let (Endpoint::Workload { workload, .. }, PeerKey::Group(g)) = (&e.dst, &dst) {
            let s = sides.entry(g.clone()).or_default();
            s.members.insert(workload.clone());
            add(&mut s.ingress, src, port, &ev);
        }
    }
    if !bad_addresses.is_empty() {
        let list: Vec<_> = bad_addresses.into_iter().collect();
        notes.push(format!(
            "edges with unreadable addresses were left out: {}",
            list.join(", ")
        ));
    }
    if let Some(sel) = &opts.selector {
        sides.retain(|_, s| {
            s.members
                .iter()
                .any(|m| world.members.get(m).is_some_and(|m| sel.matches(&m.labels)))
        });
        if sides.is_empty() {
            return Err(Error::NoneSelected {
                selector: sel.to_string(),
            });
        }
    }
    let mut out = Vec::new();
    for (g, s) in sides {
        let name = world.names[&g].clone();
        if !g.complete() {
            let members: Vec<_> = s.members.iter().cloned().collect();
            notes.push(format!(
                "workloads without a grouping label ({}): their group {name} ({}) selects them by what they have",
                members.join(", "),
                describe(&g, &opts.group_by)
            ));
        }
        let (ingress, ingress_ev) = section(world, s.ingress);
        let (egress, egress_ev) = section(world, s.egress);
        out.push(Proposed {
            policy: Policy {
                name,
                selector: world.selectors[&g].clone(),
                priority: DEFAULT_PRIORITY,
                mode: opts.mode,
                ingress: Some(ingress),
                egress: Some(egress),
                origin: Default::default(),
            },
            group: g,
            members: s.members.into_iter().collect(),
            ingress: ingress_ev,
            egress: egress_ev,
        });
    }
    Ok(out)
}

/// One direction's rules, one per peer (a group, an address or a summarised prefix),
/// groups first, then prefixes in address order.
fn section(world: &World, peers: BTreeMap<PeerKey, Ports>) -> (Vec<Rule>, Vec<Evidence>) {
    let mut rules: Vec<(PeerKey, u8, Rule, Evidence)> = Vec::new();
    let mut addresses: Networks = BTreeMap::new();
    for (peer, ports) in peers {
        match peer {
            PeerKey::Group(g) => {
                let (rule, ev) = rule(Peer::Selector(world.selectors[&g].clone()), &ports);
                rules.push((PeerKey::Group(g), 0, rule, ev));
            }
            PeerKey::Addr(ip) => {
                let network = IpNet::new(ip, if ip.is_ipv4() { 24 } else { 64 })
                    .expect("a valid prefix length");
                let signature = ports.keys().copied().collect();
                addresses
                    .entry((signature, network))
                    .or_default()
                    .push((ip, ports));
            }
        }
    }
    for (_, list) in addresses {
        if list.len() >= SUMMARY_MIN_ADDRESSES {
            let (net, note) = summary(&list);
            let mut merged: Ports = BTreeMap::new();
            for (_, ports) in &list {
                for (k, ev) in ports {
                    merged
                        .entry(*k)
                        .and_modify(|e| e.add(ev))
                        .or_insert_with(|| ev.clone());
                }
            }
            let (rule, mut ev) = rule(cidr(net), &merged);
            ev.notes.insert(0, note);
            rules.push((PeerKey::Addr(net.addr), net.prefix_len, rule, ev));
        } else {
            for (ip, ports) in list {
                let host =
                    IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("host prefix");
                let (rule, ev) = rule(cidr(host), &ports);
                rules.push((PeerKey::Addr(ip), host.prefix_len, rule, ev));
            }
        }
    }
    rules.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    rules.into_iter().map(|(_, _, r, e)| (r, e)).unzip()
}

fn cidr(net: IpNet) -> Peer {
    Peer::Cidr {
        cidr: net,
        except: Vec::new(),
    }
}

/// The smallest prefix holding every address, and the note saying how much wider it is.
fn summary(list: &[(IpAddr, Ports)]) -> (IpNet, String) {
    let lo = list.iter().map(|(ip, _)| *ip).min().expect("not empty");
    let hi = list.iter().map(|(ip, _)| *ip).max().expect("not empty");
    let (len, size) = match (lo, hi) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let len = (u32::from(a) ^ u32::from(b)).leading_zeros() as u8;
            (len, format!("{}", 1u64 << (32 - u32::from(len))))
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let len = (u128::from(a) ^ u128::from(b)).leading_zeros() as u8;
            (len, format!("2^{}", 128 - u32::from(len)))
        }
        _ => unreachable!("one network holds one family"),
    };
    let net = IpNet::new(lo, len).expect("a valid prefix length");
    let note = format!(
        "{net} summarises {} observed addresses ({lo} to {hi}) and holds {size}: wider than what was seen",
        list.len()
    );
    (net, note)
}

fn rule(peer: Peer, ports: &Ports) -> (Rule, Evidence) {
    let mut ev: Option<Evidence> = None;
    for e in ports.values() {
        match &mut ev {
            Some(acc) => acc.add(e),
            None => ev = Some(e.clone()),
        }
    }
    let mut ev = ev.expect("a peer has at least one port");
    ev.notes.clear();
    let (matches, notes) = port_matches(ports);
    ev.notes = notes;
    let rule = Rule {
        action: Action::Allow,
        peers: vec![peer],
        ports: matches,
        source_ports: Vec::new(),
    };
    (rule, ev)
}

/// The ports of one peer: protocols without ports whole, consecutive ports as ranges, and
/// a run with gaps as one range only when dense (at least DENSE_MIN_PORTS ports filling
/// 3/4 of it), with a note.
fn port_matches(ports: &Ports) -> (Vec<PortMatch>, Vec<String>) {
    let mut by_proto: BTreeMap<u8, Vec<u16>> = BTreeMap::new();
    for (proto, port) in ports.keys() {
        by_proto.entry(*proto).or_default().push(*port);
    }
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for (proto, list) in by_proto {
        let pname = protocol_name(proto).map_or_else(|| proto.to_string(), str::to_string);
        if !protocol_has_ports(proto) {
            out.push(PortMatch {
                protocol: proto,
                ports: None,
            });
            continue;
        }
        if list.contains(&0) {
            // Port 0 cannot be written: only the whole protocol holds it.
            notes.push(format!(
                "{pname} port 0 was seen and cannot be written: the rule allows every {pname} port"
            ));
            out.push(PortMatch {
                protocol: proto,
                ports: None,
            });
            continue;
        }
        for (start, end, count) in clusters(&list) {
            let span = usize::from(end - start) + 1;
            if count == span || count >= DENSE_MIN_PORTS {
                if count != span {
                    notes.push(format!(
                        "{pname} {start}-{end} covers {span} ports for {count} seen: wider than what was seen"
                    ));
                }
                out.push(PortMatch {
                    protocol: proto,
                    ports: Some(PortRange { start, end }),
                });
            } else {
                for (s, e) in runs(&list, start, end) {
                    out.push(PortMatch {
                        protocol: proto,
                        ports: Some(PortRange { start: s, end: e }),
                    });
                }
            }
        }
    }
    (out, notes)
}

/// Sorted ports in greedy clusters that stay at least 3/4 full: (start, end, ports).
fn clusters(sorted: &[u16]) -> Vec<(u16, u16, usize)> {
    let mut out: Vec<(u16, u16, usize)> = Vec::new();
    for &p in sorted {
        if let Some((start, end, count)) = out.last_mut() {
            let span = usize::from(p - *start) + 1;
            if (*count + 1) * DENSE_DEN >= span * DENSE_NUM {
                *end = p;
                *count += 1;
                continue;
            }
        }
        out.push((p, p, 1));
    }
    out
}

/// The runs of consecutive ports between `start` and `end`.
fn runs(sorted: &[u16], start: u16, end: u16) -> Vec<(u16, u16)> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &p in sorted.iter().filter(|p| (start..=end).contains(*p)) {
        match out.last_mut() {
            Some((_, e)) if u32::from(*e) + 1 == u32::from(p) => *e = p,
            _ => out.push((p, p)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_become_ranges_only_when_consecutive_or_dense() {
        assert_eq!(clusters(&[80, 81, 82]), [(80, 82, 3)]);
        // 80 and 443 are far apart: two clusters.
        assert_eq!(clusters(&[80, 443]), [(80, 80, 1), (443, 443, 1)]);
        let dense: Vec<u16> = (8000..8010).filter(|p| p % 5 != 3).collect();
        assert_eq!(clusters(&dense), [(8000, 8009, 8)]);
        assert_eq!(runs(&[1, 2, 4, 5, 9], 1, 5), [(1, 2), (4, 5)]);
    }
}
