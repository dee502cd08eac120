//! Workload churn (docs/FLEETSIM.md "Churn"): a node's workloads, some of them replaced
//! (renamed and re-addressed) at each step the driver asks for.

use microseg_proto::v1::DiscoveredWorkload;

/// Workloads one step replaces on a node: a tenth of them (at least one).
pub fn per_step(m: usize) -> usize {
    (m / 10).max(1)
}

/// A node's workloads as churn left them.
pub struct Churn {
    node: usize,
    base: Vec<DiscoveredWorkload>,
    /// How often each slot was replaced.
    versions: Vec<u32>,
    /// Steps applied.
    pub applied: u64,
}

impl Churn {
    pub fn new(node: usize, base: Vec<DiscoveredWorkload>) -> Churn {
        let versions = vec![0; base.len()];
        Churn {
            node,
            base,
            versions,
            applied: 0,
        }
    }

    /// Applies steps up to `target`; whether any was applied.
    pub fn advance(&mut self, target: u64) -> bool {
        let m = self.base.len();
        if m == 0 || self.applied >= target {
            return false;
        }
        let r = per_step(m);
        while self.applied < target {
            let from = (self.applied as usize * r) % m;
            for k in 0..r {
                self.versions[(from + k) % m] += 1;
            }
            self.applied += 1;
        }
        true
    }

    /// The workloads now: slot j at version v > 0 is `w<j>-v<v>`, at its own address for
    /// even versions and at an alternate one (100.64.0.0/10, `512 + j` in the node's
    /// 1,024) for odd ones, so addresses stay unique in the fleet (for up to 512 workloads
    /// a node; beyond, only the name changes).
    pub fn current(&self) -> Vec<DiscoveredWorkload> {
        let mut w = self.base.clone();
        for (j, (x, &v)) in w.iter_mut().zip(&self.versions).enumerate() {
            if v == 0 {
                continue;
            }
            x.name = format!("w{j}-v{v}");
            if v % 2 == 1 && self.base.len() <= 512 && j < 250 {
                let ip = 0x6440_0000 + ((self.node as u32) << 10) + 512 + j as u32;
                x.ips = vec![std::net::Ipv4Addr::from(ip).to_string()];
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn a_step_replaces_a_tenth_and_addresses_stay_unique() {
        let mut seen_ips = HashSet::new();
        let mut nodes: Vec<Churn> = (0..3)
            .map(|i| Churn::new(i, crate::sim::workloads(i, 100)))
            .collect();
        for step in 1..=25u64 {
            for c in &mut nodes {
                let before: HashSet<String> = c.current().into_iter().map(|w| w.name).collect();
                assert!(c.advance(step));
                let now = c.current();
                let names: HashSet<String> = now.iter().map(|w| w.name.clone()).collect();
                assert_eq!(names.len(), 100);
                assert_eq!(names.difference(&before).count(), 10);
                seen_ips.extend(now.into_iter().map(|w| w.ips[0].clone()));
            }
            let mut all = HashSet::new();
            for c in &nodes {
                for w in c.current() {
                    assert!(all.insert(w.ips[0].clone()), "{} twice", w.ips[0]);
                }
            }
        }
        // Both the usual and the alternate addresses were used.
        assert_eq!(seen_ips.len(), 3 * 200);
    }
}
