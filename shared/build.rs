//! Compiles the suite's protos once, for every service, with a vendored `protoc`
//! so that a fresh machine needs nothing installed beyond cargo.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let protos = [
        "proto/easynote/user/v1/user.proto",
        "proto/easynote/note/v1/note.proto",
    ];
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // Messages that carry a password get a hand-written `Debug` that hides
    // it (src/proto.rs): a request logged with `?` must not leak it.
    config.skip_debug([
        ".easynote.user.v1.CreateUserRequest",
        ".easynote.user.v1.CheckUserRequest",
    ]);
    tonic_prost_build::configure().compile_with_config(config, &protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
