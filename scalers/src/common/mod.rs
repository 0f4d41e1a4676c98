//! Pieces several scalers share: TLS trust settings for their clients.

pub mod tls;
