//! Node selection by labels: a pod's `nodeSelector` and its required node affinity
//! (`nodeSelectorTerms`: terms are ORed, the expressions and fields of a term ANDed;
//! `matchExpressions` over labels with In/NotIn/Exists/DoesNotExist/Gt/Lt, `matchFields` over
//! `metadata.name`). Preferred affinity is not scored yet.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod};

fn node_labels(node: &Node) -> &BTreeMap<String, String> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    node.metadata.labels.as_ref().unwrap_or(&NONE)
}

/// Every `nodeSelector` entry equals the node's label.
pub fn matches_node_selector(pod: &Pod, node: &Node) -> bool {
    let Some(selector) = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref()) else { return true };
    let labels = node.metadata.labels.as_ref();
    selector.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The required node affinity (if any) has a term the node satisfies.
pub fn matches_required_affinity(pod: &Pod, node: &Node) -> bool {
    let required = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    let Some(required) = required else { return true };
    let labels = node_labels(node);
    let name = node.metadata.name.as_deref().unwrap_or_default();
    required.node_selector_terms.iter().any(|t| term_matches(t, labels, name))
}

/// One term: all its expressions and fields hold; an empty term matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>, node_name: &str) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, Some(node_name)))
}

/// One requirement against the value found under its key (`None`: the key is absent).
pub fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            // Both sides must be integers; a single value is required (validation enforces it).
            let (Some(v), [bound]) = (value.and_then(|v| v.parse::<i64>().ok()), values) else { return false };
            let Ok(bound) = bound.parse::<i64>() else { return false };
            if r.operator == "Gt" { v > bound } else { v < bound }
        }
        _ => false,
    }
}
