//! The Skiff control plane: the Kubernetes-compatible API server, the state store it persists
//! to, the per-resource registry (defaulting, validation, subresources), the in-process
//! controllers, the scheduler and the built-in OCI registry for artifacts.
//!
//! It owns the cluster's state; nodes never touch the store, they go through the API server.

pub mod apiserver;
pub mod artifacts;
pub mod controllers;
pub mod ingress_class;
pub mod kube_dns_service;
pub mod kubernetes_service;
pub mod pki;
pub mod registry;
pub mod scheduler;
pub mod server;
pub mod storage;
