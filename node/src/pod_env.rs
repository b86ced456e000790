//! The seam between a pod worker and everything a pod needs besides its containers: env
//! values resolved from the API, volumes materialised on the node, and log files.
//!
//! The worker sees only this trait, so the lifecycle state machine can be exercised without
//! files on disk, and the pieces behind it (`env`, `volumes`, `logs`) evolve on their own.

use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::pull_secrets::Keyring;
use crate::runtime::{LogSink, Mount, PodRef};

/// Why a pod's environment could not be prepared. The worker shows it as the container's
/// waiting reason `CreateContainerConfigError` (env), `ErrImagePull` (pull secrets) or a
/// `FailedMount` event (volumes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodEnvError {
    /// A referenced ConfigMap/Secret/key or field is missing or invalid.
    #[error("{0}")]
    Config(String),
    /// A volume could not be set up.
    #[error("{0}")]
    Mount(String),
    /// Local I/O failed (log files, volume dirs).
    #[error("{0}")]
    Io(String),
}

/// Volumes prepared for one pod. Dropping it stops keeping them fresh; it does not delete
/// them ([`PodEnvironment::cleanup`] does, once the pod is gone for good).
pub trait PodVolumes: Send + Sync + Debug {
    /// The mounts of `container`, from its `volumeMounts` (`readOnly` and `subPath` applied).
    fn mounts(&self, container: &Container) -> Result<Vec<Mount>, PodEnvError>;
}

/// Env, volumes and logs for pods on this node.
#[async_trait]
pub trait PodEnvironment: Send + Sync + Debug + 'static {
    /// The env of one container: `env` (`value`, `valueFrom`) and `envFrom`, in Kubernetes order.
    async fn container_env(
        &self,
        pod: &Pod,
        container: &Container,
        pod_ip: IpAddr,
    ) -> Result<Vec<(String, String)>, PodEnvError>;

    /// Materialises the pod's volumes; configMap/secret contents follow updates while the
    /// returned value lives.
    async fn prepare_volumes(&self, pod: &Pod) -> Result<Box<dyn PodVolumes>, PodEnvError>;

    /// The registry credentials of the pod's `imagePullSecrets`. A Secret that does not exist
    /// is skipped with a warning (the pull goes on without it, as the kubelet's does); one
    /// that exists but cannot be read is an error. The default has none.
    async fn pull_keyring(&self, _pod: &Pod) -> Result<Keyring, PodEnvError> {
        Ok(Keyring::default())
    }

    /// Removes what the pod's volumes and logs left on the node (the pod is gone for good).
    async fn cleanup(&self, pod: &PodRef);

    /// Opens the log of one run of a container (`restart_count` distinguishes runs, so
    /// `kubectl logs --previous` finds the one before).
    fn open_log(&self, pod: &PodRef, container: &str, restart_count: i32) -> Result<Arc<dyn LogSink>, PodEnvError>;
}
