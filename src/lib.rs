//! authd: registration, login and tokens over gRPC, grpc-web and a REST shim.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod config;
pub mod core;
pub mod domain;
pub mod grpc;
pub mod mail;
pub mod metrics;
pub mod rest;
pub mod security;
pub mod server;
pub mod startup;
pub mod store;
pub mod telemetry;

/// The contract, generated from `proto/authd/v1`.
#[allow(clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("authd.v1");

    /// Every authd descriptor, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/authd_descriptor.bin"));
}
