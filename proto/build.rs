//! Generates the dsfeed.v1 messages and the Feed service with protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=dsfeed/v1/feed.proto");
    tonic_prost_build::configure().compile_protos(&["dsfeed/v1/feed.proto"], &["."])?;
    Ok(())
}
