//! Compiles the .proto files with `protox`, a pure-Rust protobuf compiler, so that building
//! Herald needs no system `protoc`: the bus envelopes with `prost`, the server API with
//! `tonic` (client and server), and the API's descriptors for gRPC server reflection; the
//! gateways' control service and the hooks a backend implements, with `tonic` too.

use std::path::PathBuf;

use prost::Message;

const BUS: &str = "herald/bus/v1/bus.proto";
const API: &str = "herald/api/v1/api.proto";
const BACKEND: &str = "herald/backend/v1/backend.proto";
const CONTROL: &str = "herald/control/v1/control.proto";

/// Fields of the hooks' messages that hold JSON text, embedded as JSON in HTTP hooks.
const JSON_FIELDS: [&str; 8] = [
    "Client.info",
    "ConnectRequest.data",
    "ConnectReply.info",
    "RefreshReply.info",
    "SubscribeReply.info",
    "PublishRequest.data",
    "RpcRequest.data",
    "RpcReply.data",
];
const JSON_TEXT: &str = "#[serde(with = \"crate::json::text\")]";
const JSON_TEXT_OPTION: &str = "#[serde(with = \"crate::json::text_option\")]";
const BASE64: &str = "#[serde(with = \"crate::json::base64_list\")]";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for file in [BUS, API, BACKEND, CONTROL] {
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

    let control = protox::compile([CONTROL], ["."])?;
    tonic_prost_build::configure().compile_fds(control)?;

    let backend = protox::compile([BACKEND], ["."])?;
    let mut hooks = tonic_prost_build::configure()
        .bytes(".")
        // The client's `connect(endpoint)` constructor would clash with the `Connect`
        // call; clients are made from a channel with `new`.
        .build_transport(false)
        // The same messages are the JSON of HTTP hooks: snake_case names as in the
        // .proto, JSON payloads embedded as JSON, bytes in base64.
        .message_attribute(
            ".herald.backend.v1",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .field_attribute(".herald.backend.v1.PublishRequest.attachments", BASE64);
    for field in JSON_FIELDS {
        hooks = hooks.field_attribute(format!(".herald.backend.v1.{field}"), JSON_TEXT);
    }
    hooks
        .field_attribute(".herald.backend.v1.PublishReply.data", JSON_TEXT_OPTION)
        .compile_fds(backend)?;
    Ok(())
}
