//! The generated `dsfeed.v1` types: see `dsfeed/v1/feed.proto` for the
//! protocol's rules (state of the world, version + nonce, ACK/NACK).

/// Package `dsfeed.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("dsfeed.v1");
}
