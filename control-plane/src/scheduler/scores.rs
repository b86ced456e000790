//! Scores for the nodes that passed the filters, each 0–100 and summed with equal weight:
//! least allocated (prefer the emptiest node), spread (prefer the node with the fewest pods
//! of the same controller), and PreferNoSchedule taints (prefer nodes with fewer untolerated
//! ones). Pure functions over [`NodeInfo`]s.

use k8s_openapi::api::core::v1::Pod;

use super::filters::tolerates;
use super::node_info::{NodeInfo, PodDemand};

/// The best possible score of one scorer.
pub const MAX_SCORE: i64 = 100;

/// `(allocatable - requested) / allocatable`, averaged over cpu and memory, counting the pod
/// itself and using default requests for containers without any.
pub fn least_allocated(demand: &PodDemand, node: &NodeInfo) -> i64 {
    let (alloc, _) = node.allocatable();
    let one = |alloc: i64, requested: i64| {
        if alloc <= 0 || requested > alloc { 0 } else { (alloc - requested) * MAX_SCORE / alloc }
    };
    let cpu = one(alloc.milli_cpu, node.non_zero_requested.milli_cpu + demand.non_zero.milli_cpu);
    let mem = one(alloc.memory, node.non_zero_requested.memory + demand.non_zero.memory);
    (cpu + mem) / 2
}

/// For each node: `MAX * (most - here) / most`, where `here` counts the pods of the pod's
/// controller on the node and `most` is the largest such count among the candidates. Pods
/// without a controller score the same everywhere.
pub fn spread(demand: &PodDemand, nodes: &[&NodeInfo]) -> Vec<i64> {
    let Some(owner) = demand.owner else { return vec![MAX_SCORE; nodes.len()] };
    let counts: Vec<i64> = nodes.iter().map(|n| n.owner_pods(owner) as i64).collect();
    let most = counts.iter().copied().max().unwrap_or(0);
    counts.iter().map(|&c| if most == 0 { MAX_SCORE } else { MAX_SCORE * (most - c) / most }).collect()
}

/// Fewer untolerated PreferNoSchedule taints score higher (normalised to the worst node).
pub fn prefer_no_schedule(pod: &Pod, nodes: &[&NodeInfo]) -> Vec<i64> {
    let tols = pod.spec.as_ref().and_then(|s| s.tolerations.as_deref()).unwrap_or(&[]);
    let counts: Vec<i64> = nodes
        .iter()
        .map(|n| n.facts.soft_taints.iter().filter(|t| !tols.iter().any(|tol| tolerates(tol, t))).count() as i64)
        .collect();
    let most = counts.iter().copied().max().unwrap_or(0);
    counts.iter().map(|&c| if most == 0 { MAX_SCORE } else { MAX_SCORE - c * MAX_SCORE / most }).collect()
}

/// Total score per candidate, in the candidates' order.
pub fn score(pod: &Pod, demand: &PodDemand, nodes: &[&NodeInfo]) -> Vec<i64> {
    let spread = spread(demand, nodes);
    let taints = prefer_no_schedule(pod, nodes);
    nodes.iter().enumerate().map(|(i, n)| least_allocated(demand, n) + spread[i] + taints[i]).collect()
}
