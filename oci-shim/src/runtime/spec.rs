//! The OCI runtime spec (`config.json`) of one container, built from plain inputs.
//!
//! Owns: Kubernetes' rules for the process (command/args over Entrypoint/Cmd, env merge, working
//! dir, user and `runAsNonRoot`), the security defaults (capabilities, seccomp, masked and
//! read-only paths, no-new-privileges), mounts, namespaces and cgroup resources. Pure: no I/O,
//! so every rule is unit-tested on the generated JSON. Does not own: the bundle on disk
//! ([`super::bundle`]), `/etc/hosts`-style files (the caller passes them as bind mounts), image
//! unpacking (the caller passes the image's config as [`ImageConfig`]).

use std::path::PathBuf;

use oci_spec::OciSpecError;
use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder, get_default_maskedpaths, get_default_mounts,
    get_default_readonly_paths,
};

use super::security::{capability_set, default_seccomp};

/// PATH when neither the image nor the container sets one (containerd's default).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a runtime spec could not be built. Messages name the field to change.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither the container nor the image names a program to run.
    #[error("no command to run: the container sets no command and the image has no Entrypoint or Cmd")]
    NoCommand,
    /// `runAsNonRoot` is set but the container would run as uid 0.
    #[error(
        "container has runAsNonRoot and image will run as root (uid 0); set securityContext.runAsUser to a non-zero uid"
    )]
    RunsAsRoot,
    /// The image's `User` is a name; only numeric users are resolved here.
    #[error("image user {0:?} is not numeric (uid or uid:gid); set securityContext.runAsUser (and runAsGroup)")]
    NonNumericUser(String),
    /// A capability name in `add`/`drop` is not a Linux capability.
    #[error("unknown capability {0:?} in securityContext.capabilities")]
    UnknownCapability(String),
    /// A mount destination is not an absolute path.
    #[error("mount destination {0:?} must be an absolute path")]
    RelativeMount(PathBuf),
    /// An environment variable name is empty or contains `=`.
    #[error("invalid environment variable name {0:?}")]
    BadEnvName(String),
    /// The oci-spec builders refused a value (an internal inconsistency, reported verbatim).
    #[error("building the runtime spec: {0}")]
    Build(#[from] OciSpecError),
}

/// The parts of an image's config (`config.config` of the OCI image config) a container uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `NAME=value` strings.
    pub env: Vec<String>,
    /// `WorkingDir`, if set.
    pub working_dir: Option<String>,
    /// `User`: `uid`, `uid:gid` (numeric), or a name (then the caller must set `run_as_user`).
    pub user: Option<String>,
}

/// Security settings, mirroring a Kubernetes container `securityContext`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityOptions {
    /// `runAsUser`: overrides the image's user.
    pub run_as_user: Option<u32>,
    /// `runAsGroup`: overrides the image's group.
    pub run_as_group: Option<u32>,
    /// Extra groups (`supplementalGroups` and `fsGroup`).
    pub supplemental_groups: Vec<u32>,
    /// `runAsNonRoot`: refuse to build a spec whose process runs as uid 0.
    pub run_as_non_root: bool,
    /// `readOnlyRootFilesystem`.
    pub read_only_root_filesystem: bool,
    /// `privileged`: every capability, no masked paths, no seccomp, all devices allowed.
    pub privileged: bool,
    /// `allowPrivilegeEscalation`; `None` means Kubernetes' default (allowed).
    pub allow_privilege_escalation: Option<bool>,
    /// `capabilities.add` (names with or without `CAP_`, or `ALL`).
    pub capabilities_add: Vec<String>,
    /// `capabilities.drop` (names with or without `CAP_`, or `ALL`).
    pub capabilities_drop: Vec<String>,
    /// `false` applies the runtime-default seccomp profile; `true` means `Unconfined`.
    pub seccomp_unconfined: bool,
}

/// What a [`MountSpec`] mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A bind mount of a host path (a volume's directory or file).
    Bind {
        /// Host path.
        source: PathBuf,
    },
    /// A fresh tmpfs (secrets, `emptyDir.medium: Memory`).
    Tmpfs {
        /// Size limit in bytes, if any.
        size_bytes: Option<u64>,
    },
}

/// One extra mount in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Absolute path inside the container.
    pub destination: PathBuf,
    /// What to mount there.
    pub kind: MountKind,
    /// Mount read-only.
    pub read_only: bool,
}

/// cgroup limits. `None` leaves a resource unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// Memory limit in bytes (`limits.memory`).
    pub memory_limit_bytes: Option<i64>,
    /// CFS quota in microseconds per period (`limits.cpu` × period).
    pub cpu_quota_us: Option<i64>,
    /// CFS period in microseconds (Kubernetes uses 100000).
    pub cpu_period_us: Option<u64>,
    /// CPU shares (`requests.cpu` in millicores × 1024 / 1000, at least 2).
    pub cpu_shares: Option<u64>,
    /// Maximum number of processes (`podPidsLimit`).
    pub pids_limit: Option<i64>,
}

/// Everything needed to run one container, free of Kubernetes types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The runc container id: unique on the node, `[A-Za-z0-9_.-]+`.
    pub id: String,
    /// The image's config.
    pub image: ImageConfig,
    /// Kubernetes `command` (replaces the image's Entrypoint when non-empty).
    pub command: Vec<String>,
    /// Kubernetes `args` (replaces the image's Cmd when non-empty).
    pub args: Vec<String>,
    /// Container env, in order; later entries and these override the image's.
    pub env: Vec<(String, String)>,
    /// Kubernetes `workingDir` (overrides the image's).
    pub working_dir: Option<String>,
    /// Hostname inside the container (the pod name).
    pub hostname: Option<String>,
    /// Security settings.
    pub security: SecurityOptions,
    /// Extra mounts (volumes, secrets, `/etc/hosts`, `/etc/resolv.conf`), in order.
    pub mounts: Vec<MountSpec>,
    /// A network namespace to join (the pod's, e.g. `/var/run/netns/<pod>`); `None` creates a
    /// new one with only loopback.
    pub netns: Option<PathBuf>,
    /// The cgroup path (e.g. `/skiff/<pod-uid>/<container>`); `None` uses `/skiff/<id>`.
    pub cgroups_path: Option<String>,
    /// cgroup limits.
    pub resources: Resources,
}

/// The process argv by Kubernetes' rules: `command` replaces Entrypoint (and drops Cmd), `args`
/// replaces Cmd.
pub fn argv(spec: &ContainerSpec) -> Result<Vec<String>, SpecError> {
    let argv: Vec<String> = match (spec.command.is_empty(), spec.args.is_empty()) {
        (false, _) => spec.command.iter().chain(&spec.args).cloned().collect(),
        (true, false) => spec.image.entrypoint.iter().chain(&spec.args).cloned().collect(),
        (true, true) => spec.image.entrypoint.iter().chain(&spec.image.cmd).cloned().collect(),
    };
    if argv.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(argv)
}

/// The environment: the image's, overridden name by name by the container's (order kept: the
/// image's names first), with a default `PATH` when none is set.
pub fn merged_env(spec: &ContainerSpec) -> Result<Vec<String>, SpecError> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| {
        match env.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value.to_string(),
            None => env.push((name.to_string(), value.to_string())),
        };
    };
    for entry in &spec.image.env {
        let (name, value) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        set(name, value);
    }
    for (name, value) in &spec.env {
        if name.is_empty() || name.contains('=') {
            return Err(SpecError::BadEnvName(name.clone()));
        }
        set(name, value);
    }
    let mut out: Vec<String> = env.into_iter().map(|(n, v)| format!("{n}={v}")).collect();
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, DEFAULT_PATH.to_string());
    }
    Ok(out)
}

/// The (uid, gid) the process runs as: `runAsUser`/`runAsGroup` over the image's numeric `User`.
pub fn user(spec: &ContainerSpec) -> Result<(u32, u32), SpecError> {
    let sec = &spec.security;
    let image = spec.image.user.as_deref().map(str::trim).filter(|u| !u.is_empty());
    let (mut uid, mut gid) = (0, 0);
    if let Some(image_user) = image {
        let (u, g) = image_user.split_once(':').unwrap_or((image_user, ""));
        match u.parse::<u32>() {
            Ok(n) => uid = n,
            // A name is fine when runAsUser replaces it anyway.
            Err(_) if sec.run_as_user.is_some() => {}
            Err(_) => return Err(SpecError::NonNumericUser(image_user.to_string())),
        }
        if !g.is_empty() {
            match g.parse::<u32>() {
                Ok(n) => gid = n,
                Err(_) if sec.run_as_group.is_some() => {}
                Err(_) => return Err(SpecError::NonNumericUser(image_user.to_string())),
            }
        }
    }
    let uid = sec.run_as_user.unwrap_or(uid);
    let gid = sec.run_as_group.unwrap_or(gid);
    if sec.run_as_non_root && uid == 0 {
        return Err(SpecError::RunsAsRoot);
    }
    Ok((uid, gid))
}

fn extra_mount(m: &MountSpec) -> Result<Mount, SpecError> {
    if !m.destination.is_absolute() {
        return Err(SpecError::RelativeMount(m.destination.clone()));
    }
    let ro = if m.read_only { "ro" } else { "rw" }.to_string();
    let builder = MountBuilder::default().destination(m.destination.clone());
    Ok(match &m.kind {
        MountKind::Bind { source } => builder
            .typ("bind")
            .source(source.clone())
            .options(vec!["rbind".to_string(), "rprivate".to_string(), ro])
            .build()?,
        MountKind::Tmpfs { size_bytes } => {
            let mut options =
                vec!["nosuid".to_string(), "nodev".to_string(), "noexec".to_string(), "mode=0755".to_string(), ro];
            if let Some(size) = size_bytes {
                options.push(format!("size={size}"));
            }
            builder.typ("tmpfs").source("tmpfs").options(options).build()?
        }
    })
}

/// The runtime spec for `spec`, with the root filesystem at `rootfs` (relative to the bundle,
/// usually `"rootfs"`).
pub fn build(spec: &ContainerSpec, rootfs: &str) -> Result<Spec, SpecError> {
    let sec = &spec.security;
    let (uid, gid) = user(spec)?;
    let caps = capability_set(sec.privileged, &sec.capabilities_add, &sec.capabilities_drop)?;
    let cwd = spec
        .working_dir
        .clone()
        .or_else(|| spec.image.working_dir.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/".to_string());

    let mut user = UserBuilder::default().uid(uid).gid(gid);
    if !sec.supplemental_groups.is_empty() {
        user = user.additional_gids(sec.supplemental_groups.clone());
    }
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .build()?;
    // Inheritable and ambient stay empty (containerd since 1.6.18): an exec'd file capability
    // cannot pick them up.
    capabilities.set_inheritable(None).set_ambient(None);
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(user.build()?)
        .args(argv(spec)?)
        .env(merged_env(spec)?)
        .cwd(cwd)
        .capabilities(capabilities)
        .no_new_privileges(!sec.privileged && sec.allow_privilege_escalation == Some(false))
        .build()?;
    // No rlimits of our own: the container inherits the shim's, as under containerd.
    process.set_rlimits(None);

    let mut mounts = get_default_mounts();
    if sec.privileged {
        // A privileged container may write to sysfs, as with Docker and containerd.
        for m in mounts.iter_mut().filter(|m| m.typ().as_deref() == Some("sysfs")) {
            m.set_options(Some(vec!["nosuid".into(), "noexec".into(), "nodev".into(), "rw".into()]));
        }
    }
    for m in &spec.mounts {
        mounts.push(extra_mount(m)?);
    }

    let mut namespaces = Vec::new();
    for typ in [LinuxNamespaceType::Pid, LinuxNamespaceType::Ipc, LinuxNamespaceType::Uts, LinuxNamespaceType::Mount] {
        namespaces.push(LinuxNamespaceBuilder::default().typ(typ).build()?);
    }
    let mut net = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Network);
    if let Some(path) = &spec.netns {
        net = net.path(path.clone());
    }
    namespaces.push(net.build()?);

    let r = &spec.resources;
    let mut resources = LinuxResourcesBuilder::default().devices(vec![
        // Deny every device node but the defaults runc always allows (null, zero, tty, …);
        // a privileged container may use all of them.
        LinuxDeviceCgroupBuilder::default().allow(sec.privileged).access("rwm").build()?,
    ]);
    if let Some(limit) = r.memory_limit_bytes {
        resources = resources.memory(LinuxMemoryBuilder::default().limit(limit).build()?);
    }
    if r.cpu_quota_us.is_some() || r.cpu_period_us.is_some() || r.cpu_shares.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(q) = r.cpu_quota_us {
            cpu = cpu.quota(q);
        }
        if let Some(p) = r.cpu_period_us {
            cpu = cpu.period(p);
        }
        if let Some(s) = r.cpu_shares {
            cpu = cpu.shares(s);
        }
        resources = resources.cpu(cpu.build()?);
    }
    if let Some(limit) = r.pids_limit {
        resources = resources.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }

    // The oci-spec builders fill unset fields from the type's Default (which carries its own
    // masks and namespaces), so every field that matters is set explicitly, `None` included.
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources.build()?)
        .cgroups_path(spec.cgroups_path.clone().unwrap_or_else(|| format!("/skiff/{}", spec.id)))
        .build()?;
    if sec.privileged {
        linux.set_masked_paths(None).set_readonly_paths(None).set_seccomp(None);
    } else {
        linux
            .set_masked_paths(Some(get_default_maskedpaths()))
            .set_readonly_paths(Some(get_default_readonly_paths()))
            .set_seccomp(if sec.seccomp_unconfined { None } else { Some(default_seccomp(&caps)?) });
    }

    let mut out = SpecBuilder::default()
        .version("1.0.2")
        .root(RootBuilder::default().path(rootfs).readonly(sec.read_only_root_filesystem).build()?)
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .hostname(spec.hostname.clone().unwrap_or_else(|| spec.id.clone()))
        .build()?;
    out.set_annotations(None);
    Ok(out)
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
