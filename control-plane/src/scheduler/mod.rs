//! The scheduler: places each unbound pod on a node.
//!
//! The decision is pure ([`schedule`]: filters in `filters.rs` and `affinity.rs`, scores in
//! `scores.rs`, per-node usage in `node_info.rs`) — no tokio, no I/O — and unit-tested for
//! every filter. The async shell (`run.rs`) feeds it from the informer caches, keeps an
//! "assume" cache of pods it just bound (so the next decision counts them before the watch
//! shows them, as the Go scheduler does), binds through the same logic as `pods/binding`,
//! and records `Scheduled` / `FailedScheduling` events.
//!
//! Not here yet: preemption, preferred affinity, pod (anti-)affinity, topology spread
//! constraints, volume binding.

pub mod affinity;
pub mod filters;
pub mod node_info;
mod run;
pub mod scores;
#[cfg(test)]
mod tests;

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

/// Picks the node for `pod` among `nodes` (each with the usage of the pods already on it):
/// the feasible node with the highest total score, the first one in `nodes` order on a tie.
pub fn schedule(pod: &Pod, nodes: &[NodeInfo]) -> Result<String, FitError> {
    let demand = PodDemand::of(pod);
    let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(nodes.len());
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for node in nodes {
        match filters::run_filters(pod, &demand, node) {
            Ok(()) => feasible.push(node),
            Err(rs) => {
                for r in rs {
                    *reasons.entry(r.to_string()).or_default() += 1;
                }
            }
        }
    }
    if feasible.is_empty() {
        return Err(FitError { num_nodes: nodes.len(), reasons });
    }
    let scores = scores::score(pod, &demand, &feasible);
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    Ok(feasible[best].name().to_string())
}
