//! Cluster DNS: answers the Kubernetes DNS-based service discovery specification for the
//! cluster zone from a service/endpoint cache, forwards other names upstream, and computes the
//! SkyDNS-format records the control plane publishes.
//!
//! - [`ClusterRecords`] (`records.rs`): the cache, fed by whoever watches Services/Endpoints
//!   (the node agent); no Kubernetes API client here.
//! - `addresses.rs`: a name's addresses ([`NameAddresses`]) for in-process resolvers.
//! - `lookup.rs`: query → [`Resolution`] (records, NODATA, NXDOMAIN or not ours), pure logic.
//! - [`DnsServer`] (`server.rs`, `handler.rs`, `udp.rs`, `cache.rs`, `mmsg.rs`): our request
//!   handler behind hickory's TCP server and our own UDP receive threads (batched system calls)
//!   with an answer cache; [`Forwarder`] (`forward.rs`) sends other names to upstream resolvers, cached.
//! - [`skydns_records`] (`skydns.rs`): the `/skydns/...` keys and JSON values for a Service.
//!
//! Embedding it (the node agent's job):
//!
//! ```no_run
//! # async fn run(services: Vec<k8s_openapi::api::core::v1::Service>) -> anyhow::Result<()> {
//! use skiff_dns::{ClusterHandler, ClusterRecords, DnsServer, Forwarder, Upstreams, ZoneConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! let records = ClusterRecords::new(ZoneConfig::default());
//! for service in &services {
//!     records.upsert_service(service); // and upsert_endpoints, from the informers
//! }
//! // Upstreams from /etc/resolv.conf, which must not point back at this server.
//! let forwarder = Forwarder::new(&Upstreams::default())?;
//! let cancel = CancellationToken::new();
//! let handler = ClusterHandler::new(records.clone(), Some(forwarder));
//! let server = DnsServer::start("10.96.0.10:53".parse()?, handler, cancel.child_token()).await?;
//! // ... later
//! cancel.cancel();
//! server.wait().await?;
//! # Ok(())
//! # }
//! ```

mod addresses;
mod cache;
mod forward;
mod handler;
mod lookup;
mod mmsg;
mod records;
mod server;
mod skydns;
mod udp;

pub use addresses::NameAddresses;
pub use forward::{ForwardError, Forwarded, Forwarder, Upstreams};
pub use handler::ClusterHandler;
pub use lookup::Resolution;
pub use records::{ClusterRecords, ZoneConfig};
pub use server::{DnsServer, ServerError};
pub use skydns::{SKYDNS_TTL, service_key, skydns_records, skydns_records_in_zone};
