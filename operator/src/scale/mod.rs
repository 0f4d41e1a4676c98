//! Scaling one object: the per-object loop ([`scale_loop`]), its pure decisions ([`decision`]) and
//! reading and writing the target's replicas ([`targets`]).

pub mod decision;
pub mod scale_loop;
pub mod targets;
