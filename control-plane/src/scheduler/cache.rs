//! The scheduler's cache: every node with the usage of the pods on it, kept current from the
//! informer events instead of rebuilt for each decision — rebuilding walked every node and
//! every pod per pod placed, O(pods × (nodes + pods)) for a large rollout. As in the Go
//! scheduler's cache, a pod the scheduler has just chosen a node for is *assumed* there
//! (counted at once), and the watch event of its binding later confirms it in place.
//!
//! Each pod is counted at most once: [`SchedulerCache::pods`] remembers where and with which
//! demand, so an update moves or replaces it and a delete un-counts exactly what was counted.
//! Pure data, no I/O; the shell in `run.rs` holds it under a mutex.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};

use super::node_info::{NodeInfo, PodDemand, holds_resources};

/// Where one pod is counted.
#[derive(Debug, Clone)]
struct Placed {
    node: String,
    demand: PodDemand,
    /// Chosen by this scheduler, not yet seen bound in the cache.
    assumed: bool,
}

/// Nodes in a stable order with their usage (see the module docs).
#[derive(Debug, Default)]
pub struct SchedulerCache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    pods: HashMap<String, Placed>,
    /// Where the next search for feasible nodes starts (round robin over the nodes).
    next_start: usize,
}

impl SchedulerCache {
    /// The nodes, in the order searches walk them.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// Where the next search starts, and records where it ended.
    pub fn next_start(&self) -> usize {
        self.next_start
    }

    /// Records where the last search stopped, so the next one starts after it.
    pub fn set_next_start(&mut self, at: usize) {
        self.next_start = if self.nodes.is_empty() { 0 } else { at % self.nodes.len() };
    }

    /// Whether `key` is assumed (chosen, binding not yet observed).
    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed)
    }

    /// A node was added or changed.
    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        if let Some(&i) = self.index.get(&name) {
            self.nodes[i].set_node(node);
            return;
        }
        let mut info = NodeInfo::new(node);
        // Pods may have been counted here before the node (re)appeared.
        for p in self.pods.values().filter(|p| p.node == name) {
            info.add_demand(&p.demand);
        }
        self.index.insert(name, self.nodes.len());
        self.nodes.push(info);
    }

    /// A node was deleted; its pods stay remembered in case it comes back.
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else { return };
        self.nodes.swap_remove(i);
        if let Some(moved) = self.nodes.get(i) {
            self.index.insert(moved.name().to_string(), i);
        }
        self.set_next_start(self.next_start);
    }

    /// Counts `demand` of pod `key` on `node` before its binding is observed.
    pub fn assume(&mut self, key: &str, node: &str, demand: PodDemand) {
        self.place(key, Placed { node: node.to_string(), demand, assumed: true });
    }

    /// Drops an assumption whose binding failed (a confirmed placement stays).
    pub fn forget_assumed(&mut self, key: &str) {
        if self.is_assumed(key) {
            self.unplace(key);
        }
    }

    /// Applies a pod as the cache now shows it (added or updated).
    pub fn update_pod(&mut self, key: &str, pod: &Pod) {
        let bound = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).filter(|n| !n.is_empty());
        match bound {
            Some(node) if holds_resources(pod) => {
                self.place(key, Placed { node: node.to_string(), demand: PodDemand::of(pod), assumed: false })
            }
            // Finished: its resources are free again.
            Some(_) => self.unplace(key),
            // Not bound yet: an assumption stays until the binding shows up.
            None if self.is_assumed(key) => {}
            None => self.unplace(key),
        }
    }

    /// A pod was deleted.
    pub fn remove_pod(&mut self, key: &str) {
        self.unplace(key);
    }

    fn place(&mut self, key: &str, placed: Placed) {
        self.unplace(key);
        if let Some(&i) = self.index.get(&placed.node) {
            self.nodes[i].add_demand(&placed.demand);
        }
        self.pods.insert(key.to_string(), placed);
    }

    fn unplace(&mut self, key: &str) {
        let Some(old) = self.pods.remove(key) else { return };
        if let Some(&i) = self.index.get(&old.node) {
            self.nodes[i].remove_demand(&old.demand);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name},
                "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
            .expect("node"),
        )
    }

    fn pod(node: Option<&str>, phase: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u1", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i",
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}, "ports": [{"containerPort": 80, "hostPort": 8080}]}]},
            "status": {"phase": phase}}))
        .expect("pod")
    }

    fn usage(c: &SchedulerCache, name: &str) -> (i64, usize, usize, usize) {
        let n = &c.nodes()[c.index[name]];
        (
            n.requested.milli_cpu,
            n.pod_count,
            n.host_ports.len(),
            n.owner_pods(crate::scheduler::node_info::owner_key("u1")),
        )
    }

    #[test]
    fn a_pod_is_counted_once_through_assume_bind_move_finish_and_delete() {
        let mut c = SchedulerCache::default();
        c.set_node(node("a"));
        c.set_node(node("b"));
        let unbound = pod(None, "Pending");
        c.update_pod("ns/p", &unbound);
        assert_eq!(usage(&c, "a"), (0, 0, 0, 0));
        c.assume("ns/p", "a", PodDemand::of(&unbound));
        assert!(c.is_assumed("ns/p"));
        assert_eq!(usage(&c, "a"), (500, 1, 1, 1));
        // The unbound pod's own status update must not drop the assumption.
        c.update_pod("ns/p", &unbound);
        assert_eq!(usage(&c, "a"), (500, 1, 1, 1));
        // The binding is observed: confirmed in place, not counted twice.
        c.update_pod("ns/p", &pod(Some("a"), "Pending"));
        assert!(!c.is_assumed("ns/p"));
        assert_eq!(usage(&c, "a"), (500, 1, 1, 1));
        c.update_pod("ns/p", &pod(Some("a"), "Running"));
        assert_eq!(usage(&c, "a"), (500, 1, 1, 1));
        c.update_pod("ns/p", &pod(Some("a"), "Succeeded"));
        assert_eq!(usage(&c, "a"), (0, 0, 0, 0), "a finished pod frees its node");
        c.update_pod("ns/p", &pod(Some("b"), "Running"));
        c.remove_pod("ns/p");
        assert_eq!(usage(&c, "b"), (0, 0, 0, 0));
    }

    #[test]
    fn forgetting_an_assumption_frees_the_node_and_nodes_come_and_go() {
        let mut c = SchedulerCache::default();
        c.set_node(node("a"));
        c.set_node(node("b"));
        c.set_node(node("c"));
        let p = pod(None, "Pending");
        c.assume("ns/p", "b", PodDemand::of(&p));
        c.forget_assumed("ns/p");
        assert_eq!(usage(&c, "b"), (0, 0, 0, 0));
        c.update_pod("ns/q", &pod(Some("c"), "Running"));
        c.remove_node("a");
        assert_eq!(c.nodes().len(), 2);
        assert_eq!(usage(&c, "c"), (500, 1, 1, 1), "the moved node keeps its usage");
        c.remove_node("c");
        c.set_node(node("c"));
        assert_eq!(usage(&c, "c"), (500, 1, 1, 1), "a returning node gets its pods back");
        c.set_next_start(7);
        assert_eq!(c.next_start(), 1);
    }
}
