//! Cluster DNS: a `hickory-server` authority answering the Kubernetes DNS specification from
//! the service/endpoint cache, forwarding other names upstream, and publishing SkyDNS-format
//! records.
//!
//! Not implemented yet: this crate holds only its overview until the services issue fills it.
