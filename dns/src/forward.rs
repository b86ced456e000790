//! Forwarding of non-cluster names to upstream resolvers, with hickory-resolver's cache.
//!
//! Owns the resolver and the mapping of its results to a DNS outcome; not the wire format
//! (the handler builds the message). Upstreams come from `/etc/resolv.conf` by default; the
//! node agent must not hand us a resolv.conf that points back at this server (a loop).

use std::net::SocketAddr;
use std::path::Path;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, Record, RecordType};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};

/// Where forwarded queries go.
#[derive(Debug, Clone)]
pub enum Upstreams {
    /// The nameservers of a resolv.conf file (normally `/etc/resolv.conf`).
    ResolvConf(std::path::PathBuf),
    /// These servers, over UDP with TCP fallback.
    Servers(Vec<SocketAddr>),
}

impl Default for Upstreams {
    fn default() -> Self {
        Self::ResolvConf("/etc/resolv.conf".into())
    }
}

/// Errors building the forwarder.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("reading {path}: {source}")]
    ReadResolvConf { path: String, source: std::io::Error },
    #[error("parsing {path}: {message}")]
    ParseResolvConf { path: String, message: String },
    #[error("no upstream nameservers configured")]
    NoUpstreams,
    #[error("building the resolver: {0}")]
    Resolver(#[from] NetError),
}

/// The outcome of a forwarded query.
#[derive(Debug, Clone)]
pub enum Forwarded {
    /// Upstream answered (possibly NXDOMAIN/NODATA, with its SOA in `authorities`).
    Answer { code: ResponseCode, answers: Vec<Record>, authorities: Vec<Record> },
    /// Upstream failed or timed out.
    Failed,
}

/// A caching stub resolver towards the upstreams.
#[derive(Debug, Clone)]
pub struct Forwarder {
    resolver: TokioResolver,
}

impl Forwarder {
    /// A forwarder to `upstreams`.
    pub fn new(upstreams: &Upstreams) -> Result<Self, ForwardError> {
        let servers = match upstreams {
            Upstreams::Servers(servers) => servers.clone(),
            Upstreams::ResolvConf(path) => resolv_conf_servers(path)?,
        };
        if servers.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        let name_servers = servers
            .iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let mut config = NameServerConfig::udp_and_tcp(addr.ip());
                config.connections = vec![udp, tcp];
                config
            })
            .collect();
        let config = ResolverConfig::from_name_servers(name_servers);
        let mut options = ResolverOpts::default();
        // We answer for clients that asked us; /etc/hosts of the node is not theirs.
        options.use_hosts_file = ResolveHosts::Never;
        options.timeout = std::time::Duration::from_secs(2);
        options.attempts = 2;
        options.ndots = 0;
        let resolver = TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .with_options(options)
            .build()?;
        Ok(Self { resolver })
    }

    /// Resolves `name`/`qtype` upstream (or from the cache).
    pub async fn forward(&self, name: &Name, qtype: RecordType) -> Forwarded {
        let mut fqdn = name.clone();
        fqdn.set_fqdn(true);
        match self.resolver.lookup(fqdn, qtype).await {
            Ok(lookup) => Forwarded::Answer {
                code: ResponseCode::NoError,
                answers: lookup.answers().to_vec(),
                authorities: Vec::new(),
            },
            Err(NetError::Dns(DnsError::NoRecordsFound(no_records))) => Forwarded::Answer {
                code: no_records.response_code,
                answers: Vec::new(),
                authorities: no_records.soa.map(|soa| vec![soa.into_record_of_rdata()]).unwrap_or_default(),
            },
            Err(error) => {
                tracing::debug!(%name, %qtype, %error, "upstream lookup failed");
                Forwarded::Failed
            }
        }
    }
}

/// `nameserver` lines of a resolv.conf (port 53).
fn resolv_conf_servers(path: &Path) -> Result<Vec<SocketAddr>, ForwardError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ForwardError::ReadResolvConf { path: path.display().to_string(), source })?;
    parse_nameservers(&text)
        .map_err(|message| ForwardError::ParseResolvConf { path: path.display().to_string(), message })
}

fn parse_nameservers(text: &str) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else {
            return Err(format!("nameserver without address: {line:?}"));
        };
        // Drop a zone index (`fe80::1%eth0`): link-local upstreams are not supported.
        let addr = addr.split('%').next().unwrap_or(addr);
        let ip = addr.parse().map_err(|e| format!("{addr:?}: {e}"))?;
        out.push(SocketAddr::new(ip, 53));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nameserver_lines() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.2\nnameserver ::1\noptions ndots:5\n";
        let servers = parse_nameservers(text).expect("parse");
        assert_eq!(servers, ["10.0.0.2:53".parse().expect("addr"), "[::1]:53".parse().expect("addr")]);
        assert!(parse_nameservers("nameserver\n").is_err());
        assert!(parse_nameservers("nameserver bogus\n").is_err());
    }

    #[test]
    fn no_upstreams_is_an_error() {
        assert!(matches!(Forwarder::new(&Upstreams::Servers(Vec::new())), Err(ForwardError::NoUpstreams)));
    }
}
