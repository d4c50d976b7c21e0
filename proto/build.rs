//! Compiles the .proto files with `protox`, a pure-Rust protobuf compiler, so that building
//! Herald needs no system `protoc`: the bus envelopes with `prost`, the server API with
//! `tonic` (client and server), and the API's descriptors for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

const BUS: &str = "herald/bus/v1/bus.proto";
const API: &str = "herald/api/v1/api.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in [BUS, API] {
        println!("cargo:rerun-if-changed={file}");
    }
    let bus = protox::compile([BUS], ["."])?;
    prost_build::Config::new()
        // Payloads stay `Bytes`, so decoding a NATS message borrows its buffer instead of copying.
        .bytes(["."])
        .compile_fds(bus)?;

    let api = protox::compile([API], ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("herald_api_v1.bin"), api.encode_to_vec())?;
    tonic_prost_build::configure().bytes(".").compile_fds(api)?;
    Ok(())
}
