//! The AgentLink gRPC service: generated types, client and server.
#![allow(clippy::all)]

pub mod v1 {
    tonic::include_proto!("microseg.v1");
}

pub mod parts;

/// For sizing messages as they are encoded (`prost::Message::encoded_len`).
pub use prost;

/// The largest gRPC message either end of the agent link accepts. Aligned with the
/// controller's request body limit, so that any resource the controller stores fits in
/// one message.
pub const MAX_MESSAGE_BYTES: usize = 80 << 20;

/// The largest single resource (its JSON form) the controller accepts at apply time.
pub const MAX_RESOURCE_BYTES: usize = 64 << 20;

const _: () = assert!(MAX_RESOURCE_BYTES < MAX_MESSAGE_BYTES);

/// A desired state larger than this is sent in several messages (`DesiredState.more`).
pub const STATE_CHUNK_BYTES: usize = 1 << 20;

/// gRPC metadata of `Sync`: the controller's answer names its store (a number made with
/// its database); an agent that resyncs sends it back with the revision it holds, and a
/// controller of that store then sends only what changed since, not the full state.
pub const STORE_HEADER: &str = "microseg-store";
