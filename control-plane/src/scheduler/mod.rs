//! The scheduler: places each unbound pod on a node.
//!
//! The decision is pure ([`schedule`]: filters in `filters.rs` and `affinity.rs`, scores in
//! `scores.rs`, per-node usage in `node_info.rs`) — no tokio, no I/O — and unit-tested for
//! every filter. The async shell (`run.rs`) feeds it from the informer caches, keeps an
//! "assume" cache of pods it just bound (so the next decision counts them before the watch
//! shows them, as the Go scheduler does), binds through the same logic as `pods/binding`,
//! and records `Scheduled` / `FailedScheduling` events.
//!
//! Volumes (`volumes.rs`): the VolumeRestrictions and VolumeBinding plugins — a PreFilter
//! resolving the pod's claims once per attempt, a per-node filter (volume node affinity,
//! ReadWriteOncePod), and, for WaitForFirstConsumer claims, the selected-node annotation
//! written before the pod is bound.
//!
//! Not here yet: preemption, preferred affinity, pod (anti-)affinity, topology spread
//! constraints.

pub mod affinity;
pub mod cache;
pub mod filters;
pub mod node_info;
mod run;
pub mod scores;
#[cfg(test)]
mod tests;
pub mod volumes;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

pub use node_info::{NodeInfo, PodDemand};
pub use run::Scheduler;

/// The scheduler's name; pods with another `schedulerName` are left alone.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// No node fits: how many nodes there were and how many gave each reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub num_nodes: usize,
    pub reasons: BTreeMap<String, usize>,
}

impl std::fmt::Display for FitError {
    /// The Go scheduler's message: `0/3 nodes are available: 1 Insufficient memory, 2 node(s)
    /// had untolerated taint {k: v}.` — "count reason" strings sorted as strings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.num_nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        let mut parts: Vec<String> = self.reasons.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
        parts.sort();
        write!(f, "0/{} nodes are available: {}.", self.num_nodes, parts.join(", "))
    }
}

impl std::error::Error for FitError {}

/// Below this many nodes every node is examined (the Go scheduler's `minFeasibleNodesToFind`).
pub const MIN_FEASIBLE_NODES: usize = 100;

/// How many feasible nodes a search looks for before it stops and scores them: the Go
/// scheduler's adaptive `percentageOfNodesToScore` — 50 % minus one point per 125 nodes, at
/// least 5 %, and never fewer than [`MIN_FEASIBLE_NODES`]. On 5,000 nodes that is 500: placing
/// a pod costs a tenth of the cluster, not all of it, and round-robin starts spread the load.
pub fn feasible_nodes_to_find(num_nodes: usize) -> usize {
    if num_nodes < MIN_FEASIBLE_NODES {
        return num_nodes;
    }
    let percent = 50usize.saturating_sub(num_nodes / 125).max(5);
    (num_nodes * percent / 100).max(MIN_FEASIBLE_NODES)
}

/// Picks the node for `pod` among `nodes` (each with the usage of the pods already on it):
/// the feasible node with the highest total score, the first one in `nodes` order on a tie.
/// Every node is examined (see [`schedule_from`] for the bounded search).
pub fn schedule(pod: &Pod, nodes: &[NodeInfo]) -> Result<String, FitError> {
    schedule_within(pod, nodes, 0, nodes.len(), &|_| Ok(())).0
}

/// [`schedule`] for a large cluster: walks `nodes` from `start` (wrapping around) until
/// [`feasible_nodes_to_find`] feasible ones are found, and scores only those. Returns the
/// choice and where the next search should start. When fewer are feasible, every node has been
/// examined, so a [`FitError`] still counts every node's reason.
pub fn schedule_from(pod: &Pod, nodes: &[NodeInfo], start: usize) -> (Result<String, FitError>, usize) {
    schedule_within(pod, nodes, start, feasible_nodes_to_find(nodes.len()), &|_| Ok(()))
}

/// [`schedule_from`] with one more filter run after the built-in ones on each node (the
/// volume filters, which need the pod's claims resolved first).
pub fn schedule_from_with(
    pod: &Pod,
    nodes: &[NodeInfo],
    start: usize,
    extra: &dyn Fn(&NodeInfo) -> Result<(), filters::Reason>,
) -> (Result<String, FitError>, usize) {
    schedule_within(pod, nodes, start, feasible_nodes_to_find(nodes.len()), extra)
}

fn schedule_within(
    pod: &Pod,
    nodes: &[NodeInfo],
    start: usize,
    want: usize,
    extra: &dyn Fn(&NodeInfo) -> Result<(), filters::Reason>,
) -> (Result<String, FitError>, usize) {
    let n = nodes.len();
    let demand = PodDemand::of(pod);
    let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want.min(n));
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut examined = 0;
    while examined < n && feasible.len() < want.max(1) {
        let node = &nodes[(start + examined) % n];
        examined += 1;
        match filters::run_filters(pod, &demand, node).and_then(|()| extra(node).map_err(|r| vec![r])) {
            Ok(()) => feasible.push(node),
            Err(rs) => {
                for r in rs {
                    *reasons.entry(r.to_string()).or_default() += 1;
                }
            }
        }
    }
    let next = if n == 0 { 0 } else { (start + examined) % n };
    if feasible.is_empty() {
        return (Err(FitError { num_nodes: n, reasons }), next);
    }
    let scores = scores::score(pod, &demand, &feasible);
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    (Ok(feasible[best].name().to_string()), next)
}
