//! Pinned maps outlive the agent. A new load adopts the pins whose layout matches its own
//! maps (sessions and all) and replaces those an older build left with another layout, which
//! the kernel would refuse the programs against.

mod common;

use std::path::PathBuf;
use std::process::Command;

use aya::maps::MapInfo;
use microseg_dataplane::{common::*, packet::*, Dataplane, Hook, LoadOptions};
use microseg_policy::compile::{Compiler, LocalEndpoint};

/// A pin directory of this test's own, removed with everything in it however the test ends.
struct PinDir(PathBuf);

impl PinDir {
    fn new(test: &str) -> PinDir {
        let dir = PathBuf::from(format!(
            "/sys/fs/bpf/mseg-test-{test}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("bpffs at /sys/fs/bpf");
        PinDir(dir)
    }

    fn load(&self) -> Dataplane {
        Dataplane::load(&LoadOptions {
            pin_dir: Some(self.0.clone()),
            sessions: 4096,
            ..Default::default()
        })
        .expect("load with pins")
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_pin_with_another_layout_is_replaced_and_matching_pins_are_adopted() {
    let pins = PinDir::new("layout");
    let sessions_pin = pins.0.join(names::SESSIONS);
    // The session table as builds before one session per connection made it: a 44-byte
    // key (with the ifindex) and an 80-byte value.
    let status = Command::new("bpftool")
        .args(["map", "create"])
        .arg(&sessions_pin)
        .args([
            "type", "lru_hash", "key", "44", "value", "80", "entries", "64",
        ])
        .args(["name", names::SESSIONS])
        .status()
        .expect("run bpftool");
    assert!(status.success(), "bpftool map create");

    let mut dp = pins.load();
    let pinned = MapInfo::from_pin(&sessions_pin).unwrap();
    assert_eq!(
        (pinned.key_size(), pinned.value_size()),
        (size_of::<SessionKey>() as u32, size_of::<Session>() as u32),
        "the old table was replaced by one of this build's layout"
    );

    // A workload on lo that no policy selects: its connections are open and tracked.
    let yaml = "apiVersion: microseg.io/v1\nkind: Workload\nmetadata: {name: a}\nspec: {interface: lo, ips: [10.9.0.1]}\n";
    let local = LocalEndpoint {
        workload: "a".into(),
        ifindex: common::LO,
    };
    let compiled = Compiler::new().compile(&common::resources(yaml), &[local]);
    dp.apply(&compiled.tables).expect("apply");
    let (a, b) = ("10.9.0.1".parse().unwrap(), "10.9.0.2".parse().unwrap());
    let syn = Frame::tcp(a, b, 5000, 80, TCP_SYN).bytes();
    assert!(dp
        .test_run(Hook::FromWorkload, &syn, 1, 1)
        .unwrap()
        .passed());
    assert_eq!(dp.session_count(), 1);
    drop(dp);

    let again = pins.load();
    assert_eq!(
        again.session_count(),
        1,
        "a matching pin is adopted, sessions and all"
    );
}
