//! The HTTP API server: Kubernetes REST conventions over HTTPS.

pub mod openapi;
