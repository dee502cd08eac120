//! Builds the kernel programs (nightly, bpfel-unknown-none) so the loader can embed them.
fn main() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../microseg-ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "microseg-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .expect("building the eBPF programs (needs nightly with rust-src and bpf-linker)");
}
