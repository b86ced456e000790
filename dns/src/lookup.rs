//! Query name + type → records, per the Kubernetes DNS-based service discovery specification.
//!
//! Pure logic over a [`ClusterRecords`] read snapshot; the server turns a [`Resolution`] into a
//! DNS message (SOA in the authority section for negative answers, truncation, EDNS). The one
//! subtle rule is NXDOMAIN versus NODATA: a name that exists — because it has records of another
//! type, or because names exist below it (`<ns>.svc.<zone>`, `_tcp.<svc>...`) — must answer
//! NOERROR with no records, or resolvers will cache that the name (and every other type) is gone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::records::{Backend, ClusterRecords, ServiceKind, State};

/// The version of the Kubernetes DNS specification answered at `dns-version.<zone>`.
const SPEC_VERSION: &str = "1.1.0";

/// What the cluster zone says about a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Records for the answer section, and helpful ones (SRV targets' addresses) for additional.
    Answer { answers: Vec<Record>, additionals: Vec<Record> },
    /// The name exists but has no record of the asked type (NOERROR, empty answer).
    NoData,
    /// The name does not exist in the zone.
    NxDomain,
    /// Not a cluster name: forward it upstream.
    NotOurs,
}

impl ClusterRecords {
    /// Answers `name`/`qtype` from the cache.
    pub fn resolve(&self, name: &Name, qtype: RecordType) -> Resolution {
        let fqdn = name.to_lowercase().to_ascii();
        let fqdn = fqdn.trim_end_matches('.');
        let zone = &self.config().zone;
        let relative = if fqdn == zone {
            ""
        } else if let Some(rest) = fqdn.strip_suffix(self.zone_suffix()) {
            rest
        } else if let Some(ip) = reverse_ip(fqdn) {
            return self.reverse(ip, name, qtype);
        } else {
            return Resolution::NotOurs;
        };
        // Labels from the zone downwards: `web.default.svc` → [svc, default, web].
        let labels: Vec<&str> = if relative.is_empty() { Vec::new() } else { relative.rsplit('.').collect() };
        let answer = Answerer { records: self, state: &self.read(), name, qtype };
        answer.labels(&labels)
    }

    /// The zone's SOA record, for the answer to SOA queries and for negative answers.
    pub fn soa(&self) -> Record {
        let config = self.config();
        let zone = self.zone_name();
        let serial = self.read().serial;
        let soa = SOA::new(self.ns_name(), zone_child(&zone, "hostmaster"), serial, 7200, 1800, 86400, config.ttl);
        Record::from_rdata(zone, config.ttl, RData::SOA(soa))
    }

    fn zone_name(&self) -> Name {
        // The zone was validated when the server was built; a broken one only loses SOA/NS names.
        Name::from_ascii(format!("{}.", self.config().zone)).unwrap_or_else(|_| Name::root())
    }

    fn ns_name(&self) -> Name {
        zone_child(&self.zone_name(), "ns.dns")
    }

    fn reverse(&self, ip: IpAddr, name: &Name, qtype: RecordType) -> Resolution {
        let state = self.read();
        let mut targets = Vec::new();
        let keys = state.by_ip.get(&ip).into_iter().flatten();
        for (key, entry) in keys.filter_map(|k| Some((k, state.services.get(k)?))) {
            let (ns, svc) = key;
            match &entry.kind {
                ServiceKind::ClusterIp(ips) if ips.contains(&ip) => {
                    targets.push(format!("{svc}.{ns}.svc.{}.", self.config().zone));
                }
                ServiceKind::Headless => {
                    for b in state.endpoints.get(key).into_iter().flatten() {
                        if b.ip == ip {
                            targets.push(format!("{}.{svc}.{ns}.svc.{}.", b.hostname, self.config().zone));
                        }
                    }
                }
                _ => {}
            }
        }
        if targets.is_empty() {
            // Reverse zones are shared with the rest of the world: unknown IPs go upstream.
            return Resolution::NotOurs;
        }
        if qtype != RecordType::PTR {
            return Resolution::NoData;
        }
        targets.sort();
        let ttl = self.config().ttl;
        let answers = targets
            .iter()
            .filter_map(|t| Name::from_ascii(t).ok())
            .map(|t| Record::from_rdata(name.clone(), ttl, RData::PTR(PTR(t))))
            .collect();
        Resolution::Answer { answers, additionals: Vec::new() }
    }
}

fn zone_child(zone: &Name, prefix: &str) -> Name {
    Name::from_ascii(prefix).and_then(|p| p.append_domain(zone)).unwrap_or_else(|_| zone.clone())
}

/// `d.c.b.a.in-addr.arpa` / nibble `ip6.arpa` names → the address they stand for.
pub(crate) fn reverse_ip(fqdn: &str) -> Option<IpAddr> {
    if let Some(rest) = fqdn.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = rest.split('.').map(u8::from_str).collect::<Result<_, _>>().ok()?;
        if octets.len() != 4 {
            return None;
        }
        octets.reverse();
        return Some(IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3])));
    }
    let rest = fqdn.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<&str> = rest.split('.').collect();
    if nibbles.len() != 32 || nibbles.iter().any(|n| n.len() != 1) {
        return None;
    }
    let hex: String = nibbles.iter().rev().copied().collect();
    let value = u128::from_str_radix(&hex, 16).ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(value)))
}

/// `10-0-0-1` → 10.0.0.1, `fd00--1` → fd00::1 (pod names).
fn undashed(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

struct Answerer<'a> {
    records: &'a ClusterRecords,
    state: &'a State,
    name: &'a Name,
    qtype: RecordType,
}

impl Answerer<'_> {
    fn labels(&self, labels: &[&str]) -> Resolution {
        let config = self.records.config();
        match labels {
            [] => match self.qtype {
                RecordType::SOA => self.answer(vec![self.records.soa()]),
                RecordType::NS => {
                    let ns = RData::NS(NS(self.records.ns_name()));
                    let mut additionals = Vec::new();
                    if let Some(ip) = config.dns_ip {
                        additionals.push(self.address(self.records.ns_name(), ip));
                    }
                    Resolution::Answer {
                        answers: vec![Record::from_rdata(self.name.clone(), config.ttl, ns)],
                        additionals,
                    }
                }
                _ => Resolution::NoData,
            },
            ["dns-version"] => match self.qtype {
                RecordType::TXT => {
                    let txt = RData::TXT(TXT::new(vec![SPEC_VERSION.to_owned()]));
                    self.answer(vec![Record::from_rdata(self.name.clone(), config.ttl, txt)])
                }
                _ => Resolution::NoData,
            },
            ["dns"] | ["svc"] | ["pod"] => Resolution::NoData,
            ["dns", "ns"] => match config.dns_ip {
                Some(ip) => self.addresses(&[ip]),
                None => Resolution::NxDomain,
            },
            ["svc", ns] => self.namespace(ns),
            ["svc", ns, svc] => self.service(ns, svc),
            ["svc", ns, svc, sub] if sub.starts_with('_') => self.protocol(ns, svc, sub),
            ["svc", ns, svc, host] => self.endpoint(ns, svc, host),
            ["svc", ns, svc, proto, port] if port.starts_with('_') && proto.starts_with('_') => {
                self.srv(ns, svc, &port[1..], &proto[1..])
            }
            ["pod", ns, pod] => match undashed(pod) {
                // "pods insecure" as CoreDNS: any well-formed address answers, in a namespace
                // that exists or not, since the agent does not track pods here.
                Some(ip) if !ns.is_empty() => self.addresses(&[ip]),
                _ => Resolution::NxDomain,
            },
            _ => Resolution::NxDomain,
        }
    }

    fn answer(&self, answers: Vec<Record>) -> Resolution {
        if answers.is_empty() {
            return Resolution::NoData;
        }
        Resolution::Answer { answers, additionals: Vec::new() }
    }

    fn address(&self, name: Name, ip: IpAddr) -> Record {
        let ttl = self.records.config().ttl;
        match ip {
            IpAddr::V4(v4) => Record::from_rdata(name, ttl, RData::A(A(v4))),
            IpAddr::V6(v6) => Record::from_rdata(name, ttl, RData::AAAA(AAAA(v6))),
        }
    }

    /// A/AAAA of the query name from `ips`, filtered by the asked family.
    fn addresses(&self, ips: &[IpAddr]) -> Resolution {
        let wanted = |ip: &&IpAddr| match self.qtype {
            RecordType::A => ip.is_ipv4(),
            RecordType::AAAA => ip.is_ipv6(),
            RecordType::ANY => true,
            _ => false,
        };
        let answers = ips.iter().filter(wanted).map(|ip| self.address(self.name.clone(), *ip)).collect();
        self.answer(answers)
    }

    fn key(ns: &str, svc: &str) -> (String, String) {
        (ns.to_owned(), svc.to_owned())
    }

    fn namespace(&self, ns: &str) -> Resolution {
        if self.state.namespaces.contains_key(ns) { Resolution::NoData } else { Resolution::NxDomain }
    }

    fn ready(&self, ns: &str, svc: &str) -> &[Backend] {
        self.state.endpoints.get(&Self::key(ns, svc)).map_or(&[], Vec::as_slice)
    }

    fn service(&self, ns: &str, svc: &str) -> Resolution {
        let Some(entry) = self.state.services.get(&Self::key(ns, svc)) else {
            return Resolution::NxDomain;
        };
        match &entry.kind {
            ServiceKind::ClusterIp(ips) => self.addresses(ips),
            ServiceKind::Headless => {
                let ips: Vec<IpAddr> = self.ready(ns, svc).iter().map(|b| b.ip).collect();
                self.addresses(&ips)
            }
            ServiceKind::External(target) => {
                // A CNAME owns its name: it answers every type (RFC 1034 3.6.2).
                match Name::from_ascii(format!("{target}.")) {
                    Ok(target) => {
                        let ttl = self.records.config().ttl;
                        self.answer(vec![Record::from_rdata(self.name.clone(), ttl, RData::CNAME(CNAME(target)))])
                    }
                    Err(_) => Resolution::NoData,
                }
            }
        }
    }

    /// `_tcp.<svc>.<ns>.svc`: exists while a named port uses that protocol.
    fn protocol(&self, ns: &str, svc: &str, proto: &str) -> Resolution {
        let proto = &proto[1..];
        match self.state.services.get(&Self::key(ns, svc)) {
            Some(entry) if entry.ports.iter().any(|p| p.protocol == proto) => Resolution::NoData,
            _ => Resolution::NxDomain,
        }
    }

    /// `<hostname>.<svc>.<ns>.svc`: a headless Service's ready endpoint.
    fn endpoint(&self, ns: &str, svc: &str, host: &str) -> Resolution {
        match self.state.services.get(&Self::key(ns, svc)) {
            Some(entry) if entry.kind == ServiceKind::Headless => {}
            _ => return Resolution::NxDomain,
        }
        let ips: Vec<IpAddr> = self.ready(ns, svc).iter().filter(|b| b.hostname == host).map(|b| b.ip).collect();
        if ips.is_empty() {
            return Resolution::NxDomain;
        }
        self.addresses(&ips)
    }

    fn srv(&self, ns: &str, svc: &str, port: &str, proto: &str) -> Resolution {
        let Some(entry) = self.state.services.get(&Self::key(ns, svc)) else {
            return Resolution::NxDomain;
        };
        let zone = &self.records.config().zone;
        let ttl = self.records.config().ttl;
        let matches = |p: &&crate::records::NamedPort| p.name == port && p.protocol == proto;
        // (port number, target name, target address)
        let mut targets: Vec<(u16, String, Option<IpAddr>)> = Vec::new();
        match &entry.kind {
            ServiceKind::ClusterIp(ips) => {
                for p in entry.ports.iter().filter(matches) {
                    targets.push((p.port, format!("{svc}.{ns}.svc.{zone}."), ips.first().copied()));
                }
            }
            ServiceKind::Headless => {
                for b in self.ready(ns, svc) {
                    for p in b.ports.iter().filter(matches) {
                        targets.push((p.port, format!("{}.{svc}.{ns}.svc.{zone}.", b.hostname), Some(b.ip)));
                    }
                }
                if targets.is_empty() && entry.ports.iter().any(|p| matches(&p)) {
                    return Resolution::NoData;
                }
            }
            ServiceKind::External(_) => {}
        }
        if targets.is_empty() {
            return Resolution::NxDomain;
        }
        if self.qtype != RecordType::SRV && self.qtype != RecordType::ANY {
            return Resolution::NoData;
        }
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        for (port, target, ip) in targets {
            let Ok(target) = Name::from_ascii(&target) else {
                continue;
            };
            if let Some(ip) = ip {
                additionals.push(self.address(target.clone(), ip));
            }
            let srv = RData::SRV(SRV::new(0, 100, port, target));
            answers.push(Record::from_rdata(self.name.clone(), ttl, srv));
        }
        Resolution::Answer { answers, additionals }
    }
}

#[cfg(test)]
#[path = "lookup_tests.rs"]
mod tests;
