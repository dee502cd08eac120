use microseg_dataplane::{packet::*, Dataplane, Hook, LoadOptions};

#[test]
fn loads_and_passes_unpoliced_traffic() {
    let dp = Dataplane::load(&LoadOptions {
        sessions: 1024,
        ..Default::default()
    })
    .expect("load");
    let f = Frame::tcp(
        "10.0.0.1".parse().unwrap(),
        "10.0.0.2".parse().unwrap(),
        1000,
        80,
        TCP_SYN,
    );
    let r = dp.test_run(Hook::FromWorkload, &f.bytes(), 1, 1).unwrap();
    assert!(r.passed());
    let s = dp.stats().unwrap();
    assert_eq!(s.packets, 1);
}

/// Prints what the verifier walked for each program (`--nocapture`), and keeps it well
/// inside its limit of 1,000,000 instructions a program.
#[test]
fn the_programs_stay_inside_the_verifiers_limit() {
    let dp = Dataplane::load(&LoadOptions {
        sessions: 1024,
        ..Default::default()
    })
    .expect("load");
    for (name, insns) in dp.verified_instructions().expect("program info") {
        println!("{name}: {insns} instructions verified");
        assert!(insns > 0 && insns < 800_000, "{name}: {insns}");
    }
}
