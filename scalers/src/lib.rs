//! ebb's scalers: one module per trigger type.
//!
//! Each scaler declares its parameters once, in a [`params::ScalerDecl`] (name, type, default,
//! required, where a value may come from, exclusivity rules). [`params::parse`] turns a trigger's
//! metadata, resolved auth params and resolved env into typed values from that declaration alone;
//! [`registry`] finds the declaration for a trigger type. Clients that talk to brokers live next to
//! their declaration.

pub mod aws_sqs;
pub mod aws_sqs_client;
pub mod kafka;
pub mod kafka_client;
pub mod metric_name;
pub mod metrics_api;
pub mod metrics_api_client;
pub mod nats_jetstream;
pub mod nats_jetstream_client;
pub mod params;
pub mod rabbitmq;
pub mod rabbitmq_client;
pub mod registry;
pub mod runtime;
pub mod tls_trust;

pub use params::{ParamError, ParsedParams, ScalerDecl, Thresholds, TriggerInput, TriggerParseError};
pub use registry::{declaration, parse_trigger, supported_types};
