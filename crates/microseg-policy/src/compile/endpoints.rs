//! The endpoints phase: each local endpoint's profile, identity and flags, and its
//! addresses.

use std::collections::{BTreeMap, BTreeSet};

use rustc_hash::FxHashMap;

use microseg_common::{endpoint_flags, tables::*, EndpointInfo, IDENTITY_WORLD};

use super::identity::Identities;
use super::profiles::Selected;
use super::section::Sink;
use super::Compiler;
use crate::model::Mode;

impl Compiler {
    /// Endpoints and their addresses: few, so rewritten from scratch and compared.
    pub(super) fn write_endpoints(
        &self,
        selected: &[Selected],
        ids: &Identities,
        profile_flags: &FxHashMap<u32, [u8; 4]>,
        sink: &mut Sink,
    ) {
        let mut endpoints = BTreeMap::new();
        let mut addrs = BTreeSet::new();
        for (ep, w, key) in selected {
            let profile = self.profiles[key];
            // Both families always: a workload listing only IPv4 addresses must not be
            // able to send IPv6 from another workload's address either.
            let mut flags = endpoint_flags::VERIFY_SOURCE_V4 | endpoint_flags::VERIFY_SOURCE_V6;
            if w.mode == Mode::Audit {
                flags |= endpoint_flags::AUDIT_MODE;
            }
            for ip in &w.ips {
                addrs.insert((ep.ifindex, addr_words(*ip)));
            }
            let identity = w
                .ips
                .first()
                .map(|ip| ids.of(*ip))
                .unwrap_or(IDENTITY_WORLD);
            endpoints.insert(
                ep.ifindex,
                EndpointInfo {
                    profile,
                    identity,
                    flags,
                    dir_flags: profile_flags[&profile],
                },
            );
        }
        let t = &mut *sink.tables;
        if let Some(c) = sink.changes.as_deref_mut() {
            let old = Tables {
                endpoints: std::mem::take(&mut t.endpoints),
                endpoint_addrs: std::mem::take(&mut t.endpoint_addrs),
                ..Default::default()
            };
            let new = Tables {
                endpoints: endpoints.clone(),
                endpoint_addrs: addrs.clone(),
                ..Default::default()
            };
            c.then(&TableChanges::between(&old, &new));
        }
        t.endpoints = endpoints;
        t.endpoint_addrs = addrs;
    }
}
