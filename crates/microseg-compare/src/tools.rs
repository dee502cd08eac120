//! The programs this runs: `sh` for one command, the distribution's tools (installed when
//! missing), and the microseg binary built from this workspace.

use std::path::PathBuf;
use std::process::{Command, Stdio};

pub(crate) fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    if !out.status.success() {
        return Err(format!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn ensure_tools() -> Result<(), String> {
    let need = [
        ("iperf3", "iperf3"),
        ("iptables-nft-restore", "iptables"),
        ("nft", "nftables"),
        ("bpftool", "bpftool"),
    ];
    let missing: Vec<&str> = need
        .iter()
        .filter(|(b, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .map(|(_, p)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {missing:?}");
    let _ = Command::new("apt-get")
        .arg("update")
        .stdout(Stdio::null())
        .status();
    let mut c = Command::new("apt-get");
    c.args(["install", "-y"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null());
    if !c.status().map(|s| s.success()).unwrap_or(false) {
        return Err(format!("apt-get install {missing:?} failed"));
    }
    Ok(())
}

/// Builds the release microseg binary of this workspace; its path. A failed build falls back
/// to an existing binary, with a warning.
pub(crate) fn build_microseg() -> Result<PathBuf, String> {
    // The workspace root: this crate's manifest dir is crates/microseg-compare.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .map_err(|e| e.to_string())?;
    eprintln!("building the release microseg binary ...");
    let st = Command::new("cargo")
        .args(["build", "--release", "-p", "microseg"])
        .current_dir(&root)
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    let bin = root.join("target/release/microseg");
    if !st.success() {
        if !bin.exists() {
            return Err("cargo build --release -p microseg failed".into());
        }
        eprintln!(
            "warning: cargo build --release -p microseg failed (the tree is being edited?); using the existing {}",
            bin.display()
        );
    }
    Ok(bin)
}
