//! The strategic-merge-patch metadata of the built-in types: which fields a strategic merge
//! patch merges instead of replacing, and by which key — the one table both the PATCH code and
//! the OpenAPI documents read.
//!
//! Kubernetes keeps these facts in Go struct tags (`patchStrategy:"merge"
//! patchMergeKey:"name"`) on the `k8s.io/api` types; we have no reflection over those, so this
//! module transcribes them, keyed the way the tags sit: by OpenAPI definition name (the Go
//! type) and property (the JSON field). The OpenAPI documents publish each entry as
//! `x-kubernetes-patch-merge-key`/`x-kubernetes-patch-strategy` (kubectl computes its apply
//! patches from them), and strategic merge looks fields up here while it walks the type
//! schemas (see [`super::schema`]). A field that is not listed gets the default strategy:
//! objects merge recursively, lists are replaced — exactly what apimachinery does for an
//! untagged field (Node `spec.taints`, Pod `spec.tolerations`).
//!
//! It covers the tagged fields of every served kind; the same property name can carry
//! different keys on different types (container `ports` merge on `containerPort`, Service
//! `spec.ports` on `port`).

/// One struct tag: `(definition, property, merge key, strategy)`. The strategy is the Go tag's
/// value: `merge`, `retainKeys` or `merge,retainKeys`; the key is `None` for a merged list of
/// primitives (a set union) and for `retainKeys` alone.
pub(crate) type PatchTag = (&'static str, &'static str, Option<&'static str>, &'static str);

/// Every struct tag of the served types (and of the shared meta types), from `k8s.io/api`.
#[rustfmt::skip]
pub(crate) const PATCH_META: &[PatchTag] = &[
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", None, "merge"),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", Some("uid"), "merge"),
    ("io.k8s.api.core.v1.PodSpec", "containers", Some("name"), "merge"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", Some("name"), "merge"),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", Some("name"), "merge"),
    ("io.k8s.api.core.v1.PodSpec", "volumes", Some("name"), "merge,retainKeys"),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", Some("name"), "merge"),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", Some("ip"), "merge"),
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", Some("topologyKey"), "merge"),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", Some("name"), "merge"),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", Some("name"), "merge,retainKeys"),
    ("io.k8s.api.core.v1.Container", "env", Some("name"), "merge"),
    ("io.k8s.api.core.v1.Container", "ports", Some("containerPort"), "merge"),
    ("io.k8s.api.core.v1.Container", "volumeMounts", Some("mountPath"), "merge"),
    ("io.k8s.api.core.v1.Container", "volumeDevices", Some("devicePath"), "merge"),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", Some("name"), "merge"),
    ("io.k8s.api.core.v1.EphemeralContainer", "ports", Some("containerPort"), "merge"),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", Some("mountPath"), "merge"),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", Some("devicePath"), "merge"),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", Some("port"), "merge"),
    ("io.k8s.api.core.v1.ServiceStatus", "conditions", Some("type"), "merge"),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", Some("name"), "merge"),
    ("io.k8s.api.core.v1.PodStatus", "conditions", Some("type"), "merge"),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", Some("ip"), "merge"),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", Some("ip"), "merge"),
    ("io.k8s.api.core.v1.PodStatus", "resourceClaimStatuses", Some("name"), "merge,retainKeys"),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", None, "merge"),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", Some("type"), "merge"),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", Some("type"), "merge"),
    ("io.k8s.api.core.v1.NamespaceStatus", "conditions", Some("type"), "merge"),
    ("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "conditions", Some("type"), "merge"),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", None, "retainKeys"),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", Some("type"), "merge"),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", Some("type"), "merge"),
    ("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", Some("type"), "merge"),
    ("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", Some("type"), "merge"),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", Some("type"), "merge"),
    ("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "conditions", Some("type"), "merge"),
    ("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions", Some("type"), "merge"),
];

/// The struct tag of `property` of `definition`: its merge key (if any) and its strategy
/// (`merge`, `retainKeys` or `merge,retainKeys`); `None` for an untagged field.
pub(crate) fn patch_meta(definition: &str, property: &str) -> Option<(Option<&'static str>, &'static str)> {
    PATCH_META.iter().find(|(def, prop, _, _)| *def == definition && *prop == property).map(|&(_, _, key, s)| (key, s))
}

/// True when a tag's strategy makes strategic merge merge the list (`merge`, possibly with
/// `retainKeys`); `retainKeys` alone only governs the `$retainKeys` directive kubectl sends.
pub(crate) fn merges(strategy: &str) -> bool {
    strategy.split(',').any(|s| s.trim() == "merge")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_key_depends_on_the_type() {
        assert_eq!(patch_meta("io.k8s.api.core.v1.Container", "ports"), Some((Some("containerPort"), "merge")));
        assert_eq!(patch_meta("io.k8s.api.core.v1.ServiceSpec", "ports"), Some((Some("port"), "merge")));
        assert_eq!(patch_meta("io.k8s.api.core.v1.NodeSpec", "taints"), None);
    }

    #[test]
    fn strategies() {
        assert!(merges("merge"));
        assert!(merges("merge,retainKeys"));
        assert!(!merges("retainKeys"));
    }

    #[test]
    fn no_duplicate_entries() {
        for (i, (def, prop, _, _)) in PATCH_META.iter().enumerate() {
            let dup = PATCH_META[i + 1..].iter().any(|(d, p, _, _)| d == def && p == prop);
            assert!(!dup, "{def}.{prop} is listed twice");
        }
    }
}
