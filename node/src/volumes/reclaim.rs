//! The node's half of local-path reclaim: a deleted local-path PersistentVolume keeps its
//! `skiff.dev/local-path-cleanup` finalizer until the node it lives on has removed its
//! directory (`<data-dir>/volumes/pvc-…`); this loop does that and then drops the finalizer,
//! which lets the API server delete the PV. A node that is down keeps the PV Terminating —
//! its data has not been removed, and the PV says so.
//!
//! Polls the PV list every [`PERIOD`] (PVs are few and deletions rare; a watch is not worth
//! its reconnect logic here). Only PVs whose node affinity names this node are touched.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
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

/// Removes the directories of this node's deleted local-path volumes until `cancel`.
pub async fn cleanup_loop(client: kube::Client, node: String, data_dir: PathBuf, cancel: CancellationToken) {
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
