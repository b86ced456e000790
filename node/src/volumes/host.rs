//! Volumes that are existing node paths: `hostPath` (with its `type` checks, as the kubelet
//! performs them) and `persistentVolumeClaim` resolved through a bound PersistentVolume whose
//! source is `hostPath` or `local`.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{HostPathVolumeSource, PersistentVolumeClaimVolumeSource};

use super::source::ApiObjects;
use crate::pod_env::PodEnvError;

/// Checks (and for the `...OrCreate` types creates) a hostPath according to its `type`.
pub fn check_host_path(src: &HostPathVolumeSource) -> Result<PathBuf, PodEnvError> {
    let path = PathBuf::from(&src.path);
    if !path.is_absolute() {
        return Err(PodEnvError::Mount(format!("hostPath {:?} must be an absolute path", src.path)));
    }
    let failed = |what: &str| PodEnvError::Mount(format!("hostPath type check failed: {} is not {what}", src.path));
    let meta = std::fs::metadata(&path);
    match src.type_.as_deref().unwrap_or("") {
        "" => {}
        "DirectoryOrCreate" => {
            if meta.is_err() {
                create_dir(&path)?;
            } else if !path.is_dir() {
                return Err(failed("a directory"));
            }
        }
        "Directory" => {
            if !meta.as_ref().is_ok_and(|m| m.is_dir()) {
                return Err(failed("a directory"));
            }
        }
        "FileOrCreate" => {
            if meta.is_err() {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| PodEnvError::Mount(format!("creating hostPath file {}: {e}", src.path)))?;
            } else if !path.is_file() {
                return Err(failed("a file"));
            }
        }
        "File" => {
            if !meta.as_ref().is_ok_and(|m| m.is_file()) {
                return Err(failed("a file"));
            }
        }
        "Socket" => {
            if !meta.as_ref().is_ok_and(|m| m.file_type().is_socket()) {
                return Err(failed("a socket file"));
            }
        }
        "CharDevice" => {
            if !meta.as_ref().is_ok_and(|m| m.file_type().is_char_device()) {
                return Err(failed("a character device"));
            }
        }
        "BlockDevice" => {
            if !meta.as_ref().is_ok_and(|m| m.file_type().is_block_device()) {
                return Err(failed("a block device"));
            }
        }
        other => return Err(PodEnvError::Mount(format!("hostPath {:?}: unsupported type {other:?}", src.path))),
    }
    Ok(path)
}

fn create_dir(path: &Path) -> Result<(), PodEnvError> {
    std::fs::create_dir_all(path)
        .map_err(|e| PodEnvError::Mount(format!("creating hostPath directory {}: {e}", path.display())))
}

/// The node path behind a claim: the claim must be Bound, and its PersistentVolume must be a
/// `hostPath` or `local` volume (a relative `local.path` is a local-path volume under
/// `data_dir`, created if missing). Returns the path and whether it must be read-only (the
/// volume offers only ReadOnlyMany).
pub async fn claim_path(
    objects: &ApiObjects,
    ns: &str,
    src: &PersistentVolumeClaimVolumeSource,
    data_dir: &Path,
) -> Result<(PathBuf, bool), PodEnvError> {
    let name = &src.claim_name;
    let claim = objects
        .claim(ns, name)
        .await?
        .ok_or_else(|| PodEnvError::Mount(format!("persistentvolumeclaim {name:?} not found")))?;
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let volume_name = claim.spec.as_ref().and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty());
    let Some(volume_name) = volume_name.filter(|_| bound) else {
        return Err(PodEnvError::Mount(format!("persistentvolumeclaim {name} is not bound")));
    };
    let pv = objects
        .volume(&volume_name)
        .await?
        .ok_or_else(|| PodEnvError::Mount(format!("persistentvolume {volume_name:?} not found")))?;
    let spec = pv.spec.unwrap_or_default();
    let read_only =
        spec.access_modes.as_deref().is_some_and(|m| !m.is_empty() && m.iter().all(|m| m == "ReadOnlyMany"));
    if let Some(host) = spec.host_path {
        return Ok((check_host_path(&host)?, read_only));
    }
    if let Some(local) = spec.local {
        let path = PathBuf::from(&local.path);
        if path.is_relative() {
            return Ok((local_path_dir(data_dir, &path, &volume_name)?, read_only));
        }
        if !path.exists() {
            return Err(PodEnvError::Mount(format!(
                "local volume path {:?} of persistentvolume {volume_name:?} does not exist",
                local.path
            )));
        }
        return Ok((path, read_only));
    }
    Err(PodEnvError::Mount(format!("persistentvolume {volume_name:?}: only hostPath and local volumes are supported")))
}

/// A local-path volume's directory under `data_dir`, created on first use (the provisioner
/// only names it; the node owns the disk).
pub fn local_path_dir(data_dir: &Path, rel: &Path, volume_name: &str) -> Result<PathBuf, PodEnvError> {
    if !rel.components().all(|c| matches!(c, std::path::Component::Normal(_))) {
        return Err(PodEnvError::Mount(format!(
            "persistentvolume {volume_name:?}: local path {} leaves the node's data directory",
            rel.display()
        )));
    }
    let dir = data_dir.join(rel);
    std::fs::create_dir_all(&dir)
        .map_err(|e| PodEnvError::Mount(format!("creating local-path volume {}: {e}", dir.display())))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(path: &Path, ty: &str) -> HostPathVolumeSource {
        HostPathVolumeSource { path: path.to_string_lossy().into_owned(), type_: Some(ty.to_string()) }
    }

    #[test]
    fn local_path_volumes_live_under_the_data_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = local_path_dir(tmp.path(), Path::new("volumes/pvc-1_ns_c"), "pvc-1").expect("created");
        assert_eq!(dir, tmp.path().join("volumes/pvc-1_ns_c"));
        assert!(dir.is_dir());
        assert!(local_path_dir(tmp.path(), Path::new("../escape"), "pvc-1").is_err());
    }

    #[test]
    fn host_path_types() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("d");
        let file = tmp.path().join("f");
        assert!(check_host_path(&src(&dir, "Directory")).is_err());
        check_host_path(&src(&dir, "DirectoryOrCreate")).expect("created");
        assert!(dir.is_dir());
        check_host_path(&src(&dir, "Directory")).expect("now a directory");
        let err = check_host_path(&src(&dir, "File")).expect_err("a dir is not a file");
        assert_eq!(err.to_string(), format!("hostPath type check failed: {} is not a file", dir.display()));
        check_host_path(&src(&file, "FileOrCreate")).expect("file created");
        assert!(file.is_file());
        check_host_path(&src(&file, "File")).expect("file");
        assert!(check_host_path(&src(&file, "DirectoryOrCreate")).is_err());
        assert!(check_host_path(&src(&file, "Socket")).is_err());
        check_host_path(&src(&tmp.path().join("absent"), "")).expect("no type: no check");
        assert!(check_host_path(&HostPathVolumeSource { path: "relative".into(), type_: None }).is_err());
    }
}
