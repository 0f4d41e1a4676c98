//! Watch-fed caches the reconciler reads instead of the API server: HPAs in a compact form
//! ([`hpas`]) and which objects point at which scale target ([`target_index`]).

pub mod hpas;
pub mod target_index;
