//! The hickory `RequestHandler`: one DNS request → one response message.
//!
//! Owns the DNS-message rules around a [`Resolution`]: authoritative flag and SOA in the
//! authority section for cluster names, NXDOMAIN/NODATA codes, forwarding of other names,
//! CNAME chasing for ExternalName Services, EDNS payload size and truncation (TC) for UDP.
//! Malformed packets never reach here: hickory's server answers FORMERR when the header
//! parses and drops shorter garbage.

use std::iter;

use hickory_net::runtime::Time;
use hickory_net::xfer::Protocol;
use hickory_proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::forward::{Forwarded, Forwarder};
use crate::lookup::Resolution;
use crate::records::ClusterRecords;

/// Answers cluster names from [`ClusterRecords`] and forwards the rest.
#[derive(Debug, Clone)]
pub struct ClusterHandler {
    records: ClusterRecords,
    forwarder: Option<Forwarder>,
}

/// A response in the making: header flags and the three record sections.
#[derive(Debug, Default)]
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
}

impl Reply {
    fn code(code: ResponseCode) -> Self {
        Self { code, ..Self::default() }
    }
}

impl ClusterHandler {
    /// A handler over `records`; without a forwarder, other names are REFUSED.
    pub fn new(records: ClusterRecords, forwarder: Option<Forwarder>) -> Self {
        Self { records, forwarder }
    }

    /// The records it answers from.
    pub fn records(&self) -> &ClusterRecords {
        &self.records
    }

    async fn reply(&self, request: &Request) -> Reply {
        if request.metadata.op_code != OpCode::Query {
            return Reply::code(ResponseCode::NotImp);
        }
        let Ok(info) = request.request_info() else {
            // Zero or several questions: nobody sends that on purpose.
            return Reply::code(ResponseCode::FormErr);
        };
        let query = info.query;
        if query.query_class() != DNSClass::IN {
            return Reply::code(ResponseCode::Refused);
        }
        let name = Name::from(query.name());
        let qtype = query.query_type();
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            // Zone transfers would hand out every Service of the cluster in one go.
            return Reply::code(ResponseCode::Refused);
        }
        match self.records.resolve(&name, qtype) {
            Resolution::Answer { answers, additionals } => {
                let mut reply = Reply { authoritative: true, answers, additionals, ..Reply::default() };
                self.chase_cname(&mut reply, qtype).await;
                reply
            }
            Resolution::NoData => self.negative(ResponseCode::NoError),
            Resolution::NxDomain => self.negative(ResponseCode::NXDomain),
            Resolution::NotOurs => self.forward(&name, qtype).await,
        }
    }

    fn negative(&self, code: ResponseCode) -> Reply {
        Reply { code, authoritative: true, authorities: vec![self.records.soa()], ..Reply::default() }
    }

    async fn forward(&self, name: &Name, qtype: RecordType) -> Reply {
        let Some(forwarder) = &self.forwarder else {
            return Reply::code(ResponseCode::Refused);
        };
        match forwarder.forward(name, qtype).await {
            Forwarded::Answer { code, answers, authorities } => {
                Reply { code, answers, authorities, ..Reply::default() }
            }
            Forwarded::Failed => Reply::code(ResponseCode::ServFail),
        }
    }

    /// An ExternalName answer is a lone CNAME; resolve its target (in the cluster zone, else
    /// upstream) so that clients get addresses in one round trip, as CoreDNS does. A failed
    /// chase still returns the CNAME. One step only: cluster CNAMEs cannot loop this way.
    async fn chase_cname(&self, reply: &mut Reply, qtype: RecordType) {
        let [record] = reply.answers.as_slice() else {
            return;
        };
        let RData::CNAME(target) = &record.data else {
            return;
        };
        if matches!(qtype, RecordType::CNAME | RecordType::ANY) {
            return;
        }
        let target = target.0.clone();
        match self.records.resolve(&target, qtype) {
            Resolution::Answer { answers, .. } => reply.answers.extend(answers),
            Resolution::NotOurs => {
                if let Some(forwarder) = &self.forwarder
                    && let Forwarded::Answer { answers, .. } = forwarder.forward(&target, qtype).await
                {
                    reply.answers.extend(answers);
                }
            }
            Resolution::NoData | Resolution::NxDomain => {}
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for ClusterHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // EDNS version 0 is the only one there is; RFC 6891 6.1.3 says BADVERS to others.
        let reply = match &request.edns {
            Some(edns) if edns.version() > 0 => Reply::code(ResponseCode::BADVERS),
            _ => self.reply(request).await,
        };
        if tracing::enabled!(tracing::Level::DEBUG) {
            let query = request.queries.queries().first();
            tracing::debug!(
                src = %request.src(),
                name = %query.map(|q| q.name().to_string()).unwrap_or_default(),
                qtype = %query.map(|q| q.query_type().to_string()).unwrap_or_default(),
                code = %reply.code,
                answers = reply.answers.len(),
                "dns query"
            );
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = reply.code;
        metadata.authoritative = reply.authoritative;
        metadata.recursion_available = self.forwarder.is_some();

        let edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().max(512));
            edns.set_version(0);
            edns
        });
        let limit = match request.protocol() {
            Protocol::Udp => edns.as_ref().map_or(512, Edns::max_payload),
            _ => u16::MAX,
        };
        // Fit the answer in the client's buffer: first drop the additional section (optional
        // by definition), then truncate so that the client retries over TCP.
        let empty: &[Record] = &[];
        let mut additionals = reply.additionals.as_slice();
        let mut answers = reply.answers.as_slice();
        let mut authorities = reply.authorities.as_slice();
        if !fits(request, edns.as_ref(), metadata, answers, authorities, additionals, limit) {
            additionals = empty;
            if !fits(request, edns.as_ref(), metadata, answers, authorities, additionals, limit) {
                metadata.truncation = true;
                answers = empty;
                authorities = empty;
            }
        }
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            answers.iter(),
            authorities.iter(),
            iter::empty(),
            additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                tracing::debug!(%error, src = %request.src(), "sending a DNS response failed");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata, counts: HeaderCounts::default() })
            }
        }
    }
}

/// Whether the whole response encodes within `limit` bytes. (hickory itself would cut the
/// sections at the limit and set TC, leaving a partial record behind; a clean empty TC reply
/// makes clients retry over TCP instead.)
fn fits(
    request: &Request,
    edns: Option<&Edns>,
    metadata: Metadata,
    answers: &[Record],
    authorities: &[Record],
    additionals: &[Record],
    limit: u16,
) -> bool {
    if limit == u16::MAX {
        return true;
    }
    // Most answers are a few short records: skip the trial encoding when even an uncompressed
    // upper bound fits.
    let records = answers.iter().chain(authorities).chain(additionals);
    let bound = records.map(record_bound).sum::<usize>()
        + 12
        + request.queries.as_bytes().len()
        + if edns.is_some() { 11 } else { 0 };
    if bound <= usize::from(limit) {
        return true;
    }
    let mut buffer = Vec::with_capacity(usize::from(limit));
    let mut encoder = BinEncoder::new(&mut buffer);
    encoder.set_max_size(limit);
    MessageResponseBuilder::new(&request.queries, edns)
        .build(metadata, answers.iter(), authorities.iter(), iter::empty(), additionals.iter())
        .destructive_emit(&mut encoder)
        .is_ok_and(|info| !info.truncation)
}

/// An upper bound of a record's wire size without name compression; `usize::MAX / 4` (never
/// fits) for types whose size we do not bound.
fn record_bound(record: &Record) -> usize {
    let name = |n: &Name| n.len() + 2;
    let rdata = match &record.data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::CNAME(n) => name(&n.0),
        RData::PTR(n) => name(&n.0),
        RData::NS(n) => name(&n.0),
        RData::SRV(srv) => 6 + name(&srv.target),
        RData::SOA(soa) => name(&soa.mname) + name(&soa.rname) + 20,
        _ => return usize::MAX / 4,
    };
    name(&record.name) + 10 + rdata
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::ZoneConfig;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, SRV};
    use hickory_proto::serialize::binary::BinEncodable;

    #[test]
    fn record_bound_is_an_upper_bound() {
        let name = Name::from_ascii("a-rather-long-label.web.default.svc.cluster.local.").expect("name");
        let records = [
            Record::from_rdata(name.clone(), 30, RData::A(A::new(10, 0, 0, 1))),
            Record::from_rdata(name.clone(), 30, RData::AAAA(AAAA::new(0xfd00, 0, 0, 0, 0, 0, 0, 1))),
            Record::from_rdata(name.clone(), 30, RData::CNAME(CNAME(name.clone()))),
            Record::from_rdata(name.clone(), 30, RData::SRV(SRV::new(0, 100, 80, name.clone()))),
            ClusterRecords::new(ZoneConfig::default()).soa(),
        ];
        for record in &records {
            let encoded = record.to_bytes().expect("encode").len();
            assert!(record_bound(record) >= encoded, "{record}: bound {} < {encoded}", record_bound(record));
        }
        let txt = Record::from_rdata(name, 30, RData::TXT(hickory_proto::rr::rdata::TXT::new(vec!["x".into()])));
        assert!(record_bound(&txt) > usize::from(u16::MAX), "unbounded types always take the trial encoding");
    }
}
