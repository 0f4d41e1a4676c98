//! Pieces several scalers share, written once: error text ([`errors`]), TLS client configurations
//! ([`tls`]), the pooled HTTP client and its JSON GET and bounded body reads ([`http`]), the
//! process-wide in-flight byte budget ([`budget`]), pools whose values live while used
//! ([`pool`]), JSON leaves read without building the document ([`json_leaf`]), Kubernetes
//! quantities ([`quantity`]), each namespace's share of requests to tenants' servers
//! ([`namespace_slots`]), and the activity watcher of the scalers that watch their source
//! between polls ([`activity`]).

pub mod activity;
pub mod budget;
pub mod errors;
pub mod http;
pub mod json_leaf;
pub mod namespace_slots;
pub mod pool;
pub mod quantity;
pub mod tls;
