//! What a `configMap`, `secret` or `downwardAPI` volume contains: the file set computed from
//! the object's data and the volume's `items`, modes and `optional`, with the kubelet's error
//! messages. Pure functions; writing is [`super::atomic`]'s job.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod};

use super::atomic::{FileProjection, Payload, validate_path};
use crate::env::{NodeCapacity, field_value, resource_value};
use crate::pod_env::PodEnvError;

/// The default file mode of projected files (0644).
pub const DEFAULT_MODE: i32 = 0o644;

/// Which kind of object a key volume projects (for messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    ConfigMap,
    Secret,
}

fn mode_bits(mode: Option<i32>, default_mode: Option<i32>) -> u32 {
    u32::try_from(mode.or(default_mode).unwrap_or(DEFAULT_MODE) & 0o777).unwrap_or(0o644)
}

/// The files of a configMap/secret volume. `data` is `None` when the object does not exist.
pub fn key_payload(
    source: KeySource,
    name: &str,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<Payload, PodEnvError> {
    let Some(data) = data else {
        if optional {
            return Ok(Payload::new());
        }
        return Err(PodEnvError::Mount(match source {
            KeySource::ConfigMap => format!("configmap {name:?} not found"),
            KeySource::Secret => format!("secret {name:?} not found"),
        }));
    };
    let mut payload = Payload::new();
    match items {
        None => {
            for (key, value) in data {
                payload
                    .insert(key.clone(), FileProjection { data: value.clone(), mode: mode_bits(None, default_mode) });
            }
        }
        Some(items) => {
            for item in items {
                let Some(value) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(PodEnvError::Mount(match source {
                        KeySource::ConfigMap => format!("configmap references non-existent config key: {}", item.key),
                        KeySource::Secret => format!("references non-existent secret key: {}", item.key),
                    }));
                };
                payload.insert(
                    item.path.clone(),
                    FileProjection { data: value.clone(), mode: mode_bits(item.mode, default_mode) },
                );
            }
        }
    }
    for path in payload.keys() {
        validate_path(path).map_err(|e| PodEnvError::Mount(e.to_string()))?;
    }
    Ok(payload)
}

/// The files of a downwardAPI volume.
pub fn downward_payload(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    pod_ip: IpAddr,
    node: NodeCapacity,
) -> Result<Payload, PodEnvError> {
    let mut payload = Payload::new();
    for item in items {
        validate_path(&item.path).map_err(|e| PodEnvError::Mount(e.to_string()))?;
        let value = if let Some(f) = &item.field_ref {
            field_value(pod, &f.field_path, pod_ip).map_err(PodEnvError::Mount)?
        } else if let Some(r) = &item.resource_field_ref {
            let wanted = r.container_name.as_deref().unwrap_or_default();
            let container =
                pod.spec.iter().flat_map(|s| s.containers.iter()).find(|c| c.name == wanted).ok_or_else(|| {
                    PodEnvError::Mount(format!("downwardAPI {}: container {wanted:?} not found", item.path))
                })?;
            resource_value(container, r, node).map_err(PodEnvError::Mount)?
        } else {
            continue;
        };
        payload.insert(
            item.path.clone(),
            FileProjection { data: value.into_bytes(), mode: mode_bits(item.mode, default_mode) },
        );
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())])
    }

    fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
        KeyToPath { key: key.into(), path: path.into(), mode }
    }

    #[test]
    fn all_keys_or_items() {
        let all = key_payload(KeySource::ConfigMap, "cm", Some(&data()), None, Some(0o600), false).expect("all");
        assert_eq!(all.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(all["a"].mode, 0o600);
        let items = [item("b", "dir/bee", Some(0o400))];
        let some = key_payload(KeySource::ConfigMap, "cm", Some(&data()), Some(&items), None, false).expect("items");
        assert_eq!(some.len(), 1);
        assert_eq!((some["dir/bee"].data.as_slice(), some["dir/bee"].mode), (&b"2"[..], 0o400));
    }

    #[test]
    fn missing_objects_and_keys() {
        let err = key_payload(KeySource::Secret, "s", None, None, None, false).expect_err("missing");
        assert_eq!(err.to_string(), "secret \"s\" not found");
        assert!(key_payload(KeySource::Secret, "s", None, None, None, true).expect("optional").is_empty());
        let items = [item("zzz", "z", None)];
        let err =
            key_payload(KeySource::ConfigMap, "cm", Some(&data()), Some(&items), None, false).expect_err("missing key");
        assert_eq!(err.to_string(), "configmap references non-existent config key: zzz");
        assert!(
            key_payload(KeySource::ConfigMap, "cm", Some(&data()), Some(&items), None, true)
                .expect("optional key")
                .is_empty()
        );
        let bad = [item("a", "../escape", None)];
        assert!(key_payload(KeySource::ConfigMap, "cm", Some(&data()), Some(&bad), None, false).is_err());
    }
}
