//! The DNS server on loopback, queried with the real `dig` (dnsutils).
//!
//! A second server for zone `upstream.test` stands in for the upstream resolver, so forwarding
//! is tested end to end without leaving the machine.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use skiff_dns::{ClusterHandler, ClusterRecords, DnsServer, Forwarder, Upstreams, ZoneConfig};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

const DIG_TIMEOUT: Duration = Duration::from_secs(10);

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta { namespace: Some(ns.to_owned()), name: Some(name.to_owned()), ..ObjectMeta::default() }
}

fn service(ns: &str, name: &str, spec: ServiceSpec) -> Service {
    Service { metadata: meta(ns, name), spec: Some(spec), ..Service::default() }
}

fn cluster_ip(ip: &str, port_name: &str, port: i32) -> ServiceSpec {
    ServiceSpec {
        cluster_ip: Some(ip.to_owned()),
        ports: Some(vec![ServicePort {
            name: Some(port_name.to_owned()),
            protocol: Some("TCP".to_owned()),
            port,
            ..ServicePort::default()
        }]),
        ..ServiceSpec::default()
    }
}

fn endpoints(ns: &str, name: &str, ready: &[(String, Option<&str>)], port: i32) -> Endpoints {
    Endpoints {
        metadata: meta(ns, name),
        subsets: Some(vec![EndpointSubset {
            addresses: Some(
                ready
                    .iter()
                    .map(|(ip, host)| EndpointAddress {
                        ip: ip.clone(),
                        hostname: host.map(str::to_owned),
                        ..EndpointAddress::default()
                    })
                    .collect(),
            ),
            not_ready_addresses: Some(vec![EndpointAddress {
                ip: "10.244.9.9".to_owned(),
                ..EndpointAddress::default()
            }]),
            ports: Some(vec![EndpointPort {
                name: Some("pg".to_owned()),
                protocol: Some("TCP".to_owned()),
                port,
                ..EndpointPort::default()
            }]),
        }]),
    }
}

struct Fixture {
    addr: SocketAddr,
    upstream: SocketAddr,
    cancel: CancellationToken,
    servers: Vec<DnsServer>,
    records: ClusterRecords,
}

impl Fixture {
    /// The upstream server (zone `upstream.test`, one Service) and the cluster server
    /// forwarding to it, with a ClusterIP, a headless and two ExternalName Services.
    async fn start() -> Result<Self> {
        let cancel = CancellationToken::new();
        let upstream_records =
            ClusterRecords::new(ZoneConfig { zone: "upstream.test".to_owned(), ..ZoneConfig::default() });
        upstream_records.upsert_service(&service("x", "web", cluster_ip("192.0.2.1", "http", 80)));
        let upstream =
            DnsServer::start("127.0.0.1:0".parse()?, ClusterHandler::new(upstream_records, None), cancel.child_token())
                .await?;

        let records = ClusterRecords::new(ZoneConfig { dns_ip: Some("10.96.0.10".parse()?), ..ZoneConfig::default() });
        records.upsert_service(&service("d", "web", cluster_ip("10.96.0.5", "http", 80)));
        records.upsert_service(&service("d", "db", cluster_ip("None", "pg", 5432)));
        let ready = [("10.244.0.7".to_owned(), Some("db-0")), ("10.244.0.8".to_owned(), Some("db-1"))];
        records.upsert_endpoints(&endpoints("d", "db", &ready, 5432));
        // Enough members that the A answer does not fit a 512-byte UDP reply.
        records.upsert_service(&service("d", "big", cluster_ip("None", "pg", 5432)));
        let many: Vec<(String, Option<&str>)> = (1..=60).map(|i| (format!("10.244.1.{i}"), None)).collect();
        records.upsert_endpoints(&endpoints("d", "big", &many, 5432));
        let external = |target: &str| ServiceSpec {
            type_: Some("ExternalName".to_owned()),
            external_name: Some(target.to_owned()),
            ..ServiceSpec::default()
        };
        records.upsert_service(&service("d", "ext", external("web.x.svc.upstream.test")));
        records.upsert_service(&service("d", "gone", external("nothing.upstream.test")));
        records.upsert_service(&service("d", "alias", external("web.d.svc.cluster.local")));
        let forwarder = Forwarder::new(&Upstreams::Servers(vec![upstream.local_addr()]))?;
        let server = DnsServer::start(
            "127.0.0.1:0".parse()?,
            ClusterHandler::new(records.clone(), Some(forwarder)),
            cancel.child_token(),
        )
        .await?;
        let (addr, upstream_addr) = (server.local_addr(), upstream.local_addr());
        Ok(Self { addr, upstream: upstream_addr, cancel, servers: vec![upstream, server], records })
    }

    /// Runs `dig @server -p port <args>` and returns its stdout.
    async fn dig(&self, args: &[&str]) -> Result<String> {
        self.dig_at(self.addr, args).await
    }

    async fn dig_at(&self, server: SocketAddr, args: &[&str]) -> Result<String> {
        let port = server.port().to_string();
        let mut command = tokio::process::Command::new("dig");
        command.args(["@127.0.0.1", "-p", &port, "+time=2", "+tries=1"]).args(args).kill_on_drop(true);
        let output = tokio::time::timeout(DIG_TIMEOUT, command.output())
            .await
            .context("dig timed out")?
            .context("running dig (apt-get install dnsutils)")?;
        if !output.status.success() {
            bail!("dig {args:?} failed: {}", String::from_utf8_lossy(&output.stdout));
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// `+short` answers, sorted.
    async fn short(&self, name: &str, qtype: &str) -> Result<Vec<String>> {
        let out = self.dig(&[name, qtype, "+short"]).await?;
        let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
        lines.sort();
        Ok(lines)
    }

    async fn stop(self) -> Result<()> {
        self.cancel.cancel();
        for server in self.servers {
            tokio::time::timeout(Duration::from_secs(10), server.wait()).await.context("server did not stop")??;
        }
        Ok(())
    }
}

/// The `status:` of a full dig output.
fn status(out: &str) -> &str {
    out.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("?")
}

/// The records of dig's AUTHORITY SECTION.
fn authority(out: &str) -> Vec<&str> {
    out.split(";; AUTHORITY SECTION:")
        .nth(1)
        .map(|s| s.lines().skip(1).take_while(|l| !l.is_empty()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn answers_every_record_kind() -> Result<()> {
    let f = Fixture::start().await?;
    assert_eq!(f.short("web.d.svc.cluster.local", "A").await?, ["10.96.0.5"]);
    assert_eq!(f.short("db.d.svc.cluster.local", "A").await?, ["10.244.0.7", "10.244.0.8"]);
    assert_eq!(f.short("db-1.db.d.svc.cluster.local", "A").await?, ["10.244.0.8"]);
    assert_eq!(f.short("_http._tcp.web.d.svc.cluster.local", "SRV").await?, ["0 100 80 web.d.svc.cluster.local."]);
    assert_eq!(
        f.short("_pg._tcp.db.d.svc.cluster.local", "SRV").await?,
        ["0 100 5432 db-0.db.d.svc.cluster.local.", "0 100 5432 db-1.db.d.svc.cluster.local."]
    );
    assert_eq!(f.dig(&["-x", "10.96.0.5", "+short"]).await?.trim(), "web.d.svc.cluster.local.");
    assert_eq!(f.dig(&["-x", "10.244.0.7", "+short"]).await?.trim(), "db-0.db.d.svc.cluster.local.");
    assert_eq!(f.short("10-244-3-4.d.pod.cluster.local", "A").await?, ["10.244.3.4"]);
    let soa = f.short("cluster.local", "SOA").await?;
    assert!(soa[0].starts_with("ns.dns.cluster.local. hostmaster.cluster.local. "), "{soa:?}");
    assert_eq!(f.short("cluster.local", "NS").await?, ["ns.dns.cluster.local."]);
    assert_eq!(f.short("ns.dns.cluster.local", "A").await?, ["10.96.0.10"]);
    let badvers = f.dig(&["web.d.svc.cluster.local", "+edns=1", "+noednsneg"]).await?;
    assert_eq!(status(&badvers), "BADVERS", "{badvers}");
    // TTL 30 on answers.
    let full = f.dig(&["web.d.svc.cluster.local", "A", "+noall", "+answer"]).await?;
    assert!(full.contains(" 30\tIN\tA\t10.96.0.5"), "{full}");
    f.stop().await
}

#[tokio::test]
async fn external_name_is_a_cname_chased_upstream() -> Result<()> {
    let f = Fixture::start().await?;
    assert_eq!(f.short("ext.d.svc.cluster.local", "CNAME").await?, ["web.x.svc.upstream.test."]);
    let out = f.dig(&["ext.d.svc.cluster.local", "A", "+noall", "+answer"]).await?;
    assert!(out.contains("CNAME\tweb.x.svc.upstream.test."), "{out}");
    assert!(out.contains("web.x.svc.upstream.test. 30\tIN\tA\t192.0.2.1"), "{out}");
    // A target inside the cluster zone is answered locally.
    let local = f.dig(&["alias.d.svc.cluster.local", "A", "+noall", "+answer"]).await?;
    assert!(local.contains("CNAME\tweb.d.svc.cluster.local."), "{local}");
    assert!(local.contains("web.d.svc.cluster.local. 30\tIN\tA\t10.96.0.5"), "{local}");
    // A target that does not resolve still gives the CNAME.
    assert_eq!(f.short("gone.d.svc.cluster.local", "A").await?, ["nothing.upstream.test."]);
    f.stop().await
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_the_soa() -> Result<()> {
    let f = Fixture::start().await?;
    let missing = f.dig(&["nope.d.svc.cluster.local", "A"]).await?;
    assert_eq!(status(&missing), "NXDOMAIN", "{missing}");
    assert!(authority(&missing)[0].contains("SOA\tns.dns.cluster.local."), "{missing}");
    assert!(missing.contains("flags: qr aa rd"), "authoritative: {missing}");

    let nodata = f.dig(&["web.d.svc.cluster.local", "AAAA"]).await?;
    assert_eq!(status(&nodata), "NOERROR", "{nodata}");
    assert!(nodata.contains("ANSWER: 0,"), "{nodata}");
    assert!(authority(&nodata)[0].contains("SOA\tns.dns.cluster.local."), "{nodata}");

    // Empty non-terminals exist: the namespace name and `_tcp` below a Service.
    assert_eq!(status(&f.dig(&["d.svc.cluster.local", "A"]).await?), "NOERROR");
    assert_eq!(status(&f.dig(&["_tcp.web.d.svc.cluster.local", "SRV"]).await?), "NOERROR");
    assert_eq!(status(&f.dig(&["other.svc.cluster.local", "A"]).await?), "NXDOMAIN");
    f.stop().await
}

#[tokio::test]
async fn forwards_other_names_upstream() -> Result<()> {
    let f = Fixture::start().await?;
    assert_eq!(f.short("web.x.svc.upstream.test", "A").await?, ["192.0.2.1"]);
    let missing = f.dig(&["nope.x.svc.upstream.test", "A"]).await?;
    assert_eq!(status(&missing), "NXDOMAIN", "{missing}");
    assert!(!missing.contains(" aa "), "forwarded answers are not authoritative: {missing}");
    // The upstream has no forwarder: a name outside both zones is REFUSED there (and it does
    // not offer recursion), which gives SERVFAIL here.
    let refused = f.dig_at(f.upstream, &["example.com", "A"]).await?;
    assert_eq!(status(&refused), "REFUSED", "{refused}");
    assert!(!refused.contains(" ra"), "{refused}");
    assert_eq!(status(&f.dig(&["example.com", "A"]).await?), "SERVFAIL");
    f.stop().await
}

#[tokio::test]
async fn tcp_and_truncation() -> Result<()> {
    let f = Fixture::start().await?;
    assert_eq!(f.dig(&["web.d.svc.cluster.local", "A", "+tcp", "+short"]).await?.trim(), "10.96.0.5");
    // 60 addresses do not fit 512 bytes: UDP without EDNS says TC, dig's TCP retry gets all.
    let udp = f.dig(&["big.d.svc.cluster.local", "A", "+noedns", "+ignore"]).await?;
    assert!(udp.contains("flags: qr aa tc rd"), "{udp}");
    assert_eq!(f.short("big.d.svc.cluster.local", "A").await?.len(), 60);
    assert_eq!(f.dig(&["big.d.svc.cluster.local", "A", "+tcp", "+short"]).await?.lines().count(), 60);
    f.stop().await
}

#[tokio::test]
async fn garbage_packets_do_not_stop_the_server() -> Result<()> {
    let f = Fixture::start().await?;
    // A tokio socket: the server runs on this test's runtime thread.
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(f.addr).await?;
    // Shorter than a header: dropped.
    socket.send(&[0xde, 0xad, 0xbe]).await?;
    // A header announcing one question, then nothing: FORMERR with the same id.
    socket.send(&[0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0]).await?;
    let mut buffer = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(3), socket.recv(&mut buffer))
        .await
        .context("no FORMERR for a truncated question")??;
    assert!(n >= 12, "short reply");
    assert_eq!(&buffer[..2], &[0x12, 0x34]);
    assert_eq!(buffer[3] & 0x0f, 1, "rcode FORMERR");
    // Random bytes with a plausible header and a broken name.
    socket.send(&[0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x3f, b'a', 0xff, 0xc0]).await?;
    // Still answering, over UDP and TCP.
    assert_eq!(f.short("web.d.svc.cluster.local", "A").await?, ["10.96.0.5"]);
    assert_eq!(f.dig(&["web.d.svc.cluster.local", "+tcp", "+short"]).await?.trim(), "10.96.0.5");
    f.stop().await
}

#[tokio::test]
async fn repeated_queries_follow_changes_and_the_clients_spelling() -> Result<()> {
    let f = Fixture::start().await?;
    // The second and third are answered from the UDP answer cache (dig checks the ID).
    for _ in 0..3 {
        assert_eq!(f.short("web.d.svc.cluster.local", "A").await?, ["10.96.0.5"]);
    }
    // The question comes back as the client spelled it (dig rejects a reply whose question
    // differs), from the cache too.
    for spelling in ["WeB.d.SVC.cluster.local", "WEB.D.svc.cluster.local", "WeB.d.SVC.cluster.local"] {
        let out = f.dig(&[spelling, "A", "+noall", "+question", "+answer"]).await?;
        assert!(out.starts_with(&format!(";{spelling}.")), "{out}");
        assert!(out.contains("\tA\t10.96.0.5"), "{out}");
    }
    // A change of the records is seen at once, positive and negative answers alike.
    f.records.upsert_service(&service("d", "web", cluster_ip("10.96.0.6", "http", 80)));
    assert_eq!(f.short("web.d.svc.cluster.local", "A").await?, ["10.96.0.6"]);
    assert_eq!(status(&f.dig(&["late.d.svc.cluster.local", "A"]).await?), "NXDOMAIN");
    f.records.upsert_service(&service("d", "late", cluster_ip("10.96.0.7", "http", 80)));
    assert_eq!(f.short("late.d.svc.cluster.local", "A").await?, ["10.96.0.7"]);
    // Forwarded answers are not cached but still served.
    assert_eq!(f.short("web.x.svc.upstream.test", "A").await?, ["192.0.2.1"]);
    assert_eq!(f.short("web.x.svc.upstream.test", "A").await?, ["192.0.2.1"]);
    f.stop().await
}
