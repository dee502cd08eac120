//! Attaching the classifiers to workload interfaces.
//!
//! On kernels with TCX (>= 6.6) each attachment is a BPF link pinned under the link
//! directory, so it outlives the agent; a new agent swaps its program into the pinned link
//! atomically, with no moment unfiltered. Older kernels get a clsact qdisc and netlink
//! filters, which persist on the interface by themselves.

use std::path::{Path, PathBuf};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::{self, SchedClassifierLink, TcAttachOptions},
        LinkOrder, TcAttachType,
    },
    util::KernelVersion,
};

use crate::{Dataplane, Error, Hook, Result};

/// TCX links on kernels that have them; `MICROSEG_TC_MODE=netlink` forces the classic
/// clsact path (how the fallback for kernels < 6.6 is tested on newer ones).
fn has_tcx() -> bool {
    if std::env::var("MICROSEG_TC_MODE").is_ok_and(|m| m == "netlink") {
        return false;
    }
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

fn ifindex(interface: &str) -> Option<u32> {
    let name = std::ffi::CString::new(interface).ok()?;
    // SAFETY: a valid NUL-terminated name; 0 means no such interface.
    let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (i != 0).then_some(i)
}

fn hooks() -> [(Hook, TcAttachType, &'static str); 2] {
    [
        (Hook::FromWorkload, TcAttachType::Ingress, "ingress"),
        (Hook::ToWorkload, TcAttachType::Egress, "egress"),
    ]
}

/// bpffs refuses names with a dot (EPERM), and interface names may have one: escape it.
fn escape(interface: &str) -> String {
    interface.replace('%', "%25").replace('.', "%2E")
}

fn unescape(name: &str) -> String {
    name.replace("%2E", ".").replace("%25", "%")
}

/// `<link_dir>/<interface>/<ingress|egress>`.
fn link_pin(link_dir: &Path, interface: &str, side: &str) -> PathBuf {
    link_dir.join(escape(interface)).join(side)
}

/// An attach failure on `interface` at `step`, with aya's error as its cause.
fn attach_err<E: std::error::Error + Send + Sync + 'static>(
    interface: &str,
    step: impl Into<String>,
) -> impl FnOnce(E) -> Error {
    let (interface, step) = (interface.to_string(), step.into());
    move |source| Error::Attach {
        interface,
        step,
        source: Box::new(source),
    }
}

impl Dataplane {
    /// Puts both classifiers on `interface`, pinning TCX links under `link_dir`.
    /// Does nothing when this process already attached to the same interface (same name
    /// and ifindex), so reconciling often costs nothing.
    pub fn attach(&mut self, interface: &str, link_dir: &Path) -> Result<()> {
        let index = ifindex(interface).ok_or_else(|| Error::InterfaceMissing {
            interface: interface.to_string(),
        })?;
        if self.attached.get(interface) == Some(&index) {
            return Ok(());
        }
        let dir = link_dir.join(escape(interface));
        std::fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
        let tcx = has_tcx();
        for (hook, attach_type, side) in hooks() {
            let prog = self.classifier_mut(hook.program())?;
            if !tcx {
                // The classic path has no atomic replacement: a restarted agent swaps the
                // filter out and back in (a gap of one netlink round trip).
                // EEXIST when the qdisc is there already: fine.
                let _ = tc::qdisc_add_clsact(interface);
                let _ = tc::qdisc_detach_program(interface, attach_type, hook.program());
                let id = prog
                    .attach_with_options(
                        interface,
                        attach_type,
                        TcAttachOptions::Netlink(Default::default()),
                    )
                    .map_err(attach_err(interface, format!("a clsact {side} filter")))?;
                // Dropping the link would detach it; the filter is meant to outlive us.
                let link = prog
                    .take_link(id)
                    .map_err(attach_err(interface, format!("the {side} filter's link")))?;
                std::mem::forget(link);
                continue;
            }
            // In `dir`, created above.
            let pin = link_pin(link_dir, interface, side);
            let id = match PinnedLink::from_pin(&pin) {
                Ok(old) => {
                    let adopting = format!("the pinned link {}", pin.display());
                    let link: SchedClassifierLink = FdLink::from(old)
                        .try_into()
                        .map_err(attach_err(interface, adopting.clone()))?;
                    prog.attach_to_link(link)
                        .map_err(attach_err(interface, adopting))?
                }
                Err(_) => prog
                    .attach_with_options(
                        interface,
                        attach_type,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(attach_err(interface, format!("a TCX {side} link")))?,
            };
            let link = prog
                .take_link(id)
                .map_err(attach_err(interface, format!("the {side} link")))?;
            let fd: FdLink = link
                .try_into()
                .map_err(attach_err(interface, format!("the {side} link")))?;
            let _ = std::fs::remove_file(&pin);
            fd.pin(&pin).map_err(attach_err(
                interface,
                format!("pinning the link at {}", pin.display()),
            ))?;
        }
        self.attached.insert(interface.to_string(), index);
        Ok(())
    }

    /// [`Dataplane::detach`], and forgets that this process attached there.
    pub fn detach_interface(&mut self, interface: &str, link_dir: &Path) -> Result<()> {
        self.attached.remove(interface);
        Dataplane::detach(interface, link_dir)
    }

    /// Takes the classifiers off `interface` (if it still exists) and removes their pins.
    pub fn detach(interface: &str, link_dir: &Path) -> Result<()> {
        for (hook, attach_type, side) in hooks() {
            let pin = link_pin(link_dir, interface, side);
            if pin.exists() {
                // The link lives while pinned or open: removing the pin detaches it.
                std::fs::remove_file(&pin).map_err(Error::io(&pin))?;
            } else {
                // Attached through netlink (no pin): remove the filter by name.
                let _ = tc::qdisc_detach_program(interface, attach_type, hook.program());
            }
        }
        let _ = std::fs::remove_dir(link_dir.join(escape(interface)));
        Ok(())
    }

    /// Removes microseg's classic (netlink) filters from these interfaces, found by name.
    /// Those filters outlive the agent and its pins, so a caller passing every interface
    /// finds them even when the pin directory is gone (a bpffs that was unmounted or
    /// private to a mount namespace that ended). TCX links are untouched: they end with
    /// their pins.
    pub fn detach_netlink_filters<'a>(interfaces: impl IntoIterator<Item = &'a str>) {
        for interface in interfaces {
            for (hook, attach_type, _) in hooks() {
                // NotFound on interfaces without our filters: nothing to do there.
                let _ = tc::qdisc_detach_program(interface, attach_type, hook.program());
            }
        }
    }

    /// Interfaces with pinned links under `link_dir`.
    pub fn attached_interfaces(link_dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(link_dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| unescape(&e.file_name().to_string_lossy()))
            .collect();
        names.sort();
        names
    }
}
