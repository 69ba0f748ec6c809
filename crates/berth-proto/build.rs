//! Compiles `proto/**/*.proto` with protox (a protobuf compiler written in Rust), so
//! building Berth never needs `protoc` on the machine.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "berth/agent/v1/agent.proto",
        "berth/registry/v1/registry.proto",
        "berth/registry/v1/cluster.proto",
        "berth/diag/v1/diag.proto",
        "nacos/grpc.proto",
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    let descriptors = protox::compile(files, [&root])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
