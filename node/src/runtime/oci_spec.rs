//! Mapping the agent's [`ContainerSpec`] onto the OCI shim's `runc` container spec — pure.
//!
//! What it owns: the container id scheme (`<pod uid>_<container>_<run>`, so the agent can tell
//! from an id alone which pod a container belongs to after a restart), Kubernetes' rules for
//! `command`/`args` over the image's Entrypoint/Cmd (by passing both through to
//! `skiff_oci_shim::runtime::spec`, which applies them), security context → runc options,
//! limits → cgroup resources, and volumes → bind mounts. What it does not: pull images,
//! create the sandbox or start anything (`oci.rs`, `sandbox.rs`).

use std::path::{Path, PathBuf};

use skiff_oci_shim::image::ImageConfig as StoreImageConfig;
use skiff_oci_shim::runtime::{
    ContainerSpec as RuncSpec, ImageConfig, MountKind, MountSpec, Resources, SecurityOptions,
};

use super::{ContainerSpec, RuntimeError, Security};

/// The CFS period Kubernetes uses (100ms).
const CPU_PERIOD_US: u64 = 100_000;

/// Where the pod's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` are on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    pub hosts: PathBuf,
    pub hostname: PathBuf,
    pub resolv_conf: PathBuf,
}

/// Node-side choices that are not in the pod: the pids limit and the cgroup parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLimits {
    /// Maximum processes per container (the kubelet's `podPidsLimit`).
    pub pids_limit: Option<i64>,
    /// The cgroup under which containers are placed (`/skiff`).
    pub cgroup_parent: String,
}

/// The runc container id of run `run` of `container` in the pod with `pod_uid`.
pub fn container_id(pod_uid: &str, container: &str, run: u32) -> String {
    format!("{pod_uid}_{container}_{run}")
}

/// The pod uid a container id belongs to (see [`container_id`]).
pub fn pod_uid_of(container_id: &str) -> Option<&str> {
    container_id.split_once('_').map(|(uid, _)| uid).filter(|uid| !uid.is_empty())
}

/// The image's config in the shape the spec builder takes.
pub fn image_config(config: &StoreImageConfig) -> ImageConfig {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_string());
    ImageConfig {
        entrypoint: config.entrypoint.clone(),
        cmd: config.cmd.clone(),
        env: config.env.clone(),
        working_dir: non_empty(&config.working_dir),
        user: non_empty(&config.user),
    }
}

/// Kubernetes' security context as runc options. IDs must fit in 32 bits.
pub fn security_options(security: &Security) -> Result<SecurityOptions, RuntimeError> {
    let id = |what: &str, v: i64| {
        u32::try_from(v).map_err(|_| {
            RuntimeError::new("CreateContainerConfigError", format!("securityContext.{what}: {v} is not a valid id"))
        })
    };
    Ok(SecurityOptions {
        run_as_user: security.run_as_user.map(|v| id("runAsUser", v)).transpose()?,
        run_as_group: security.run_as_group.map(|v| id("runAsGroup", v)).transpose()?,
        supplemental_groups: security
            .supplemental_groups
            .iter()
            .map(|v| id("supplementalGroups", *v))
            .collect::<Result<_, _>>()?,
        run_as_non_root: security.run_as_non_root,
        read_only_root_filesystem: security.read_only_root_filesystem,
        privileged: security.privileged,
        allow_privilege_escalation: security.allow_privilege_escalation,
        capabilities_add: security.capabilities_add.clone(),
        capabilities_drop: security.capabilities_drop.clone(),
        seccomp_unconfined: false,
    })
}

/// Limits and requests as cgroup resources: memory limit, CFS quota from the CPU limit, shares
/// from the CPU request (the kubelet's formula), and the node's pids limit.
pub fn resources(spec: &ContainerSpec, limits: &NodeLimits) -> Resources {
    let quota = spec.cpu_limit_millis.map(|m| (m.max(1) * CPU_PERIOD_US / 1000) as i64);
    // Kubernetes: a container without a CPU request but with a limit requests its limit.
    let request = spec.cpu_request_millis.or(spec.cpu_limit_millis);
    Resources {
        memory_limit_bytes: spec.memory_limit.map(|b| i64::try_from(b).unwrap_or(i64::MAX)),
        cpu_quota_us: quota,
        cpu_period_us: quota.map(|_| CPU_PERIOD_US),
        cpu_shares: Some(request.map_or(2, |m| (m * 1024 / 1000).max(2))),
        pids_limit: limits.pids_limit,
    }
}

/// The runc spec of `spec` running image `image` as container `id`, in network namespace
/// `netns` (`None`: the host's), with the pod's `/etc` files bind-mounted.
pub fn runc_spec(
    id: &str,
    spec: &ContainerSpec,
    image: &StoreImageConfig,
    netns: Option<&Path>,
    etc: Option<&EtcFiles>,
    limits: &NodeLimits,
) -> Result<RuncSpec, RuntimeError> {
    let mut mounts: Vec<MountSpec> = spec
        .mounts
        .iter()
        .map(|m| MountSpec {
            destination: PathBuf::from(&m.container_path),
            kind: MountKind::Bind { source: m.host_path.clone() },
            read_only: m.read_only,
        })
        .collect();
    if let Some(etc) = etc {
        // A volume mounted at one of these paths wins, as with the kubelet.
        for (dest, source) in
            [("/etc/hosts", &etc.hosts), ("/etc/hostname", &etc.hostname), ("/etc/resolv.conf", &etc.resolv_conf)]
        {
            if !mounts.iter().any(|m| m.destination == Path::new(dest)) {
                mounts.push(MountSpec {
                    destination: PathBuf::from(dest),
                    kind: MountKind::Bind { source: source.clone() },
                    read_only: false,
                });
            }
        }
    }
    let hostname =
        (!spec.sandbox.hostname.is_empty() && !spec.sandbox.host_network).then(|| spec.sandbox.hostname.clone());
    Ok(RuncSpec {
        id: id.to_string(),
        image: image_config(image),
        command: spec.command.clone(),
        args: spec.args.clone(),
        env: spec.env.clone(),
        working_dir: spec.working_dir.clone().filter(|w| !w.is_empty()),
        hostname,
        security: security_options(&spec.security)?,
        mounts,
        netns: netns.map(Path::to_path_buf),
        cgroups_path: Some(format!("{}/{id}", limits.cgroup_parent.trim_end_matches('/'))),
        resources: resources(spec, limits),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::net::IpAddr;
    use std::sync::Arc;

    use super::*;
    use crate::runtime::{ImageRef, LogSink, LogStream, Mount, PodRef, SandboxSpec};

    #[derive(Debug)]
    struct NoLog;
    impl LogSink for NoLog {
        fn write(&self, _: LogStream, _: &[u8]) {}
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            pod: PodRef { namespace: "ns".into(), name: "p".into(), uid: "u-1".into() },
            container_name: "c".into(),
            image: ImageRef { reference: "busybox".into(), image_id: "sha256:x".into() },
            argv: Vec::new(),
            command: Vec::new(),
            args: Vec::new(),
            working_dir: None,
            security: Security::default(),
            cpu_request_millis: None,
            sandbox: SandboxSpec { hostname: "p".into(), ..SandboxSpec::default() },
            env: vec![("A".into(), "1".into())],
            mounts: Vec::new(),
            pod_ip: IpAddr::from([10, 244, 0, 2]),
            ports: Vec::new(),
            memory_limit: None,
            cpu_limit_millis: None,
            logs: Arc::new(NoLog),
            annotations: BTreeMap::new(),
            netns: None,
            stdin: Default::default(),
        }
    }

    fn image() -> StoreImageConfig {
        StoreImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            working_dir: "/app".into(),
            user: "1000".into(),
            ..StoreImageConfig::default()
        }
    }

    fn limits() -> NodeLimits {
        NodeLimits { pids_limit: Some(1024), cgroup_parent: "/skiff".into() }
    }

    fn argv(spec: &ContainerSpec) -> Vec<String> {
        let runc = runc_spec("id", spec, &image(), None, None, &limits()).expect("maps");
        skiff_oci_shim::runtime::spec::argv(&runc).expect("argv")
    }

    #[test]
    fn command_and_args_follow_kubernetes_over_entrypoint_and_cmd() {
        assert_eq!(argv(&spec()), ["/entry", "serve"], "image defaults");
        let args_only = ContainerSpec { args: vec!["other".into()], ..spec() };
        assert_eq!(argv(&args_only), ["/entry", "other"], "args replace Cmd");
        let command_only = ContainerSpec { command: vec!["/bin/sh".into()], ..spec() };
        assert_eq!(argv(&command_only), ["/bin/sh"], "command replaces Entrypoint and drops Cmd");
        let both = ContainerSpec { command: vec!["/bin/sh".into()], args: vec!["-c".into(), "x".into()], ..spec() };
        assert_eq!(argv(&both), ["/bin/sh", "-c", "x"]);
    }

    #[test]
    fn security_context_becomes_runc_options() {
        let s = ContainerSpec {
            security: Security {
                run_as_user: Some(1000),
                run_as_group: Some(2000),
                run_as_non_root: true,
                read_only_root_filesystem: true,
                capabilities_add: vec!["NET_ADMIN".into()],
                capabilities_drop: vec!["ALL".into()],
                ..Security::default()
            },
            ..spec()
        };
        let runc = runc_spec("id", &s, &image(), None, None, &limits()).expect("maps");
        assert_eq!(runc.security.run_as_user, Some(1000));
        assert_eq!(runc.security.run_as_group, Some(2000));
        assert!(runc.security.run_as_non_root && runc.security.read_only_root_filesystem);
        assert_eq!(runc.security.capabilities_add, ["NET_ADMIN"]);
        assert_eq!(runc.security.capabilities_drop, ["ALL"]);
        let bad = ContainerSpec { security: Security { run_as_user: Some(-1), ..Security::default() }, ..spec() };
        let err = runc_spec("id", &bad, &image(), None, None, &limits()).expect_err("negative uid");
        assert_eq!(err.reason, "CreateContainerConfigError");
    }

    #[test]
    fn limits_and_requests_become_cgroup_resources() {
        let s = ContainerSpec { memory_limit: Some(64 << 20), cpu_limit_millis: Some(500), ..spec() };
        let r = resources(&s, &limits());
        assert_eq!(r.memory_limit_bytes, Some(64 << 20));
        assert_eq!((r.cpu_quota_us, r.cpu_period_us), (Some(50_000), Some(100_000)));
        assert_eq!(r.cpu_shares, Some(512), "no request: the limit is the request");
        assert_eq!(r.pids_limit, Some(1024));
        let requested = ContainerSpec { cpu_request_millis: Some(100), ..spec() };
        assert_eq!(resources(&requested, &limits()).cpu_shares, Some(102));
        assert_eq!(resources(&spec(), &limits()).cpu_shares, Some(2), "best effort: minimal shares");
    }

    #[test]
    fn mounts_hostname_netns_and_ids() {
        let etc =
            EtcFiles { hosts: "/s/hosts".into(), hostname: "/s/hostname".into(), resolv_conf: "/s/resolv".into() };
        let s = ContainerSpec {
            mounts: vec![Mount { host_path: "/v/data".into(), container_path: "/data".into(), read_only: true }],
            ..spec()
        };
        let runc = runc_spec("id", &s, &image(), Some(Path::new("/run/netns/x")), Some(&etc), &limits()).expect("maps");
        let dests: Vec<_> = runc.mounts.iter().map(|m| m.destination.display().to_string()).collect();
        assert_eq!(dests, ["/data", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"]);
        assert!(runc.mounts[0].read_only);
        assert_eq!(runc.hostname.as_deref(), Some("p"));
        assert_eq!(runc.netns.as_deref(), Some(Path::new("/run/netns/x")));
        assert_eq!(runc.cgroups_path.as_deref(), Some("/skiff/id"));
        let id = container_id("0b7e-uid", "web", 3);
        assert_eq!(id, "0b7e-uid_web_3");
        assert_eq!(pod_uid_of(&id), Some("0b7e-uid"));
        assert_eq!(pod_uid_of("nounderscore"), None);
    }
}
