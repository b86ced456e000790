//! The route table: which backend an HTTP request goes to, from the Ingresses this node serves.
//!
//! What it owns: merging the rules of every served Ingress by host, and matching a request's
//! host and path with Kubernetes' precedence — an exact host before a `*.wildcard` host (one
//! DNS label, as the Ingress spec says) before host-less rules; within a host, the longest
//! matching path, `Exact` before `Prefix` at equal length (`ImplementationSpecific` is treated
//! as `Prefix`, element-wise: `/foo` matches `/foo/bar`, not `/foobar`); then the
//! `defaultBackend`. When two Ingresses claim the same host, path and type, the older one wins
//! (as ingress-nginx). Pure: no I/O, unit-tested in `routes_tests.rs`.
//!
//! What it does not: resolve a backend to endpoints ([`super::backends`]) or decide which
//! Ingresses are served ([`super::class`]).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

/// A Service port as an Ingress backend names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

/// `namespace/name` and port of a backend Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    pub port: PortRef,
}

/// Where a matched request goes, and which Ingress said so (for events and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `namespace/name` of the Ingress.
    pub ingress: String,
    /// The Service, or `None` for a backend this node cannot serve (a `resource` backend, or a
    /// service backend without a port): such requests get 503.
    pub service: Option<ServiceRef>,
}

/// How a rule's path matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Exact,
    Prefix,
}

#[derive(Debug, Clone)]
struct PathRule {
    /// For `Prefix`, without trailing slashes (`""` matches everything).
    path: String,
    kind: PathKind,
    target: Arc<Target>,
}

impl PathRule {
    fn matches(&self, path: &str) -> bool {
        match self.kind {
            PathKind::Exact => self.path == path,
            PathKind::Prefix => {
                self.path.is_empty()
                    || path
                        .strip_prefix(self.path.as_str())
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
        }
    }
}

/// The path rules of one host, in match order.
#[derive(Debug, Clone, Default)]
struct HostRules {
    paths: Vec<PathRule>,
}

impl HostRules {
    fn add(&mut self, rule: PathRule) {
        // First come (older Ingress) wins a duplicate.
        if !self.paths.iter().any(|p| p.path == rule.path && p.kind == rule.kind) {
            self.paths.push(rule);
        }
    }

    /// Longest path first; at equal length `Exact` before `Prefix`. Stable, so an older
    /// Ingress's rule stays first among equals.
    fn sort(&mut self) {
        self.paths.sort_by_key(|p| (std::cmp::Reverse(p.path.len()), p.kind != PathKind::Exact));
    }

    fn find(&self, path: &str) -> Option<&Arc<Target>> {
        self.paths.iter().find(|p| p.matches(path)).map(|p| &p.target)
    }
}

/// Every served Ingress's rules, merged.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    exact: HashMap<String, HostRules>,
    /// Keyed by the suffix after `*.` (`*.example.com` → `example.com`).
    wildcard: HashMap<String, HostRules>,
    any_host: HostRules,
    default: Option<Arc<Target>>,
}

/// The host part of a `Host` header or `:authority`: lower case, without port or final dot.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal: `[::1]:80`.
        rest.split_once(']').map_or(rest, |(addr, _)| addr)
    } else {
        host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h)
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// The `Target` of an Ingress backend.
fn target_of(ingress: &str, namespace: &str, backend: &IngressBackend) -> Target {
    let service = backend.service.as_ref().and_then(|svc| {
        let port = svc.port.as_ref()?;
        let port = match (&port.name, port.number) {
            (Some(name), _) if !name.is_empty() => PortRef::Name(name.clone()),
            (_, Some(number)) => PortRef::Number(number),
            _ => return None,
        };
        Some(ServiceRef { namespace: namespace.to_string(), name: svc.name.clone(), port })
    });
    Target { ingress: ingress.to_string(), service }
}

/// The `namespace/name` key of an object.
pub fn key_of(ingress: &Ingress) -> String {
    format!(
        "{}/{}",
        ingress.metadata.namespace.as_deref().unwrap_or("default"),
        ingress.metadata.name.as_deref().unwrap_or("")
    )
}

impl RouteTable {
    /// The table of `ingresses`, which must already be the served ones; they are ordered
    /// oldest first here, so conflicts resolve the same way on every node.
    pub fn build<'a>(ingresses: impl IntoIterator<Item = &'a Ingress>) -> RouteTable {
        let mut ordered: Vec<&Ingress> = ingresses.into_iter().collect();
        ordered.sort_by_key(|i| (i.metadata.creation_timestamp.as_ref().map(|t| t.0), key_of(i)));
        let mut table = RouteTable::default();
        for ingress in ordered {
            let key = key_of(ingress);
            let ns = ingress.metadata.namespace.as_deref().unwrap_or("default");
            let Some(spec) = &ingress.spec else { continue };
            if let (None, Some(backend)) = (&table.default, &spec.default_backend) {
                table.default = Some(Arc::new(target_of(&key, ns, backend)));
            }
            for rule in spec.rules.iter().flatten() {
                let host = rule.host.as_deref().map(normalize_host).filter(|h| !h.is_empty());
                let rules = match host {
                    None => &mut table.any_host,
                    Some(h) => match h.strip_prefix("*.") {
                        Some(suffix) => table.wildcard.entry(suffix.to_string()).or_default(),
                        None => table.exact.entry(h).or_default(),
                    },
                };
                for path in rule.http.iter().flat_map(|h| &h.paths) {
                    let kind = if path.path_type == "Exact" { PathKind::Exact } else { PathKind::Prefix };
                    let raw = path.path.as_deref().unwrap_or("/");
                    let path_str = match kind {
                        PathKind::Exact => raw.to_string(),
                        PathKind::Prefix => raw.trim_end_matches('/').to_string(),
                    };
                    let target = Arc::new(target_of(&key, ns, &path.backend));
                    rules.add(PathRule { path: path_str, kind, target });
                }
            }
        }
        for rules in table.exact.values_mut().chain(table.wildcard.values_mut()) {
            rules.sort();
        }
        table.any_host.sort();
        table
    }

    /// The target of a request to `host` (a raw `Host`; normalised here) and `path` (without
    /// the query), or `None` (404).
    pub fn route(&self, host: &str, path: &str) -> Option<&Arc<Target>> {
        let host = normalize_host(host);
        let exact = self.exact.get(&host);
        // A wildcard covers exactly one label: `*.example.com` matches `a.example.com` only.
        let wildcard = host.split_once('.').and_then(|(label, rest)| (!label.is_empty()).then_some(rest));
        let wildcard = wildcard.and_then(|suffix| self.wildcard.get(suffix));
        [exact, wildcard, Some(&self.any_host)]
            .into_iter()
            .flatten()
            .find_map(|rules| rules.find(path))
            .or(self.default.as_ref())
    }

    /// Every Service a route may send to (each once).
    pub fn services(&self) -> Vec<&ServiceRef> {
        let mut all: Vec<&ServiceRef> = self
            .exact
            .values()
            .chain(self.wildcard.values())
            .chain(std::iter::once(&self.any_host))
            .flat_map(|rules| rules.paths.iter().map(|p| &p.target))
            .chain(self.default.iter())
            .filter_map(|t| t.service.as_ref())
            .collect();
        all.sort();
        all.dedup();
        all
    }
}
