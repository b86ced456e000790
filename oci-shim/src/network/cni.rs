//! Attaching pods to the node network through the standard CNI plugins.
//!
//! What it owns: ADD / CHECK / DEL of a pod's network namespace against two configuration
//! lists (see [`conflist`](super::conflist): `loopback` on `lo`; `bridge` + `static` IPAM +
//! `portmap` on `eth0`), the results cache that CHECK and DEL need (`prevResult`, as libcni
//! keeps it), and reporting the pod's address. What it does not: choose the address (Skiff's
//! node allocator does; the request carries it), create the namespace ([`netns`](super::netns)),
//! or anything Kubernetes-shaped — callers pass plain values.
//!
//! A failed ADD is undone at once with a best-effort DEL (as containerd does), so a caller
//! never has to guess what half-exists; DEL may still be repeated safely at any time: every
//! plugin in the list runs even if an earlier one failed, and the Debian plugins treat missing
//! veths, namespaces and iptables chains as already deleted.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde_json::Value;
use tracing::{debug, instrument, warn};

use super::conflist::{self, POD_NETWORK};
use super::exec::{Invocation, run_plugin};
use super::result::{PodNetworkStatus, RawResult, status_of};

/// What went wrong attaching or detaching a pod; messages name the plugin and carry its own
/// `msg`/`details`, because they end up in the pod's status.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("invalid pod network request: {0}")]
    InvalidRequest(String),
    #[error("CNI plugin `{plugin}` not found in {dirs:?} (install containernetworking-plugins)")]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },
    #[error("starting CNI plugin `{plugin}`: {source}")]
    Spawn { plugin: String, source: std::io::Error },
    #[error("CNI plugin `{plugin}` {command} failed (code {code}): {msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
    Plugin { plugin: String, command: &'static str, code: u32, msg: String, details: String },
    #[error("CNI plugin `{plugin}` {command} exited with status {status:?}: {output}")]
    Crashed { plugin: String, command: &'static str, status: Option<i32>, output: String },
    #[error("CNI plugin `{plugin}` {command} did not finish within {after:?}")]
    Timeout { plugin: String, command: &'static str, after: Duration },
    #[error("CNI plugin `{plugin}` returned an unusable result: {reason}")]
    BadResult { plugin: String, reason: String },
    #[error("pod sandbox {container_id} has no cached CNI result for network `{network}` (was ADD run?)")]
    NotAdded { container_id: String, network: String },
    #[error("CNI result cache {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
}

/// Transport protocol of a hostPort mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

/// A hostPort: traffic to `host_ip:host_port` (any local address when `None`) goes to the
/// pod's `container_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    pub host_ip: Option<IpAddr>,
}

/// One pod's attachment: the same value is passed to ADD, CHECK and DEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAttachment {
    /// The sandbox id (`CNI_CONTAINERID`): letters, digits, `_`, `.`, `-`.
    pub container_id: String,
    /// The pod's network namespace ([`Netns::path`](super::netns::Netns::path)).
    pub netns: PathBuf,
    /// The address Skiff's allocator picked for the pod, inside [`CniConfig::subnet`].
    pub ip: Ipv4Addr,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    pub port_mappings: Vec<PortMapping>,
}

/// How this node runs the plugins.
#[derive(Debug, Clone)]
pub struct CniConfig {
    /// Where plugin executables are looked up, in order (also `CNI_PATH`).
    pub plugin_dirs: Vec<PathBuf>,
    /// Where ADD results are kept for CHECK and DEL.
    pub cache_dir: PathBuf,
    /// The node bridge (`skiff0`; its address is the pods' gateway, `.1` of the subnet).
    pub bridge: String,
    /// The node's pod subnet.
    pub subnet: Ipv4Net,
    /// Run the plugins inside this network namespace instead of the agent's own (tests, or an
    /// agent that keeps pod networking out of the host's namespace).
    pub host_netns: Option<PathBuf>,
    /// Longest one plugin may run before it is killed.
    pub timeout: Duration,
}

impl CniConfig {
    /// Debian's and the upstream plugin directories, bridge `skiff0`, 30 s per plugin.
    pub fn new(subnet: Ipv4Net, cache_dir: impl Into<PathBuf>) -> CniConfig {
        CniConfig {
            plugin_dirs: vec![PathBuf::from("/usr/lib/cni"), PathBuf::from("/opt/cni/bin")],
            cache_dir: cache_dir.into(),
            bridge: "skiff0".to_string(),
            subnet,
            host_netns: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Runs the CNI plugins for pods. Cheap to clone; holds no state beyond the results cache.
#[derive(Debug, Clone)]
pub struct Cni {
    config: CniConfig,
}

/// `(list, interface)` pairs, in ADD order.
type Lists = [(Value, &'static str); 2];

impl Cni {
    pub fn new(config: CniConfig) -> Cni {
        Cni { config }
    }

    /// The configuration in use.
    pub fn config(&self) -> &CniConfig {
        &self.config
    }

    /// Attaches the pod: `lo` up, `eth0` on the bridge with `pod.ip`, hostPorts mapped. On
    /// failure whatever was set up is deleted again before the error is returned.
    ///
    /// Idempotent: a pod already attached (cached result, CHECK passes) gets its status back
    /// untouched — a second plain ADD would fail on the existing `eth0` and its clean-up would
    /// tear the working attachment down; a stale attachment is deleted and made afresh.
    #[instrument(skip(self, pod), fields(container_id = %pod.container_id, ip = %pod.ip))]
    pub async fn add(&self, pod: &PodAttachment) -> Result<PodNetworkStatus, CniError> {
        self.validate(pod)?;
        let [_, (pod_list, ifname)] = self.lists(pod);
        if let Ok(Some(cached)) = self.read_cache(&pod_list, pod, ifname).await {
            let status = serde_json::from_value::<RawResult>(cached).ok().and_then(|raw| status_of(&raw, ifname));
            match (status, self.check(pod).await) {
                (Some(status), Ok(())) if status.ip == pod.ip => return Ok(status),
                (_, check) => {
                    warn!(check = ?check.err(), "stale CNI attachment; deleting it before ADD");
                    if let Err(e) = self.del(pod).await {
                        warn!(error = %e, "deleting a stale CNI attachment");
                    }
                }
            }
        }
        match self.add_lists(pod).await {
            Ok(status) => Ok(status),
            Err(e) => {
                if let Err(undo) = self.del(pod).await {
                    warn!(error = %undo, "cleaning up after a failed CNI ADD");
                }
                Err(e)
            }
        }
    }

    async fn add_lists(&self, pod: &PodAttachment) -> Result<PodNetworkStatus, CniError> {
        // One list after the other: side by side measured no faster on a loaded 2-core node.
        let [(lo_list, lo), (pod_list, eth0)] = self.lists(pod);
        self.add_list(&lo_list, pod, lo).await?;
        let (plugin, result) = self.add_list(&pod_list, pod, eth0).await?;
        let raw: RawResult = serde_json::from_value(result).map_err(|e| bad(plugin, e))?;
        status_of(&raw, eth0).ok_or_else(|| bad("bridge", "no IPv4 address in the result"))
    }

    /// ADD through one list's plugins in order, each given the previous one's result; caches
    /// and returns the last result (with the plugin that produced it).
    async fn add_list<'l>(
        &self,
        list: &'l Value,
        pod: &PodAttachment,
        ifname: &str,
    ) -> Result<(&'l str, Value), CniError> {
        let runtime = conflist::runtime_config(pod);
        let mut prev: Option<Value> = None;
        let mut last_plugin = "";
        for plugin in conflist::plugins(list).iter().filter(|p| needed(p, pod)) {
            last_plugin = conflist::plugin_type(plugin);
            let stdin = conflist::plugin_stdin(list, plugin, &runtime, prev.as_ref());
            let out = run_plugin(last_plugin, &self.invocation("ADD", pod, ifname), &to_bytes(&stdin)).await?;
            prev = Some(serde_json::from_slice(&out).map_err(|e| bad(last_plugin, e))?);
        }
        let result = prev.ok_or_else(|| bad(last_plugin, "the network list has no plugins"))?;
        self.write_cache(list, pod, ifname, &result).await?;
        Ok((last_plugin, result))
    }

    /// Asks every plugin whether the pod's networking is still as ADD left it.
    #[instrument(skip(self, pod), fields(container_id = %pod.container_id))]
    pub async fn check(&self, pod: &PodAttachment) -> Result<(), CniError> {
        self.validate(pod)?;
        for (list, ifname) in self.lists(pod) {
            let prev = self.read_cache(&list, pod, ifname).await?.ok_or_else(|| CniError::NotAdded {
                container_id: pod.container_id.clone(),
                network: list["name"].as_str().unwrap_or_default().to_string(),
            })?;
            let runtime = conflist::runtime_config(pod);
            for plugin in conflist::plugins(&list).iter().filter(|p| needed(p, pod)) {
                let stdin = conflist::plugin_stdin(&list, plugin, &runtime, Some(&prev));
                let plugin = conflist::plugin_type(plugin);
                match run_plugin(plugin, &self.invocation("CHECK", pod, ifname), &to_bytes(&stdin)).await {
                    Err(e) if is_portmap_ipv6_check_bug(&e) => debug!(error = %e, "ignored: IPv4-only pod"),
                    other => {
                        other?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Detaches the pod: veth, hostPort rules and cached results go. Safe to repeat, and to
    /// call after a failed ADD or once the namespace is gone. Every plugin runs; the first
    /// error is returned (the cache is then kept, so a retry still has `prevResult`).
    #[instrument(skip(self, pod), fields(container_id = %pod.container_id))]
    pub async fn del(&self, pod: &PodAttachment) -> Result<(), CniError> {
        self.validate(pod)?;
        let mut first_error = None;
        for (list, ifname) in self.lists(pod).into_iter().rev() {
            // A missing or unreadable cache only means plugins get no prevResult.
            let prev = self.read_cache(&list, pod, ifname).await.ok().flatten();
            let runtime = conflist::runtime_config(pod);
            let mut failed = false;
            for plugin in conflist::plugins(&list).iter().rev() {
                let stdin = conflist::plugin_stdin(&list, plugin, &runtime, prev.as_ref());
                let plugin = conflist::plugin_type(plugin);
                if let Err(e) = run_plugin(plugin, &self.invocation("DEL", pod, ifname), &to_bytes(&stdin)).await {
                    warn!(error = %e, plugin, "CNI DEL");
                    failed = true;
                    first_error.get_or_insert(e);
                }
            }
            if !failed {
                let path = self.cache_path(&list, pod, ifname);
                match tokio::fs::remove_file(&path).await {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        first_error.get_or_insert(CniError::Cache { path, source: e });
                    }
                    _ => {}
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn lists(&self, pod: &PodAttachment) -> Lists {
        [
            (conflist::loopback_list(), "lo"),
            (conflist::pod_network_list(&self.config.bridge, self.config.subnet, pod.ip), "eth0"),
        ]
    }

    fn invocation<'a>(&'a self, command: &'static str, pod: &'a PodAttachment, ifname: &'a str) -> Invocation<'a> {
        Invocation {
            command,
            container_id: &pod.container_id,
            netns: &pod.netns,
            ifname,
            args: conflist::cni_args(pod),
            plugin_dirs: &self.config.plugin_dirs,
            host_netns: self.config.host_netns.as_deref(),
            timeout: self.config.timeout,
        }
    }

    fn validate(&self, pod: &PodAttachment) -> Result<(), CniError> {
        validate(self.config.subnet, pod).map_err(CniError::InvalidRequest)
    }

    fn cache_path(&self, list: &Value, pod: &PodAttachment, ifname: &str) -> PathBuf {
        let network = list["name"].as_str().unwrap_or(POD_NETWORK);
        self.config.cache_dir.join(format!("{network}-{}-{ifname}.json", pod.container_id))
    }

    async fn write_cache(
        &self,
        list: &Value,
        pod: &PodAttachment,
        ifname: &str,
        result: &Value,
    ) -> Result<(), CniError> {
        let path = self.cache_path(list, pod, ifname);
        let err = |source| CniError::Cache { path: path.clone(), source };
        tokio::fs::create_dir_all(&self.config.cache_dir).await.map_err(err)?;
        let tmp = path.with_extension("json.tmp");
        tokio::fs::write(&tmp, to_bytes(result)).await.map_err(err)?;
        tokio::fs::rename(&tmp, &path).await.map_err(err)
    }

    async fn read_cache(&self, list: &Value, pod: &PodAttachment, ifname: &str) -> Result<Option<Value>, CniError> {
        let path = self.cache_path(list, pod, ifname);
        match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| CniError::Cache { path, source: std::io::Error::other(e) }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CniError::Cache { path, source }),
        }
    }
}

/// Checks what becomes environment variables, file names and plugin config.
fn validate(subnet: Ipv4Net, pod: &PodAttachment) -> Result<(), String> {
    let id_ok = !pod.container_id.is_empty()
        && pod.container_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !pod.container_id.starts_with('.');
    if !id_ok {
        return Err(format!("container id {:?} must be letters, digits, '_', '.', '-'", pod.container_id));
    }
    for (what, v) in [("pod name", &pod.pod_name), ("namespace", &pod.pod_namespace), ("pod uid", &pod.pod_uid)] {
        if v.contains([';', '=']) {
            return Err(format!("{what} {v:?} may not contain ';' or '='"));
        }
    }
    let (ip, net) = (u32::from(pod.ip), u32::from(subnet.network()));
    if !subnet.contains(&pod.ip) || ip <= net + 1 || pod.ip == subnet.broadcast() {
        return Err(format!(
            "address {} is not a pod address of {subnet} (network, gateway .1 and broadcast are reserved)",
            pod.ip
        ));
    }
    if pod.netns.as_os_str().is_empty() || !pod.netns.is_absolute() {
        return Err(format!("network namespace path {:?} must be absolute", pod.netns));
    }
    Ok(())
}

/// Whether ADD and CHECK run `plugin` for `pod`: `portmap` only when the pod maps host ports —
/// with none it does nothing but costs a process start on every pod start. DEL runs every
/// plugin regardless (it is idempotent, and a removal does not know the pod's mappings).
fn needed(plugin: &Value, pod: &PodAttachment) -> bool {
    conflist::plugin_type(plugin) != "portmap" || !pod.port_mappings.is_empty()
}

/// portmap before 1.2 (Debian 12 ships 1.1.1) checks ip6tables chains for every pod, and so
/// fails CHECK of an IPv4-only pod with hostPorts (containernetworking/plugins#819). It checks
/// the IPv4 rules first and reports those as "ipv4 dnat", so tolerating exactly the IPv6
/// message still checks what Skiff set up.
fn is_portmap_ipv6_check_bug(e: &CniError) -> bool {
    matches!(e, CniError::Plugin { plugin, command: "CHECK", msg, .. }
        if plugin == "portmap" && msg.starts_with("could not check ipv6 dnat"))
}

fn bad(plugin: &str, reason: impl std::fmt::Display) -> CniError {
    CniError::BadResult { plugin: plugin.to_string(), reason: reason.to_string() }
}

fn to_bytes(v: &Value) -> Vec<u8> {
    // Serialising a `Value` cannot fail (its map keys are strings).
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn pod(ip: [u8; 4]) -> PodAttachment {
        PodAttachment {
            container_id: "sandbox-1".into(),
            netns: "/run/skiff/netns/sandbox-1".into(),
            ip: Ipv4Addr::from(ip),
            pod_name: "web".into(),
            pod_namespace: "default".into(),
            pod_uid: "1234".into(),
            port_mappings: Vec::new(),
        }
    }

    #[test]
    fn requests_are_checked_before_any_plugin_runs() {
        let subnet: Ipv4Net = "10.244.77.0/24".parse().expect("cidr");
        assert!(validate(subnet, &pod([10, 244, 77, 2])).is_ok());
        for bad_ip in [[10, 244, 77, 0], [10, 244, 77, 1], [10, 244, 77, 255], [10, 244, 78, 2]] {
            assert!(validate(subnet, &pod(bad_ip)).is_err(), "{bad_ip:?}");
        }
        let mut p = pod([10, 244, 77, 2]);
        p.container_id = "../etc".into();
        assert!(validate(subnet, &p).is_err());
        let mut p = pod([10, 244, 77, 2]);
        p.pod_name = "a;b".into();
        assert!(validate(subnet, &p).is_err());
        let mut p = pod([10, 244, 77, 2]);
        p.netns = "relative".into();
        assert!(validate(subnet, &p).is_err());
    }

    #[test]
    fn only_portmaps_ipv6_check_failure_is_tolerated() {
        let err = |plugin: &str, command, msg: &str| CniError::Plugin {
            plugin: plugin.into(),
            command,
            code: 999,
            msg: msg.into(),
            details: String::new(),
        };
        let v6 = "could not check ipv6 dnat: chain CNI-DN-22acee045ba7c0810be5c not found in iptables table nat";
        assert!(is_portmap_ipv6_check_bug(&err("portmap", "CHECK", v6)));
        assert!(!is_portmap_ipv6_check_bug(&err("portmap", "CHECK", "could not check ipv4 dnat: chain not found")));
        assert!(!is_portmap_ipv6_check_bug(&err("portmap", "ADD", v6)));
        assert!(!is_portmap_ipv6_check_bug(&err("bridge", "CHECK", v6)));
    }

    #[test]
    fn cache_files_are_per_network_sandbox_and_interface() {
        let cni = Cni::new(CniConfig::new("10.244.77.0/24".parse().expect("cidr"), "/var/lib/skiff/cni"));
        let p = pod([10, 244, 77, 2]);
        let [(lo, lo_if), (eth, eth_if)] = cni.lists(&p);
        assert_eq!(cni.cache_path(&lo, &p, lo_if), Path::new("/var/lib/skiff/cni/skiff-loopback-sandbox-1-lo.json"));
        assert_eq!(cni.cache_path(&eth, &p, eth_if), Path::new("/var/lib/skiff/cni/skiff-sandbox-1-eth0.json"));
        assert_eq!(conflist::LOOPBACK_NETWORK, "skiff-loopback");
    }
}
