//! Workload discovery finds the named namespaces whose veth ends on this node, and only
//! those, with their addresses and default labels.

use std::collections::BTreeMap;

use microseg_agent::discovery::discover;
use microseg_testsupport::{unique_name, NetNs};

#[test]
fn finds_workloads_behind_this_nodes_veths_and_not_another_nodes() {
    let p = unique_name("msdisc");
    let [node_a, node_b, db, web, bare] =
        ["a", "b", "db", "web", "bare"].map(|n| NetNs::named(&format!("{p}-{n}")));
    // The same interface names on both nodes: only the namespace link tells them apart.
    node_a.veth_to("veth-w", &db, "eth0");
    node_b.veth_to("veth-w", &web, "eth0");
    db.ip(&["addr", "add", "10.66.0.3/24", "dev", "eth0"]);
    db.ip(&["-6", "addr", "add", "fd66::3/64", "dev", "eth0", "nodad"]);
    db.ip(&["link", "set", "eth0", "up"]);
    web.ip(&["addr", "add", "10.66.0.4/24", "dev", "eth0"]);
    // A link to another node's bridge: plumbing, not a workload.
    node_b.ip(&["link", "add", "br0", "type", "bridge"]);
    node_a.veth_to("trunk", &node_b, "trunk");
    node_b.ip(&["link", "set", "trunk", "master", "br0"]);
    // And a namespace whose end has no routable address.
    node_a.veth_to("veth-bare", &bare, "eth0");

    let labels = BTreeMap::from([(
        db.name().to_string(),
        BTreeMap::from([("app".to_string(), "db".to_string())]),
    )]);
    let found = node_a
        .run(move || discover("node-a", &labels))
        .expect("discover");
    assert_eq!(found.len(), 1, "{found:?}");
    let w = &found[0];
    assert_eq!(w.name, db.name());
    assert_eq!(w.interface, "veth-w");
    let ips: Vec<String> = w.ips.iter().map(|i| i.to_string()).collect();
    assert_eq!(ips, ["10.66.0.3", "fd66::3"]);
    assert_eq!(w.labels["netns"], db.name());
    assert_eq!(w.labels["node"], "node-a");
    assert_eq!(w.labels["app"], "db");
}
