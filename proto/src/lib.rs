//! Generated protocol types of podrestore.
//!
//! - [`criu`]: CRIU's RPC schema (`criu swrk`), proto2, field numbers from CRIU's `images/rpc.proto`.

/// CRIU's RPC messages (`criu/rpc.proto`).
#[allow(clippy::all, clippy::unwrap_used, missing_docs)]
pub mod criu {
    include!(concat!(env!("OUT_DIR"), "/criu.rs"));
}
