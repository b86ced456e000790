//! Cluster names for guests: [`NameResolver`], what a pod's `resolv.conf` would do for a
//! container, done in-process for a WASM guest.
//!
//! The embedder (the node agent) supplies the cluster's names as a [`ClusterNames`] trait
//! object (its record cache) and the pod's search list and `ndots`; the guest's
//! `wasi:sockets/ip-name-lookup` (`lookup.rs`) and its outgoing `wasi:http` requests
//! (`outgoing.rs`) ask [`NameResolver::lookup`] first. Expansion follows glibc's resolver: an
//! absolute name (trailing dot) is tried as is; a name with at least `ndots` dots as is first,
//! then with each search domain; a shorter one with each search domain first, then as is.
//! Only candidates inside the cluster zone are answered here; if none matches, a name inside
//! the zone is unresolvable (the zone is authoritative), anything else goes to the host's
//! resolver as before — which keeps its own search path for names outside the cluster.
//!
//! What it does not own: the records (the embedder's cache) or the host resolution itself.

use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::Arc;

/// `ndots` of a Kubernetes pod's `resolv.conf`.
pub const DEFAULT_NDOTS: usize = 5;

/// What the cluster zone says about one absolute name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterAnswer {
    /// The name's addresses.
    Addresses(Vec<IpAddr>),
    /// An alias of a name outside the zone (an `ExternalName` Service), resolved by the host.
    Alias(String),
    /// A name of the zone without addresses.
    NoAddresses,
}

/// The cluster's names, as the embedder knows them.
pub trait ClusterNames: Send + Sync + Debug {
    /// The cluster domain, lowercase, without dots at either end (`cluster.local`).
    fn zone(&self) -> &str;
    /// What the zone says about `fqdn` (lowercase, no trailing dot, inside [`Self::zone`]).
    fn lookup(&self, fqdn: &str) -> ClusterAnswer;
}

/// How a guest's name resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A cluster name with these addresses.
    Cluster(Vec<IpAddr>),
    /// A name (of the zone, or none of the candidates) that does not exist: the guest gets
    /// `name-unresolvable`.
    NotFound,
    /// Resolve this name with the host's resolver (not a cluster name, or an alias's target).
    Host(String),
}

/// A pod's resolver: cluster names from [`ClusterNames`], expanded by the pod's search list.
#[derive(Clone, Debug)]
pub struct NameResolver {
    names: Arc<dyn ClusterNames>,
    searches: Vec<String>,
    ndots: usize,
}

impl NameResolver {
    /// A resolver with the pod's `searches` (as its `resolv.conf` lists them) and `ndots`.
    pub fn new(names: Arc<dyn ClusterNames>, searches: Vec<String>, ndots: usize) -> Self {
        let searches =
            searches.into_iter().map(|s| s.trim_matches('.').to_ascii_lowercase()).filter(|s| !s.is_empty()).collect();
        NameResolver { names, searches, ndots }
    }

    /// The usual search list of a `ClusterFirst` pod in `namespace`:
    /// `<ns>.svc.<zone> svc.<zone> <zone>`, `ndots:5`.
    pub fn cluster_first(names: Arc<dyn ClusterNames>, namespace: &str) -> Self {
        let zone = names.zone().to_owned();
        let searches = vec![format!("{namespace}.svc.{zone}"), format!("svc.{zone}"), zone];
        Self::new(names, searches, DEFAULT_NDOTS)
    }

    /// The names tried for `name`, in order (lowercase, without trailing dots).
    pub fn candidates(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        if let Some(absolute) = name.strip_suffix('.') {
            return vec![absolute.to_owned()];
        }
        let expanded = self.searches.iter().map(|s| format!("{name}.{s}"));
        if name.matches('.').count() >= self.ndots {
            std::iter::once(name.clone()).chain(expanded).collect()
        } else {
            expanded.chain(std::iter::once(name.clone())).collect()
        }
    }

    /// How `name` resolves (see the module docs). IP literals and empty names go to the host
    /// resolver unchanged, which answers or rejects them as it always did.
    pub fn lookup(&self, name: &str) -> Lookup {
        if name.is_empty() || name.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() || !name.is_ascii() {
            return Lookup::Host(name.to_owned());
        }
        for candidate in self.candidates(name) {
            if !self.in_zone(&candidate) {
                continue;
            }
            match self.names.lookup(&candidate) {
                ClusterAnswer::Addresses(ips) if !ips.is_empty() => return Lookup::Cluster(ips),
                ClusterAnswer::Alias(target) => return Lookup::Host(target),
                ClusterAnswer::Addresses(_) | ClusterAnswer::NoAddresses => {}
            }
        }
        if self.in_zone(name.trim_end_matches('.').to_ascii_lowercase().as_str()) {
            Lookup::NotFound
        } else {
            Lookup::Host(name.to_owned())
        }
    }

    fn in_zone(&self, fqdn: &str) -> bool {
        let zone = self.names.zone();
        fqdn == zone || fqdn.strip_suffix(zone).is_some_and(|rest| rest.ends_with('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Debug)]
    struct Fixture(HashMap<&'static str, ClusterAnswer>);

    impl ClusterNames for Fixture {
        fn zone(&self) -> &str {
            "cluster.local"
        }
        fn lookup(&self, fqdn: &str) -> ClusterAnswer {
            self.0.get(fqdn).cloned().unwrap_or(ClusterAnswer::NoAddresses)
        }
    }

    fn ip(s: &str) -> Vec<IpAddr> {
        vec![s.parse().expect("ip")]
    }

    fn resolver(namespace: &str) -> NameResolver {
        let names = Fixture(HashMap::from([
            ("hello.default.svc.cluster.local", ClusterAnswer::Addresses(ip("10.96.0.20"))),
            ("db.prod.svc.cluster.local", ClusterAnswer::Addresses(ip("10.96.0.30"))),
            ("ext.default.svc.cluster.local", ClusterAnswer::Alias("example.com".to_owned())),
        ]));
        NameResolver::cluster_first(Arc::new(names), namespace)
    }

    #[test]
    fn short_names_expand_by_the_search_list_first() {
        let r = resolver("default");
        assert_eq!(
            r.candidates("hello"),
            ["hello.default.svc.cluster.local", "hello.svc.cluster.local", "hello.cluster.local", "hello"]
        );
        // Four dots < ndots 5: still searched first, as a pod's resolv.conf would.
        assert_eq!(r.candidates("a.b.c.d.e")[0], "a.b.c.d.e.default.svc.cluster.local");
        // Five dots: as is first.
        assert_eq!(r.candidates("a.b.c.d.e.f")[0], "a.b.c.d.e.f");
        assert_eq!(r.candidates("Hello.Default.svc.cluster.local."), ["hello.default.svc.cluster.local"]);
    }

    #[test]
    fn cluster_names_resolve_from_the_cache() {
        let r = resolver("default");
        assert_eq!(r.lookup("hello"), Lookup::Cluster(ip("10.96.0.20")));
        assert_eq!(r.lookup("hello.default"), Lookup::Cluster(ip("10.96.0.20")));
        assert_eq!(r.lookup("hello.default.svc"), Lookup::Cluster(ip("10.96.0.20")));
        assert_eq!(r.lookup("hello.default.svc.cluster.local"), Lookup::Cluster(ip("10.96.0.20")));
        assert_eq!(r.lookup("HELLO.default.svc.cluster.local."), Lookup::Cluster(ip("10.96.0.20")));
        assert_eq!(r.lookup("db.prod"), Lookup::Cluster(ip("10.96.0.30")), "another namespace");
        assert_eq!(r.lookup("db"), Lookup::Host("db".to_owned()), "not in this pod's namespace");
        assert_eq!(resolver("prod").lookup("db"), Lookup::Cluster(ip("10.96.0.30")));
    }

    #[test]
    fn zone_names_that_do_not_exist_are_not_found_and_others_go_to_the_host() {
        let r = resolver("default");
        assert_eq!(r.lookup("nothere.default.svc.cluster.local"), Lookup::NotFound);
        assert_eq!(r.lookup("cluster.local"), Lookup::NotFound);
        assert_eq!(r.lookup("example.com"), Lookup::Host("example.com".to_owned()));
        assert_eq!(r.lookup("nothere"), Lookup::Host("nothere".to_owned()));
        assert_eq!(r.lookup("notcluster.local"), Lookup::Host("notcluster.local".to_owned()));
        assert_eq!(r.lookup("ext"), Lookup::Host("example.com".to_owned()), "ExternalName alias");
        assert_eq!(r.lookup("10.0.0.1"), Lookup::Host("10.0.0.1".to_owned()));
        assert_eq!(r.lookup("::1"), Lookup::Host("::1".to_owned()));
        assert_eq!(r.lookup(""), Lookup::Host(String::new()));
    }
}
