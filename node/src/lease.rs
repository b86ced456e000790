//! The node heartbeat: a `coordination.k8s.io` Lease named after the node in
//! `kube-node-lease`, renewed every interval (the kubelet's node lease).
//!
//! What it owns: creating the Lease (owned by the Node, so it goes when the Node does) and
//! bumping `spec.renewTime`. What it does not: judge liveness — the control plane reads it.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The namespace of node leases.
pub const NAMESPACE: &str = "kube-node-lease";
/// `spec.leaseDurationSeconds`.
pub const DURATION_SECONDS: i32 = 40;

/// The Lease the agent wants, owned by `node` (when its uid is known).
pub fn desired_lease(node_name: &str, node: Option<&Node>, now: Timestamp) -> Lease {
    let owner = node.and_then(|n| n.metadata.uid.clone()).map(|uid| OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node_name.into(),
        uid,
        ..OwnerReference::default()
    });
    Lease {
        metadata: ObjectMeta {
            name: Some(node_name.into()),
            namespace: Some(NAMESPACE.into()),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node_name.into()),
            lease_duration_seconds: Some(DURATION_SECONDS),
            renew_time: Some(MicroTime(now)),
            ..LeaseSpec::default()
        }),
    }
}

/// Renews the lease now and every `interval` until `cancel` fires.
pub async fn heartbeat(
    client: kube::Client,
    node_name: String,
    node: Option<Node>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(client, NAMESPACE);
    loop {
        if let Err(e) = renew(&api, &node_name, node.as_ref()).await {
            warn!(node = %node_name, error = %e, "renewing the node lease failed");
        }
        if cancel.run_until_cancelled(tokio::time::sleep(interval)).await.is_none() {
            return;
        }
    }
}

/// Renews (or creates) the Lease of `node_name` once — for callers with their own schedule,
/// such as the hollow nodes, which spread thousands of renewals over one interval.
pub async fn renew_once(client: kube::Client, node_name: &str) -> Result<(), kube::Error> {
    renew(&Api::namespaced(client, NAMESPACE), node_name, None).await
}

async fn renew(api: &Api<Lease>, node_name: &str, node: Option<&Node>) -> Result<(), kube::Error> {
    let now = Timestamp::now();
    let patch = json!({ "spec": { "holderIdentity": node_name, "leaseDurationSeconds": DURATION_SECONDS, "renewTime": MicroTime(now) } });
    match api.patch(node_name, &PatchParams::default(), &Patch::Merge(patch)).await {
        Ok(_) => {
            debug!(node = %node_name, "lease renewed");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => {
            api.create(&PostParams::default(), &desired_lease(node_name, node, now)).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_shape() {
        let node = Node {
            metadata: ObjectMeta { name: Some("n1".into()), uid: Some("u1".into()), ..ObjectMeta::default() },
            ..Node::default()
        };
        let now = Timestamp::from_second(5).expect("ts");
        let lease = desired_lease("n1", Some(&node), now);
        let spec = lease.spec.expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(spec.renew_time, Some(MicroTime(now)));
        let owner = &lease.metadata.owner_references.expect("owner")[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Node", "u1"));
        assert!(desired_lease("n1", None, now).metadata.owner_references.is_none());
    }
}
