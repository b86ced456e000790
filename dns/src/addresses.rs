//! A name's addresses straight from the cache, for in-process resolvers that do not speak DNS
//! (the node agent's WASM guests resolve cluster names through this, not through port 53).
//!
//! It asks [`ClusterRecords::resolve`] for `A` and `AAAA`, so every rule of the DNS
//! specification (services, headless endpoints, pod and hostname records, case folding) is the
//! same as the DNS server's; what it adds is only the folding of two answers into one list.

use std::net::IpAddr;

use hickory_proto::rr::{Name, RData, RecordType};

use crate::lookup::Resolution;
use crate::records::ClusterRecords;

/// What the cluster zone says a name's addresses are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameAddresses {
    /// The name's `A` and `AAAA` addresses, IPv4 first.
    Addresses(Vec<IpAddr>),
    /// An `ExternalName` Service: the name is an alias of this (absolute, dot-less) name outside
    /// the zone, which the caller resolves its own way.
    Alias(String),
    /// A name of the zone with no address (missing, or existing without `A`/`AAAA`).
    NoAddresses,
    /// Not a name of the cluster zone (nor a syntactically valid name).
    NotOurs,
}

impl ClusterRecords {
    /// The addresses of the absolute name `name` (a trailing dot is optional).
    pub fn addresses(&self, name: &str) -> NameAddresses {
        let Ok(fqdn) = Name::from_ascii(format!("{}.", name.trim_end_matches('.'))) else {
            return NameAddresses::NotOurs;
        };
        let mut addresses = Vec::new();
        for qtype in [RecordType::A, RecordType::AAAA] {
            match self.resolve(&fqdn, qtype) {
                Resolution::NotOurs => return NameAddresses::NotOurs,
                Resolution::NoData | Resolution::NxDomain => {}
                Resolution::Answer { answers, .. } => {
                    for record in answers {
                        match &record.data {
                            RData::A(a) => addresses.push(IpAddr::V4(a.0)),
                            RData::AAAA(a) => addresses.push(IpAddr::V6(a.0)),
                            RData::CNAME(target) => {
                                let target = target.0.to_ascii();
                                return NameAddresses::Alias(target.trim_end_matches('.').to_owned());
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        if addresses.is_empty() { NameAddresses::NoAddresses } else { NameAddresses::Addresses(addresses) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::ZoneConfig;
    use crate::records::tests::{endpoints, external, service};

    fn cluster() -> ClusterRecords {
        let records = ClusterRecords::new(ZoneConfig::default());
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

    fn ips(list: &[&str]) -> NameAddresses {
        NameAddresses::Addresses(list.iter().map(|s| s.parse().expect("ip")).collect())
    }

    #[test]
    fn services_headless_and_external_names() {
        let c = cluster();
        assert_eq!(c.addresses("web.d.svc.cluster.local"), ips(&["10.96.0.5"]));
        assert_eq!(c.addresses("Web.D.svc.cluster.local."), ips(&["10.96.0.5"]), "case and trailing dot");
        let mut headless = match c.addresses("db.d.svc.cluster.local") {
            NameAddresses::Addresses(list) => list,
            other => panic!("headless service: {other:?}"),
        };
        headless.sort();
        assert_eq!(NameAddresses::Addresses(headless), ips(&["10.244.0.7", "10.244.0.8"]));
        assert_eq!(c.addresses("db-0.db.d.svc.cluster.local"), ips(&["10.244.0.7"]));
        assert_eq!(c.addresses("ext.d.svc.cluster.local"), NameAddresses::Alias("example.com".to_owned()));
    }

    #[test]
    fn missing_and_foreign_names() {
        let c = cluster();
        assert_eq!(c.addresses("nothere.d.svc.cluster.local"), NameAddresses::NoAddresses);
        assert_eq!(c.addresses("d.svc.cluster.local"), NameAddresses::NoAddresses, "exists, no address");
        assert_eq!(c.addresses("example.com"), NameAddresses::NotOurs);
        assert_eq!(c.addresses("bad..name"), NameAddresses::NotOurs);
    }
}
