//! Cluster DNS for real (issue 6): `skiff up --pod-network bridge --runtimes wasm,oci` inside a
//! network namespace this test creates; the node's DNS server answers on `10.96.0.10:53` (the
//! `kube-system/kube-dns` Service's address), asked with the real `dig` from inside the
//! namespace over UDP and TCP, and by busybox's `nslookup` from a container.
//!
//! Names outside the cluster zone are forwarded to a real `knotd` serving `example.test` on
//! `127.0.0.2:5300` inside the namespace (`--dns-upstream`: the namespace has no route out).
//!
//! The SkyDNS test runs a plain `skiff up` on the etcd store (the records are the control
//! plane's: no netns needed) and reads the keys with the real `etcdctl` at etcd's root.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use skiff_tests::oci_node::{OciLeftovers, oci_start_options};
use skiff_tests::{Inside, NetNs, Skiff, StartOptions, StoreKind, wait_until};

use crate::{POD_POLL as POLL, POD_TIMEOUT, get_json, push_guest};

/// The cluster DNS address for the default service range.
const DNS: &str = "10.96.0.10";
/// Where the test's upstream (knot) listens inside the namespace.
const UPSTREAM: &str = "127.0.0.2:5300";
/// How long a name may take to show up in DNS after its object was written.
const PROPAGATION: Duration = Duration::from_secs(30);

/// One `dig` answer: status, answer records `(type, rdata)` and authority record types.
#[derive(Debug, Default)]
struct Dig {
    status: String,
    answers: Vec<(String, String)>,
    authority: Vec<String>,
    flags: String,
}

impl Dig {
    fn rdata(&self, rtype: &str) -> Vec<String> {
        self.answers.iter().filter(|(t, _)| t == rtype).map(|(_, d)| d.clone()).collect()
    }
}

/// Parses `dig +noall +comments +answer +authority` output.
fn parse_dig(out: &str) -> Dig {
    let mut dig = Dig::default();
    let mut section = "";
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.split("status: ").nth(1) {
            dig.status = rest.split(',').next().unwrap_or_default().to_owned();
        }
        if let Some(rest) = line.strip_prefix(";; flags: ") {
            dig.flags = rest.split(';').next().unwrap_or_default().to_owned();
        }
        if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
        }
        if line.is_empty() || line.starts_with(';') {
            continue;
        }
        // name ttl class type rdata...
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 5 {
            continue;
        }
        match section {
            "answer" => dig.answers.push((fields[3].to_owned(), fields[4..].join(" "))),
            "authority" => dig.authority.push(fields[3].to_owned()),
            _ => {}
        }
    }
    dig
}

/// `dig @10.96.0.10 NAME TYPE` inside the namespace (`+tcp` when asked).
async fn dig(netns: &NetNs, name: &str, rtype: &str, tcp: bool) -> Result<Dig> {
    let server = format!("@{DNS}");
    let mut args = vec![server.as_str(), name, rtype, "+time=3", "+tries=2", "+noall", "+comments", "+answer"];
    args.push("+authority");
    if tcp {
        args.push("+tcp");
    }
    let out = netns.run("dig", &args).await?;
    let parsed = parse_dig(&out);
    ensure!(!parsed.status.is_empty(), "dig {name} {rtype}: no status in\n{out}");
    Ok(parsed)
}

/// Waits until `name`/`rtype` answers NOERROR with `rdata` among its records.
async fn wait_answer(skiff: &Skiff, netns: &NetNs, name: &str, rtype: &str, rdata: &str) -> Result<Dig> {
    let last = std::sync::Mutex::new(String::new());
    wait_until(&format!("{name} {rtype} to answer {rdata}"), PROPAGATION, POLL, || async {
        match dig(netns, name, rtype, false).await {
            Ok(d) if d.status == "NOERROR" && d.rdata(rtype).iter().any(|r| r == rdata) => Ok(Some(d)),
            Ok(d) => {
                *last.lock().unwrap_or_else(|p| p.into_inner()) = format!("{d:?}");
                Ok(None)
            }
            Err(e) => {
                *last.lock().unwrap_or_else(|p| p.into_inner()) = format!("{e:#}");
                Ok(None)
            }
        }
    })
    .await
    .with_context(|| {
        let last = last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        format!("last answer: {last}\nskiff log tail:\n{}", skiff.log_tail(30))
    })
}

/// Writes knot's configuration and zone into `dir` and starts `knotd` inside the namespace.
async fn start_knot(netns: &NetNs, dir: &Path) -> Result<tokio::process::Child> {
    let d = dir.display();
    let (ip, port) = UPSTREAM.split_once(':').context("upstream address")?;
    // 127.0.0.0/8 is local on the namespace's `lo`: nothing to add for 127.0.0.2.
    std::fs::write(
        dir.join("knot.conf"),
        format!(
            "server:\n    rundir: \"{d}\"\n    listen: {ip}@{port}\nlog:\n  - target: stderr\n    any: warning\n\
             database:\n    storage: \"{d}\"\ntemplate:\n  - id: default\n    storage: \"{d}\"\n\
             zone:\n  - domain: example.test\n    file: \"example.test.zone\"\n"
        ),
    )?;
    std::fs::write(
        dir.join("example.test.zone"),
        "$ORIGIN example.test.\n$TTL 60\n@ SOA ns.example.test. hostmaster.example.test. 1 3600 600 86400 60\n\
         @ NS ns\nns A 127.0.0.2\nwww A 192.0.2.80\n",
    )?;
    let log = std::fs::File::create(dir.join("knot.log"))?;
    let child = netns
        .command("knotd")
        .arg("-c")
        .arg(dir.join("knot.conf"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting knotd (install knot: scripts/setup.sh)")?;
    let server = format!("@{ip}");
    let port_flag = format!("-p{port}");
    wait_until("knotd to answer", Duration::from_secs(20), POLL, || async {
        let out = netns.run("dig", &[&server, &port_flag, "www.example.test", "A", "+short", "+time=1"]).await;
        Ok(out.ok().filter(|o| o.trim() == "192.0.2.80").map(|_| ()))
    })
    .await
    .with_context(|| format!("knot log: {}", std::fs::read_to_string(dir.join("knot.log")).unwrap_or_default()))?;
    Ok(child)
}

fn manifests(hello: &str, busybox: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, protocol: TCP, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: ext}}
spec:
  type: ExternalName
  externalName: www.example.test
---
apiVersion: v1
kind: Service
metadata: {{name: db}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{name: http, port: 8080, protocol: TCP}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: 1
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: hello
        image: {hello}
        ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: shell}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: shell
    image: {busybox}
    command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: custom}}
spec:
  terminationGracePeriodSeconds: 1
  dnsPolicy: "None"
  dnsConfig:
    nameservers: ["192.0.2.53"]
    searches: ["a.example"]
    options: [{{name: ndots, value: "2"}}, {{name: edns0}}]
  containers:
  - name: shell
    image: {busybox}
    command: ["sleep", "3600"]
"#
    )
}

/// `kubectl exec POD -- ARGS` once the pod's container runs: stdout.
async fn exec(skiff: &Skiff, pod: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["exec", pod, "--", "timeout", "20"];
    full.extend_from_slice(args);
    let last = std::sync::Mutex::new(String::new());
    wait_until(&format!("{} in {pod}", args.join(" ")), POD_TIMEOUT, POLL, || async {
        let out = skiff.kubectl(&full).await?;
        *last.lock().unwrap_or_else(|p| p.into_inner()) = format!("{}{}", out.stdout, out.stderr);
        Ok(out.success.then_some(out.stdout))
    })
    .await
    .with_context(|| {
        let last = last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        format!("last output: {last}\nskiff log tail:\n{}", skiff.log_tail(30))
    })
}

/// Sends `packet` to the DNS server over UDP from inside the namespace; the reply, if any
/// arrives within two seconds.
async fn send_raw(inside: &Inside, packet: Vec<u8>) -> Result<Option<Vec<u8>>> {
    inside
        .call(move || -> Result<Option<Vec<u8>>> {
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.set_read_timeout(Some(Duration::from_secs(2)))?;
            let server: SocketAddr = format!("{DNS}:53").parse()?;
            socket.send_to(&packet, server)?;
            let mut buf = [0u8; 1500];
            match socket.recv_from(&mut buf) {
                Ok((n, _)) => Ok(Some(buf[..n].to_vec())),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dns_answers_every_record_kind() -> Result<()> {
    let netns = NetNs::create()?;
    let scripts = tempfile::Builder::new().prefix("skiff-dns-e2e-").tempdir()?;
    let _knot = start_knot(&netns, scripts.path()).await?;
    let mut options = oci_start_options(&netns, scripts.path())?;
    options.extra_args.extend(["--dns-upstream".to_owned(), UPSTREAM.to_owned()]);
    let mut skiff = Skiff::start_with(options).await?;
    let _leftovers = OciLeftovers::new(skiff.data_dir());

    // The kube-dns Service names the address the node serves.
    let kube_dns = get_json(&skiff, &["service", "kube-dns", "-n", "kube-system"]).await?;
    ensure!(kube_dns["spec"]["clusterIP"] == DNS, "kube-dns Service: {kube_dns}");
    ensure!(kube_dns["metadata"]["labels"]["k8s-app"] == "kube-dns", "kube-dns labels: {kube_dns}");

    let hello = push_guest(&skiff, "hello-http", "dns/hello:v1").await?;
    let busybox = skiff_tests::oci_image::push_busybox(&skiff, "busybox", "v1").await?;
    skiff.apply(&manifests(&hello, &busybox)).await?;
    let web_ip = get_json(&skiff, &["service", "web"]).await?["spec"]["clusterIP"]
        .as_str()
        .context("web has no clusterIP")?
        .to_owned();

    // A for a ClusterIP Service, over UDP and TCP.
    let a = wait_answer(&skiff, &netns, "web.default.svc.cluster.local", "A", &web_ip).await?;
    ensure!(a.flags.contains("aa"), "cluster answers are authoritative: {a:?}");
    let tcp = dig(&netns, "web.default.svc.cluster.local", "A", true).await?;
    ensure!(tcp.rdata("A") == [web_ip.clone()], "over TCP: {tcp:?}");
    // SRV of a named port.
    let srv = dig(&netns, "_http._tcp.web.default.svc.cluster.local", "SRV", false).await?;
    ensure!(
        srv.rdata("SRV").iter().any(|r| r.ends_with("80 web.default.svc.cluster.local.")),
        "SRV _http._tcp.web: {srv:?}"
    );
    // PTR of the Service's cluster IP.
    let reverse = format!("{}.in-addr.arpa", web_ip.split('.').rev().collect::<Vec<_>>().join("."));
    let ptr = dig(&netns, &reverse, "PTR", false).await?;
    ensure!(ptr.rdata("PTR") == ["web.default.svc.cluster.local."], "PTR {reverse}: {ptr:?}");
    // NODATA (the name exists, no AAAA) versus NXDOMAIN, both with the zone's SOA.
    let aaaa = dig(&netns, "web.default.svc.cluster.local", "AAAA", false).await?;
    ensure!(aaaa.status == "NOERROR" && aaaa.answers.is_empty() && aaaa.authority == ["SOA"], "AAAA: {aaaa:?}");
    let missing = dig(&netns, "nothere.default.svc.cluster.local", "A", false).await?;
    ensure!(missing.status == "NXDOMAIN" && missing.authority == ["SOA"], "missing name: {missing:?}");
    // SOA and NS of the zone.
    let soa = dig(&netns, "cluster.local", "SOA", false).await?;
    ensure!(soa.rdata("SOA").len() == 1 && soa.status == "NOERROR", "SOA: {soa:?}");
    let ns = dig(&netns, "cluster.local", "NS", true).await?;
    ensure!(ns.rdata("NS") == ["ns.dns.cluster.local."], "NS: {ns:?}");
    // A pod name: any dashed address in the namespace.
    let pod = dig(&netns, "10-244-0-77.default.pod.cluster.local", "A", false).await?;
    ensure!(pod.rdata("A") == ["10.244.0.77"], "pod A: {pod:?}");

    // Headless Service of a StatefulSet: the ready pod's IP, under the Service and the member name.
    let db_pod = wait_until("db-0 to be ready with an IP", POD_TIMEOUT, POLL, || async {
        let pod = get_json(&skiff, &["pod", "db-0"]).await.ok();
        Ok(pod.filter(crate::pod_is_ready).and_then(|p| p["status"]["podIP"].as_str().map(str::to_owned)))
    })
    .await
    .with_context(|| format!("skiff log tail:\n{}", skiff.log_tail(30)))?;
    wait_answer(&skiff, &netns, "db.default.svc.cluster.local", "A", &db_pod).await?;
    let member = dig(&netns, "db-0.db.default.svc.cluster.local", "A", true).await?;
    ensure!(member.rdata("A") == [db_pod.clone()], "StatefulSet member: {member:?}");
    let db_ip: Ipv4Addr = db_pod.parse()?;
    let [a1, b1, c1, d1] = db_ip.octets();
    let pod_ptr = dig(&netns, &format!("{d1}.{c1}.{b1}.{a1}.in-addr.arpa"), "PTR", false).await?;
    ensure!(pod_ptr.rdata("PTR") == ["db-0.db.default.svc.cluster.local."], "pod PTR: {pod_ptr:?}");

    // ExternalName: a CNAME, chased through the upstream; other names forwarded.
    let ext = dig(&netns, "ext.default.svc.cluster.local", "A", false).await?;
    ensure!(ext.rdata("CNAME") == ["www.example.test."], "ExternalName: {ext:?}");
    ensure!(ext.rdata("A") == ["192.0.2.80"], "ExternalName target's address: {ext:?}");
    let forwarded = dig(&netns, "www.example.test", "A", true).await?;
    ensure!(forwarded.rdata("A") == ["192.0.2.80"] && !forwarded.flags.contains("aa"), "forwarded: {forwarded:?}");
    let forwarded_missing = dig(&netns, "nope.example.test", "A", false).await?;
    ensure!(forwarded_missing.status == "NXDOMAIN", "upstream NXDOMAIN passes through: {forwarded_missing:?}");

    // Garbage: a short packet is dropped, a header with a broken question gets FORMERR; the
    // server answers normally afterwards.
    let inside = Inside::new(netns.name())?;
    let short = send_raw(&inside, vec![0x12, 0x34, 0x01]).await?;
    ensure!(short.is_none(), "a 3-byte packet gets no answer: {short:?}");
    let mut broken = vec![0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    broken.extend_from_slice(&[0x3f, b'x', b'y']);
    if let Some(reply) = send_raw(&inside, broken).await? {
        ensure!(reply.len() >= 4 && reply[..2] == [0xab, 0xcd], "reply to the broken query: {reply:?}");
        ensure!(reply[3] & 0x0f == 1, "broken question answers FORMERR (rcode 1): {reply:?}");
    }
    let again = dig(&netns, "web.default.svc.cluster.local", "A", false).await?;
    ensure!(again.rdata("A") == [web_ip.clone()], "still answering after garbage: {again:?}");

    // A Service deleted leaves DNS.
    skiff.kubectl(&["delete", "service", "ext"]).await?.ok()?;
    wait_until("ext to leave DNS", PROPAGATION, POLL, || async {
        let d = dig(&netns, "ext.default.svc.cluster.local", "A", false).await?;
        Ok((d.status == "NXDOMAIN").then_some(()))
    })
    .await?;

    // Containers: ClusterFirst resolv.conf names the cluster DNS, and busybox resolves through it.
    let resolv = exec(&skiff, "shell", &["cat", "/etc/resolv.conf"]).await?;
    ensure!(resolv.contains(&format!("nameserver {DNS}\n")), "ClusterFirst resolv.conf: {resolv:?}");
    ensure!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "search path: {resolv:?}"
    );
    ensure!(resolv.contains("options ndots:5"), "ndots: {resolv:?}");
    let lookup = exec(&skiff, "shell", &["nslookup", "-type=a", "web.default.svc.cluster.local"]).await?;
    ensure!(lookup.contains(&web_ip), "nslookup from busybox: {lookup}");
    ensure!(lookup.contains(DNS), "busybox asked the cluster DNS: {lookup}");
    let custom = exec(&skiff, "custom", &["cat", "/etc/resolv.conf"]).await?;
    ensure!(
        custom == "search a.example\nnameserver 192.0.2.53\noptions ndots:2 edns0\n",
        "dnsPolicy None + dnsConfig: {custom:?}"
    );

    for pod in ["shell", "custom"] {
        skiff.kubectl(&["delete", "pod", pod, "--timeout=60s"]).await?.ok()?;
    }
    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}\n{}", skiff.log_tail(40));
    Ok(())
}

/// `etcdctl get --prefix /skydns` as `key -> JSON`.
async fn skydns_keys(endpoint: &str) -> Result<Vec<(String, Value)>> {
    let out = tokio::process::Command::new("etcdctl")
        .args(["--endpoints", endpoint, "get", "--prefix", "/skydns"])
        .kill_on_drop(true)
        .output()
        .await
        .context("running etcdctl")?;
    if !out.status.success() {
        bail!("etcdctl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks(2)
        .map(|pair| match pair {
            [key, value] => Ok(((*key).to_owned(), serde_json::from_str(value)?)),
            _ => bail!("odd etcdctl output: {text}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skydns_records_follow_services_in_etcd() -> Result<()> {
    let mut skiff = Skiff::start_with(StartOptions::new(StoreKind::Etcd)).await?;
    let endpoint = skiff.etcd().context("etcd store")?.endpoint.clone();
    skiff
        .apply(
            r#"apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: 10.96.0.80
  ports: [{name: http, port: 80, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: ext}
spec:
  type: ExternalName
  externalName: www.example.test
---
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432, protocol: TCP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: db}
subsets:
- addresses: [{ip: 10.244.0.7, hostname: db-0}, {ip: 10.244.0.8}]
  ports: [{name: pg, port: 5432, protocol: TCP}]
"#,
        )
        .await?;
    let prefix = "/skydns/local/cluster/svc";
    let expected = vec![
        (format!("{prefix}/default/db/10-244-0-8"), json!({"host": "10.244.0.8", "port": 5432, "ttl": 30})),
        (format!("{prefix}/default/db/db-0"), json!({"host": "10.244.0.7", "port": 5432, "ttl": 30})),
        (format!("{prefix}/default/ext"), json!({"host": "www.example.test", "ttl": 30})),
        (format!("{prefix}/default/kubernetes"), json!({"host": "10.96.0.1", "port": 443, "ttl": 30})),
        (format!("{prefix}/default/web"), json!({"host": "10.96.0.80", "port": 80, "ttl": 30})),
        (format!("{prefix}/kube-system/kube-dns"), json!({"host": "10.96.0.10", "port": 53, "ttl": 30})),
    ];
    let last = std::sync::Mutex::new(Vec::new());
    let wait_for = |want: Vec<(String, Value)>| {
        let (endpoint, last) = (&endpoint, &last);
        async move {
            wait_until("the SkyDNS keys to match the Services", PROPAGATION, POLL, || {
                let want = want.clone();
                async move {
                    let keys = skydns_keys(endpoint).await?;
                    let done = keys == want;
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = keys;
                    Ok(done.then_some(()))
                }
            })
            .await
            .with_context(|| format!("last keys: {:?}", last.lock().unwrap_or_else(|p| p.into_inner())))
        }
    };
    wait_for(expected.clone()).await?;

    // A deleted Service loses its keys; a changed Endpoints changes the headless records.
    skiff.kubectl(&["delete", "service", "web"]).await?.ok()?;
    skiff
        .apply(
            "apiVersion: v1\nkind: Endpoints\nmetadata: {name: db}\nsubsets:\n\
             - addresses: [{ip: 10.244.0.7, hostname: db-0}]\n  ports: [{name: pg, port: 5432, protocol: TCP}]\n",
        )
        .await?;
    let after: Vec<(String, Value)> =
        expected.iter().filter(|(k, _)| !k.ends_with("/web") && !k.ends_with("/10-244-0-8")).cloned().collect();
    wait_for(after.clone()).await?;

    // A restart keeps kube-dns where it was, and the records as they are.
    skiff.restart().await?;
    let kube_dns = get_json(&skiff, &["service", "kube-dns", "-n", "kube-system"]).await?;
    ensure!(kube_dns["spec"]["clusterIP"] == "10.96.0.10", "kube-dns after a restart: {kube_dns}");
    wait_for(after).await?;
    let status = skiff.stop().await?;
    ensure!(status.success(), "SIGTERM exit status {status}\n{}", skiff.log_tail(40));
    Ok(())
}
