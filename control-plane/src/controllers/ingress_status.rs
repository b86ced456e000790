//! Ingress status: every node serves the Ingresses of Skiff's class on its own ports, so an
//! Ingress is reachable at the InternalIP of every Ready node — this controller writes those
//! addresses (sorted, each once) into `status.loadBalancer.ingress`, as a cloud ingress
//! controller writes its load balancer's. Keys are Ingresses; a node change (readiness or
//! addresses) enqueues them all. Written only when the list changes.
//!
//! Whose Ingresses: those naming a class whose controller is `skiff.dev/ingress` (or the
//! class `skiff` itself, before its object is seen), and those naming none while no other
//! controller's class is the default — the nodes' own rule (`skiff-node`'s `ingress::class`).
//! Others' Ingresses are left to their controllers.

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::{Value, json};
use tracing::instrument;

use super::informer::key_of;
use super::workqueue::WorkQueue;
use super::{Ctx, Reconcile, ReconcileError, info, write_status};
use crate::ingress_class::{CONTROLLER, NAME as CLASS_NAME};

const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// The controller; keys are `ns/name` of Ingresses.
#[derive(Debug, Clone)]
pub struct IngressStatusController {
    ctx: Ctx,
    queue: WorkQueue,
}

impl IngressStatusController {
    /// Creates the controller and subscribes it to Ingresses, IngressClasses and Nodes.
    pub fn new(ctx: &Ctx) -> Self {
        let c = IngressStatusController { ctx: ctx.clone(), queue: WorkQueue::new() };
        let q = c.queue.clone();
        ctx.inf.ingresses.subscribe(move |change| q.add(&key_of(&change.object().metadata)));
        let (q, ctx2) = (c.queue.clone(), ctx.clone());
        ctx.inf.nodes.subscribe(move |_| enqueue_all(&ctx2, &q));
        let (q, ctx2) = (c.queue.clone(), ctx.clone());
        ctx.inf.ingress_classes.subscribe(move |_| enqueue_all(&ctx2, &q));
        c
    }

    /// Whether the Ingress is served by Skiff's nodes.
    fn ours(&self, ingress: &Ingress) -> bool {
        let classes = self.ctx.inf.ingress_classes.list();
        let named = ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()).or_else(|| {
            ingress.metadata.annotations.as_ref().and_then(|a| a.get(LEGACY_CLASS_ANNOTATION)).map(String::as_str)
        });
        let is_ours = |c: &IngressClass| c.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER);
        let is_default = |c: &IngressClass| {
            c.metadata.annotations.as_ref().and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION)).is_some_and(|v| v == "true")
        };
        match named {
            Some(name) if !name.is_empty() => {
                name == CLASS_NAME || classes.iter().any(|c| c.metadata.name.as_deref() == Some(name) && is_ours(c))
            }
            _ => {
                let defaults: Vec<_> = classes.iter().filter(|c| is_default(c)).collect();
                defaults.is_empty() || defaults.iter().any(|c| is_ours(c))
            }
        }
    }
}

/// Enqueues every Ingress (a node or class change may move them all).
fn enqueue_all(ctx: &Ctx, queue: &WorkQueue) {
    for ingress in ctx.inf.ingresses.list() {
        queue.add(&key_of(&ingress.metadata));
    }
}

/// The InternalIPs of the Ready nodes, sorted, each once.
pub fn ready_node_ips(nodes: &[std::sync::Arc<Node>]) -> Vec<String> {
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|n| {
            let conditions = n.status.as_ref().and_then(|s| s.conditions.as_ref());
            conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

impl Reconcile for IngressStatusController {
    const NAME: &'static str = "ingress-status";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    #[instrument(level = "debug", skip(self), fields(controller = Self::NAME))]
    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        let Some(ingress) = self.ctx.inf.ingresses.get(key) else { return Ok(()) };
        if ingress.metadata.deletion_timestamp.is_some() || !self.ours(&ingress) {
            return Ok(());
        }
        let ips = ready_node_ips(&self.ctx.inf.nodes.list());
        let wanted: Vec<Value> = ips.iter().map(|ip| json!({"ip": ip})).collect();
        let current = ingress
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|list| list.iter().map(|i| json!({"ip": i.ip})).collect::<Vec<_>>())
            .unwrap_or_default();
        if current == wanted {
            return Ok(());
        }
        let mut status = json!(ingress.status.clone().unwrap_or_default());
        let lb = if wanted.is_empty() { json!({}) } else { json!({"ingress": wanted}) };
        status["loadBalancer"] = lb;
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        write_status(&self.ctx.registry, info("networking.k8s.io", "ingresses"), Some(ns), name, status).await
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controllers::testing::TestCluster;

    async fn node(tc: &TestCluster, name: &str, ip: &str, ready: &str) {
        tc.create("", "nodes", None, json!({"metadata": {"name": name}, "spec": {}})).await;
        tc.update("", "nodes", None, name, Some("status"), |n| {
            n["status"] = json!({"conditions": [{"type": "Ready", "status": ready}],
                                 "addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]});
        })
        .await;
    }

    fn ingress(name: &str, class: Option<&str>) -> Value {
        json!({"metadata": {"name": name}, "spec": {"ingressClassName": class,
            "defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}})
    }

    async fn lb_ips(tc: &TestCluster, name: &str) -> Value {
        let ing = tc.get("networking.k8s.io", "ingresses", Some("default"), name).await.expect("ingress exists");
        ing["status"]["loadBalancer"]["ingress"].clone()
    }

    #[tokio::test]
    async fn ready_nodes_internal_ips_on_our_ingresses_only() {
        let tc = TestCluster::start().await;
        let c = IngressStatusController::new(&tc.ctx);
        node(&tc, "b", "10.0.0.2", "True").await;
        node(&tc, "a", "10.0.0.1", "True").await;
        node(&tc, "down", "10.0.0.9", "False").await;
        tc.create("networking.k8s.io", "ingresses", Some("default"), ingress("mine", None)).await;
        tc.create("networking.k8s.io", "ingresses", Some("default"), ingress("named", Some("skiff"))).await;
        tc.create("networking.k8s.io", "ingresses", Some("default"), ingress("theirs", Some("nginx"))).await;
        tc.settle().await;
        for name in ["mine", "named", "theirs"] {
            c.reconcile(&format!("default/{name}")).await.expect("reconcile");
        }
        let both = json!([{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]);
        assert_eq!(lb_ips(&tc, "mine").await, both);
        assert_eq!(lb_ips(&tc, "named").await, both);
        assert_eq!(lb_ips(&tc, "theirs").await, Value::Null);

        // A node going NotReady leaves the list.
        tc.update("", "nodes", None, "b", Some("status"), |n| n["status"]["conditions"][0]["status"] = json!("False"))
            .await;
        tc.settle().await;
        c.reconcile("default/mine").await.expect("reconcile");
        assert_eq!(lb_ips(&tc, "mine").await, json!([{"ip": "10.0.0.1"}]));
    }
}
