fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protoc comes from Debian's protobuf-compiler (scripts/setup.sh installs it).
    tonic_build::configure().compile_protos(
        &["proto/keel.proto", "proto/raft.proto", "proto/host.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
