//! Capability sets and the default seccomp profile of a container — pure data and set arithmetic.
//!
//! Owns: containerd's default capability set, Kubernetes-style `add`/`drop` (with `ALL`), and a
//! small, documented seccomp deny-list. Does not own: the rest of the runtime spec (see
//! [`super::spec`]) or applying anything (runc does).

use std::collections::HashSet;
use std::str::FromStr;

use oci_spec::runtime::{Arch, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder};

use super::spec::SpecError;

/// containerd's (and Docker's) default capability set for unprivileged containers.
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every capability the kernel defines (through `CAP_CHECKPOINT_RESTORE`, Linux 5.9) — the set a
/// privileged container or `add: [ALL]` gets. runc drops names the running kernel lacks.
pub const ALL_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// Parses a Kubernetes capability name: `NET_ADMIN` or `CAP_NET_ADMIN`, any case.
fn parse_capability(name: &str) -> Result<Capability, SpecError> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    Capability::from_str(bare).map_err(|_| SpecError::UnknownCapability(name.to_string()))
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// The effective capability set: the default set (or every capability when `privileged`), minus
/// `drop` (`ALL` empties it), plus `add` (`ALL` fills it) — the order Kubernetes runtimes apply.
pub fn capability_set(privileged: bool, add: &[String], drop: &[String]) -> Result<HashSet<Capability>, SpecError> {
    if privileged {
        return Ok(ALL_CAPABILITIES.iter().copied().collect());
    }
    let mut caps: HashSet<Capability> = DEFAULT_CAPABILITIES.iter().copied().collect();
    for name in drop {
        if is_all(name) {
            caps.clear();
        } else {
            caps.remove(&parse_capability(name)?);
        }
    }
    for name in add {
        if is_all(name) {
            caps.extend(ALL_CAPABILITIES.iter().copied());
        } else {
            caps.insert(parse_capability(name)?);
        }
    }
    Ok(caps)
}

/// Syscalls the default profile always refuses with `EPERM`: kernel keyring, accounting, NUMA
/// policy, handle-based opens, `perf_event_open`, userfaultfd, obsolete and 32-bit-only calls
/// (names this kernel's architecture lacks are skipped by runc). Taken from Docker's default
/// profile, which blocks these regardless of capabilities.
const ALWAYS_BLOCKED: &[&str] = &[
    "acct",
    "add_key",
    "keyctl",
    "request_key",
    "get_mempolicy",
    "set_mempolicy",
    "mbind",
    "move_pages",
    "name_to_handle_at",
    "open_by_handle_at",
    "perf_event_open",
    "userfaultfd",
    "lookup_dcookie",
    "nfsservctl",
    "get_kernel_syms",
    "query_module",
    "create_module",
    "uselib",
    "ustat",
    "sysfs",
    "_sysctl",
    "vm86",
    "vm86old",
    "swapon",
    "swapoff",
];

/// Syscalls Docker's profile allows only to a container holding the named capability — blocked
/// here unless the container has it (so `add: [SYS_ADMIN]` really lets `mount` work).
const GATED: &[(Capability, &[&str])] = &[
    (
        Capability::SysAdmin,
        &["mount", "umount", "umount2", "unshare", "setns", "pivot_root", "bpf", "fanotify_init", "quotactl", "clone3"],
    ),
    (Capability::SysModule, &["init_module", "finit_module", "delete_module"]),
    (Capability::SysBoot, &["reboot", "kexec_load", "kexec_file_load"]),
    (Capability::SysTime, &["settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex"]),
    (Capability::SysPtrace, &["ptrace", "process_vm_readv", "process_vm_writev", "kcmp"]),
    (Capability::SysRawio, &["ioperm", "iopl"]),
];

/// The architectures the filter covers: the native one plus its 32-bit compat ABIs, so a 32-bit
/// binary meets the same filter instead of being killed for a foreign architecture.
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

/// The runtime-default seccomp profile: allow by default, `EPERM` for the deny-list above, minus
/// the calls whose capability the container holds. `clone3` is refused with `ENOSYS` instead so
/// glibc falls back to `clone` (what Docker does too).
pub fn default_seccomp(caps: &HashSet<Capability>) -> Result<LinuxSeccomp, SpecError> {
    const EPERM: u32 = 1;
    const ENOSYS: u32 = 38;
    let mut blocked: Vec<String> = ALWAYS_BLOCKED.iter().map(|s| s.to_string()).collect();
    let mut clone3 = false;
    for (cap, names) in GATED {
        if caps.contains(cap) {
            continue;
        }
        for name in names.iter() {
            if *name == "clone3" {
                clone3 = true;
            } else {
                blocked.push(name.to_string());
            }
        }
    }
    let mut syscalls = vec![
        LinuxSyscallBuilder::default()
            .names(blocked)
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(EPERM)
            .build()?,
    ];
    if clone3 {
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone3".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(ENOSYS)
                .build()?,
        );
    }
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(architectures())
        .syscalls(syscalls)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn default_set_is_containerds() {
        let caps = capability_set(false, &[], &[]).expect("default");
        assert_eq!(caps.len(), 14);
        assert!(caps.contains(&Capability::NetBindService));
        assert!(!caps.contains(&Capability::SysAdmin));
    }

    #[test]
    fn drop_all_then_add() {
        let caps = capability_set(false, &names(&["CAP_NET_ADMIN"]), &names(&["ALL"])).expect("ok");
        assert_eq!(caps, HashSet::from([Capability::NetAdmin]));
    }

    #[test]
    fn drop_one_and_add_all() {
        let caps = capability_set(false, &[], &names(&["net_raw"])).expect("ok");
        assert!(!caps.contains(&Capability::NetRaw));
        let caps = capability_set(false, &names(&["all"]), &[]).expect("ok");
        assert_eq!(caps.len(), ALL_CAPABILITIES.len());
    }

    #[test]
    fn privileged_gets_everything() {
        let caps = capability_set(true, &[], &names(&["ALL"])).expect("ok");
        assert_eq!(caps.len(), ALL_CAPABILITIES.len());
    }

    #[test]
    fn unknown_capability_is_named() {
        let err = capability_set(false, &names(&["FLY"]), &[]).expect_err("unknown");
        assert!(err.to_string().contains("FLY"), "{err}");
    }

    #[test]
    fn seccomp_unblocks_what_a_capability_grants() {
        let blocked = |caps: &HashSet<Capability>| -> Vec<String> {
            let profile = default_seccomp(caps).expect("profile");
            profile.syscalls().as_ref().expect("syscalls").iter().flat_map(|s| s.names().clone()).collect()
        };
        let default = capability_set(false, &[], &[]).expect("caps");
        let names = blocked(&default);
        assert!(names.iter().any(|n| n == "mount"));
        assert!(names.iter().any(|n| n == "keyctl"));
        assert!(names.iter().any(|n| n == "clone3"));
        let admin = capability_set(false, &["SYS_ADMIN".to_string()], &[]).expect("caps");
        let names = blocked(&admin);
        assert!(!names.iter().any(|n| n == "mount"));
        assert!(names.iter().any(|n| n == "keyctl"), "always blocked");
    }
}
