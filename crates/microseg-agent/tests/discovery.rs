//! Workload discovery finds the named namespaces whose veth ends on this node, and only
//! those, with their addresses and default labels.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

use microseg_agent::discovery::discover;

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

#[test]
fn finds_workloads_behind_this_nodes_veths_and_not_another_nodes() {
    let p = format!("msdisc{}", std::process::id());
    let (node_a, node_b, db, web) = (
        format!("{p}-a"),
        format!("{p}-b"),
        format!("{p}-db"),
        format!("{p}-web"),
    );
    let _cleanup = Netns(vec![
        node_a.clone(),
        node_b.clone(),
        db.clone(),
        web.clone(),
    ]);
    for n in [&node_a, &node_b, &db, &web] {
        ip(&["netns", "add", n]);
    }
    // The same interface names on both nodes: only the namespace link tells them apart.
    ip(&[
        "-n", &node_a, "link", "add", "veth-w", "type", "veth", "peer", "name", "eth0", "netns",
        &db,
    ]);
    ip(&[
        "-n", &node_b, "link", "add", "veth-w", "type", "veth", "peer", "name", "eth0", "netns",
        &web,
    ]);
    ip(&["-n", &db, "addr", "add", "10.66.0.3/24", "dev", "eth0"]);
    ip(&[
        "-n",
        &db,
        "-6",
        "addr",
        "add",
        "fd66::3/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    ip(&["-n", &db, "link", "set", "eth0", "up"]);
    ip(&["-n", &web, "addr", "add", "10.66.0.4/24", "dev", "eth0"]);
    // A link to another node's bridge: plumbing, not a workload.
    ip(&["-n", &node_b, "link", "add", "br0", "type", "bridge"]);
    ip(&[
        "-n", &node_a, "link", "add", "trunk", "type", "veth", "peer", "name", "trunk", "netns",
        &node_b,
    ]);
    ip(&["-n", &node_b, "link", "set", "trunk", "master", "br0"]);
    // And a namespace whose end has no routable address.
    let bare = format!("{p}-bare");
    ip(&["netns", "add", &bare]);
    let _cleanup_bare = Netns(vec![bare.clone()]);
    ip(&[
        "-n",
        &node_a,
        "link",
        "add",
        "veth-bare",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &bare,
    ]);

    let labels = BTreeMap::from([(
        db.clone(),
        BTreeMap::from([("app".to_string(), "db".to_string())]),
    )]);
    let ns_path = format!("/run/netns/{node_a}");
    let found = std::thread::spawn(move || {
        let f = File::open(ns_path).unwrap();
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        discover("node-a", &labels)
    })
    .join()
    .unwrap()
    .expect("discover");
    assert_eq!(found.len(), 1, "{found:?}");
    let w = &found[0];
    assert_eq!(w.name, db);
    assert_eq!(w.interface, "veth-w");
    let ips: Vec<String> = w.ips.iter().map(|i| i.to_string()).collect();
    assert_eq!(ips, ["10.66.0.3", "fd66::3"]);
    assert_eq!(w.labels["netns"], db);
    assert_eq!(w.labels["node"], "node-a");
    assert_eq!(w.labels["app"], "db");
}
