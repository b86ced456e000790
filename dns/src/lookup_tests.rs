//! Record logic against a fixture cluster: one ClusterIP, one headless StatefulSet-like, one
//! ExternalName Service in namespace `d`.

use super::*;
use crate::records::ZoneConfig;
use crate::records::tests::{endpoints, external, service};

fn cluster() -> ClusterRecords {
    let records =
        ClusterRecords::new(ZoneConfig { dns_ip: Some("10.96.0.10".parse().expect("ip")), ..ZoneConfig::default() });
    records.upsert_service(&service("d", "web", "10.96.0.5", &[("http", "TCP", 80)]));
    records.upsert_service(&service("d", "db", "None", &[("pg", "TCP", 5432)]));
    records.upsert_endpoints(&endpoints(
        "d",
        "db",
        &[("10.244.0.7", Some("db-0")), ("10.244.0.8", None)],
        &[("pg", "TCP", 5432)],
    ));
    records.upsert_service(&external("d", "ext", "example.com"));
    records
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

fn rdata(resolution: &Resolution) -> Vec<String> {
    match resolution {
        Resolution::Answer { answers, .. } => answers.iter().map(|r| r.data.to_string()).collect(),
        other => panic!("expected an answer, got {other:?}"),
    }
}

#[test]
fn cluster_ip_service_a_and_nodata_for_aaaa() {
    let c = cluster();
    assert_eq!(rdata(&c.resolve(&name("web.d.svc.cluster.local."), RecordType::A)), ["10.96.0.5"]);
    // Case-insensitive, as DNS names are.
    assert_eq!(rdata(&c.resolve(&name("WEB.D.svc.Cluster.Local."), RecordType::A)), ["10.96.0.5"]);
    assert_eq!(c.resolve(&name("web.d.svc.cluster.local."), RecordType::AAAA), Resolution::NoData);
    assert_eq!(c.resolve(&name("nope.d.svc.cluster.local."), RecordType::A), Resolution::NxDomain);
}

#[test]
fn headless_answers_ready_ips_and_member_names() {
    let c = cluster();
    let mut ips = rdata(&c.resolve(&name("db.d.svc.cluster.local."), RecordType::A));
    ips.sort();
    assert_eq!(ips, ["10.244.0.7", "10.244.0.8"], "not-ready 10.244.9.9 left out");
    assert_eq!(rdata(&c.resolve(&name("db-0.db.d.svc.cluster.local."), RecordType::A)), ["10.244.0.7"]);
    assert_eq!(rdata(&c.resolve(&name("10-244-0-8.db.d.svc.cluster.local."), RecordType::A)), ["10.244.0.8"]);
    assert_eq!(c.resolve(&name("db-1.db.d.svc.cluster.local."), RecordType::A), Resolution::NxDomain);
    // Member names exist only under headless Services.
    assert_eq!(c.resolve(&name("db-0.web.d.svc.cluster.local."), RecordType::A), Resolution::NxDomain);
}

#[test]
fn srv_for_cluster_ip_and_headless() {
    let c = cluster();
    let web = c.resolve(&name("_http._tcp.web.d.svc.cluster.local."), RecordType::SRV);
    assert_eq!(rdata(&web), ["0 100 80 web.d.svc.cluster.local."]);
    let Resolution::Answer { additionals, .. } = &web else { panic!("answer") };
    assert_eq!(additionals[0].data.to_string(), "10.96.0.5");
    let mut db = rdata(&c.resolve(&name("_pg._tcp.db.d.svc.cluster.local."), RecordType::SRV));
    db.sort();
    assert_eq!(db, ["0 100 5432 10-244-0-8.db.d.svc.cluster.local.", "0 100 5432 db-0.db.d.svc.cluster.local."]);
    assert_eq!(c.resolve(&name("_http._udp.web.d.svc.cluster.local."), RecordType::SRV), Resolution::NxDomain);
    assert_eq!(c.resolve(&name("_http._tcp.web.d.svc.cluster.local."), RecordType::A), Resolution::NoData);
    // `_tcp.<svc>` is an empty non-terminal: NODATA, not NXDOMAIN.
    assert_eq!(c.resolve(&name("_tcp.web.d.svc.cluster.local."), RecordType::SRV), Resolution::NoData);
}

#[test]
fn ptr_for_cluster_ips_and_endpoints_unknown_forwarded() {
    let c = cluster();
    assert_eq!(rdata(&c.resolve(&name("5.0.96.10.in-addr.arpa."), RecordType::PTR)), ["web.d.svc.cluster.local."]);
    assert_eq!(rdata(&c.resolve(&name("7.0.244.10.in-addr.arpa."), RecordType::PTR)), ["db-0.db.d.svc.cluster.local."]);
    assert_eq!(c.resolve(&name("1.1.168.192.in-addr.arpa."), RecordType::PTR), Resolution::NotOurs);
    assert_eq!(
        reverse_ip("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa"),
        Some("fd00::1".parse().expect("ip"))
    );
    assert_eq!(reverse_ip("300.0.0.10.in-addr.arpa"), None);
}

#[test]
fn pods_external_names_and_zone_records() {
    let c = cluster();
    assert_eq!(rdata(&c.resolve(&name("10-244-1-2.any.pod.cluster.local."), RecordType::A)), ["10.244.1.2"]);
    assert_eq!(c.resolve(&name("10-244-1-2.any.pod.cluster.local."), RecordType::AAAA), Resolution::NoData);
    assert_eq!(c.resolve(&name("not-an-ip.any.pod.cluster.local."), RecordType::A), Resolution::NxDomain);
    assert_eq!(rdata(&c.resolve(&name("ext.d.svc.cluster.local."), RecordType::A)), ["example.com."]);
    let soa = rdata(&c.resolve(&name("cluster.local."), RecordType::SOA));
    assert!(soa[0].starts_with("ns.dns.cluster.local. hostmaster.cluster.local."), "{soa:?}");
    assert_eq!(rdata(&c.resolve(&name("cluster.local."), RecordType::NS)), ["ns.dns.cluster.local."]);
    assert_eq!(rdata(&c.resolve(&name("ns.dns.cluster.local."), RecordType::A)), ["10.96.0.10"]);
    assert_eq!(rdata(&c.resolve(&name("dns-version.cluster.local."), RecordType::TXT)), ["1.1.0"]);
    assert_eq!(c.resolve(&name("cluster.local."), RecordType::A), Resolution::NoData);
    assert_eq!(c.resolve(&name("d.svc.cluster.local."), RecordType::A), Resolution::NoData);
    assert_eq!(c.resolve(&name("empty.svc.cluster.local."), RecordType::A), Resolution::NxDomain);
    assert_eq!(c.resolve(&name("example.com."), RecordType::A), Resolution::NotOurs);
    // A name that merely ends like the zone is not in it.
    assert_eq!(c.resolve(&name("notcluster.local."), RecordType::A), Resolution::NotOurs);
}

#[test]
fn removals_take_effect() {
    let c = cluster();
    c.remove_endpoints("d", "db");
    assert_eq!(c.resolve(&name("db.d.svc.cluster.local."), RecordType::A), Resolution::NoData);
    c.remove_service("d", "web");
    assert_eq!(c.resolve(&name("web.d.svc.cluster.local."), RecordType::A), Resolution::NxDomain);
    assert_eq!(c.resolve(&name("5.0.96.10.in-addr.arpa."), RecordType::PTR), Resolution::NotOurs);
}

#[test]
fn reverse_index_follows_updates() {
    let c = cluster();
    c.upsert_endpoints(&endpoints("d", "db", &[("10.244.0.9", Some("db-0"))], &[("pg", "TCP", 5432)]));
    assert_eq!(c.resolve(&name("7.0.244.10.in-addr.arpa."), RecordType::PTR), Resolution::NotOurs);
    assert_eq!(rdata(&c.resolve(&name("9.0.244.10.in-addr.arpa."), RecordType::PTR)), ["db-0.db.d.svc.cluster.local."]);
    c.upsert_service(&service("d", "web", "10.96.0.6", &[("http", "TCP", 80)]));
    assert_eq!(c.resolve(&name("5.0.96.10.in-addr.arpa."), RecordType::PTR), Resolution::NotOurs);
    assert_eq!(rdata(&c.resolve(&name("6.0.96.10.in-addr.arpa."), RecordType::PTR)), ["web.d.svc.cluster.local."]);
    // Endpoints changes keep the Service's own cluster IP indexed.
    c.upsert_endpoints(&endpoints("d", "web", &[("10.244.0.20", None)], &[]));
    c.remove_endpoints("d", "web");
    assert_eq!(rdata(&c.resolve(&name("6.0.96.10.in-addr.arpa."), RecordType::PTR)), ["web.d.svc.cluster.local."]);
}
