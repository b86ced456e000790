//! Reading a container's spec into what a runtime needs — pure helpers.
//!
//! What it owns: `imagePullPolicy` defaulting, `command ++ args`, TCP ports, limits in bytes
//! and millicores, and which runtime a pod runs on. What it does not: resolve env or volumes
//! (the pod environment does) or pull anything.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_api::quantity::parse_quantity;

use crate::runtime::{ContainerRuntime, PullPolicy};

/// The pull policy of `container`: as written, else `Always` for `:latest` or an untagged
/// reference, `IfNotPresent` otherwise (digests included).
pub fn pull_policy(container: &Container) -> PullPolicy {
    match container.image_pull_policy.as_deref() {
        Some("Always") => PullPolicy::Always,
        Some("Never") => PullPolicy::Never,
        Some("IfNotPresent") => PullPolicy::IfNotPresent,
        _ => {
            let image = container.image.as_deref().unwrap_or("");
            if image.contains('@') {
                return PullPolicy::IfNotPresent;
            }
            // The tag is after the last ':' that follows the last '/' (a registry port is not a tag).
            let last = image.rsplit('/').next().unwrap_or(image);
            match last.rsplit_once(':') {
                Some((_, "latest")) | None => PullPolicy::Always,
                Some(_) => PullPolicy::IfNotPresent,
            }
        }
    }
}

/// `command` followed by `args`.
pub fn argv(container: &Container) -> Vec<String> {
    container.command.iter().flatten().chain(container.args.iter().flatten()).cloned().collect()
}

/// `containerPort`s of TCP ports (the protocol defaults to TCP).
pub fn tcp_ports(container: &Container) -> Vec<u16> {
    container
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().is_none_or(|proto| proto == "TCP"))
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect()
}

/// `resources.limits.memory` in bytes and `resources.limits.cpu` in millicores. A limit that
/// does not parse is an error (the API server validates them, so this is rare).
pub fn limits(container: &Container) -> Result<(Option<u64>, Option<u64>), String> {
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let get = |key: &str| -> Result<Option<i64>, String> {
        match limits.and_then(|l| l.get(key)) {
            None => Ok(None),
            Some(q) => parse_quantity(&q.0)
                .map(|parsed| Some(if key == "cpu" { parsed.as_millis() } else { parsed.as_bytes() }))
                .map_err(|e| format!("invalid {key} limit {:?}: {e}", q.0)),
        }
    };
    let memory = get("memory")?.map(|b| b.max(0) as u64);
    let cpu = get("cpu")?.map(|m| m.max(0) as u64);
    Ok((memory, cpu))
}

/// The runtime `pod` asks for: `runtimeClassName`, else the `skiff.dev/runtime` annotation or
/// label, else the first runtime (the WASM one). `Err` names the missing runtime.
pub fn runtime_for(pod: &Pod, runtimes: &[Arc<dyn ContainerRuntime>]) -> Result<Arc<dyn ContainerRuntime>, String> {
    let wanted = pod
        .spec
        .as_ref()
        .and_then(|s| s.runtime_class_name.clone())
        .or_else(|| pod.metadata.annotations.as_ref().and_then(|a| a.get(skiff_api::labels::RUNTIME).cloned()))
        .or_else(|| pod.metadata.labels.as_ref().and_then(|l| l.get(skiff_api::labels::RUNTIME).cloned()));
    match wanted {
        None => runtimes.first().cloned().ok_or_else(|| "this node offers no runtime".to_string()),
        Some(name) => runtimes.iter().find(|r| r.name() == name).cloned().ok_or_else(|| {
            let offered: Vec<&str> = runtimes.iter().map(|r| r.name()).collect();
            format!("runtime {name:?} is not offered by this node (it offers: {})", offered.join(", "))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn with_image(image: &str) -> Container {
        Container { name: "c".into(), image: Some(image.into()), ..Container::default() }
    }

    #[test]
    fn pull_policy_defaults() {
        assert_eq!(pull_policy(&with_image("app")), PullPolicy::Always);
        assert_eq!(pull_policy(&with_image("app:latest")), PullPolicy::Always);
        assert_eq!(pull_policy(&with_image("localhost:5000/app")), PullPolicy::Always);
        assert_eq!(pull_policy(&with_image("localhost:5000/app:1")), PullPolicy::IfNotPresent);
        assert_eq!(pull_policy(&with_image("app@sha256:abcd")), PullPolicy::IfNotPresent);
        let explicit = Container { image_pull_policy: Some("Never".into()), ..with_image("app") };
        assert_eq!(pull_policy(&explicit), PullPolicy::Never);
    }

    #[test]
    fn argv_ports_limits() {
        let c = Container {
            command: Some(vec!["serve".into()]),
            args: Some(vec!["--port".into(), "80".into()]),
            ports: Some(vec![
                ContainerPort { container_port: 80, ..ContainerPort::default() },
                ContainerPort { container_port: 53, protocol: Some("UDP".into()), ..ContainerPort::default() },
            ]),
            resources: Some(ResourceRequirements {
                limits: Some(
                    [("memory".to_string(), Quantity("64Mi".into())), ("cpu".to_string(), Quantity("250m".into()))]
                        .into(),
                ),
                ..ResourceRequirements::default()
            }),
            ..with_image("app:1")
        };
        assert_eq!(argv(&c), vec!["serve", "--port", "80"]);
        assert_eq!(tcp_ports(&c), vec![80]);
        assert_eq!(limits(&c), Ok((Some(64 * 1024 * 1024), Some(250))));
        assert_eq!(limits(&with_image("x")), Ok((None, None)));
    }
}
