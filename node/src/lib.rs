//! The Skiff node agent: registers its Node, heartbeats a Lease, runs the pods bound to it
//! through the runtime trait (WASM in-process, containers through the OCI shim), probes them,
//! captures logs and reports status — talking only to the API server, exactly like a kubelet.

pub mod env;
pub mod environment;
pub mod logs;
pub mod pod_env;
pub mod runtime;
pub mod volumes;
pub mod nodeapi;
