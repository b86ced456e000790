//! [`NodePodEnvironment`]: the node's real [`PodEnvironment`], assembled from [`crate::env`]
//! (env values), [`crate::volumes`] (volume directories) and [`crate::logs`] (log files), all
//! under one data dir: `<data-dir>/pods/<uid>/volumes/...` and
//! `<data-dir>/pods/<namespace>_<name>_<uid>/<container>/<restart>.log`; and the registry
//! credentials of a pod's `imagePullSecrets` ([`crate::pull_secrets`]).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::env::{self, NodeCapacity};
use crate::logs::LogStore;
use crate::pod_env::{PodEnvError, PodEnvironment, PodVolumes};
use crate::pull_secrets::Keyring;
use crate::runtime::{LogSink, PodRef};
use crate::volumes::VolumeManager;
use crate::volumes::source::ApiObjects;

/// Env, volumes and logs of the pods on this node.
#[derive(Debug, Clone)]
pub struct NodePodEnvironment {
    objects: ApiObjects,
    volumes: VolumeManager,
    logs: LogStore,
    node: NodeCapacity,
    data_dir: PathBuf,
}

impl NodePodEnvironment {
    /// Everything under `data_dir`; objects are read through `client`.
    pub fn new(data_dir: impl AsRef<Path>, client: kube::Client) -> NodePodEnvironment {
        let data_dir = data_dir.as_ref().to_path_buf();
        let pods = data_dir.join("pods");
        let objects = ApiObjects::new(client);
        let node = NodeCapacity::detect();
        NodePodEnvironment {
            volumes: VolumeManager::new(&pods, objects.clone(), node),
            logs: LogStore::new(&pods),
            objects,
            node,
            data_dir,
        }
    }

    /// The log store, for the node API.
    pub fn logs(&self) -> &LogStore {
        &self.logs
    }

    /// The data dir everything lives under.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

#[async_trait]
impl PodEnvironment for NodePodEnvironment {
    async fn container_env(
        &self,
        pod: &Pod,
        container: &Container,
        pod_ip: IpAddr,
    ) -> Result<Vec<(String, String)>, PodEnvError> {
        env::resolve(&self.objects, pod, container, pod_ip, self.node).await
    }

    async fn prepare_volumes(&self, pod: &Pod) -> Result<Box<dyn PodVolumes>, PodEnvError> {
        Ok(Box::new(self.volumes.prepare(pod).await?))
    }

    async fn pull_keyring(&self, pod: &Pod) -> Result<Keyring, PodEnvError> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut keyring = Keyring::default();
        for reference in pod.spec.iter().flat_map(|s| s.image_pull_secrets.iter().flatten()) {
            let name = reference.name.as_str();
            match self.objects.typed_secret(ns, name).await? {
                // The kubelet records a FailedToRetrieveImagePullSecret event and pulls anyway.
                None => tracing::warn!(
                    pod = pod.metadata.name.as_deref().unwrap_or_default(),
                    secret = %format!("{ns}/{name}"),
                    "imagePullSecret not found; pulling without it"
                ),
                Some((secret_type, data)) => {
                    let used = keyring
                        .add_secret(name, secret_type.as_deref(), &data)
                        .map_err(|e| PodEnvError::Config(e.to_string()))?;
                    if !used {
                        tracing::warn!(
                            secret = %format!("{ns}/{name}"),
                            secret_type = secret_type.as_deref().unwrap_or("Opaque"),
                            "imagePullSecret is not of type kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg; ignored"
                        );
                    }
                }
            }
        }
        Ok(keyring)
    }

    async fn cleanup(&self, pod: &PodRef) {
        let volumes = self.volumes.clone();
        let logs = self.logs.clone();
        let pod = pod.clone();
        // Unmounting and recursive removal block; keep them off the async workers.
        let done = tokio::task::spawn_blocking(move || {
            volumes.cleanup(&pod.uid);
            if let Err(e) = logs.remove_pod(&pod) {
                tracing::warn!(error = %e, "removing pod logs failed");
            }
        })
        .await;
        if let Err(e) = done {
            tracing::warn!(error = %e, "pod cleanup task failed");
        }
    }

    fn open_log(&self, pod: &PodRef, container: &str, restart_count: i32) -> Result<Arc<dyn LogSink>, PodEnvError> {
        let restart = u32::try_from(restart_count)
            .map_err(|_| PodEnvError::Io(format!("invalid restart count {restart_count}")))?;
        let sink = self.logs.open(pod, container, restart).map_err(|e| PodEnvError::Io(e.to_string()))?;
        Ok(Arc::new(sink))
    }
}
