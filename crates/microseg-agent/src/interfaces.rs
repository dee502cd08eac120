//! The host's network interfaces, by name.

use std::collections::HashMap;

/// Interface name → ifindex, from /sys/class/net.
pub fn list() -> HashMap<String, u32> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Ok(s) = std::fs::read_to_string(entry.path().join("ifindex")) {
            if let Ok(i) = s.trim().parse() {
                out.insert(name, i);
            }
        }
    }
    out
}
