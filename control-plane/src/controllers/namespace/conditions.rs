//! The status conditions of a terminating namespace, with Kubernetes' types, reasons and
//! messages (`pkg/controller/namespace/deletion/status_condition_utils.go`), so
//! `kubectl describe ns` reads the same. Pure: built from one pass's [`Content`].

use serde_json::{Value, json};

use super::content::Content;

/// The conditions after a pass that found `content`; a condition whose status did not
/// change keeps its `lastTransitionTime` from `old`.
pub fn conditions(content: &Content, old: &[Value], now: &str) -> Vec<Value> {
    let remaining = if content.remaining.is_empty() {
        ("False", "ContentRemoved", "All content successfully removed".to_string())
    } else {
        let parts: Vec<String> =
            content.remaining.iter().map(|(r, n)| format!("{r} has {n} resource instances")).collect();
        ("True", "SomeResourcesRemain", format!("Some resources are remaining: {}", parts.join(", ")))
    };
    let finalizers = if content.finalizers.is_empty() {
        ("False", "ContentHasNoFinalizers", "All content-preserving finalizers finished".to_string())
    } else {
        let parts: Vec<String> =
            content.finalizers.iter().map(|(f, n)| format!("{f} in {n} resource instances")).collect();
        (
            "True",
            "SomeFinalizersRemain",
            format!("Some content in the namespace has finalizers remaining: {}", parts.join(", ")),
        )
    };
    let failure = if content.errors.is_empty() {
        ("False", "ContentDeleted", "All content successfully deleted, may be waiting on finalization".to_string())
    } else {
        (
            "True",
            "ContentDeletionFailed",
            format!(
                "Failed to delete all resource types, {} remaining: {}",
                content.errors.len(),
                content.errors.join(", ")
            ),
        )
    };
    let wanted = [
        (
            "NamespaceDeletionDiscoveryFailure",
            ("False", "ResourcesDiscovered", "All resources successfully discovered".to_string()),
        ),
        (
            "NamespaceDeletionGroupVersionParsingFailure",
            ("False", "ParsedGroupVersions", "All legacy kube types successfully parsed".to_string()),
        ),
        ("NamespaceDeletionContentFailure", failure),
        ("NamespaceContentRemaining", remaining),
        ("NamespaceFinalizersRemaining", finalizers),
    ];
    wanted
        .into_iter()
        .map(|(kind, (status, reason, message))| {
            let previous = old.iter().find(|c| c["type"] == kind);
            let since = match previous {
                Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
                _ => json!(now),
            };
            json!({"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": since})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_content_and_finalizers_are_reported_like_kubernetes() {
        let mut c = Content::default();
        c.remaining.insert("pods.".into(), 2);
        c.finalizers.insert("foregroundDeletion".into(), 1);
        let conds = conditions(&c, &[], "T1");
        let find = |t: &str| conds.iter().find(|c| c["type"] == t).cloned().expect("condition present");
        assert_eq!(
            find("NamespaceContentRemaining")["message"],
            "Some resources are remaining: pods. has 2 resource instances"
        );
        assert_eq!(find("NamespaceContentRemaining")["status"], "True");
        assert_eq!(
            find("NamespaceFinalizersRemaining")["message"],
            "Some content in the namespace has finalizers remaining: foregroundDeletion in 1 resource instances"
        );
        assert_eq!(find("NamespaceDeletionContentFailure")["reason"], "ContentDeleted");
        // A later pass with the same findings keeps the transition times; a change moves them.
        let again = conditions(&c, &conds, "T2");
        assert!(again.iter().all(|c| c["lastTransitionTime"] == "T1"));
        let done = conditions(&Content::default(), &again, "T3");
        let removed = done.iter().find(|c| c["type"] == "NamespaceContentRemaining").expect("present");
        assert_eq!((removed["status"].as_str(), removed["lastTransitionTime"].as_str()), (Some("False"), Some("T3")));
    }
}
