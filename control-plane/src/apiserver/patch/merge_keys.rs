//! Patch metadata of the built-in types: which lists a strategic merge patch merges, and by
//! which key.
//!
//! Kubernetes keeps this in Go struct tags (`patchStrategy:"merge" patchMergeKey:"name"`) on
//! the `k8s.io/api` types; we have no reflection over those, so this module is a small,
//! hand-written type graph that covers the fields kubectl actually patches on Pods,
//! PodTemplates, workloads (Deployment, ReplicaSet, StatefulSet, DaemonSet,
//! ReplicationController), Jobs, CronJobs, Services, Nodes and Namespaces, plus `metadata`
//! of every kind. A field that is not listed here gets the default strategy: objects merge
//! recursively, lists are replaced — exactly what apimachinery does for an untagged field.
//!
//! The key is decided by the field name *and* where it sits: container `ports` merge on
//! `containerPort`, Service `spec.ports` on `port`; Node `spec.taints` carries no tag and is
//! replaced as a whole.

/// A position in the type graph: the Go type whose fields we are looking at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    /// Nothing known: every field gets the default strategy.
    Unknown,
    /// A top-level object of a kind without special fields beyond `metadata`.
    Object,
    Pod,
    PodTemplate,
    /// Deployment, ReplicaSet, StatefulSet, DaemonSet, ReplicationController.
    Workload,
    Job,
    CronJob,
    Service,
    Node,
    Namespace,
    ObjectMeta,
    PodTemplateSpec,
    PodSpec,
    PodStatus,
    Container,
    WorkloadSpec,
    JobTemplateSpec,
    JobSpec,
    CronJobSpec,
    ServiceSpec,
    NodeSpec,
    NodeStatus,
    /// A status whose only tagged field is `conditions` (merged by `type`).
    ConditionsStatus,
}

/// How a field is combined with the patch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// No tag: objects merge recursively, lists are replaced.
    Default,
    /// `patchStrategy:"merge"`: lists are merged, by `key` for lists of objects and by value
    /// for lists of primitives (`key` is `None`).
    Merge { key: Option<&'static str> },
}

/// The patch metadata of one field: its strategy, and the type of its value (for a list,
/// the type of its items).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FieldMeta {
    pub(crate) strategy: Strategy,
    pub(crate) ty: Ty,
}

impl FieldMeta {
    const UNKNOWN: FieldMeta = FieldMeta {
        strategy: Strategy::Default,
        ty: Ty::Unknown,
    };

    const fn of(ty: Ty) -> FieldMeta {
        FieldMeta {
            strategy: Strategy::Default,
            ty,
        }
    }

    const fn merge_by(key: &'static str, ty: Ty) -> FieldMeta {
        FieldMeta {
            strategy: Strategy::Merge { key: Some(key) },
            ty,
        }
    }

    const fn merge_primitives() -> FieldMeta {
        FieldMeta {
            strategy: Strategy::Merge { key: None },
            ty: Ty::Unknown,
        }
    }
}

/// The root type of an object of `kind` (e.g. `"Deployment"`).
pub(crate) fn root_type(kind: &str) -> Ty {
    match kind {
        "Pod" => Ty::Pod,
        "PodTemplate" => Ty::PodTemplate,
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "ReplicationController" => {
            Ty::Workload
        }
        "Job" => Ty::Job,
        "CronJob" => Ty::CronJob,
        "Service" => Ty::Service,
        "Node" => Ty::Node,
        "Namespace" => Ty::Namespace,
        _ => Ty::Object,
    }
}

/// The patch metadata of field `name` of a value of type `ty`.
pub(crate) fn field(ty: Ty, name: &str) -> FieldMeta {
    use Ty as T;
    match (ty, name) {
        (T::Unknown, _) => FieldMeta::UNKNOWN,

        // Every top-level object has standard metadata.
        (
            T::Object
            | T::Pod
            | T::PodTemplate
            | T::Workload
            | T::Job
            | T::CronJob
            | T::Service
            | T::Node
            | T::Namespace,
            "metadata",
        ) => FieldMeta::of(T::ObjectMeta),
        (T::Pod, "spec") => FieldMeta::of(T::PodSpec),
        (T::Pod, "status") => FieldMeta::of(T::PodStatus),
        (T::PodTemplate, "template") => FieldMeta::of(T::PodTemplateSpec),
        (T::Workload, "spec") => FieldMeta::of(T::WorkloadSpec),
        (T::Workload | T::Job | T::Service | T::Namespace, "status") => {
            FieldMeta::of(T::ConditionsStatus)
        }
        (T::Job, "spec") => FieldMeta::of(T::JobSpec),
        (T::CronJob, "spec") => FieldMeta::of(T::CronJobSpec),
        (T::Service, "spec") => FieldMeta::of(T::ServiceSpec),
        (T::Node, "spec") => FieldMeta::of(T::NodeSpec),
        (T::Node, "status") => FieldMeta::of(T::NodeStatus),

        // ObjectMeta.
        (T::ObjectMeta, "finalizers") => FieldMeta::merge_primitives(),
        (T::ObjectMeta, "ownerReferences") => FieldMeta::merge_by("uid", T::Unknown),

        // Templates and the specs that embed them.
        (T::PodTemplateSpec | T::JobTemplateSpec, "metadata") => FieldMeta::of(T::ObjectMeta),
        (T::PodTemplateSpec, "spec") => FieldMeta::of(T::PodSpec),
        (T::WorkloadSpec | T::JobSpec, "template") => FieldMeta::of(T::PodTemplateSpec),
        (T::JobTemplateSpec, "spec") => FieldMeta::of(T::JobSpec),
        (T::CronJobSpec, "jobTemplate") => FieldMeta::of(T::JobTemplateSpec),

        // PodSpec.
        (T::PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
            FieldMeta::merge_by("name", T::Container)
        }
        (T::PodSpec, "volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims") => {
            FieldMeta::merge_by("name", T::Unknown)
        }
        (T::PodSpec, "hostAliases") => FieldMeta::merge_by("ip", T::Unknown),
        (T::PodSpec, "topologySpreadConstraints") => FieldMeta::merge_by("topologyKey", T::Unknown),

        // Container (and EphemeralContainerCommon, which has the same tags).
        (T::Container, "ports") => FieldMeta::merge_by("containerPort", T::Unknown),
        (T::Container, "env") => FieldMeta::merge_by("name", T::Unknown),
        (T::Container, "volumeMounts") => FieldMeta::merge_by("mountPath", T::Unknown),
        (T::Container, "volumeDevices") => FieldMeta::merge_by("devicePath", T::Unknown),

        // PodStatus.
        (T::PodStatus, "conditions") => FieldMeta::merge_by("type", T::Unknown),
        (T::PodStatus, "podIPs" | "hostIPs") => FieldMeta::merge_by("ip", T::Unknown),
        (T::PodStatus, "resourceClaimStatuses") => FieldMeta::merge_by("name", T::Unknown),

        // Service, Node, and the statuses that only merge conditions.
        (T::ServiceSpec, "ports") => FieldMeta::merge_by("port", T::Unknown),
        (T::NodeSpec, "podCIDRs") => FieldMeta::merge_primitives(),
        (T::NodeStatus, "conditions" | "addresses") => FieldMeta::merge_by("type", T::Unknown),
        (T::ConditionsStatus, "conditions") => FieldMeta::merge_by("type", T::Unknown),

        // A known type, but an untagged field: default strategy, nothing known below it.
        _ => FieldMeta::UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(meta: FieldMeta) -> Option<&'static str> {
        match meta.strategy {
            Strategy::Merge { key } => key,
            Strategy::Default => None,
        }
    }

    #[test]
    fn ports_key_depends_on_where_the_field_sits() {
        assert_eq!(key_of(field(Ty::Container, "ports")), Some("containerPort"));
        assert_eq!(key_of(field(Ty::ServiceSpec, "ports")), Some("port"));
        assert_eq!(field(Ty::Unknown, "ports"), FieldMeta::UNKNOWN);
    }

    #[test]
    fn deployment_reaches_container_env() {
        let spec = field(root_type("Deployment"), "spec").ty;
        let template = field(spec, "template").ty;
        let pod_spec = field(template, "spec").ty;
        let containers = field(pod_spec, "containers");
        assert_eq!(key_of(containers), Some("name"));
        assert_eq!(key_of(field(containers.ty, "env")), Some("name"));
    }

    #[test]
    fn cronjob_reaches_pod_spec() {
        let spec = field(root_type("CronJob"), "spec").ty;
        let job_template = field(spec, "jobTemplate").ty;
        let job_spec = field(job_template, "spec").ty;
        let template = field(job_spec, "template").ty;
        assert_eq!(field(template, "spec").ty, Ty::PodSpec);
    }

    #[test]
    fn finalizers_merge_as_primitives_and_taints_are_replaced() {
        assert_eq!(
            field(Ty::ObjectMeta, "finalizers").strategy,
            Strategy::Merge { key: None }
        );
        assert_eq!(field(Ty::NodeSpec, "taints").strategy, Strategy::Default);
        assert_eq!(
            field(Ty::PodSpec, "tolerations").strategy,
            Strategy::Default
        );
    }
}
