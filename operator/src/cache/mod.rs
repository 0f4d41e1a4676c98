//! Watch-fed caches the reconciler reads instead of the API server: HPAs in a compact form
//! ([`hpas`]) and which objects point at which scale target ([`target_index`]), and the generic
//! watch-fed [`index::WatchIndex`] (apply/delete/reset, re-lists swapped in whole).

pub mod hpas;
pub mod index;
pub mod target_index;
