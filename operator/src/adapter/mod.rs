//! The operator's side of the embedded metrics adapter: the poll cache the scale loops fill
//! ([`metric_cache`]), the provider that answers HPA requests from it ([`provider`]), forwarding
//! from a standby to the leader ([`leader_forward`]) with its own credentials ([`forward_token`]),
//! the adapter's certificates ([`certs`]), the replica's readiness ([`readiness`]) and the chain to a
//! delegate adapter for metrics ebb does not own ([`delegate`]).

pub mod certs;
pub mod chain_record;
pub mod delegate;
pub mod forward_token;
pub mod leader_forward;
pub mod metric_cache;
pub mod provider;
pub mod readiness;
pub mod serve;
