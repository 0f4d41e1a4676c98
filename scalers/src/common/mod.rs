//! Pieces several scalers share: TLS trust settings for their clients, and the activity watcher
//! of the scalers that watch their source between polls.

pub mod activity;
pub mod tls;
