//! Compiles the .proto files with `protox`, a pure-Rust protobuf compiler, so that building
//! Herald needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["herald/bus/v1/bus.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["."])?;
    prost_build::Config::new()
        // Payloads stay `Bytes`, so decoding a NATS message borrows its buffer instead of copying.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
