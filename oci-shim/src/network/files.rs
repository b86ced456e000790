//! The pod's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`, written into a per-pod
//! directory from which the runtime bind-mounts them into every container of the pod (as
//! kubelet does — the image's own copies would know nothing of the pod).
//!
//! What it owns: the file contents (pure functions, unit-tested) and writing them. What it does
//! not: choose the DNS policy or find the cluster DNS service (the caller passes
//! [`Dns`]), or mount anything.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where the host's resolver configuration is read from for [`Dns::Host`].
pub const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// Why the pod's files could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("invalid hostname {0:?}: use lowercase letters, digits and '-' (at most 63)")]
    InvalidHostname(String),
    #[error("reading the host's resolver configuration {path}: {source}")]
    HostResolv { path: PathBuf, source: std::io::Error },
    #[error("writing pod file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// A `hostAliases` entry: extra names for `ip` in `/etc/hosts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAlias {
    pub ip: IpAddr,
    pub hostnames: Vec<String>,
}

/// Which resolver configuration the pod gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dns {
    /// `ClusterFirst` with cluster DNS configured: the cluster nameservers, searches
    /// `<ns>.svc.<domain> svc.<domain> <domain>`, `options ndots:5`.
    Cluster { nameservers: Vec<IpAddr>, namespace: String, cluster_domain: String },
    /// No cluster DNS (or `Default` policy): the host's `resolv.conf` (from `path`) minus
    /// loopback nameservers, which inside the pod would point at the pod itself.
    Host { path: PathBuf },
    /// The pod's `dnsPolicy`/`dnsConfig` over the host's `resolv.conf` at `host`
    /// ([`pod_resolv_conf`](super::resolv::pod_resolv_conf)).
    Pod { dns: super::resolv::PodDns, host: PathBuf },
}

/// Everything the three files are made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFiles {
    /// The pod's hostname (`spec.hostname` or the pod name).
    pub hostname: String,
    /// The fully qualified name when the pod has a subdomain
    /// (`<hostname>.<subdomain>.<ns>.svc.<domain>`), listed before the short name.
    pub fqdn: Option<String>,
    pub pod_ip: IpAddr,
    pub host_aliases: Vec<HostAlias>,
    pub dns: Dns,
}

/// The written files, ready to be bind-mounted at `/etc/hosts`, `/etc/hostname` and
/// `/etc/resolv.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFilePaths {
    pub hosts: PathBuf,
    pub hostname: PathBuf,
    pub resolv_conf: PathBuf,
}

/// Writes `hosts`, `hostname` and `resolv.conf` into `dir` (created if missing), each
/// atomically (write, then rename), so a container starting meanwhile never sees half a file.
pub async fn write_pod_files(dir: &Path, files: &PodFiles) -> Result<PodFilePaths, FilesError> {
    check_hostname(&files.hostname)?;
    let resolv = match &files.dns {
        Dns::Cluster { nameservers, namespace, cluster_domain } => {
            cluster_resolv_conf(nameservers, namespace, cluster_domain)
        }
        Dns::Host { path } => {
            let host = tokio::fs::read_to_string(path)
                .await
                .map_err(|source| FilesError::HostResolv { path: path.clone(), source })?;
            host_resolv_conf(&host)
        }
        Dns::Pod { dns, host } => {
            let text = if dns.needs_host() {
                tokio::fs::read_to_string(host)
                    .await
                    .map_err(|source| FilesError::HostResolv { path: host.clone(), source })?
            } else {
                String::new()
            };
            super::resolv::pod_resolv_conf(dns, &text).render()
        }
    };
    tokio::fs::create_dir_all(dir).await.map_err(|source| FilesError::Write { path: dir.to_path_buf(), source })?;
    let paths =
        PodFilePaths { hosts: dir.join("hosts"), hostname: dir.join("hostname"), resolv_conf: dir.join("resolv.conf") };
    write_atomic(&paths.hosts, &hosts_file(&files.hostname, files.fqdn.as_deref(), files.pod_ip, &files.host_aliases))
        .await?;
    write_atomic(&paths.hostname, &format!("{}\n", files.hostname)).await?;
    write_atomic(&paths.resolv_conf, &resolv).await?;
    Ok(paths)
}

async fn write_atomic(path: &Path, contents: &str) -> Result<(), FilesError> {
    let err = |source| FilesError::Write { path: path.to_path_buf(), source };
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, contents).await.map_err(err)?;
    tokio::fs::rename(&tmp, path).await.map_err(err)
}

/// A DNS label: what `/etc/hostname` and `sethostname` accept from a pod.
fn check_hostname(name: &str) -> Result<(), FilesError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok { Ok(()) } else { Err(FilesError::InvalidHostname(name.to_string())) }
}

/// `/etc/hosts` as kubelet writes it: localhost lines, the pod's own name(s), then hostAliases.
pub fn hosts_file(hostname: &str, fqdn: Option<&str>, pod_ip: IpAddr, aliases: &[HostAlias]) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    match fqdn {
        Some(fqdn) => out.push_str(&format!("{pod_ip}\t{fqdn}\t{hostname}\n")),
        None => out.push_str(&format!("{pod_ip}\t{hostname}\n")),
    }
    let aliases: Vec<&HostAlias> = aliases.iter().filter(|a| !a.hostnames.is_empty()).collect();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            out.push_str(&format!("{}\t{}\n", alias.ip, alias.hostnames.join("\t")));
        }
    }
    out
}

/// `resolv.conf` for `ClusterFirst` with cluster DNS.
pub fn cluster_resolv_conf(nameservers: &[IpAddr], namespace: &str, cluster_domain: &str) -> String {
    let mut out = format!("search {namespace}.svc.{cluster_domain} svc.{cluster_domain} {cluster_domain}\n");
    for ns in nameservers {
        out.push_str(&format!("nameserver {ns}\n"));
    }
    out.push_str("options ndots:5\n");
    out
}

/// The host's `resolv.conf` minus nameservers on loopback (a local stub resolver such as
/// systemd-resolved's 127.0.0.53 is unreachable from the pod's own network namespace).
pub fn host_resolv_conf(host: &str) -> String {
    let mut out = String::new();
    for line in host.lines() {
        let mut words = line.split_whitespace();
        let loopback_server = words.next() == Some("nameserver")
            && words.next().and_then(|ip| ip.parse::<IpAddr>().ok()).is_some_and(|ip| ip.is_loopback());
        if !loopback_server {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("valid IP")
    }

    #[test]
    fn hosts_has_localhost_pod_and_aliases() {
        let aliases = vec![
            HostAlias { ip: ip("10.1.2.3"), hostnames: vec!["foo.local".into(), "bar.local".into()] },
            HostAlias { ip: ip("10.1.2.4"), hostnames: vec![] },
        ];
        let hosts = hosts_file("web-0", None, ip("10.244.77.5"), &aliases);
        assert!(hosts.contains("127.0.0.1\tlocalhost\n"));
        assert!(hosts.contains("::1\tlocalhost ip6-localhost ip6-loopback\n"));
        assert!(hosts.contains("10.244.77.5\tweb-0\n"));
        assert!(hosts.ends_with("# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"), "{hosts}");
        assert!(!hosts.contains("10.1.2.4"));

        let with_fqdn = hosts_file("web-0", Some("web-0.nginx.default.svc.cluster.local"), ip("10.244.77.5"), &[]);
        assert!(with_fqdn.contains("10.244.77.5\tweb-0.nginx.default.svc.cluster.local\tweb-0\n"));
        assert!(!with_fqdn.contains("HostAliases"));
    }

    #[test]
    fn cluster_first_resolv_conf() {
        let conf = cluster_resolv_conf(&[ip("10.96.0.10")], "shop", "cluster.local");
        assert_eq!(
            conf,
            "search shop.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn host_resolv_conf_drops_loopback_nameservers() {
        let host =
            "# generated\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 192.168.1.1\nsearch lan\noptions edns0\n";
        assert_eq!(host_resolv_conf(host), "# generated\nnameserver 192.168.1.1\nsearch lan\noptions edns0\n");
    }

    #[test]
    fn hostnames_are_dns_labels() {
        assert!(check_hostname("web-0").is_ok());
        for bad in ["", "-a", "a-", "Web", "a.b", "a/b", &"x".repeat(64)] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn files_are_written_into_the_pod_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host_conf = dir.path().join("host-resolv.conf");
        std::fs::write(&host_conf, "nameserver 127.0.0.1\nnameserver 9.9.9.9\n").expect("write");
        let files = PodFiles {
            hostname: "web".into(),
            fqdn: None,
            pod_ip: IpAddr::V4(Ipv4Addr::new(10, 244, 77, 9)),
            host_aliases: vec![],
            dns: Dns::Host { path: host_conf },
        };
        let paths = write_pod_files(&dir.path().join("pod"), &files).await.expect("written");
        assert_eq!(std::fs::read_to_string(&paths.hostname).expect("hostname"), "web\n");
        assert!(std::fs::read_to_string(&paths.hosts).expect("hosts").contains("10.244.77.9\tweb\n"));
        assert_eq!(std::fs::read_to_string(&paths.resolv_conf).expect("resolv"), "nameserver 9.9.9.9\n");

        let missing = PodFiles { dns: Dns::Host { path: dir.path().join("nope") }, ..files };
        let err = write_pod_files(&dir.path().join("pod2"), &missing).await.expect_err("no host resolv.conf");
        assert!(matches!(err, FilesError::HostResolv { .. }));
    }
}
