//! A pod's volumes on the node: materialised under `<pods dir>/<uid>/volumes/<kind>/<name>`
//! (kinds named as the kubelet names them, `kubernetes.io~empty-dir`, ...), mapped to
//! [`Mount`]s per container, kept fresh while the pod runs, and removed with the pod.
//!
//! Supported: `emptyDir` (on disk; `medium: Memory` on tmpfs — see [`memory`]), `configMap`,
//! `secret` (always memory-backed, never on persistent disk: a tmpfs of
//! [`SECRET_TMPFS_SIZE`] per volume as root), `projected` (configMap, secret and downwardAPI
//! sources; memory-backed like a secret volume as soon as one source is a secret),
//! `downwardAPI`, `hostPath` (with
//! type checks) and `persistentVolumeClaim` (bound claims whose PersistentVolume is `hostPath`
//! or `local`; a *relative* `local.path` — what the local-path provisioner writes — lives under
//! the node's data directory, the parent of the pods dir, and is created on first use; a claim
//! is mounted read-only when the pod says `readOnly` or the volume offers only ReadOnlyMany).
//! Removing deleted local-path volumes, and the volumes of pods deleted while the agent was
//! down, is [`reclaim`]'s job. configMap, secret, projected and downwardAPI volumes are written with the
//! [`atomic`] writer and are always mounted read-only, as in Kubernetes. While the returned
//! [`PreparedVolumes`] lives, configMap, secret and projected volumes are re-read every
//! [`REFRESH_PERIOD`] and republished when their data changed; a deleted object keeps its last
//! contents (as the kubelet does). `sizeLimit` is not enforced.

pub mod atomic;
pub mod host;
pub mod memory;
pub mod payload;
pub mod reclaim;
pub mod source;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod, ProjectedVolumeSource};
use tokio_util::sync::CancellationToken;

use crate::env::NodeCapacity;
use crate::pod_env::{PodEnvError, PodVolumes};
use crate::runtime::Mount;
use atomic::Payload;
use payload::KeySource;
use source::ApiObjects;

/// How often configMap/secret volumes are re-read.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(2);

const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
const CONFIG_MAP: &str = "kubernetes.io~configmap";
const SECRET: &str = "kubernetes.io~secret";
const DOWNWARD_API: &str = "kubernetes.io~downward-api";
const PROJECTED: &str = "kubernetes.io~projected";

/// The size of the tmpfs a secret (or projected) volume gets: a Secret holds at most 1 MiB,
/// so this fits many while keeping a pod from filling node memory through its volume.
pub const SECRET_TMPFS_SIZE: u64 = 16 * 1024 * 1024;

/// Sets up and removes pod volumes on this node.
#[derive(Debug, Clone)]
pub struct VolumeManager {
    pods_dir: PathBuf,
    /// Where relative local volume paths resolve (the data directory).
    data_dir: PathBuf,
    objects: ApiObjects,
    node: NodeCapacity,
    refresh: Duration,
}

/// One prepared volume.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PreparedVolume {
    path: PathBuf,
    /// configMap/secret/downwardAPI, or a read-only claim: never writable.
    always_read_only: bool,
    /// A directory the pod owns, where a missing `subPath` may be created.
    owned_dir: bool,
}

/// One configMap or secret a volume projects.
#[derive(Debug, Clone)]
struct KeyRef {
    source: KeySource,
    name: String,
    items: Option<Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
}

/// A configMap, secret or projected volume to keep fresh: the objects it projects, re-read on
/// every sync, over files computed once (a projected volume's downwardAPI part).
#[derive(Debug, Clone)]
struct KeyVolume {
    namespace: String,
    sources: Vec<KeyRef>,
    fixed: Payload,
    dir: PathBuf,
}

impl KeyVolume {
    /// Reads the objects and publishes the payload; returns whether files changed. A path
    /// projected twice holds what the later source says.
    async fn sync(&self, objects: &ApiObjects) -> Result<bool, PodEnvError> {
        let mut payload = self.fixed.clone();
        for key in &self.sources {
            let data = match key.source {
                KeySource::ConfigMap => objects.config_map(&self.namespace, &key.name).await?,
                KeySource::Secret => objects.secret(&self.namespace, &key.name).await?,
            };
            payload.extend(payload::key_payload(
                key.source,
                &key.name,
                data.as_ref(),
                key.items.as_deref(),
                key.default_mode,
                key.optional,
            )?);
        }
        atomic::write(&self.dir, &payload).map_err(|e| PodEnvError::Io(e.to_string()))
    }
}

/// The volumes of one pod; keeps configMap/secret volumes fresh until dropped.
#[derive(Debug)]
pub struct PreparedVolumes {
    volumes: BTreeMap<String, PreparedVolume>,
    refresher: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

impl Drop for PreparedVolumes {
    fn drop(&mut self) {
        if let Some((token, handle)) = self.refresher.take() {
            token.cancel();
            handle.abort();
        }
    }
}

/// `subPath` must stay inside the volume.
fn check_sub_path(sub: &str) -> Result<(), PodEnvError> {
    let ok = Path::new(sub).components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if ok {
        Ok(())
    } else {
        Err(PodEnvError::Mount(format!("invalid subPath {sub:?}: must be a relative path without '..'")))
    }
}

impl PodVolumes for PreparedVolumes {
    fn mounts(&self, container: &Container) -> Result<Vec<Mount>, PodEnvError> {
        let mut out = Vec::new();
        for vm in container.volume_mounts.iter().flatten() {
            let vol = self.volumes.get(&vm.name).ok_or_else(|| {
                PodEnvError::Mount(format!(
                    "volume {:?} of container {:?} is not a pod volume",
                    vm.name, container.name
                ))
            })?;
            let mut host_path = vol.path.clone();
            if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
                check_sub_path(sub)?;
                host_path = host_path.join(sub);
                if vol.owned_dir && !host_path.exists() {
                    std::fs::create_dir_all(&host_path)
                        .map_err(|e| PodEnvError::Mount(format!("creating subPath {sub:?}: {e}")))?;
                }
            }
            out.push(Mount {
                host_path,
                container_path: vm.mount_path.clone(),
                read_only: vm.read_only == Some(true) || vol.always_read_only,
            });
        }
        Ok(out)
    }
}

impl VolumeManager {
    /// Volumes under `pods_dir` (normally `<data-dir>/pods`).
    pub fn new(pods_dir: impl Into<PathBuf>, objects: ApiObjects, node: NodeCapacity) -> VolumeManager {
        let pods_dir: PathBuf = pods_dir.into();
        let data_dir = pods_dir.parent().map(Path::to_path_buf).unwrap_or_else(|| pods_dir.clone());
        VolumeManager { pods_dir, data_dir, objects, node, refresh: REFRESH_PERIOD }
    }

    /// `<pods dir>/<uid>`: everything of one pod's volumes lives below.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.pods_dir.join(uid)
    }

    /// Materialises the volumes of `pod` and starts keeping configMap/secret volumes fresh.
    pub async fn prepare(&self, pod: &Pod) -> Result<PreparedVolumes, PodEnvError> {
        let uid = pod.metadata.uid.as_deref().ok_or_else(|| PodEnvError::Mount("pod has no uid".into()))?;
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let base = self.pod_dir(uid).join("volumes");
        let pod_ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let mut volumes = BTreeMap::new();
        let mut fresh = Vec::new();
        let io = |what: &str, e: std::io::Error| PodEnvError::Mount(format!("{what}: {e}"));
        for vol in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let name = vol.name.as_str();
            let prepared = if let Some(ed) = &vol.empty_dir {
                let dir = base.join(EMPTY_DIR).join(name);
                let path = if ed.medium.as_deref() == Some("Memory") {
                    memory::prepare(&dir, uid, EMPTY_DIR, name, None)
                        .map_err(|e| io(&format!("emptyDir {name:?}"), e))?
                } else {
                    std::fs::create_dir_all(&dir).map_err(|e| io(&format!("emptyDir {name:?}"), e))?;
                    dir
                };
                PreparedVolume { path, always_read_only: false, owned_dir: true }
            } else if let Some(cm) = &vol.config_map {
                let key = KeyRef {
                    source: KeySource::ConfigMap,
                    name: cm.name.clone(),
                    items: cm.items.clone(),
                    default_mode: cm.default_mode,
                    optional: cm.optional == Some(true),
                };
                let dir = base.join(CONFIG_MAP).join(name);
                let kv =
                    KeyVolume { namespace: ns.clone(), sources: vec![key], fixed: Payload::new(), dir: dir.clone() };
                kv.sync(&self.objects).await?;
                fresh.push(kv);
                PreparedVolume { path: dir, always_read_only: true, owned_dir: false }
            } else if let Some(s) = &vol.secret {
                let key = KeyRef {
                    source: KeySource::Secret,
                    name: s.secret_name.clone().unwrap_or_default(),
                    items: s.items.clone(),
                    default_mode: s.default_mode,
                    optional: s.optional == Some(true),
                };
                let dir = memory::prepare(&base.join(SECRET).join(name), uid, SECRET, name, Some(SECRET_TMPFS_SIZE))
                    .map_err(|e| io(&format!("secret volume {name:?}"), e))?;
                let kv =
                    KeyVolume { namespace: ns.clone(), sources: vec![key], fixed: Payload::new(), dir: dir.clone() };
                kv.sync(&self.objects).await?;
                fresh.push(kv);
                PreparedVolume { path: dir, always_read_only: true, owned_dir: false }
            } else if let Some(p) = &vol.projected {
                let (sources, fixed) = projected_sources(pod, p, pod_ip, self.node)?;
                let canonical = base.join(PROJECTED).join(name);
                // Anything secret goes to memory only, like a secret volume.
                let dir = if sources.iter().any(|k| k.source == KeySource::Secret) {
                    memory::prepare(&canonical, uid, PROJECTED, name, Some(SECRET_TMPFS_SIZE))
                        .map_err(|e| io(&format!("projected volume {name:?}"), e))?
                } else {
                    canonical
                };
                let kv = KeyVolume { namespace: ns.clone(), sources, fixed, dir: dir.clone() };
                kv.sync(&self.objects).await?;
                fresh.push(kv);
                PreparedVolume { path: dir, always_read_only: true, owned_dir: false }
            } else if let Some(d) = &vol.downward_api {
                let dir = base.join(DOWNWARD_API).join(name);
                let files = payload::downward_payload(
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                    d.default_mode,
                    pod_ip,
                    self.node,
                )?;
                atomic::write(&dir, &files).map_err(|e| PodEnvError::Mount(e.to_string()))?;
                PreparedVolume { path: dir, always_read_only: true, owned_dir: false }
            } else if let Some(hp) = &vol.host_path {
                let path = host::check_host_path(hp)?;
                PreparedVolume { owned_dir: false, always_read_only: false, path }
            } else if let Some(claim) = &vol.persistent_volume_claim {
                let (path, read_only) = host::claim_path(&self.objects, &ns, claim, &self.data_dir).await?;
                PreparedVolume { path, always_read_only: read_only || claim.read_only == Some(true), owned_dir: false }
            } else {
                return Err(PodEnvError::Mount(format!("volume {name:?}: unsupported volume type")));
            };
            volumes.insert(name.to_string(), prepared);
        }
        let refresher = (!fresh.is_empty()).then(|| {
            let token = CancellationToken::new();
            let handle = tokio::spawn(refresh_loop(fresh, self.objects.clone(), self.refresh, token.clone()));
            (token, handle)
        });
        Ok(PreparedVolumes { volumes, refresher })
    }

    /// Removes everything the pod's volumes left (unmounting memory volumes first).
    pub fn cleanup(&self, uid: &str) {
        remove_pod_dir(&self.pods_dir, uid);
    }
}

/// Removes `<pods_dir>/<uid>` and the pod's `/dev/shm` directory, unmounting the tmpfs
/// volumes below first (found in the mount table, so this works for any agent process).
pub fn remove_pod_dir(pods_dir: &Path, uid: &str) {
    let dir = pods_dir.join(uid);
    memory::unmount_under(&dir);
    for d in [dir, memory::shm_root(uid)] {
        if let Err(e) = std::fs::remove_dir_all(&d)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %d.display(), error = %e, "removing pod volumes failed");
        }
    }
}

/// The configMaps and secrets a projected volume reads, and its downwardAPI files (computed
/// once, as for a downwardAPI volume). Service account tokens and trust bundles are refused
/// with a message: nothing on this node issues them.
fn projected_sources(
    pod: &Pod,
    projected: &ProjectedVolumeSource,
    pod_ip: IpAddr,
    node: NodeCapacity,
) -> Result<(Vec<KeyRef>, Payload), PodEnvError> {
    let mut keys = Vec::new();
    let mut fixed = Payload::new();
    let default_mode = projected.default_mode;
    for source in projected.sources.iter().flatten() {
        if let Some(cm) = &source.config_map {
            keys.push(KeyRef {
                source: KeySource::ConfigMap,
                name: cm.name.clone(),
                items: cm.items.clone(),
                default_mode,
                optional: cm.optional == Some(true),
            });
        } else if let Some(s) = &source.secret {
            keys.push(KeyRef {
                source: KeySource::Secret,
                name: s.name.clone(),
                items: s.items.clone(),
                default_mode,
                optional: s.optional == Some(true),
            });
        } else if let Some(d) = &source.downward_api {
            let items = d.items.as_deref().unwrap_or_default();
            fixed.extend(payload::downward_payload(pod, items, default_mode, pod_ip, node)?);
        } else if source.service_account_token.is_some() {
            return Err(PodEnvError::Mount("projected serviceAccountToken sources are not supported yet".into()));
        } else {
            return Err(PodEnvError::Mount("projected volume source of an unsupported kind".into()));
        }
    }
    Ok((keys, fixed))
}

/// Re-syncs configMap/secret volumes until cancelled.
async fn refresh_loop(volumes: Vec<KeyVolume>, objects: ApiObjects, period: Duration, token: CancellationToken) {
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        for vol in &volumes {
            match vol.sync(&objects).await {
                Ok(true) => tracing::debug!(dir = %vol.dir.display(), "volume contents updated"),
                Ok(false) => {}
                // A vanished object or key keeps the last contents, as the kubelet does.
                Err(e) => tracing::debug!(dir = %vol.dir.display(), error = %e, "volume refresh skipped"),
            }
        }
    }
}
