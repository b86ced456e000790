//! The network configuration lists Skiff hands the CNI plugins, and the per-plugin stdin built
//! from them — pure JSON shaping, unit-tested here; running the plugins lives in `exec`.
//!
//! Two lists per pod, as kubelet-era runtimes do: `skiff-loopback` (`loopback` on `lo`) and
//! `skiff` (`bridge` + `static` IPAM, then `portmap`) on `eth0`.
//!
//! IPAM is `static`, pinned to the address Skiff's own allocator (node/src/ipam.rs) picked, not
//! `host-local` pinned to a one-address range: the node keeps ONE allocator for WASM and
//! container pods, and `static` keeps no state of its own, so there is no second record that
//! could disagree with it or leak (a `host-local` reservation left by a crash would make the
//! next ADD of that address fail with "no IP addresses available"), and DEL has nothing to free.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{Value, json};

use super::cni::{PodAttachment, Protocol};

/// The CNI spec version Skiff speaks: the highest the Debian 12 plugins (1.1.1) support.
pub const CNI_VERSION: &str = "1.0.0";
/// Name of the pod network list (also the cache-file prefix).
pub const POD_NETWORK: &str = "skiff";
/// Name of the loopback list.
pub const LOOPBACK_NETWORK: &str = "skiff-loopback";

/// The pod list: `bridge` on `bridge_name` (the pod's gateway is the bridge's address, no
/// masquerading — cluster traffic keeps pod source addresses; hairpin so a pod reaches itself
/// through a Service/hostPort) with `static` IPAM on `ip`, then `portmap` for hostPorts.
pub fn pod_network_list(bridge_name: &str, subnet: Ipv4Net, ip: Ipv4Addr) -> Value {
    let gateway = gateway_of(subnet);
    json!({
        "cniVersion": CNI_VERSION,
        "name": POD_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge_name,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "static",
                    "addresses": [{
                        "address": format!("{ip}/{}", subnet.prefix_len()),
                        "gateway": gateway.to_string(),
                    }],
                    "routes": [{ "dst": "0.0.0.0/0", "gw": gateway.to_string() }],
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true }, "snat": true },
        ],
    })
}

/// The loopback list: brings `lo` up inside the pod.
pub fn loopback_list() -> Value {
    json!({ "cniVersion": CNI_VERSION, "name": LOOPBACK_NETWORK, "plugins": [{ "type": "loopback" }] })
}

/// The gateway (`.1`) of a pod subnet: the bridge's own address.
pub fn gateway_of(subnet: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

/// The runtime arguments Skiff offers; each plugin receives those it declares a capability for.
pub fn runtime_config(pod: &PodAttachment) -> Value {
    let mappings: Vec<Value> = pod
        .port_mappings
        .iter()
        .map(|m| {
            json!({
                "hostPort": m.host_port,
                "containerPort": m.container_port,
                "protocol": match m.protocol { Protocol::Tcp => "tcp", Protocol::Udp => "udp", Protocol::Sctp => "sctp" },
                "hostIP": m.host_ip.map(|ip| ip.to_string()).unwrap_or_default(),
            })
        })
        .collect();
    json!({ "portMappings": mappings })
}

/// What one plugin reads on stdin: its own entry plus the list's `name` and `cniVersion`, the
/// runtime arguments it has capabilities for, and the previous result in the chain.
pub fn plugin_stdin(list: &Value, plugin: &Value, runtime: &Value, prev_result: Option<&Value>) -> Value {
    let mut conf = plugin.clone();
    let Some(obj) = conf.as_object_mut() else { return conf };
    obj.insert("cniVersion".into(), list["cniVersion"].clone());
    obj.insert("name".into(), list["name"].clone());
    obj.remove("capabilities");
    let mut granted = serde_json::Map::new();
    if let (Some(caps), Some(offered)) = (plugin["capabilities"].as_object(), runtime.as_object()) {
        for (cap, enabled) in caps {
            if enabled.as_bool() == Some(true)
                && let Some(value) = offered.get(cap)
            {
                granted.insert(cap.clone(), value.clone());
            }
        }
    }
    if !granted.is_empty() {
        obj.insert("runtimeConfig".into(), Value::Object(granted));
    }
    if let Some(prev) = prev_result {
        obj.insert("prevResult".into(), prev.clone());
    }
    conf
}

/// `CNI_ARGS`: the pod's identity, the way kubelet passes it (plugins that do not know a key
/// must ignore it, hence `IgnoreUnknown`).
pub fn cni_args(pod: &PodAttachment) -> String {
    format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        pod.pod_namespace, pod.pod_name, pod.container_id, pod.pod_uid
    )
}

/// The plugin entries of a list.
pub fn plugins(list: &Value) -> &[Value] {
    list["plugins"].as_array().map(Vec::as_slice).unwrap_or_default()
}

/// The plugin's `type` (its executable's name).
pub fn plugin_type(plugin: &Value) -> &str {
    plugin["type"].as_str().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::cni::PortMapping;

    fn pod() -> PodAttachment {
        PodAttachment {
            container_id: "abc123".into(),
            netns: "/run/skiff/netns/abc123".into(),
            ip: Ipv4Addr::new(10, 244, 77, 5),
            pod_name: "web-0".into(),
            pod_namespace: "default".into(),
            pod_uid: "u-1".into(),
            port_mappings: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: Protocol::Tcp,
                host_ip: None,
            }],
        }
    }

    #[test]
    fn pod_list_pins_the_chosen_address() {
        let list = pod_network_list("skiff0", "10.244.77.0/24".parse().expect("cidr"), Ipv4Addr::new(10, 244, 77, 5));
        let bridge = &plugins(&list)[0];
        assert_eq!(plugin_type(bridge), "bridge");
        assert_eq!(bridge["bridge"], "skiff0");
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["ipam"]["addresses"][0]["address"], "10.244.77.5/24");
        assert_eq!(bridge["ipam"]["addresses"][0]["gateway"], "10.244.77.1");
        assert_eq!(plugin_type(&plugins(&list)[1]), "portmap");
        assert_eq!(plugin_type(&plugins(&loopback_list())[0]), "loopback");
    }

    #[test]
    fn stdin_gets_name_version_granted_capabilities_and_prev_result() {
        let list = pod_network_list("skiff0", "10.244.77.0/24".parse().expect("cidr"), Ipv4Addr::new(10, 244, 77, 5));
        let runtime = runtime_config(&pod());
        let prev = json!({"cniVersion": "1.0.0", "ips": []});

        let bridge = plugin_stdin(&list, &plugins(&list)[0], &runtime, None);
        assert_eq!(bridge["name"], "skiff");
        assert_eq!(bridge["cniVersion"], "1.0.0");
        assert!(bridge.get("runtimeConfig").is_none(), "bridge has no portMappings capability");
        assert!(bridge.get("prevResult").is_none());

        let portmap = plugin_stdin(&list, &plugins(&list)[1], &runtime, Some(&prev));
        assert_eq!(portmap["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert_eq!(portmap["runtimeConfig"]["portMappings"][0]["protocol"], "tcp");
        assert_eq!(portmap["prevResult"], prev);
        assert!(portmap.get("capabilities").is_none());
    }

    #[test]
    fn cni_args_carry_the_pod_identity() {
        assert_eq!(
            cni_args(&pod()),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1"
        );
    }
}
