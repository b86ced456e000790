//! Pod networking for OCI containers: a network namespace per pod, attached to the node bridge
//! by the standard CNI plugins, and the pod's `/etc/{hosts,hostname,resolv.conf}`.
//!
//! - [`netns`]: create / delete the named namespace runc joins.
//! - [`cni`]: ADD / CHECK / DEL through `loopback`, `bridge` + `static` IPAM and `portmap`,
//!   with the address Skiff's node allocator chose (one allocator for WASM and container pods).
//! - [`files`]: the per-pod resolver and hosts files to bind-mount into containers.
//!
//! Nothing here knows Kubernetes types; the node agent maps a pod onto [`PodAttachment`] and
//! [`PodFiles`].
//!
//! Order for a pod: [`Netns::create`] → [`Cni::add`] → [`write_pod_files`] → runc with
//! `linux.namespaces: [{type: network, path: netns.path()}]`. Teardown: [`Cni::del`] (while
//! the namespace still exists, so the veth goes with it) → [`Netns::delete`].

pub mod cni;
mod conflist;
mod exec;
pub mod files;
pub mod netns;
pub mod resolv;
mod result;

pub use cni::{Cni, CniConfig, CniError, PodAttachment, PortMapping, Protocol};
pub use conflist::{CNI_VERSION, gateway_of};
pub use files::{Dns, FilesError, HostAlias, PodFilePaths, PodFiles, write_pod_files};
pub use netns::{Netns, NetnsError};
pub use resolv::{ClusterDns, DnsPolicy, PodDns, ResolvConf, pod_resolv_conf};
pub use result::PodNetworkStatus;
