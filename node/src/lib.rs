//! The Skiff node agent: registers its Node, heartbeats a Lease, runs the pods bound to it
//! through the runtime trait (WASM in-process, containers through the OCI shim), probes them,
//! captures logs and reports status — talking only to the API server, exactly like a kubelet.
//!
//! Not implemented yet: this crate holds only its overview until the node-agent issue fills it.
