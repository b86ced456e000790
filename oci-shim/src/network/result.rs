//! The CNI 1.0.0 ADD result, reduced to what Skiff reports: the pod's address and gateway.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::Deserialize;

/// The parts of a CNI result Skiff reads (unknown fields are ignored).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RawResult {
    #[serde(default)]
    interfaces: Vec<RawInterface>,
    #[serde(default)]
    ips: Vec<RawIp>,
}

#[derive(Debug, Clone, Deserialize)]
struct RawInterface {
    name: String,
    #[serde(default)]
    mac: String,
    #[serde(default)]
    sandbox: String,
}

#[derive(Debug, Clone, Deserialize)]
struct RawIp {
    address: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    interface: Option<usize>,
}

/// Where a pod ended up on the network after ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetworkStatus {
    /// The pod's address on its `eth0`.
    pub ip: Ipv4Addr,
    /// Prefix length of the pod subnet.
    pub prefix_len: u8,
    /// The pod's default gateway (the bridge's address).
    pub gateway: Option<Ipv4Addr>,
    /// MAC address of the pod's `eth0`, if the plugin reported it.
    pub mac: Option<String>,
    /// Name of the host side of the veth pair, if the plugin reported it.
    pub host_veth: Option<String>,
}

/// The pod's IPv4 address in `raw` (the one on an interface inside the sandbox, else the
/// first IPv4 address), or `None` when the result has none.
pub(crate) fn status_of(raw: &RawResult, ifname: &str) -> Option<PodNetworkStatus> {
    let in_pod = |ip: &&RawIp| {
        ip.interface.and_then(|i| raw.interfaces.get(i)).is_some_and(|i| !i.sandbox.is_empty() && i.name == ifname)
    };
    let v4 = |ip: &&RawIp| matches!(ip.address, IpNet::V4(_));
    let chosen = raw.ips.iter().filter(v4).find(in_pod).or_else(|| raw.ips.iter().find(v4))?;
    let IpNet::V4(net) = chosen.address else { return None };
    let pod_if = chosen.interface.and_then(|i| raw.interfaces.get(i));
    Some(PodNetworkStatus {
        ip: net.addr(),
        prefix_len: net.prefix_len(),
        gateway: match chosen.gateway {
            Some(IpAddr::V4(gw)) => Some(gw),
            _ => None,
        },
        mac: pod_if.map(|i| i.mac.clone()).filter(|m| !m.is_empty()),
        host_veth: raw
            .interfaces
            .iter()
            .find(|i| i.sandbox.is_empty() && i.name.starts_with("veth"))
            .map(|i| i.name.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_result_gives_address_gateway_and_veth() {
        // Shape of the Debian 1.1.1 bridge plugin's ADD output.
        let raw: RawResult = serde_json::from_str(
            r#"{"cniVersion":"1.0.0",
                "interfaces":[{"name":"skiff0","mac":"aa:bb:cc:00:00:01"},
                              {"name":"veth1234abcd","mac":"aa:bb:cc:00:00:02"},
                              {"name":"eth0","mac":"aa:bb:cc:00:00:03","sandbox":"/run/skiff/netns/p"}],
                "ips":[{"interface":2,"address":"10.244.77.5/24","gateway":"10.244.77.1"}],
                "routes":[{"dst":"0.0.0.0/0","gw":"10.244.77.1"}],"dns":{}}"#,
        )
        .expect("valid result");
        let status = status_of(&raw, "eth0").expect("an address");
        assert_eq!(status.ip, Ipv4Addr::new(10, 244, 77, 5));
        assert_eq!(status.prefix_len, 24);
        assert_eq!(status.gateway, Some(Ipv4Addr::new(10, 244, 77, 1)));
        assert_eq!(status.mac.as_deref(), Some("aa:bb:cc:00:00:03"));
        assert_eq!(status.host_veth.as_deref(), Some("veth1234abcd"));
    }

    #[test]
    fn results_without_ipv4_give_nothing() {
        let raw: RawResult =
            serde_json::from_str(r#"{"cniVersion":"1.0.0","ips":[{"address":"fd00::5/64"}]}"#).expect("valid result");
        assert_eq!(status_of(&raw, "eth0"), None);
        let empty: RawResult = serde_json::from_str(r#"{"cniVersion":"1.0.0"}"#).expect("valid result");
        assert_eq!(status_of(&empty, "eth0"), None);
    }
}
