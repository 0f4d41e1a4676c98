//! Watch-fed caches the operator reads instead of the API server, all built on one generic
//! [`index::WatchIndex`] (apply/delete/reset, re-lists swapped in whole): HPAs in a compact form
//! filed by scale target ([`hpas`]), ScaledObjects by scale target ([`target_index`]), and the
//! replica counts of Deployments and StatefulSets ([`workloads`]), ScaledJobs' Jobs and their pods
//! ([`jobs`]); discovery answers per kind ([`kinds`]); and whether a watch has listed everything
//! ([`listed`]). [`auth_refs`] (its own maps: an object names several authentications) says who
//! uses which TriggerAuthentication and which Secrets those read.

pub mod auth_refs;
pub mod hpas;
pub mod index;
pub mod jobs;
pub mod kinds;
pub mod listed;
pub mod target_index;
pub mod workloads;
