//! Operational plumbing: the Kubernetes client's QPS limits ([`client_limits`]), counting its
//! requests ([`api_requests`]), the operator's Prometheus metrics and health endpoints
//! ([`telemetry`]), leader election with prompt takeover ([`leadership`]), and the owner reference of
//! what it creates in its namespace ([`owner`]).

pub mod api_requests;
pub mod client_limits;
pub mod leadership;
pub mod owner;
pub mod telemetry;
