//! A pod's `resolv.conf` from its `dnsPolicy` and `dnsConfig`, as the kubelet computes it
//! (`pkg/kubelet/network/dns`): pure functions over the host's resolver configuration.
//!
//! - `ClusterFirst` (the default; `ClusterFirstWithHostNet` too): the cluster nameservers,
//!   searches `<ns>.svc.<domain> svc.<domain> <domain>` followed by the host's, `ndots:5`.
//!   Without a cluster DNS it falls back to `Default`, as the kubelet does.
//! - `Default`: the host's nameservers (minus loopback ones, unreachable from the pod's own
//!   network namespace), searches and options.
//! - `None`: nothing but `dnsConfig`.
//!
//! `dnsConfig` is then merged: nameservers and searches appended without duplicates, options
//! merged by name (the pod's value wins). At most 3 nameservers and 32 search domains are
//! written (glibc's and the kubelet's limits); the rest is dropped.

use std::net::IpAddr;

/// glibc reads at most this many nameservers.
pub const MAX_NAMESERVERS: usize = 3;
/// The kubelet keeps at most this many search domains.
pub const MAX_SEARCHES: usize = 32;

/// `spec.dnsPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DnsPolicy {
    /// `ClusterFirst` / `ClusterFirstWithHostNet`.
    #[default]
    ClusterFirst,
    /// `Default`: the node's resolver configuration.
    Default,
    /// `None`: only `dnsConfig`.
    None,
}

impl DnsPolicy {
    /// The policy of `spec.dnsPolicy` (unknown values: `ClusterFirst`, the API default).
    pub fn parse(policy: Option<&str>) -> Self {
        match policy {
            Some("Default") => Self::Default,
            Some("None") => Self::None,
            _ => Self::ClusterFirst,
        }
    }
}

/// The cluster DNS a `ClusterFirst` pod is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDns {
    pub nameservers: Vec<IpAddr>,
    /// The pod's namespace.
    pub namespace: String,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
}

/// A pod's DNS settings: its policy, the cluster DNS (if the node has one) and `dnsConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodDns {
    pub policy: DnsPolicy,
    pub cluster: Option<ClusterDns>,
    /// `dnsConfig.nameservers`.
    pub nameservers: Vec<String>,
    /// `dnsConfig.searches`.
    pub searches: Vec<String>,
    /// `dnsConfig.options` as (name, value).
    pub options: Vec<(String, Option<String>)>,
}

impl PodDns {
    /// Whether the host's `resolv.conf` is read for this pod.
    pub fn needs_host(&self) -> bool {
        self.policy != DnsPolicy::None
    }
}

/// The three settings of a `resolv.conf`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub searches: Vec<String>,
    /// `name` or `name:value`.
    pub options: Vec<String>,
}

impl ResolvConf {
    /// Reads `nameserver`, `search`/`domain` and `options` lines (the last `search` wins, as
    /// in glibc).
    pub fn parse(text: &str) -> Self {
        let mut conf = Self::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => conf.nameservers.extend(words.next().map(str::to_owned)),
                Some("search" | "domain") => conf.searches = words.map(str::to_owned).collect(),
                Some("options") => conf.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        conf
    }

    /// The file text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// The pod's `resolv.conf` given the host's (see the module docs).
pub fn pod_resolv_conf(dns: &PodDns, host: &str) -> ResolvConf {
    let host = ResolvConf::parse(host);
    let host_nameservers = || -> Vec<String> {
        host.nameservers.iter().filter(|ns| !ns.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())).cloned().collect()
    };
    let mut conf = match (dns.policy, &dns.cluster) {
        (DnsPolicy::None, _) => ResolvConf::default(),
        (DnsPolicy::ClusterFirst, Some(cluster)) => {
            let domain = cluster.domain.trim_matches('.');
            let mut searches =
                vec![format!("{}.svc.{domain}", cluster.namespace), format!("svc.{domain}"), domain.to_owned()];
            searches.extend(host.searches.iter().cloned());
            ResolvConf {
                nameservers: cluster.nameservers.iter().map(IpAddr::to_string).collect(),
                searches,
                options: vec!["ndots:5".to_owned()],
            }
        }
        (DnsPolicy::ClusterFirst | DnsPolicy::Default, _) => ResolvConf {
            nameservers: host_nameservers(),
            searches: host.searches.clone(),
            options: host.options.clone(),
        },
    };
    conf.nameservers.extend(dns.nameservers.iter().cloned());
    conf.searches.extend(dns.searches.iter().cloned());
    conf.nameservers = dedup(conf.nameservers);
    conf.nameservers.truncate(MAX_NAMESERVERS);
    conf.searches = dedup(conf.searches);
    conf.searches.truncate(MAX_SEARCHES);
    conf.options = merge_options(&conf.options, &dns.options);
    conf
}

/// Keeps the first of equal entries, in order.
fn dedup(items: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        if !item.is_empty() && !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// `base` options with `pod` ones merged in by name: a pod option replaces a base option of
/// the same name (kubelet's `mergeDNSOptions`).
fn merge_options(base: &[String], pod: &[(String, Option<String>)]) -> Vec<String> {
    let name = |o: &str| o.split(':').next().unwrap_or(o).to_owned();
    let mut out: Vec<String> = Vec::new();
    let rendered = pod.iter().map(|(n, v)| match v {
        Some(v) => format!("{n}:{v}"),
        None => n.clone(),
    });
    for option in base.iter().cloned().chain(rendered) {
        if let Some(existing) = out.iter_mut().find(|o| name(o) == name(&option)) {
            *existing = option;
        } else {
            out.push(option);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str =
        "# generated\nnameserver 127.0.0.53\nnameserver 192.0.2.1\nsearch lan corp\noptions edns0 ndots:2\n";

    fn cluster() -> Option<ClusterDns> {
        Some(ClusterDns {
            nameservers: vec!["10.96.0.10".parse().expect("ip")],
            namespace: "shop".into(),
            domain: "cluster.local".into(),
        })
    }

    #[test]
    fn cluster_first_names_the_cluster_dns_then_host_searches() {
        let conf = pod_resolv_conf(&PodDns { cluster: cluster(), ..PodDns::default() }, HOST);
        assert_eq!(
            conf.render(),
            "search shop.svc.cluster.local svc.cluster.local cluster.local lan corp\n\
             nameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn default_policy_and_cluster_first_without_cluster_dns_use_the_host() {
        let expected = "search lan corp\nnameserver 192.0.2.1\noptions edns0 ndots:2\n";
        let dns = PodDns { policy: DnsPolicy::Default, cluster: cluster(), ..PodDns::default() };
        assert_eq!(pod_resolv_conf(&dns, HOST).render(), expected);
        assert_eq!(pod_resolv_conf(&PodDns::default(), HOST).render(), expected);
    }

    #[test]
    fn none_policy_is_dns_config_only_and_config_merges() {
        let dns = PodDns {
            policy: DnsPolicy::None,
            nameservers: vec!["1.1.1.1".into(), "1.1.1.1".into()],
            searches: vec!["a.example".into()],
            options: vec![("ndots".into(), Some("1".into())), ("rotate".into(), None)],
            ..PodDns::default()
        };
        assert_eq!(
            pod_resolv_conf(&dns, HOST).render(),
            "search a.example\nnameserver 1.1.1.1\noptions ndots:1 rotate\n"
        );
        assert_eq!(pod_resolv_conf(&PodDns { policy: DnsPolicy::None, ..PodDns::default() }, HOST).render(), "");

        let merged = PodDns {
            cluster: cluster(),
            nameservers: vec!["9.9.9.9".into(), "8.8.8.8".into(), "8.8.4.4".into()],
            searches: vec!["svc.cluster.local".into(), "extra".into()],
            options: vec![("ndots".into(), Some("2".into())), ("edns0".into(), None)],
            ..PodDns::default()
        };
        let conf = pod_resolv_conf(&merged, HOST);
        assert_eq!(conf.nameservers, ["10.96.0.10", "9.9.9.9", "8.8.8.8"], "at most three");
        assert_eq!(
            conf.searches,
            ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "lan", "corp", "extra"]
        );
        assert_eq!(conf.options, ["ndots:2", "edns0"], "the pod's ndots wins");
    }

    #[test]
    fn policies_parse() {
        assert_eq!(DnsPolicy::parse(None), DnsPolicy::ClusterFirst);
        assert_eq!(DnsPolicy::parse(Some("ClusterFirstWithHostNet")), DnsPolicy::ClusterFirst);
        assert_eq!(DnsPolicy::parse(Some("Default")), DnsPolicy::Default);
        assert_eq!(DnsPolicy::parse(Some("None")), DnsPolicy::None);
    }
}
