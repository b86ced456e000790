//! The `kube-system/kube-dns` Service: where pods find the cluster DNS, as in every Kubernetes
//! cluster — the service range's tenth address, ports 53 over UDP (`dns`) and TCP (`dns-tcp`),
//! label `k8s-app=kube-dns`. It has no selector and no Endpoints: every node agent serves the
//! address itself (its DNS server listens on the cluster IP), so there is nothing to balance.
//!
//! Written at every start, idempotently: kept when it already has that address (ports and
//! labels refreshed), made again when the range changed. When someone else's Service already
//! holds the address, a clear error is logged and start-up goes on: the cluster works, only
//! the DNS address is not advertised by a Service.

use serde_json::{Value, json};
use tracing::{error, info};

use crate::apiserver::error::ApiError;
use crate::registry::catalog;
use crate::registry::rest::{Registry, WriteOptions};

/// Namespace and name of the Service.
pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "kube-dns";

/// Offset of the DNS address in the service range (`10.96.0.10` in `10.96.0.0/16`).
pub const DNS_OFFSET: u32 = 10;

/// The Service at `cluster_ip`.
fn service(cluster_ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels()},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "sessionAffinity": "None", "ports": ports()},
    })
}

fn labels() -> Value {
    json!({"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS", "kubernetes.io/cluster-service": "true"})
}

fn ports() -> Value {
    json!([
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
    ])
}

/// Creates or refreshes the Service. Only store failures are errors; a taken address is
/// logged (see the module docs).
pub async fn ensure(registry: &Registry) -> Result<(), ApiError> {
    let services = catalog::find("", "v1", "services").ok_or(ApiError::NoRoute)?;
    let cluster_ip = registry.service_allocator().network().nth(DNS_OFFSET).to_string();
    let wanted = service(&cluster_ip);
    let create = || async {
        match registry.create(services, Some(NAMESPACE), wanted.clone(), WriteOptions::default()).await {
            Ok(_) => {
                info!(%cluster_ip, "created Service kube-system/kube-dns");
                Ok(())
            }
            Err(ApiError::Invalid { causes, .. }) => {
                let reason = causes.iter().map(|c| c.message.clone()).collect::<Vec<_>>().join("; ");
                error!(%cluster_ip, %reason,
                    "cannot create Service kube-system/kube-dns: its address is held by another Service; \
                     pods still resolve through the node's DNS at this address, but no Service names it");
                Ok(())
            }
            Err(e) => Err(e),
        }
    };
    match registry.get(services, Some(NAMESPACE), NAME).await {
        Err(ApiError::NotFound { .. }) => create().await,
        Err(e) => Err(e),
        Ok(existing) if existing["spec"]["clusterIP"] != json!(cluster_ip) => {
            // Another range than last time (or a hand-made kube-dns): made again at the address.
            registry.delete(services, Some(NAMESPACE), NAME, &Default::default()).await?;
            create().await
        }
        Ok(_) => registry
            .update_with(services, Some(NAMESPACE), NAME, None, WriteOptions::default(), None, |old| {
                let mut new = old.clone();
                new["spec"]["ports"] = ports();
                let labels = new["metadata"]["labels"].as_object().cloned().unwrap_or_default();
                let mut merged = labels;
                for (k, v) in self::labels().as_object().into_iter().flatten() {
                    merged.insert(k.clone(), v.clone());
                }
                new["metadata"]["labels"] = Value::Object(merged);
                Ok(new)
            })
            .await
            .map(|_| ()),
    }
}
