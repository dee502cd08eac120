//! Each kind of failure is its own error variant, with its cause as the error's source and
//! a message that names the object and says what to do.

mod common;

use std::error::Error as _;

use common::*;
use microseg_dataplane::{Dataplane, Error, Hook, LoadOptions};
use microseg_policy::compile::{Compiler, LocalEndpoint};

#[test]
fn attaching_to_a_missing_interface_names_it() {
    let mut dp = load();
    let links = std::env::temp_dir().join(format!("microseg-errors-{}", std::process::id()));
    let err = dp.attach("mseg-none-0", &links).unwrap_err();
    let _ = std::fs::remove_dir_all(&links);
    assert!(
        matches!(&err, Error::InterfaceMissing { interface } if interface == "mseg-none-0"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("check the workload's `interface`"),
        "{err}"
    );
}

#[test]
fn a_full_policy_map_is_a_map_write_error_that_says_so() {
    let mut dp = Dataplane::load(&LoadOptions {
        sessions: 1024,
        policy_entries: 4,
        ..Default::default()
    })
    .expect("load");
    // Eight single-port rules need eight entries in a map that holds four.
    let mut yaml = with("apiVersion: microseg.io/v1\nkind: Policy\nmetadata: {name: many}\nspec:\n  selector: {matchLabels: {app: db}}\n  ingress:\n");
    for port in 1000..1008 {
        yaml.push_str(&format!(
            "    - {{action: allow, ports: [{{protocol: TCP, port: {port}}}]}}\n"
        ));
    }
    let compiled = Compiler::new().compile(
        &resources(&yaml),
        &[LocalEndpoint {
            workload: "db".into(),
            ifindex: LO,
        }],
    );
    let err = dp.apply(&compiled.tables).unwrap_err();
    assert!(
        matches!(&err, Error::MapWrite { name, .. } if *name == "MSEG_POLICY"),
        "{err:?}"
    );
    assert!(
        err.source().is_some(),
        "the kernel's error is kept as the cause"
    );
    assert!(err.to_string().contains("the map is full"), "{err}");
}

#[test]
fn a_test_run_the_kernel_refuses_is_a_test_run_error() {
    let dp = load();
    // Shorter than an Ethernet header: the kernel refuses to run it.
    let err = dp.test_run(Hook::FromWorkload, &[0; 4], LO, 1).unwrap_err();
    assert!(
        matches!(
            &err,
            Error::TestRun {
                program: "microseg_from_workload",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.source().is_some());
}
