//! Well-known label, annotation and taint keys.
//!
//! Owns the names only: Skiff's own keys live under `skiff.dev/`, and the
//! Kubernetes keys that Skiff's controllers and node agent read or write are
//! gathered here so that every crate spells them the same way.

/// Prefix of every Skiff-owned key.
pub const SKIFF_PREFIX: &str = "skiff.dev/";

/// Node label listing the workload runtimes a node offers (e.g. `wasm.oci`).
pub const RUNTIMES: &str = "skiff.dev/runtimes";
/// Pod annotation or label selecting the runtime a pod must run on.
pub const RUNTIME: &str = "skiff.dev/runtime";
/// Node label with the Skiff node-agent version.
pub const NODE_VERSION: &str = "skiff.dev/node-version";
/// Annotation recording which Skiff component last managed an object.
pub const MANAGED_BY: &str = "skiff.dev/managed-by";

/// Node label: the node's hostname.
pub const HOSTNAME: &str = "kubernetes.io/hostname";
/// Node label: the node's operating system (`linux`).
pub const OS: &str = "kubernetes.io/os";
/// Node label: the node's CPU architecture (`amd64`, `arm64`).
pub const ARCH: &str = "kubernetes.io/arch";
/// Namespace label the apiserver sets to the namespace's own name.
pub const METADATA_NAME: &str = "kubernetes.io/metadata.name";
/// Node role label prefix (`node-role.kubernetes.io/control-plane`).
pub const NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";

/// Taint key: the node controller lost contact with the node.
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint key: the node reports it is not ready.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Taint key: the node is cordoned.
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

/// Label the Deployment controller puts on ReplicaSets and their pods.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Label the StatefulSet controller puts on pods: the pod's name.
pub const STATEFULSET_POD_NAME: &str = "statefulset.kubernetes.io/pod-name";
/// Label the StatefulSet and DaemonSet controllers use for revisions.
pub const CONTROLLER_REVISION_HASH: &str = "controller-revision-hash";
/// Label the Job controller puts on its pods (and in the generated selector).
pub const JOB_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// Label the Job controller puts on its pods: the Job's name.
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// The pre-1.27 spelling of [`JOB_CONTROLLER_UID`], still set for old selectors and tools.
pub const LEGACY_JOB_CONTROLLER_UID: &str = "controller-uid";
/// The pre-1.27 spelling of [`JOB_NAME`], still set for old selectors and tools.
pub const LEGACY_JOB_NAME: &str = "job-name";
/// Annotation (and label) on an Indexed Job's pods: the completion index the pod works on.
pub const JOB_COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// Annotation on Jobs a CronJob creates: the scheduled time, RFC 3339 in the CronJob's zone.
pub const CRONJOB_SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Annotation `kubectl create job --from=cronjob/x` puts on the Job (value `manual`).
pub const CRONJOB_INSTANTIATE: &str = "cronjob.kubernetes.io/instantiate";
/// Label on EndpointSlices naming their Service.
pub const SERVICE_NAME: &str = "kubernetes.io/service-name";
/// Label on EndpointSlices naming the controller that manages them.
pub const ENDPOINTSLICE_MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";

/// Annotation kubectl writes for `kubectl apply`.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Annotation the Deployment controller uses to number revisions.
pub const DEPLOYMENT_REVISION: &str = "deployment.kubernetes.io/revision";
/// Annotation on a ReplicaSet reused by a rollback: the revisions it had before (comma-separated).
pub const DEPLOYMENT_REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// Annotation on a Deployment's ReplicaSets: the Deployment's `replicas` when last scaled.
pub const DEPLOYMENT_DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// Annotation on a Deployment's ReplicaSets: `replicas + maxSurge` when last scaled.
pub const DEPLOYMENT_MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Annotation users (and `kubectl --record`) set to say why a change was made; the Deployment
/// controller copies it to the new ReplicaSet, `kubectl rollout history` prints it.
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";
/// The old `kubectl rollout undo` field, still never copied to ReplicaSets.
pub const DEPRECATED_ROLLBACK_TO: &str = "deprecated.deployment.rollback.to";

/// StorageClass annotation marking the cluster's default class.
pub const IS_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// PVC annotation: the node the scheduler chose for a WaitForFirstConsumer claim.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// PVC annotation: the provisioner expected to provision the claim.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// PVC annotation: the PV controller finished binding the claim.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// PV/PVC annotation: the binding was made by the controller, not by the user.
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// PV annotation: the provisioner that created the volume.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// Finalizer on PVCs: deletion waits until no pod uses the claim.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// Finalizer on PVs: deletion waits until the volume is no longer bound.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// Skiff's dynamic provisioner of node-local directories.
pub const LOCAL_PATH_PROVISIONER: &str = "skiff.dev/local-path";
/// The provisioner name rancher's local-path-provisioner uses; Skiff serves it too.
pub const RANCHER_LOCAL_PATH_PROVISIONER: &str = "rancher.io/local-path";
/// Finalizer on local-path PVs: the node removes the directory before the PV goes.
pub const LOCAL_PATH_CLEANUP: &str = "skiff.dev/local-path-cleanup";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::is_qualified_name;

    #[test]
    fn keys_are_valid_qualified_names() {
        for key in [
            RUNTIMES,
            RUNTIME,
            NODE_VERSION,
            MANAGED_BY,
            HOSTNAME,
            OS,
            ARCH,
            METADATA_NAME,
            TAINT_UNREACHABLE,
            TAINT_NOT_READY,
            TAINT_UNSCHEDULABLE,
            POD_TEMPLATE_HASH,
            STATEFULSET_POD_NAME,
            CONTROLLER_REVISION_HASH,
            JOB_CONTROLLER_UID,
            JOB_NAME,
            LEGACY_JOB_CONTROLLER_UID,
            LEGACY_JOB_NAME,
            JOB_COMPLETION_INDEX,
            CRONJOB_SCHEDULED_TIMESTAMP,
            CRONJOB_INSTANTIATE,
            SERVICE_NAME,
            ENDPOINTSLICE_MANAGED_BY,
            LAST_APPLIED,
            DEPLOYMENT_REVISION,
            DEPLOYMENT_REVISION_HISTORY,
            DEPLOYMENT_DESIRED_REPLICAS,
            DEPLOYMENT_MAX_REPLICAS,
            CHANGE_CAUSE,
            DEPRECATED_ROLLBACK_TO,
        ] {
            assert!(is_qualified_name(key), "{key} must be a qualified name");
        }
        assert!(RUNTIMES.starts_with(SKIFF_PREFIX));
    }
}
