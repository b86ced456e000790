//! Unit tests of [`super::build`] and its helpers, asserted on the generated JSON.

use super::*;
use serde_json::Value;

fn base() -> ContainerSpec {
    ContainerSpec {
        id: "c1".to_string(),
        image: ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["cmd-arg".into()],
            env: vec!["PATH=/img/bin".into(), "A=image".into(), "B=image".into()],
            working_dir: Some("/app".into()),
            user: None,
        },
        ..ContainerSpec::default()
    }
}

fn json(spec: &ContainerSpec) -> Value {
    serde_json::to_value(build(spec, "rootfs").expect("spec builds")).expect("serializes")
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().expect("array").iter().map(|s| s.as_str().expect("string").to_string()).collect()
}

#[test]
fn command_and_args_follow_kubernetes() {
    let mut s = base();
    assert_eq!(argv(&s).expect("argv"), ["/entry", "cmd-arg"]);
    s.args = vec!["x".into()];
    assert_eq!(argv(&s).expect("argv"), ["/entry", "x"]);
    s.command = vec!["/bin/sh".into()];
    assert_eq!(argv(&s).expect("argv"), ["/bin/sh", "x"]);
    s.args.clear();
    assert_eq!(argv(&s).expect("argv"), ["/bin/sh"], "command drops the image Cmd");
    let empty = ContainerSpec::default();
    assert!(matches!(argv(&empty), Err(SpecError::NoCommand)));
}

#[test]
fn env_merges_by_name_and_defaults_path() {
    let mut s = base();
    s.env = vec![("B".into(), "pod".into()), ("C".into(), "pod".into())];
    assert_eq!(merged_env(&s).expect("env"), ["PATH=/img/bin", "A=image", "B=pod", "C=pod"]);
    s.image.env.clear();
    assert!(merged_env(&s).expect("env")[0].starts_with("PATH=/usr/local/sbin"));
    s.env = vec![("A=B".into(), "x".into())];
    assert!(matches!(merged_env(&s), Err(SpecError::BadEnvName(_))));
}

#[test]
fn user_and_run_as_non_root() {
    let mut s = base();
    assert_eq!(user(&s).expect("root"), (0, 0));
    s.image.user = Some("1000:2000".into());
    assert_eq!(user(&s).expect("image"), (1000, 2000));
    s.image.user = Some("7".into());
    assert_eq!(user(&s).expect("uid only"), (7, 0));
    s.security.run_as_user = Some(5);
    s.security.run_as_group = Some(6);
    assert_eq!(user(&s).expect("override"), (5, 6));

    let mut s = base();
    s.image.user = Some("nginx".into());
    let err = user(&s).expect_err("names are not resolved");
    assert!(err.to_string().contains("runAsUser"), "{err}");
    s.security.run_as_user = Some(101);
    assert_eq!(user(&s).expect("runAsUser replaces a name").0, 101);

    let mut s = base();
    s.security.run_as_non_root = true;
    let err = user(&s).expect_err("would run as root");
    assert!(err.to_string().contains("runAsNonRoot"), "{err}");
    s.image.user = Some("0:0".into());
    assert!(user(&s).is_err());
    s.security.run_as_user = Some(1);
    assert!(user(&s).is_ok());
}

#[test]
fn process_section() {
    let mut s = base();
    s.working_dir = Some("/work".into());
    s.security.run_as_user = Some(1000);
    s.security.supplemental_groups = vec![3000];
    s.security.allow_privilege_escalation = Some(false);
    let v = json(&s);
    let p = &v["process"];
    assert_eq!(strings(&p["args"]), ["/entry", "cmd-arg"]);
    assert_eq!(p["cwd"], "/work");
    assert_eq!(p["user"]["uid"], 1000);
    assert_eq!(p["user"]["additionalGids"][0], 3000);
    assert_eq!(p["noNewPrivileges"], true);
    assert_eq!(p["terminal"], false);
    assert!(p.get("rlimits").is_none());
    let caps = strings(&p["capabilities"]["bounding"]);
    assert_eq!(caps.len(), 14);
    assert!(caps.contains(&"CAP_NET_BIND_SERVICE".to_string()));
    assert!(p["capabilities"].get("ambient").is_none());
    assert_eq!(base().working_dir, None);
    assert_eq!(json(&base())["process"]["cwd"], "/app", "image WorkingDir");
    assert_eq!(json(&base())["process"]["noNewPrivileges"], false, "Kubernetes default");
}

#[test]
fn security_defaults_and_privileged() {
    let v = json(&base());
    let linux = &v["linux"];
    assert!(strings(&linux["maskedPaths"]).contains(&"/proc/kcore".to_string()));
    assert!(strings(&linux["readonlyPaths"]).contains(&"/proc/sys".to_string()));
    assert_eq!(linux["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
    assert_eq!(linux["resources"]["devices"][0]["allow"], false);
    assert_eq!(v["root"]["readonly"], false);

    let mut s = base();
    s.security.privileged = true;
    let v = json(&s);
    assert!(v["linux"].get("maskedPaths").is_none());
    assert!(v["linux"].get("readonlyPaths").is_none());
    assert!(v["linux"].get("seccomp").is_none());
    assert_eq!(v["linux"]["resources"]["devices"][0]["allow"], true);
    assert!(strings(&v["process"]["capabilities"]["bounding"]).contains(&"CAP_SYS_ADMIN".into()));

    let mut s = base();
    s.security.seccomp_unconfined = true;
    s.security.read_only_root_filesystem = true;
    let v = json(&s);
    assert!(v["linux"].get("seccomp").is_none());
    assert_eq!(v["root"]["readonly"], true);
}

#[test]
fn mounts_namespaces_and_resources() {
    let mut s = base();
    s.hostname = Some("web-0".into());
    s.netns = Some("/var/run/netns/pod".into());
    s.cgroups_path = Some("/skiff/pod/c1".into());
    s.mounts = vec![
        MountSpec {
            destination: "/data".into(),
            kind: MountKind::Bind { source: "/var/lib/vol".into() },
            read_only: true,
        },
        MountSpec {
            destination: "/secrets".into(),
            kind: MountKind::Tmpfs { size_bytes: Some(1 << 20) },
            read_only: false,
        },
    ];
    s.resources = Resources {
        memory_limit_bytes: Some(32 << 20),
        cpu_quota_us: Some(50_000),
        cpu_period_us: Some(100_000),
        cpu_shares: Some(512),
        pids_limit: Some(64),
    };
    let v = json(&s);
    assert_eq!(v["hostname"], "web-0");
    let dests: Vec<&str> =
        v["mounts"].as_array().expect("mounts").iter().map(|m| m["destination"].as_str().expect("d")).collect();
    for d in ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/data", "/secrets"] {
        assert!(dests.contains(&d), "{d} in {dests:?}");
    }
    let data = &v["mounts"].as_array().expect("mounts")[dests.len() - 2];
    assert_eq!(data["type"], "bind");
    assert!(strings(&data["options"]).contains(&"ro".to_string()));
    let secrets = &v["mounts"].as_array().expect("mounts")[dests.len() - 1];
    assert_eq!(secrets["type"], "tmpfs");
    assert!(strings(&secrets["options"]).contains(&"size=1048576".to_string()));

    let ns = v["linux"]["namespaces"].as_array().expect("namespaces");
    let types: Vec<&str> = ns.iter().map(|n| n["type"].as_str().expect("type")).collect();
    assert_eq!(types, ["pid", "ipc", "uts", "mount", "network"]);
    assert_eq!(ns[4]["path"], "/var/run/netns/pod");
    assert!(ns[0].get("path").is_none());

    assert_eq!(v["linux"]["cgroupsPath"], "/skiff/pod/c1");
    let r = &v["linux"]["resources"];
    assert_eq!(r["memory"]["limit"], 32 << 20);
    assert_eq!(r["cpu"]["quota"], 50_000);
    assert_eq!(r["cpu"]["period"], 100_000);
    assert_eq!(r["cpu"]["shares"], 512);
    assert_eq!(r["pids"]["limit"], 64);

    let v = json(&base());
    assert_eq!(v["linux"]["cgroupsPath"], "/skiff/c1");
    assert!(v["linux"]["resources"].get("memory").is_none());
    assert_eq!(v["linux"]["namespaces"][4].get("path"), None);

    let mut s = base();
    s.mounts =
        vec![MountSpec { destination: "rel".into(), kind: MountKind::Tmpfs { size_bytes: None }, read_only: false }];
    assert!(matches!(build(&s, "rootfs"), Err(SpecError::RelativeMount(_))));
}
