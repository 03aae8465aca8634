//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and writes the
//! descriptor set that server reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] =
    &["authd/v1/user.proto", "authd/v1/auth.proto", "authd/v1/admin.proto", "authd/v1/factors.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("authd_descriptor.bin"), descriptors.encode_to_vec())?;
    // Clients connect through a channel of their own choosing (tonic's `transport`, which
    // the server does not build).
    tonic_prost_build::configure()
        .codec_path("crate::grpc::codec::AuthdCodec")
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
