//! Compiles the protocol schemas under this folder with protox (pure Rust, no system
//! protoc) and generates prost messages and tonic services from them.

use std::error::Error;

/// The schemas this crate compiles, relative to this folder.
const PROTOS: &[&str] = &["criu/rpc.proto", "agent/agent.proto", "cri/api.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(descriptors)?;
    Ok(())
}
