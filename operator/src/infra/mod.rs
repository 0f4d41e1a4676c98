//! Operational plumbing: the Kubernetes client's QPS limits ([`client_limits`]), counting its
//! requests ([`api_requests`]), the operator's Prometheus metrics and health endpoints
//! ([`telemetry`]), the log's filter and format ([`logging`]), leader election with prompt takeover and a renew deadline ([`leadership`]),
//! the owner reference of what it creates in its namespace ([`owner`]), retries with backoff
//! ([`backoff`]) of start-up calls ([`startup`]) and of HPA API discovery ([`hpa_discovery`]).

pub mod api_requests;
pub mod backoff;
pub mod client_limits;
pub mod hpa_discovery;
pub mod leadership;
pub mod logging;
pub mod owner;
pub mod startup;
pub mod telemetry;
