//! The OCI side of the node runtime trait: image pull into a content store shared with WASM
//! artifacts, layer unpacking into snapshots, OCI runtime spec generation and driving `runc`,
//! and per-pod network namespaces through the CNI plugins.
//!
//! - [`image`]: pulling artifacts by reference from any OCI registry into a content-addressed
//!   store, container layers unpacked once into read-only snapshots, image GC, pushing WASM
//!   artifacts and OCI image layouts.
//! - [`runtime`]: OCI runtime specs (`oci-spec`), bundles on overlayfs, and `runc` driven
//!   through one small shim process per container (so containers outlive an agent restart).
//! - [`network`]: per-pod network namespaces joined to the node bridge through the CNI
//!   plugins, and the pod's `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`.

pub mod image;
pub mod network;
pub mod runtime;
