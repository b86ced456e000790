//! Pod networking through the real CNI plugins (Debian `containernetworking-plugins`), as root,
//! entirely inside an outer "node" network namespace each test creates (see `cni_lab`).

mod cni_lab;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use cni_lab::{Lab, NODE_IP, fetch, serve};
use skiff_oci_shim::network::{CniError, PodAttachment, PortMapping, Protocol};

fn attachment(id: &str, netns: &Path, ip: [u8; 4], port_mappings: Vec<PortMapping>) -> PodAttachment {
    PodAttachment {
        container_id: id.to_string(),
        netns: netns.to_path_buf(),
        ip: Ipv4Addr::from(ip),
        pod_name: id.to_string(),
        pod_namespace: "default".to_string(),
        pod_uid: format!("uid-{id}"),
        port_mappings,
    }
}

fn veths(links: &str) -> usize {
    links.lines().filter(|l| l.contains("veth")).count()
}

#[tokio::test]
async fn two_pods_talk_over_the_bridge_and_a_host_port_reaches_a_pod() {
    let mut lab = Lab::new("talk").await;
    let cni = lab.cni();
    let outer = lab.outer.path().to_path_buf();

    let ns_a = lab.pod_netns("pod-a").await;
    let a = attachment("pod-a", ns_a.path(), [10, 244, 77, 2], vec![]);
    let status_a = cni.add(&a).await.expect("ADD pod a");
    assert_eq!(status_a.ip, Ipv4Addr::new(10, 244, 77, 2));
    assert_eq!(status_a.prefix_len, 24);
    assert_eq!(status_a.gateway, Some(Ipv4Addr::new(10, 244, 77, 1)));
    assert!(status_a.host_veth.is_some(), "{status_a:?}");

    // The gateway is skiff0's address in the outer namespace.
    let bridge = lab.sh(&outer, &["ip", "-4", "-o", "addr", "show", "dev", "skiff0"]).await;
    assert!(bridge.contains("10.244.77.1/24"), "{bridge}");
    // A WASM pod's /32 on the bridge (node/src/bridge.rs) must not upset the next ADD.
    lab.sh(&outer, &["ip", "addr", "add", "10.244.77.50/32", "dev", "skiff0"]).await;

    let ns_b = lab.pod_netns("pod-b").await;
    let mapping = PortMapping { host_port: 18080, container_port: 8080, protocol: Protocol::Tcp, host_ip: None };
    let b = attachment("pod-b", ns_b.path(), [10, 244, 77, 3], vec![mapping]);
    let status_b = cni.add(&b).await.expect("ADD pod b");
    assert_eq!(status_b.ip, Ipv4Addr::new(10, 244, 77, 3));

    // Inside the pod: eth0 with the address, lo up, default route via the gateway.
    let addr_b = lab.sh(ns_b.path(), &["ip", "-4", "-o", "addr", "show"]).await;
    assert!(addr_b.contains("eth0") && addr_b.contains("10.244.77.3/24"), "{addr_b}");
    assert!(addr_b.contains("127.0.0.1/8"), "lo is up: {addr_b}");
    let routes_b = lab.sh(ns_b.path(), &["ip", "route"]).await;
    assert!(routes_b.contains("default via 10.244.77.1"), "{routes_b}");

    cni.check(&a).await.expect("CHECK pod a");
    cni.check(&b).await.expect("CHECK pod b");
    // ADD again (an agent restart) keeps the attachment as it is.
    assert_eq!(cni.add(&a).await.expect("ADD pod a again"), status_a);

    // Pod to pod over the bridge: ICMP and TCP.
    lab.sh(ns_a.path(), &["busybox", "ping", "-c", "1", "-W", "5", "10.244.77.3"]).await;
    let server = serve(ns_b.path(), 8080, "hello from b\n", 2).await;
    let direct = fetch(ns_a.path(), SocketAddr::from(([10, 244, 77, 3], 8080))).await.expect("a -> b:8080");
    assert_eq!(direct, "hello from b\n");
    // The node address's hostPort reaches pod b through portmap's DNAT.
    let node: Ipv4Addr = NODE_IP.parse().expect("ip");
    let via_host_port = fetch(&outer, SocketAddr::from((node, 18080))).await.expect("node:18080 -> b:8080");
    assert_eq!(via_host_port, "hello from b\n");
    assert_eq!(tokio::task::spawn_blocking(move || server.join().expect("server")).await.expect("join"), 2);

    // DEL takes b's veth and its hostPort rules away, and may be repeated.
    let links = lab.sh(&outer, &["ip", "-o", "link"]).await;
    assert_eq!(veths(&links), 2, "{links}");
    let nat = lab.sh(&outer, &["iptables-save", "-t", "nat"]).await;
    assert!(nat.contains("pod-b"), "portmap rules name the sandbox: {nat}");
    cni.del(&b).await.expect("DEL pod b");
    cni.del(&b).await.expect("DEL pod b again");
    let links = lab.sh(&outer, &["ip", "-o", "link"]).await;
    assert_eq!(veths(&links), 1, "{links}");
    let nat = lab.sh(&outer, &["iptables-save", "-t", "nat"]).await;
    assert!(!nat.contains("pod-b"), "{nat}");
    assert!(matches!(cni.check(&b).await, Err(CniError::NotAdded { .. })));
    assert!(lab.try_sh(ns_a.path(), &["busybox", "ping", "-c", "1", "-W", "1", "10.244.77.3"]).await.is_err());

    // Pod a is untouched.
    cni.check(&a).await.expect("CHECK pod a after b left");
    cni.del(&a).await.expect("DEL pod a");
    ns_a.delete().await.expect("delete netns a");
    ns_a.delete().await.expect("delete netns a again");
    assert!(!ns_a.is_mounted());
}

#[tokio::test]
async fn a_failed_add_is_undone_and_del_is_safe_afterwards() {
    let mut lab = Lab::new("fail").await;
    // Real plugins, except a `portmap` that fails ADD the way plugins do (JSON on stdout) and
    // passes everything else on to the real one.
    let plugins = lab.dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    for real in ["bridge", "loopback", "static"] {
        std::os::unix::fs::symlink(Path::new("/usr/lib/cni").join(real), plugins.join(real)).expect("symlink");
    }
    let script = "#!/bin/sh\nif [ \"$CNI_COMMAND\" = ADD ]; then\n  \
                  echo '{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"injected failure\",\"details\":\"hostPort 18081 is taken\"}'\n  \
                  exit 1\nfi\nexec /usr/lib/cni/portmap\n";
    std::fs::write(plugins.join("portmap"), script).expect("script");
    std::process::Command::new("chmod").arg("+x").arg(plugins.join("portmap")).status().expect("chmod");

    let mut cni_config = lab.cni().config().clone();
    cni_config.plugin_dirs = vec![plugins];
    let cni = skiff_oci_shim::network::Cni::new(cni_config);
    let ns = lab.pod_netns("pod-c").await;
    let mapping = PortMapping { host_port: 18081, container_port: 80, protocol: Protocol::Tcp, host_ip: None };
    let c = attachment("pod-c", ns.path(), [10, 244, 77, 4], vec![mapping]);

    let err = cni.add(&c).await.expect_err("portmap fails");
    match &err {
        CniError::Plugin { plugin, command, code, msg, details } => {
            assert_eq!((plugin.as_str(), *command, *code), ("portmap", "ADD", 999));
            assert_eq!(msg, "injected failure");
            assert_eq!(details, "hostPort 18081 is taken");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains("hostPort 18081 is taken"), "{err}");
    // The bridge plugin had already made the veth; the failed ADD removed it again.
    let links = lab.sh(lab.outer.path(), &["ip", "-o", "link"]).await;
    assert_eq!(veths(&links), 0, "{links}");
    let in_pod = lab.sh(ns.path(), &["ip", "-o", "link"]).await;
    assert!(!in_pod.contains("eth0"), "{in_pod}");
    cni.del(&c).await.expect("DEL after failed ADD");

    // DEL once the namespace is gone (a pod torn down out of order) is fine too.
    let real = lab.cni();
    let c = attachment("pod-c", ns.path(), [10, 244, 77, 4], vec![]);
    let status = real.add(&c).await.expect("ADD with the real plugins");
    // Someone removes the veth behind Skiff's back: ADD notices (CHECK fails) and repairs.
    let veth = status.host_veth.expect("host veth");
    lab.sh(lab.outer.path(), &["ip", "link", "del", &veth]).await;
    assert!(real.check(&c).await.is_err(), "CHECK notices the missing veth");
    real.add(&c).await.expect("ADD repairs a stale attachment");
    real.check(&c).await.expect("CHECK after the repair");
    ns.delete().await.expect("delete netns");
    real.del(&c).await.expect("DEL without the namespace");
    real.del(&c).await.expect("DEL again");
}

#[tokio::test]
async fn add_latency() {
    let mut lab = Lab::new("speed").await;
    let cni = lab.cni();
    let mut took = Vec::new();
    for i in 0..10u8 {
        let ns = lab.pod_netns(&format!("pod-{i}")).await;
        let pod = attachment(
            &format!("pod-{i}"),
            ns.path(),
            [10, 244, 77, 10 + i],
            vec![PortMapping {
                host_port: 19000 + u16::from(i),
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            }],
        );
        let start = Instant::now();
        cni.add(&pod).await.expect("ADD");
        took.push(start.elapsed());
        cni.del(&pod).await.expect("DEL");
        ns.delete().await.expect("delete netns");
    }
    took.sort();
    let median = took[took.len() / 2];
    eprintln!("CNI ADD (loopback + bridge/static + portmap, via nsenter): median {median:?}, all {took:?}");
    assert!(median < Duration::from_secs(5), "median ADD {median:?}");
}

#[tokio::test]
async fn netns_create_is_idempotent_and_delete_repeats() {
    let mut lab = Lab::new("netns").await;
    let ns = lab.pod_netns("pod-n").await;
    assert!(ns.is_mounted());
    // A marker inside: creating again must return the same namespace, not a new one.
    lab.sh(ns.path(), &["ip", "link", "set", "lo", "up"]).await;
    let again = skiff_oci_shim::network::Netns::create(ns.path().parent().expect("run dir"), "pod-n")
        .await
        .expect("create again");
    assert_eq!(again, ns);
    let lo = lab.sh(again.path(), &["ip", "-o", "link", "show", "lo"]).await;
    assert!(lo.contains("UP"), "same namespace, lo still up: {lo}");
    // Its own namespace: nothing but lo, and not the outer one's address.
    let links = lab.sh(ns.path(), &["ip", "-o", "link"]).await;
    assert_eq!(links.lines().count(), 1, "{links}");
    ns.delete().await.expect("delete");
    assert!(!ns.is_mounted());
    assert!(!ns.path().exists());
    ns.delete().await.expect("delete again");
}
