//! Pieces several scalers share, written once: error text ([`errors`]), TLS client configurations
//! ([`tls`]), the pooled HTTP client and its JSON GET ([`http`]), and Kubernetes quantities
//! ([`quantity`]).

pub mod errors;
pub mod http;
pub mod quantity;
pub mod tls;
