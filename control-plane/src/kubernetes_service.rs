//! The `default/kubernetes` Service: how pods find the API server, as in every Kubernetes
//! cluster — the first address of the service range, port 443 (`https`), and Endpoints naming
//! the API server's own address and port. Written at every start (the port may differ between
//! runs); the Service itself is kept when it already has that address.
//!
//! What it does not do: reconcile afterwards (a user deleting it gets it back at the next
//! start, as with kube-apiserver's periodic reconciler minus the period), or several API
//! servers' addresses (each start writes its own).

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::apiserver::error::ApiError;
use crate::registry::catalog;
use crate::registry::rest::{Registry, WriteOptions};

/// Namespace and name of the Service (and its Endpoints).
const NAMESPACE: &str = "default";
const NAME: &str = "kubernetes";

/// The Service object at the range's first address, forwarding 443 to the API server's `port`.
fn service(cluster_ip: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    })
}

/// The Endpoints: the API server's address and its real port.
fn endpoints(ip: IpAddr, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip.to_string()}],
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    })
}

/// Creates or refreshes the Service and its Endpoints for the API server at `ip:port`.
pub async fn ensure(registry: &Registry, ip: IpAddr, port: u16) -> Result<(), ApiError> {
    let services = catalog::find("", "v1", "services").ok_or(ApiError::NoRoute)?;
    let cluster_ip = registry.service_allocator().network().nth(1).to_string();
    let wanted = service(&cluster_ip, port);
    match registry.get(services, Some(NAMESPACE), NAME).await {
        Err(ApiError::NotFound { .. }) => {
            registry.create(services, Some(NAMESPACE), wanted, WriteOptions::default()).await?;
        }
        Err(e) => return Err(e),
        Ok(existing) if existing["spec"]["clusterIP"] != json!(cluster_ip) => {
            // Another range than last time: the Service is made again at the new address.
            registry.delete(services, Some(NAMESPACE), NAME, &Default::default()).await?;
            registry.create(services, Some(NAMESPACE), wanted, WriteOptions::default()).await?;
        }
        Ok(_) => {
            registry
                .update_with(services, Some(NAMESPACE), NAME, None, WriteOptions::default(), None, |old| {
                    let mut new = old.clone();
                    new["spec"]["ports"] = wanted["spec"]["ports"].clone();
                    Ok(new)
                })
                .await?;
        }
    }
    let info = catalog::find("", "v1", "endpoints").ok_or(ApiError::NoRoute)?;
    let body = endpoints(ip, port);
    match registry.create(info, Some(NAMESPACE), body.clone(), WriteOptions::default()).await {
        Ok(_) => Ok(()),
        Err(ApiError::AlreadyExists { .. }) => registry
            .update_with(info, Some(NAMESPACE), NAME, None, WriteOptions::default(), None, |old| {
                let mut new = old.clone();
                new["subsets"] = body["subsets"].clone();
                Ok(new)
            })
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    }
}
