//! Compiles the server side of KEDA's `externalscaler.proto` (the same file ebb's client is built
//! from, `scalers/proto/`) for the test external scaler, with protox: no `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "../scalers/proto";
    let proto = "../scalers/proto/externalscaler.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], [dir])?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
