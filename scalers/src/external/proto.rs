//! The Rust types and the client of KEDA's `externalscaler.proto` (`scalers/proto/`), generated at
//! build time (`scalers/build.rs`, protox and tonic-prost-build: no `protoc` needed).

#![allow(missing_docs, clippy::all)]

tonic::include_proto!("externalscaler");
