//! Pieces several scalers share, written once: error text ([`errors`]), TLS client configurations
//! ([`tls`]), the pooled HTTP client and its JSON GET ([`http`]), Kubernetes quantities
//! ([`quantity`]), and the activity watcher of the scalers that watch their source between polls
//! ([`activity`]).

pub mod activity;
pub mod errors;
pub mod http;
pub mod quantity;
pub mod tls;
