//! Compiles `schemas/*.proto` with protox (pure Rust), so a fresh machine needs no protoc.
fn main() {
    let files = ["schemas/events.proto", "schemas/core.proto", "schemas/head.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["schemas"]).expect("proto/schemas do not compile");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Chunks of objects between nodes: sliced from the receive buffer, not copied out.
        .bytes(".rayr.ObjectChunk.data")
        .compile_fds(fds)
        .expect("code generation from proto/schemas failed");
}
