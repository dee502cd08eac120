//! The AgentLink gRPC service: generated types, client and server.
#![allow(clippy::all)]

pub mod v1 {
    tonic::include_proto!("microseg.v1");
}
