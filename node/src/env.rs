//! A container's environment, resolved the way the kubelet does it
//! (`makeEnvironmentVariables`): first `envFrom` (ConfigMaps and Secrets, with `prefix`,
//! `optional`, keys that are not valid names skipped), then `env` in order, where each
//! `value` may refer to earlier variables as `$(NAME)` (`$$` escapes) and `valueFrom` reads a
//! ConfigMap/Secret key, a pod field or a resource limit. A later definition of a name
//! replaces the earlier value in place.
//!
//! The pure parts (expansion, field and resource lookups, name validity) are plain functions
//! tested here; [`resolve`] is the async shell that reads objects through [`ApiObjects`].
//! Service-link variables (`<SVC>_SERVICE_HOST`) are not produced yet.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};
use skiff_api::quantity::parse_quantity;

use crate::pod_env::PodEnvError;
use crate::volumes::source::ApiObjects;

/// Expands `$(NAME)` references in `input` with `lookup`, as Kubernetes'
/// `third_party/forked/golang/expansion` does: an unknown name stays as written, `$$` is a
/// literal `$`, and a `$` followed by anything else (or an unterminated `$(`) is kept.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match after.chars().next() {
            None => {
                out.push('$');
                rest = after;
            }
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A valid environment variable name (`[-._a-zA-Z][-._a-zA-Z0-9]*`), the rule `envFrom`
/// keys are checked against.
pub fn is_valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else { return false };
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    (ok(first) && !first.is_ascii_digit()) && chars.all(ok)
}

/// The value of a `fieldRef` path of `pod` (`pod_ip` is the IP the agent assigned, which
/// the status may not show yet).
pub fn field_value(pod: &Pod, path: &str, pod_ip: IpAddr) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let map_key = |prefix: &str| -> Option<String> {
        let inner = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(inner.to_string())
    };
    if let Some(key) = map_key("metadata.labels['") {
        return Ok(meta.labels.as_ref().and_then(|m| m.get(&key)).cloned().unwrap_or_default());
    }
    if let Some(key) = map_key("metadata.annotations['") {
        return Ok(meta.annotations.as_ref().and_then(|m| m.get(&key)).cloned().unwrap_or_default());
    }
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_else(|| "default".into()),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.podIP" => pod_ip.to_string(),
        "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()).unwrap_or_default(),
        "status.hostIPs" => status
            .and_then(|s| s.host_ips.as_ref())
            .map(|ips| ips.iter().map(|i| i.ip.clone()).collect::<Vec<_>>().join(","))
            .or_else(|| status.and_then(|s| s.host_ip.clone()))
            .unwrap_or_default(),
        other => return Err(format!("unsupported fieldRef path {other:?}")),
    };
    Ok(value)
}

/// `key="value"` lines, sorted, as the downward API writes whole label/annotation maps.
fn format_map(map: Option<&std::collections::BTreeMap<String, String>>) -> String {
    map.into_iter().flatten().map(|(k, v)| format!("{k}={v:?}\n")).collect()
}

/// What a node offers when a container sets no limit (the kubelet uses node allocatable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeCapacity {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
}

impl NodeCapacity {
    /// This machine's CPUs and memory.
    pub fn detect() -> NodeCapacity {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<i64>().ok())
            })
            .unwrap_or(0);
        NodeCapacity { cpu_millis: i64::try_from(cpus).unwrap_or(1) * 1000, memory_bytes: memory_kib * 1024 }
    }
}

/// The value of a `resourceFieldRef` for `container`: the limit (node capacity when unset)
/// or request, divided by `divisor` and rounded up, as the kubelet formats it.
pub fn resource_value(
    container: &Container,
    sel: &ResourceFieldSelector,
    node: NodeCapacity,
) -> Result<String, String> {
    let resources = container.resources.as_ref();
    let get = |limits: bool, name: &str| {
        let map = if limits {
            resources.and_then(|r| r.limits.as_ref())
        } else {
            resources.and_then(|r| r.requests.as_ref())
        };
        map.and_then(|m| m.get(name)).map(|q| parse_quantity(&q.0).map_err(|e| e.to_string())).transpose()
    };
    let divisor = match &sel.divisor {
        Some(d) => parse_quantity(&d.0).map_err(|e| e.to_string())?.as_nanos(),
        None => 1_000_000_000,
    };
    if divisor <= 0 {
        return Err(format!("invalid divisor for {}", sel.resource));
    }
    let nanos = match sel.resource.as_str() {
        "limits.cpu" => get(true, "cpu")?.map_or(i128::from(node.cpu_millis) * 1_000_000, |q| q.as_nanos()),
        "limits.memory" => get(true, "memory")?.map_or(i128::from(node.memory_bytes) * 1_000_000_000, |q| q.as_nanos()),
        "requests.cpu" => get(false, "cpu")?.map_or(0, |q| q.as_nanos()),
        "requests.memory" => get(false, "memory")?.map_or(0, |q| q.as_nanos()),
        other => return Err(format!("unsupported resourceFieldRef resource {other:?}")),
    };
    let value = (nanos + divisor - 1).div_euclid(divisor);
    // cpu is never reported below one unit of the divisor (the kubelet rounds up to 1).
    let value = if sel.resource.ends_with(".cpu") { value.max(1) } else { value };
    Ok(value.to_string())
}

/// An ordered env where redefining a name replaces its value in place.
#[derive(Debug, Default)]
struct EnvList {
    vars: Vec<(String, String)>,
    index: HashMap<String, usize>,
}

impl EnvList {
    fn set(&mut self, name: String, value: String) {
        match self.index.get(&name) {
            Some(i) => self.vars[*i].1 = value,
            None => {
                self.index.insert(name.clone(), self.vars.len());
                self.vars.push((name, value));
            }
        }
    }

    fn get(&self, name: &str) -> Option<String> {
        self.index.get(name).map(|i| self.vars[*i].1.clone())
    }
}

fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// One key of a ConfigMap's or Secret's data (`None`: absent but optional, so the variable
/// is skipped), with Kubernetes' messages for a missing object or key.
fn key_value(
    data: Option<BTreeMap<String, Vec<u8>>>,
    kind: &str,
    ns: &str,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, PodEnvError> {
    match data {
        Some(mut d) => match d.remove(key) {
            Some(v) => Ok(Some(utf8(v))),
            None if optional => Ok(None),
            None => Err(PodEnvError::Config(format!("couldn't find key {key} in {kind} {ns}/{name}"))),
        },
        None if optional => Ok(None),
        None => Err(PodEnvError::Config(format!("{} {name:?} not found", kind.to_lowercase()))),
    }
}

/// Resolves the env of `container` in `pod` (see the module docs).
pub async fn resolve(
    objects: &ApiObjects,
    pod: &Pod,
    container: &Container,
    pod_ip: IpAddr,
    node: NodeCapacity,
) -> Result<Vec<(String, String)>, PodEnvError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env = EnvList::default();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, what) = if let Some(cm) = &from.config_map_ref {
            match objects.config_map(ns, &cm.name).await? {
                Some(d) => (d, "configMap"),
                None if cm.optional == Some(true) => continue,
                None => return Err(PodEnvError::Config(format!("configmap {:?} not found", cm.name))),
            }
        } else if let Some(s) = &from.secret_ref {
            match objects.secret(ns, &s.name).await? {
                Some(d) => (d, "secret"),
                None if s.optional == Some(true) => continue,
                None => return Err(PodEnvError::Config(format!("secret {:?} not found", s.name))),
            }
        } else {
            continue;
        };
        let mut skipped = Vec::new();
        for (key, value) in data {
            let name = format!("{prefix}{key}");
            if is_valid_env_name(&name) {
                env.set(name, utf8(value));
            } else {
                skipped.push(key);
            }
        }
        if !skipped.is_empty() {
            tracing::info!(pod = ?pod.metadata.name, source = what, ?skipped, "envFrom keys skipped: not valid environment variable names");
        }
    }
    for var in container.env.iter().flatten() {
        let value = match (&var.value_from, &var.value) {
            (Some(from), _) => {
                if let Some(r) = &from.config_map_key_ref {
                    let data = objects.config_map(ns, &r.name).await?;
                    match key_value(data, "ConfigMap", ns, &r.name, &r.key, r.optional == Some(true))? {
                        Some(v) => v,
                        None => continue,
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let data = objects.secret(ns, &r.name).await?;
                    match key_value(data, "Secret", ns, &r.name, &r.key, r.optional == Some(true))? {
                        Some(v) => v,
                        None => continue,
                    }
                } else if let Some(f) = &from.field_ref {
                    field_value(pod, &f.field_path, pod_ip).map_err(PodEnvError::Config)?
                } else if let Some(r) = &from.resource_field_ref {
                    resource_value(container, r, node).map_err(PodEnvError::Config)?
                } else {
                    String::new()
                }
            }
            (None, Some(value)) => expand(value, |name| env.get(name)),
            (None, None) => String::new(),
        };
        env.set(var.name.clone(), value);
    }
    Ok(env.vars)
}

#[cfg(test)]
mod tests;
