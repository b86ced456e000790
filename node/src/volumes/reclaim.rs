//! The node's half of local-path reclaim: a deleted local-path PersistentVolume keeps its
//! `skiff.dev/local-path-cleanup` finalizer until the node it lives on has removed its
//! directory (`<data-dir>/volumes/pvc-…`); this loop does that and then drops the finalizer,
//! which lets the API server delete the PV. A node that is down keeps the PV Terminating —
//! its data has not been removed, and the PV says so.
//!
//! Polls the PV list every [`PERIOD`] (PVs are few and deletions rare; a watch is not worth
//! its reconnect logic here). Only PVs whose node affinity names this node are touched.
//!
//! Also, once when the agent starts: the pod directories (`<data-dir>/pods/<uid>`) of pods
//! deleted while the agent was down — no worker will ever run for them — are removed, their
//! tmpfs volumes (secrets) unmounted first ([`sweep_deleted_pods`]).

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use skiff_api::labels;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often deleted volumes are looked for.
pub const PERIOD: Duration = Duration::from_secs(2);

/// The directory of a local-path volume on this node, when `pv` is one being deleted here:
/// it carries the cleanup finalizer, has a relative `local.path` inside the data directory,
/// and its required node affinity names `node` by hostname.
pub fn cleanup_target(pv: &PersistentVolume, node: &str, data_dir: &Path) -> Option<PathBuf> {
    pv.metadata.deletion_timestamp.as_ref()?;
    if !pv.metadata.finalizers.as_ref()?.iter().any(|f| f == labels::LOCAL_PATH_CLEANUP) {
        return None;
    }
    let spec = pv.spec.as_ref()?;
    let path = Path::new(&spec.local.as_ref()?.path);
    let inside = !path.as_os_str().is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    if !inside {
        return None;
    }
    let terms = &spec.node_affinity.as_ref()?.required.as_ref()?.node_selector_terms;
    let here = terms.iter().any(|t| {
        t.match_expressions
            .iter()
            .flatten()
            .any(|r| r.key == labels::HOSTNAME && r.operator == "In" && r.values.iter().flatten().any(|v| v == node))
    });
    here.then(|| data_dir.join(path))
}

/// Pod directories to remove: `(uid, last modified)` entries whose pod is not in `live`, and
/// that are older than the list (`listed_at`), so a pod created since is never touched.
pub fn deleted_pods(dirs: &[(String, SystemTime)], live: &HashSet<String>, listed_at: SystemTime) -> Vec<String> {
    dirs.iter()
        .filter(|(uid, modified)| !live.contains(uid) && *modified < listed_at)
        .map(|(uid, _)| uid.clone())
        .collect()
}

/// Removes the pod directories (and tmpfs volumes) of pods on `node` that no longer exist.
pub async fn sweep_deleted_pods(client: &kube::Client, node: &str, pods_dir: &Path) {
    let listed_at = SystemTime::now();
    let params = ListParams::default().fields(&format!("spec.nodeName={node}"));
    let live: HashSet<String> = match Api::<Pod>::all(client.clone()).list(&params).await {
        Ok(list) => list.items.into_iter().filter_map(|p| p.metadata.uid).collect(),
        // Removing a live pod's volumes would be far worse than keeping a dead one's.
        Err(e) => return warn!(error = %e, "listing this node's pods failed; leftover pod volumes are kept"),
    };
    let dirs: Vec<(String, SystemTime)> = std::fs::read_dir(pods_dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let uid = e.file_name().into_string().ok()?;
            let modified = e.metadata().ok()?.modified().ok()?;
            Some((uid, modified))
        })
        .collect();
    let gone = deleted_pods(&dirs, &live, listed_at);
    if gone.is_empty() {
        return;
    }
    let pods_dir = pods_dir.to_path_buf();
    let done = tokio::task::spawn_blocking(move || {
        for uid in gone {
            info!(%uid, "removing the volumes of a pod deleted while the agent was down");
            super::remove_pod_dir(&pods_dir, &uid);
        }
    })
    .await;
    if let Err(e) = done {
        warn!(error = %e, "removing leftover pod volumes failed");
    }
}

/// Removes the volumes of pods deleted while the agent was down (once), then the directories
/// of this node's deleted local-path volumes until `cancel`.
pub async fn cleanup_loop(client: kube::Client, node: String, data_dir: PathBuf, cancel: CancellationToken) {
    sweep_deleted_pods(&client, &node, &data_dir.join("pods")).await;
    let api: Api<PersistentVolume> = Api::all(client);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(PERIOD) => {}
        }
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(e) => {
                debug!(error = %e, "listing persistentvolumes for cleanup failed");
                continue;
            }
        };
        for pv in list.items {
            let Some(dir) = cleanup_target(&pv, &node, &data_dir) else { continue };
            let name = pv.metadata.name.clone().unwrap_or_default();
            if let Err(e) = std::fs::remove_dir_all(&dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!(volume = name, path = %dir.display(), error = %e, "removing a local-path volume failed");
                continue;
            }
            let mut pv = pv;
            if let Some(fs) = pv.metadata.finalizers.as_mut() {
                fs.retain(|f| f != labels::LOCAL_PATH_CLEANUP);
            }
            // The resourceVersion makes this a compare-and-swap; a lost race retries next round.
            match api.replace(&name, &PostParams::default(), &pv).await {
                Ok(_) => info!(volume = name, path = %dir.display(), "local-path volume removed"),
                Err(e) => debug!(volume = name, error = %e, "releasing the cleanup finalizer failed; will retry"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pv(path: &str, node: &str, deleting: bool, finalizer: bool) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": "pvc-1",
            "deletionTimestamp": if deleting { json!("2026-01-01T00:00:00Z") } else { json!(null) },
            "finalizers": if finalizer { json!([labels::LOCAL_PATH_CLEANUP]) } else { json!([]) }},
            "spec": {"local": {"path": path}, "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": labels::HOSTNAME, "operator": "In", "values": [node]}]}]}}}}))
        .expect("pv")
    }

    #[test]
    fn only_old_directories_of_pods_not_listed_are_swept() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let dirs = [
            ("live".to_string(), t0 - Duration::from_secs(5)),
            ("gone".to_string(), t0 - Duration::from_secs(5)),
            ("new".to_string(), t0 + Duration::from_secs(1)),
        ];
        let live = HashSet::from(["live".to_string()]);
        assert_eq!(deleted_pods(&dirs, &live, t0), ["gone"]);
    }

    #[test]
    fn only_this_nodes_deleted_local_path_volumes_inside_the_data_dir() {
        let data = Path::new("/data");
        assert_eq!(
            cleanup_target(&pv("volumes/pvc-1_ns_c", "n1", true, true), "n1", data),
            Some(data.join("volumes/pvc-1_ns_c"))
        );
        assert_eq!(cleanup_target(&pv("volumes/pvc-1_ns_c", "n2", true, true), "n1", data), None, "another node's");
        assert_eq!(cleanup_target(&pv("volumes/pvc-1_ns_c", "n1", false, true), "n1", data), None, "not deleted");
        assert_eq!(cleanup_target(&pv("volumes/pvc-1_ns_c", "n1", true, false), "n1", data), None, "not ours");
        assert_eq!(cleanup_target(&pv("/srv/data", "n1", true, true), "n1", data), None, "absolute: never removed");
        assert_eq!(cleanup_target(&pv("volumes/../..", "n1", true, true), "n1", data), None, "escapes the data dir");
    }
}
