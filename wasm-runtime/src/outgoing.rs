//! Outgoing `wasi:http` requests to cluster names: [`ClusterHttpHooks`].
//!
//! wasmtime-wasi-http's default sender connects to the request's authority through the host's
//! resolver. For a pod with a [`NameResolver`], a plain-HTTP request whose host is a cluster
//! name (`http://hello/`, `http://hello.default.svc.cluster.local:8080/x`) is sent to the
//! name's first address instead; the `Host` header the guest sent (wasmtime sets it from the
//! authority before this hook runs) stays the name, so virtual hosting and Ingress-style
//! routing behind the Service see what the guest asked for. An `ExternalName` alias is sent to
//! its target the same way. A name of the cluster zone that does not exist fails with a DNS
//! error, as a lookup would.
//!
//! Not rewritten: `https` requests. wasmtime's sender verifies certificates against the public
//! web roots and derives the TLS server name from the authority, so a cluster name could not
//! be verified either way; those keep going to the host resolver unchanged.

use std::net::SocketAddr;

use http::uri::{Authority, Scheme};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::names::{Lookup, NameResolver};

/// The `wasi:http` hooks of one guest: cluster names through its resolver, else the defaults.
#[derive(Debug, Default)]
pub(crate) struct ClusterHttpHooks {
    pub resolver: Option<NameResolver>,
}

type Sent = Box<
    dyn Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn Future<Output = Result<(), Error>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for ClusterHttpHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        _ = fut;
        let resolver = self.resolver.clone();
        Box::new(async move {
            if let Some(resolver) = resolver {
                route(&resolver, &mut request)?;
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

/// Points `request`'s URI at the cluster address of its host, if it has one (module docs).
fn route<B>(resolver: &NameResolver, request: &mut http::Request<B>) -> Result<(), Error> {
    let uri = request.uri();
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Ok(());
    }
    let Some(authority) = uri.authority() else {
        return Ok(());
    };
    let host = authority.host().to_owned();
    let port = authority.port_u16().unwrap_or(80);
    let target = match resolver.lookup(&host) {
        Lookup::Cluster(ips) => match ips.first() {
            Some(ip) => SocketAddr::new(*ip, port).to_string(),
            None => return Err(not_found()),
        },
        Lookup::NotFound => return Err(not_found()),
        Lookup::Host(name) if name != host => format!("{name}:{port}"),
        Lookup::Host(_) => return Ok(()),
    };
    if !request.headers().contains_key(http::header::HOST)
        && let Ok(value) = http::HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(http::header::HOST, value);
    }
    let authority: Authority = target.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
    let mut parts = request.uri().clone().into_parts();
    parts.authority = Some(authority);
    *request.uri_mut() = http::Uri::from_parts(parts).map_err(|_| Error::HttpRequestUriInvalid)?;
    Ok(())
}

fn not_found() -> Error {
    Error::DnsError { rcode: Some("NXDOMAIN".to_owned()), info_code: None }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{ClusterAnswer, ClusterNames};
    use std::sync::Arc;

    #[derive(Debug)]
    struct OneService;

    impl ClusterNames for OneService {
        fn zone(&self) -> &str {
            "cluster.local"
        }
        fn lookup(&self, fqdn: &str) -> ClusterAnswer {
            match fqdn {
                "hello.default.svc.cluster.local" => ClusterAnswer::Addresses(vec!["10.96.0.20".parse().expect("ip")]),
                _ => ClusterAnswer::NoAddresses,
            }
        }
    }

    fn routed(url: &str) -> Result<(String, Option<String>), Error> {
        let resolver = NameResolver::cluster_first(Arc::new(OneService), "default");
        let mut request = http::Request::get(url).body(()).expect("request");
        route(&resolver, &mut request)?;
        let host = request.headers().get(http::header::HOST).map(|v| v.to_str().expect("ascii").to_owned());
        Ok((request.uri().to_string(), host))
    }

    #[test]
    fn cluster_names_go_to_their_address_with_the_name_as_host() {
        assert_eq!(
            routed("http://hello/x?y=1").expect("routed"),
            ("http://10.96.0.20:80/x?y=1".to_owned(), Some("hello".to_owned()))
        );
        assert_eq!(
            routed("http://hello.default.svc.cluster.local:8080/").expect("routed"),
            ("http://10.96.0.20:8080/".to_owned(), Some("hello.default.svc.cluster.local:8080".to_owned()))
        );
    }

    #[test]
    fn other_names_and_https_are_left_alone_and_missing_cluster_names_fail() {
        assert_eq!(routed("http://example.com/").expect("kept"), ("http://example.com/".to_owned(), None));
        assert_eq!(routed("https://hello/").expect("kept"), ("https://hello/".to_owned(), None));
        assert!(matches!(routed("http://nothere.default.svc.cluster.local/"), Err(Error::DnsError { .. })));
    }
}
