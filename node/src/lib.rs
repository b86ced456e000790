//! The Skiff node agent: registers its Node, heartbeats a Lease, runs the pods bound to it
//! through the runtime trait (WASM in-process, containers through the OCI shim), probes them,
//! captures logs and reports status — talking only to the API server, exactly like a kubelet.

pub mod agent;
pub mod bridge;
pub mod cluster_dns;
pub mod env;
pub mod environment;
pub mod events;
pub mod hollow;
pub mod image_gc;
pub mod ingress;
pub mod ipam;
pub mod lease;
pub mod lifecycle;
pub mod logs;
pub mod node_status;
pub mod nodeapi;
pub mod pod_env;
pub mod pods;
pub mod probe;
pub mod proxy;
pub mod pull_secrets;
pub mod runtime;
pub mod sandbox;
pub mod volumes;
pub mod worker;

pub use agent::{Agent, AgentConfig, AgentError, RunningAgent};
pub use bridge::PodNetwork;
