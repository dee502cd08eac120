//! Rule sets of size N for microseg, iptables and nftables (see the crate docs), and their
//! files.

use std::path::{Path, PathBuf};

use crate::topology::{CLI_IP, P_CPS, P_IPERF, P_RR, P_UDP, SRV_IP};

fn dummy(i: usize) -> (String, u16) {
    let a = 0xAC10_0000u32 + i as u32 + 1; // 172.16.0.0 + i + 1
    let ip = format!(
        "{}.{}.{}.{}",
        a >> 24,
        (a >> 16) & 255,
        (a >> 8) & 255,
        a & 255
    );
    (ip, 1024 + (i % 60000) as u16)
}

pub(crate) fn microseg_workloads() -> String {
    format!(
        "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: client, labels: {{app: client}}}}\nspec: {{interface: veth-cli, ips: [{CLI_IP}]}}\n---\n\
         apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {{name: server, labels: {{app: server}}}}\nspec: {{interface: veth-srv, ips: [{SRV_IP}]}}\n"
    )
}

/// `n` rules (n-1 non-matching, then the allowing one); `with_cps=false` leaves the
/// connection port out of the allowing rule (the "rule set replaced" measurement, the same
/// change iptables and nftables get); `n=None`: a policy with an empty ingress section
/// (default deny).
pub(crate) fn microseg_policy(n: Option<usize>, with_cps: bool) -> String {
    let mut s = String::from(
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: bench}\nspec:\n  selector: {matchLabels: {app: server}}\n",
    );
    let Some(n) = n else {
        s.push_str("  ingress: []\n");
        return s;
    };
    let dummies = n.max(1) - 1;
    s.push_str("  ingress:\n");
    for i in 0..dummies {
        let (ip, port) = dummy(i);
        s.push_str(&format!(
            "    - action: allow\n      from: [{{cidr: {ip}/32}}]\n      ports: [{{protocol: TCP, port: {port}}}]\n"
        ));
    }
    let cps = if with_cps {
        format!(", {{protocol: TCP, port: {P_CPS}}}")
    } else {
        String::new()
    };
    s.push_str(&format!(
        "    - action: allow\n      from: [{{cidr: {CLI_IP}/32}}]\n      ports: [{{protocol: TCP, port: {P_IPERF}}}, {{protocol: TCP, port: {P_RR}}}, {{protocol: UDP, port: {P_UDP}}}{cps}]\n"
    ));
    s
}

/// The one-rule change for microseg: a small file of its own next to the big policy, holding
/// one deny rule for the client's connection flow at priority 10 (the big policy has the
/// default 1000, and lower numbers win). Writing it is the change; removing it undoes it.
/// Like `iptables -D` of one rule or `nft delete element` of one element, nothing else in
/// the policy directory is touched.
pub(crate) fn microseg_deny_one() -> String {
    format!(
        "apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {{name: deny-one}}\nspec:\n  selector: {{matchLabels: {{app: server}}}}\n  priority: 10\n  ingress:\n    - action: deny\n      from: [{{cidr: {CLI_IP}/32}}]\n      ports: [{{protocol: TCP, port: {P_CPS}}}]\n"
    )
}

const ALLOW_IPT: [(&str, u16); 4] = [
    ("udp", P_UDP),
    ("tcp", P_IPERF),
    ("tcp", P_RR),
    ("tcp", P_CPS),
];

/// `with_cps = false` leaves out the rule for the connection port (the "rule set replaced"
/// measurement: the whole set again, without that one rule).
pub(crate) fn iptables_rules(n: Option<usize>, with_cps: bool) -> String {
    let mut s = String::from(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
    );
    if let Some(n) = n {
        for i in 0..n.max(1) - 1 {
            let (ip, port) = dummy(i);
            s.push_str(&format!(
                "-A FORWARD -s {ip}/32 -d {SRV_IP}/32 -p tcp -m tcp --dport {port} -j ACCEPT\n"
            ));
        }
        // The allowing rule: one per protocol/port (iptables has no tcp+udp in one rule).
        for (proto, port) in ALLOW_IPT.iter().filter(|(_, p)| with_cps || *p != P_CPS) {
            s.push_str(&format!(
                "-A FORWARD -s {CLI_IP}/32 -d {SRV_IP}/32 -p {proto} -m {proto} --dport {port} -j ACCEPT\n"
            ));
        }
    }
    s.push_str("COMMIT\n");
    s
}

pub(crate) fn nft_rules(n: Option<usize>, with_cps: bool) -> String {
    let mut s = String::from("table inet mcmp\ndelete table inet mcmp\ntable inet mcmp {\n  map allow {\n    type ipv4_addr . ipv4_addr . inet_proto . inet_service : verdict\n");
    if let Some(n) = n {
        s.push_str("    elements = {\n");
        for i in 0..n.max(1) - 1 {
            let (ip, port) = dummy(i);
            s.push_str(&format!("      {ip} . {SRV_IP} . tcp . {port} : accept,\n"));
        }
        let allow: Vec<String> = ALLOW_IPT
            .iter()
            .filter(|(_, p)| with_cps || *p != P_CPS)
            .map(|(p, port)| format!("      {CLI_IP} . {SRV_IP} . {p} . {port} : accept"))
            .collect();
        s.push_str(&allow.join(",\n"));
        s.push_str("\n    }\n");
    }
    s.push_str("  }\n  chain bench_forward {\n    type filter hook forward priority filter; policy drop;\n    ct state established,related accept\n    ip saddr . ip daddr . meta l4proto . th dport vmap @allow\n  }\n}\n");
    s
}

/// The rule files of one size: the full set and the set without the connection-port rule
/// ("revoked"), per contender.
pub(crate) struct RuleFiles {
    pub(crate) mseg_full: PathBuf,
    pub(crate) mseg_revoked: PathBuf,
    pub(crate) ipt: PathBuf,
    pub(crate) nft: PathBuf,
    pub(crate) ipt_revoked: PathBuf,
    pub(crate) nft_revoked: PathBuf,
}

impl RuleFiles {
    /// Writes the files for `n` rules into `d`.
    pub(crate) fn write(d: &Path, n: usize) -> RuleFiles {
        let rf = RuleFiles {
            mseg_full: d.join(format!("mseg-{n}.yaml")),
            mseg_revoked: d.join(format!("mseg-{n}-revoked.yaml")),
            ipt: d.join(format!("ipt-{n}.rules")),
            nft: d.join(format!("nft-{n}.nft")),
            ipt_revoked: d.join(format!("ipt-{n}-revoked.rules")),
            nft_revoked: d.join(format!("nft-{n}-revoked.nft")),
        };
        std::fs::write(&rf.mseg_full, microseg_policy(Some(n), true)).unwrap();
        std::fs::write(&rf.mseg_revoked, microseg_policy(Some(n), false)).unwrap();
        std::fs::write(&rf.ipt, iptables_rules(Some(n), true)).unwrap();
        std::fs::write(&rf.nft, nft_rules(Some(n), true)).unwrap();
        std::fs::write(&rf.ipt_revoked, iptables_rules(Some(n), false)).unwrap();
        std::fs::write(&rf.nft_revoked, nft_rules(Some(n), false)).unwrap();
        rf
    }
}
