//! The network interfaces of the agent's network namespace, by name.

use std::collections::HashMap;
use std::ffi::CStr;

/// Interface name → ifindex. Asks the kernel (if_nameindex), not /sys, which shows the
/// namespace sysfs was mounted in rather than the one the agent runs in.
pub fn list() -> HashMap<String, u32> {
    let mut out = HashMap::new();
    // SAFETY: if_nameindex returns an array ending with a zero entry, freed below.
    unsafe {
        let head = libc::if_nameindex();
        if head.is_null() {
            return out;
        }
        let mut p = head;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            let name = CStr::from_ptr((*p).if_name).to_string_lossy().into_owned();
            out.insert(name, (*p).if_index);
            p = p.add(1);
        }
        libc::if_freenameindex(head);
    }
    out
}
