//! Finding the workloads on this node: named network namespaces (`ip netns`) whose veth
//! has its other end in the agent's namespace.
//!
//! A veth end in our namespace names its peer's namespace by an nsid that only means
//! something here; `ip netns list`, run here, gives the same nsid for each named
//! namespace. Matching the two ties an interface to its workload without trusting
//! ifindexes, which repeat from one namespace to the next. Ends that are bridge or bond
//! ports, or have no routable address, are links between nodes, not workloads.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A workload found on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    /// The namespace's name.
    pub name: String,
    /// The host-side interface (in the agent's namespace).
    pub interface: String,
    pub ips: Vec<IpAddr>,
    pub labels: BTreeMap<String, String>,
}

/// Why the workloads or their labels could not be found.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("running ip {command}: {source}: discovery needs iproute2's `ip` on the PATH")]
    Run {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("ip {command}: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("ip {command}: {source}: an iproute2 with JSON output (-j) is needed")]
    Output {
        command: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: {source}", .path.display())]
    ReadLabels {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{}:{}: {source}: the labels file is a JSON object {{\"<netns>\": {{\"key\": \"value\"}}}}", .path.display(), .source.line(), .source.column())]
    ParseLabels {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn ip_json(args: &[&str]) -> Result<Value, DiscoveryError> {
    let command = || args.join(" ");
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| DiscoveryError::Run {
            command: command(),
            source,
        })?;
    if !out.status.success() {
        return Err(DiscoveryError::Failed {
            command: command(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    if out.stdout.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Value::Array(Vec::new()));
    }
    serde_json::from_slice(&out.stdout).map_err(|source| DiscoveryError::Output {
        command: command(),
        source,
    })
}

/// Namespace names are free-form; workload names are lowercase letters, digits, '-', '.'.
pub fn workload_name(netns: &str) -> String {
    let mut s: String = netns
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(253);
    s
}

/// Every workload on this node, with default labels `netns=<name>`, `node=<node>` and
/// those of `labels` (by namespace name) on top.
pub fn discover(
    node: &str,
    labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> Result<Vec<Discovered>, DiscoveryError> {
    let mut by_nsid = BTreeMap::new();
    for ns in ip_json(&["-j", "netns", "list"])?
        .as_array()
        .into_iter()
        .flatten()
    {
        if let (Some(name), Some(id)) = (ns["name"].as_str(), ns["id"].as_u64()) {
            by_nsid.insert(id, name.to_string());
        }
    }
    let mut found = Vec::new();
    for link in ip_json(&["-j", "-d", "link", "show", "type", "veth"])?
        .as_array()
        .into_iter()
        .flatten()
    {
        let (Some(iface), Some(nsid), Some(peer)) = (
            link["ifname"].as_str(),
            link["link_netnsid"].as_u64(),
            link["link_index"].as_u64(),
        ) else {
            continue;
        };
        let Some(netns) = by_nsid.get(&nsid) else {
            continue;
        };
        let addrs = ip_json(&["-n", netns, "-j", "addr", "show"])?;
        let Some(inner) = addrs
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["ifindex"].as_u64() == Some(peer))
        else {
            continue;
        };
        // A bridge or bond port is plumbing (a link between nodes, a switch), not an
        // endpoint; so is an end with no routable address: nothing could name it.
        if inner.get("master").is_some() {
            continue;
        }
        let ips: Vec<IpAddr> = inner["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["scope"] == "global")
            .filter_map(|a| a["local"].as_str()?.parse().ok())
            .collect();
        if ips.is_empty() {
            continue;
        }
        let name = workload_name(netns);
        let mut l = BTreeMap::from([
            ("netns".to_string(), name.clone()),
            ("node".to_string(), node.to_string()),
        ]);
        if let Some(extra) = labels.get(netns).or_else(|| labels.get(&name)) {
            l.extend(extra.clone());
        }
        found.push(Discovered {
            name,
            interface: iface.to_string(),
            ips,
            labels: l,
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// A labels file: a JSON object `{"<netns>": {"key": "value"}}`.
pub fn read_labels(
    path: &Path,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, DiscoveryError> {
    let text = std::fs::read_to_string(path).map_err(|source| DiscoveryError::ReadLabels {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| DiscoveryError::ParseLabels {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::workload_name;

    #[test]
    fn namespace_names_become_valid_workload_names() {
        assert_eq!(workload_name("db-1"), "db-1");
        assert_eq!(workload_name("Web_Front"), "web-front");
    }
}
