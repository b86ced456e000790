//! The HTTP API server: Kubernetes REST conventions over HTTPS.

pub mod serve;
pub mod table;
