//! Generates the AgentLink client and server from proto/microseg/v1/agent.proto (needs protoc).
fn main() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto");
    let file = format!("{root}/microseg/v1/agent.proto");
    println!("cargo:rerun-if-changed={file}");
    tonic_prost_build::configure()
        .compile_protos(&[file.as_str()], &[root])
        .expect("compiling agent.proto (is protoc installed? scripts/setup.sh installs it)");
}
