//! Outgoing `wasi:http` requests to cluster names: [`ClusterHttpHooks`].
//!
//! wasmtime-wasi-http's default sender connects to the request's authority through the host's
//! resolver. For a pod with a [`NameResolver`], a request whose host is a cluster name
//! (`http://hello/`, `https://hello.default.svc.cluster.local:8443/x`) goes to the name's
//! addresses instead; the `Host` header the guest sent (wasmtime sets it from the authority
//! before this hook runs) stays the name, so virtual hosting and Ingress-style routing behind
//! the Service see what the guest asked for. A name of the cluster zone that does not exist
//! fails with a DNS error (`NXDOMAIN`), as a lookup would.
//!
//! - `http`: the URI's authority is rewritten to the name's first address and wasmtime's
//!   sender does the rest.
//! - `https`: sent by `tls_send.rs` to the name's addresses in order, with the name the guest
//!   used as the TLS server name, verified against the web roots plus the runtime's extra roots
//!   (the cluster CA) — wasmtime's sender could do neither.
//! - An `ExternalName` alias, either scheme: the authority becomes the alias's target and
//!   wasmtime's sender resolves it with the host's resolver; for `https` the target is then
//!   also the TLS server name, checked against the web roots — the certificate an external
//!   service presents names itself, not the Service (a container, whose resolver only follows
//!   the CNAME, would verify the Service name instead and fail).
//!
//! Everything else (names outside the cluster, IP literals, guests without a resolver) keeps
//! wasmtime's default path unchanged.

use std::net::SocketAddr;

use http::uri::{Authority, Scheme};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::names::{Lookup, NameResolver};
use crate::tls_send::{self, ClusterTls};

/// The `wasi:http` hooks of one guest: cluster names through its resolver, else the defaults.
#[derive(Debug)]
pub(crate) struct ClusterHttpHooks {
    pub resolver: Option<NameResolver>,
    /// How HTTPS requests to cluster names verify their servers.
    pub tls: ClusterTls,
}

type Sent = Box<dyn Future<Output = wasmtime_wasi_http::Result<tls_send::Sent>> + Send>;

impl WasiHttpHooks for ClusterHttpHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        _ = fut;
        let resolver = self.resolver.clone();
        let tls = self.tls.clone();
        Box::new(async move {
            let route = match &resolver {
                Some(resolver) => route(resolver, &mut request)?,
                None => Route::Default,
            };
            match route {
                Route::Default => {
                    let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
                    Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
                }
                Route::ClusterTls { server_name, addrs } => {
                    tls_send::send(&tls, request, &server_name, &addrs, options).await
                }
            }
        })
    }
}

/// Who sends a request, after [`route`].
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// wasmtime's sender, to the (possibly rewritten) URI.
    Default,
    /// `tls_send`: TLS as `server_name` to the first of `addrs` that accepts.
    ClusterTls { server_name: String, addrs: Vec<SocketAddr> },
}

/// Decides how `request` is sent and points it at the cluster address of its host, if it has
/// one (module docs).
fn route<B>(resolver: &NameResolver, request: &mut http::Request<B>) -> Result<Route, Error> {
    let uri = request.uri();
    let https = match uri.scheme() {
        Some(scheme) if *scheme == Scheme::HTTP => false,
        Some(scheme) if *scheme == Scheme::HTTPS => true,
        _ => return Ok(Route::Default),
    };
    let Some(authority) = uri.authority().cloned() else {
        return Ok(Route::Default);
    };
    let host = authority.host();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let (target, route) = match resolver.lookup(host) {
        Lookup::Cluster(ips) if ips.is_empty() => return Err(not_found()),
        Lookup::Cluster(ips) if https => {
            let addrs = ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect();
            (None, Route::ClusterTls { server_name: host.to_owned(), addrs })
        }
        Lookup::Cluster(ips) => (Some(SocketAddr::new(ips[0], port).to_string()), Route::Default),
        Lookup::NotFound => return Err(not_found()),
        Lookup::Host(name) if name != host => (Some(format!("{name}:{port}")), Route::Default),
        Lookup::Host(_) => return Ok(Route::Default),
    };
    if !request.headers().contains_key(http::header::HOST)
        && let Ok(value) = http::HeaderValue::from_str(authority.as_str())
    {
        request.headers_mut().insert(http::header::HOST, value);
    }
    if let Some(target) = target {
        let authority: Authority = target.parse().map_err(|_| Error::HttpRequestUriInvalid)?;
        let mut parts = request.uri().clone().into_parts();
        parts.authority = Some(authority);
        *request.uri_mut() = http::Uri::from_parts(parts).map_err(|_| Error::HttpRequestUriInvalid)?;
    }
    Ok(route)
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
    struct Services;

    impl ClusterNames for Services {
        fn zone(&self) -> &str {
            "cluster.local"
        }
        fn lookup(&self, fqdn: &str) -> ClusterAnswer {
            match fqdn {
                "hello.default.svc.cluster.local" => ClusterAnswer::Addresses(vec!["10.96.0.20".parse().expect("ip")]),
                "two.default.svc.cluster.local" => {
                    ClusterAnswer::Addresses(vec!["10.244.0.5".parse().expect("ip"), "10.244.0.6".parse().expect("ip")])
                }
                "ext.default.svc.cluster.local" => ClusterAnswer::Alias("example.com".to_owned()),
                _ => ClusterAnswer::NoAddresses,
            }
        }
    }

    /// The route, the URI and the `Host` header of a GET of `url` after [`route`].
    fn routed(url: &str) -> Result<(Route, String, Option<String>), Error> {
        let resolver = NameResolver::cluster_first(Arc::new(Services), "default");
        let mut request = http::Request::get(url).body(()).expect("request");
        let route = route(&resolver, &mut request)?;
        let host = request.headers().get(http::header::HOST).map(|v| v.to_str().expect("ascii").to_owned());
        Ok((route, request.uri().to_string(), host))
    }

    fn tls(name: &str, addrs: &[&str]) -> Route {
        Route::ClusterTls {
            server_name: name.to_owned(),
            addrs: addrs.iter().map(|a| a.parse().expect("socket address")).collect(),
        }
    }

    #[test]
    fn cluster_names_go_to_their_address_with_the_name_as_host() {
        assert_eq!(
            routed("http://hello/x?y=1").expect("routed"),
            (Route::Default, "http://10.96.0.20:80/x?y=1".to_owned(), Some("hello".to_owned()))
        );
        assert_eq!(
            routed("http://hello.default.svc.cluster.local:8080/").expect("routed"),
            (
                Route::Default,
                "http://10.96.0.20:8080/".to_owned(),
                Some("hello.default.svc.cluster.local:8080".to_owned())
            )
        );
    }

    #[test]
    fn https_to_cluster_names_is_sent_over_tls_as_the_name_the_guest_used() {
        for name in ["hello", "hello.default", "hello.default.svc", "hello.default.svc.cluster.local"] {
            assert_eq!(
                routed(&format!("https://{name}/x")).expect("routed"),
                (tls(name, &["10.96.0.20:443"]), format!("https://{name}/x"), Some(name.to_owned())),
                "{name}"
            );
        }
        // Every address, in order, on the URL's port.
        assert_eq!(
            routed("https://two:8443/").expect("routed"),
            (
                tls("two", &["10.244.0.5:8443", "10.244.0.6:8443"]),
                "https://two:8443/".to_owned(),
                Some("two:8443".to_owned())
            )
        );
    }

    #[test]
    fn external_name_aliases_go_to_their_target_by_either_scheme() {
        assert_eq!(
            routed("http://ext/").expect("routed"),
            (Route::Default, "http://example.com:80/".to_owned(), Some("ext".to_owned()))
        );
        // wasmtime's sender, so the TLS server name is the target's, verified by the web roots.
        assert_eq!(
            routed("https://ext/").expect("routed"),
            (Route::Default, "https://example.com:443/".to_owned(), Some("ext".to_owned()))
        );
    }

    #[test]
    fn other_names_are_left_alone_and_missing_cluster_names_fail() {
        for url in ["http://example.com/", "https://example.com/", "https://10.96.0.20/", "https://nothere/"] {
            assert_eq!(routed(url).expect("kept"), (Route::Default, url.to_owned(), None), "{url}");
        }
        for url in ["http://nothere.default.svc.cluster.local/", "https://nothere.default.svc.cluster.local/"] {
            assert!(matches!(routed(url), Err(Error::DnsError { rcode: Some(ref r), .. }) if r == "NXDOMAIN"), "{url}");
        }
    }
}
