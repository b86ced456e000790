//! Cluster DNS: answers the Kubernetes DNS-based service discovery specification for the
//! cluster zone from a service/endpoint cache, forwards other names upstream, and computes the
//! SkyDNS-format records the control plane publishes.
//!
//! - [`ClusterRecords`] (`records.rs`): the cache, fed by whoever watches Services/Endpoints
//!   (the node agent); no Kubernetes API client here.
//! - `lookup.rs`: query → [`Resolution`] (records, NODATA, NXDOMAIN or not ours), pure logic.
//! - [`DnsServer`] (`server.rs`, `handler.rs`): hickory's UDP/TCP server with our request
//!   handler; [`Forwarder`] (`forward.rs`) sends other names to upstream resolvers, cached.
//! - [`skydns_records`] (`skydns.rs`): the `/skydns/...` keys and JSON values for a Service.

mod forward;
mod handler;
mod lookup;
mod records;
mod server;
mod skydns;

pub use forward::{ForwardError, Forwarded, Forwarder, Upstreams};
pub use handler::ClusterHandler;
pub use lookup::Resolution;
pub use records::{ClusterRecords, ZoneConfig};
pub use server::{DnsServer, ServerError};
pub use skydns::{SKYDNS_TTL, service_key, skydns_records, skydns_records_in_zone};
