//! Reading a container's spec into what a runtime needs — pure helpers.
//!
//! What it owns: `imagePullPolicy` defaulting, `command ++ args`, TCP ports, limits in bytes
//! and millicores, and which runtime a pod runs on. What it does not: resolve env or volumes
//! (the pod environment does) or pull anything.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};
use skiff_api::quantity::parse_quantity;
use skiff_oci_shim::network::{ClusterDns, DnsPolicy, PodDns};

use crate::runtime::{ContainerRuntime, HostPort, PullPolicy, SandboxSpec, Security};

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

/// `resources.requests.cpu` in millicores (`None` when absent or unparsable: the limit's
/// check already reports bad quantities).
pub fn cpu_request(container: &Container) -> Option<u64> {
    let q = container.resources.as_ref()?.requests.as_ref()?.get("cpu")?;
    parse_quantity(&q.0).ok().map(|p| p.as_millis().max(0) as u64)
}

/// The effective security context of `container`: its own fields over the pod's.
pub fn security(pod: &Pod, container: &Container) -> Security {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    Security {
        run_as_user: sc.and_then(|s| s.run_as_user).or_else(|| pod_sc.and_then(|p| p.run_as_user)),
        run_as_group: sc.and_then(|s| s.run_as_group).or_else(|| pod_sc.and_then(|p| p.run_as_group)),
        run_as_non_root: sc
            .and_then(|s| s.run_as_non_root)
            .or_else(|| pod_sc.and_then(|p| p.run_as_non_root))
            .unwrap_or(false),
        supplemental_groups: pod_sc.and_then(|p| p.supplemental_groups.clone()).unwrap_or_default(),
        read_only_root_filesystem: sc.and_then(|s| s.read_only_root_filesystem).unwrap_or(false),
        privileged: sc.and_then(|s| s.privileged).unwrap_or(false),
        allow_privilege_escalation: sc.and_then(|s| s.allow_privilege_escalation),
        capabilities_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        capabilities_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
    }
}

/// What the pod's sandbox needs: hostname, FQDN, hostAliases, every container's hostPorts, and
/// its DNS settings (`dnsPolicy`, `dnsConfig`, the node's cluster DNS at `cluster_dns`).
pub fn sandbox(pod: &Pod, cluster_dns: Option<IpAddr>) -> SandboxSpec {
    let spec = pod.spec.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let hostname = spec.hostname.clone().unwrap_or(name);
    let fqdn = spec.subdomain.as_ref().map(|sub| format!("{hostname}.{sub}.{namespace}.svc.cluster.local"));
    let host_aliases = spec
        .host_aliases
        .iter()
        .flatten()
        .filter_map(|a| Some((a.ip.parse().ok()?, a.hostnames.clone().unwrap_or_default())))
        .collect();
    let host_ports = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            Some(HostPort {
                host_port: u16::try_from(p.host_port?).ok().filter(|h| *h > 0)?,
                container_port: u16::try_from(p.container_port).ok()?,
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            })
        })
        .collect();
    let dns = pod_dns(&spec, &namespace, cluster_dns);
    SandboxSpec { hostname, fqdn, host_aliases, host_ports, host_network: spec.host_network.unwrap_or(false), dns }
}

/// The pod's `dnsPolicy` and `dnsConfig` in the shim's terms (the file is made in the sandbox).
fn pod_dns(spec: &k8s_openapi::api::core::v1::PodSpec, namespace: &str, cluster_dns: Option<IpAddr>) -> PodDns {
    let config = spec.dns_config.clone().unwrap_or_default();
    PodDns {
        policy: DnsPolicy::parse(spec.dns_policy.as_deref()),
        cluster: cluster_dns.map(|ip| ClusterDns {
            nameservers: vec![ip],
            namespace: namespace.to_owned(),
            domain: "cluster.local".to_owned(),
        }),
        nameservers: config.nameservers.unwrap_or_default(),
        searches: config.searches.unwrap_or_default(),
        options: config.options.unwrap_or_default().into_iter().filter_map(|o| Some((o.name?, o.value))).collect(),
    }
}

/// The runtime `pod` names: `runtimeClassName`, else the `skiff.dev/runtime` annotation or label.
pub fn named_runtime(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.runtime_class_name.as_deref())
        .or_else(|| {
            pod.metadata.annotations.as_ref().and_then(|a| a.get(skiff_api::labels::RUNTIME)).map(String::as_str)
        })
        .or_else(|| pod.metadata.labels.as_ref().and_then(|l| l.get(skiff_api::labels::RUNTIME)).map(String::as_str))
}

/// The runtime `pod` names ([`named_runtime`]), else the first runtime (the WASM one). `Err`
/// names the missing runtime. The worker's full rule, image kinds included, is `choose`'s.
pub fn runtime_for(pod: &Pod, runtimes: &[Arc<dyn ContainerRuntime>]) -> Result<Arc<dyn ContainerRuntime>, String> {
    match named_runtime(pod) {
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

    #[test]
    fn security_sandbox_and_requests() {
        use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext, PodSpec, SecurityContext};
        let c = Container {
            security_context: Some(SecurityContext {
                run_as_user: Some(1000),
                read_only_root_filesystem: Some(true),
                capabilities: Some(Capabilities {
                    add: Some(vec!["NET_ADMIN".into()]),
                    drop: Some(vec!["ALL".into()]),
                }),
                ..SecurityContext::default()
            }),
            ports: Some(vec![ContainerPort { container_port: 80, host_port: Some(8080), ..ContainerPort::default() }]),
            resources: Some(ResourceRequirements {
                requests: Some([("cpu".to_string(), Quantity("100m".into()))].into()),
                ..ResourceRequirements::default()
            }),
            ..with_image("busybox")
        };
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![c.clone()],
                security_context: Some(PodSecurityContext {
                    run_as_user: Some(1),
                    run_as_group: Some(3000),
                    run_as_non_root: Some(true),
                    ..PodSecurityContext::default()
                }),
                subdomain: Some("svc".into()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        let s = security(&pod, &c);
        assert_eq!((s.run_as_user, s.run_as_group, s.run_as_non_root), (Some(1000), Some(3000), true));
        assert!(s.read_only_root_filesystem && !s.privileged);
        assert_eq!((s.capabilities_add, s.capabilities_drop), (vec!["NET_ADMIN".to_string()], vec!["ALL".to_string()]));
        let sb = sandbox(&pod, Some(IpAddr::from([10, 96, 0, 10])));
        assert_eq!(sb.dns.cluster.map(|c| c.namespace).as_deref(), Some("ns"));
        assert_eq!(sb.hostname, "web");
        assert_eq!(sb.fqdn.as_deref(), Some("web.svc.ns.svc.cluster.local"));
        assert_eq!(sb.host_ports, vec![HostPort { host_port: 8080, container_port: 80, protocol: "TCP".into() }]);
        assert_eq!(cpu_request(&c), Some(100));
        assert_eq!(cpu_request(&with_image("x")), None);
    }
}
