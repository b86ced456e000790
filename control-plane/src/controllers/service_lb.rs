//! The built-in load balancer's status writer (k3s's servicelb, without its pods): every node's
//! service proxy serves a `type: LoadBalancer` Service's ports on the node's own address, so
//! the Service's `status.loadBalancer.ingress` lists the InternalIPs of the Ready nodes. A
//! Service that is no longer of that type has its ingress cleared.
//!
//! What it owns: that status field, kept in step with Services and Nodes (a node becoming Ready
//! or NotReady, or changing address, re-reconciles every LoadBalancer Service). What it does
//! not: serve anything (the node agents' proxies do), or touch Services naming a
//! `spec.loadBalancerClass` (another implementation's, as in Kubernetes).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use serde_json::{Value, json};
use tracing::instrument;

use super::informer::{Change, key_of};
use super::workqueue::WorkQueue;
use super::{Ctx, Reconcile, ReconcileError, info, write_status};

/// Keeps `status.loadBalancer` of Services (keys `ns/name`).
#[derive(Debug, Clone)]
pub struct ServiceLbController {
    ctx: Ctx,
    queue: WorkQueue,
}

impl ServiceLbController {
    /// Creates the controller, subscribed to Services and Nodes.
    pub fn new(ctx: &Ctx) -> Self {
        let c = ServiceLbController { ctx: ctx.clone(), queue: WorkQueue::new() };
        let q = c.queue.clone();
        ctx.inf.services.subscribe(move |change| q.add(&key_of(&change.object().metadata)));
        let (q, ctx2) = (c.queue.clone(), ctx.clone());
        ctx.inf.nodes.subscribe(move |change: &Change<Node>| {
            if let Change::Updated { old, new } = change
                && node_ingress(old) == node_ingress(new)
            {
                return;
            }
            for svc in ctx2.inf.services.list_where(is_ours) {
                q.add(&key_of(&svc.metadata));
            }
        });
        c
    }

    /// The ingress list Services of this node set should show: Ready nodes' InternalIPs.
    fn ingress(&self) -> Vec<String> {
        let mut ips: Vec<String> = self.ctx.inf.nodes.list().iter().filter_map(|n| node_ingress(n)).collect();
        ips.sort();
        ips.dedup();
        ips
    }
}

/// A LoadBalancer Service this controller implements (no `loadBalancerClass`).
fn is_ours(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none())
}

/// The node's InternalIP while it is Ready.
fn node_ingress(node: &Node) -> Option<String> {
    let status = node.status.as_ref()?;
    let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    let ip = status.addresses.iter().flatten().find(|a| a.type_ == "InternalIP")?;
    ready.then(|| ip.address.clone())
}

/// `status.loadBalancer.ingress` as written: `[{ip}]` per address, or nothing.
fn ingress_json(ips: &[String]) -> Value {
    if ips.is_empty() {
        json!({})
    } else {
        json!({"ingress": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>()})
    }
}

impl Reconcile for ServiceLbController {
    const NAME: &'static str = "service-lb";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    #[instrument(level = "debug", skip(self), fields(controller = Self::NAME))]
    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        let Some(svc): Option<Arc<Service>> = self.ctx.inf.services.get(key) else { return Ok(()) };
        let is_lb = svc.spec.as_ref().is_some_and(|s| s.type_.as_deref() == Some("LoadBalancer"));
        if is_lb && !is_ours(&svc) {
            return Ok(());
        }
        let want = if is_lb { ingress_json(&self.ingress()) } else { json!({}) };
        let status = serde_json::to_value(svc.status.clone().unwrap_or_default()).unwrap_or_else(|_| json!({}));
        let have = status.get("loadBalancer").cloned().unwrap_or_else(|| json!({}));
        let have =
            if have.get("ingress").is_some_and(|i| i.as_array().is_some_and(Vec::is_empty)) { json!({}) } else { have };
        if have == want {
            return Ok(());
        }
        let mut status = if status.is_object() { status } else { json!({}) };
        status["loadBalancer"] = want;
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        write_status(&self.ctx.registry, info("", "services"), Some(ns), name, status).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::testing::TestCluster;

    async fn node(tc: &TestCluster, name: &str, ip: &str, ready: bool) {
        tc.create("", "nodes", None, json!({"metadata": {"name": name}})).await;
        let ready = if ready { "True" } else { "False" };
        tc.update("", "nodes", None, name, Some("status"), |n| {
            n["status"] = json!({"addresses": [{"type": "InternalIP", "address": ip}],
                "conditions": [{"type": "Ready", "status": ready}]});
        })
        .await;
    }

    async fn lb_status(tc: &TestCluster, c: &ServiceLbController, name: &str) -> Value {
        tc.settle().await;
        c.reconcile(&format!("default/{name}")).await.expect("reconcile");
        tc.settle().await;
        let svc = tc.get("", "services", Some("default"), name).await.expect("service");
        svc["status"]["loadBalancer"].clone()
    }

    #[tokio::test]
    async fn ready_nodes_are_the_ingress_and_a_type_change_clears_it() {
        let tc = TestCluster::start().await;
        let c = ServiceLbController::new(&tc.ctx);
        node(&tc, "n1", "192.168.1.2", true).await;
        node(&tc, "n2", "192.168.1.3", false).await;
        node(&tc, "n3", "192.168.1.1", true).await;
        tc.create(
            "",
            "services",
            Some("default"),
            json!({"metadata": {"name": "web"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
        )
        .await;
        let status = lb_status(&tc, &c, "web").await;
        assert_eq!(status, json!({"ingress": [{"ip": "192.168.1.1"}, {"ip": "192.168.1.2"}]}));

        tc.update("", "services", Some("default"), "web", None, |s| {
            s["spec"]["type"] = json!("ClusterIP");
            s["spec"].as_object_mut().map(|spec| spec.remove("ports"));
            s["spec"]["ports"] = json!([{"port": 80}]);
        })
        .await;
        let status = lb_status(&tc, &c, "web").await;
        assert!(status.get("ingress").is_none(), "{status}");
    }

    #[tokio::test]
    async fn another_class_is_left_alone() {
        let tc = TestCluster::start().await;
        let c = ServiceLbController::new(&tc.ctx);
        node(&tc, "n1", "192.168.1.2", true).await;
        tc.create(
            "",
            "services",
            Some("default"),
            json!({"metadata": {"name": "ext"},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": "example.com/lb", "ports": [{"port": 80}]}}),
        )
        .await;
        let status = lb_status(&tc, &c, "ext").await;
        assert!(status.get("ingress").is_none(), "{status}");
    }
}
