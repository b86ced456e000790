//! Cluster names for WASM guests: the node's [`ClusterRecords`] (the cache its cluster DNS
//! server answers from, fed by one pair of watches in `cluster_dns.rs`) as the
//! [`ClusterNames`] of `skiff-wasm-runtime`, and the [`NameResolver`] a pod's guests get from
//! its `dnsPolicy`/`dnsConfig` — the same search list and `ndots` its containers' `resolv.conf`
//! would have (`pod_resolv_conf`), so a name resolves the same in both kinds of container.
//!
//! `ClusterFirst` (the default) gets cluster names; `Default` and `None` keep the host's
//! resolver only, as their `resolv.conf` names no cluster DNS.

use std::sync::Arc;

use skiff_dns::{ClusterRecords, NameAddresses};
use skiff_oci_shim::network::{DnsPolicy, PodDns, pod_resolv_conf};
use skiff_wasm_runtime::{ClusterAnswer, ClusterNames, DEFAULT_NDOTS, NameResolver};

/// The node's record cache, seen by guests.
#[derive(Debug, Clone)]
pub struct RecordNames(pub ClusterRecords);

impl ClusterNames for RecordNames {
    fn zone(&self) -> &str {
        &self.0.config().zone
    }

    fn lookup(&self, fqdn: &str) -> ClusterAnswer {
        match self.0.addresses(fqdn) {
            NameAddresses::Addresses(ips) => ClusterAnswer::Addresses(ips),
            NameAddresses::Alias(target) => ClusterAnswer::Alias(target),
            NameAddresses::NoAddresses | NameAddresses::NotOurs => ClusterAnswer::NoAddresses,
        }
    }
}

/// The resolver of a pod's guests, `None` when the pod does not use the cluster DNS.
pub fn pod_resolver(names: &Arc<dyn ClusterNames>, dns: &PodDns) -> Option<NameResolver> {
    if dns.policy != DnsPolicy::ClusterFirst || dns.cluster.is_none() {
        return None;
    }
    // No host configuration: the host's own search domains stay with the host resolver,
    // which every name the cluster does not know falls back to.
    let conf = pod_resolv_conf(dns, "");
    let ndots = conf
        .options
        .iter()
        .find_map(|o| o.strip_prefix("ndots:").and_then(|n| n.parse().ok()))
        .unwrap_or(DEFAULT_NDOTS);
    Some(NameResolver::new(Arc::clone(names), conf.searches, ndots))
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_dns::ZoneConfig;
    use skiff_oci_shim::network::ClusterDns;
    use skiff_wasm_runtime::Lookup;

    fn names() -> Arc<dyn ClusterNames> {
        let records = ClusterRecords::new(ZoneConfig::default());
        let service = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "web", "name": "hello"},
            "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]}
        }))
        .expect("service");
        records.upsert_service(&service);
        Arc::new(RecordNames(records))
    }

    fn dns(policy: DnsPolicy) -> PodDns {
        PodDns {
            policy,
            cluster: Some(ClusterDns {
                nameservers: vec!["10.96.0.10".parse().expect("ip")],
                namespace: "web".to_owned(),
                domain: "cluster.local".to_owned(),
            }),
            ..PodDns::default()
        }
    }

    #[test]
    fn cluster_first_pods_resolve_service_names_in_their_namespace() {
        let resolver = pod_resolver(&names(), &dns(DnsPolicy::ClusterFirst)).expect("a resolver");
        let ip = vec!["10.96.0.20".parse().expect("ip")];
        assert_eq!(resolver.lookup("hello"), Lookup::Cluster(ip.clone()));
        assert_eq!(resolver.lookup("hello.web.svc.cluster.local"), Lookup::Cluster(ip));
        assert_eq!(resolver.lookup("nothere.web.svc.cluster.local"), Lookup::NotFound);
    }

    #[test]
    fn dns_config_searches_and_ndots_apply_and_other_policies_get_none() {
        let mut custom = dns(DnsPolicy::ClusterFirst);
        custom.searches = vec!["corp.example".to_owned()];
        custom.options = vec![("ndots".to_owned(), Some("1".to_owned()))];
        let resolver = pod_resolver(&names(), &custom).expect("a resolver");
        assert_eq!(
            resolver.candidates("hello.web"),
            [
                "hello.web",
                "hello.web.web.svc.cluster.local",
                "hello.web.svc.cluster.local",
                "hello.web.cluster.local",
                "hello.web.corp.example"
            ]
        );
        assert!(pod_resolver(&names(), &dns(DnsPolicy::Default)).is_none());
        assert!(pod_resolver(&names(), &dns(DnsPolicy::None)).is_none());
        assert!(pod_resolver(&names(), &PodDns::default()).is_none(), "no cluster DNS on this node");
    }
}
