//! Operational plumbing: the Kubernetes client's QPS limits ([`client_limits`]), counting its
//! requests ([`api_requests`]), and the operator's Prometheus metrics and health endpoints
//! ([`telemetry`]).

pub mod api_requests;
pub mod client_limits;
pub mod telemetry;
