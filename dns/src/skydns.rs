//! SkyDNS-format records for a Service, as CoreDNS's `etcd` plugin (and SkyDNS) read them.
//!
//! Pure function only: the control plane writes and deletes the keys. A name is stored under
//! `/skydns/` followed by its labels reversed (`web.default.svc.cluster.local` →
//! `/skydns/local/cluster/svc/default/web`), the value a JSON message with `host` (an address
//! or a name), optional `port`, and `ttl`. The plugin answers a name with every record at or
//! below its key, so a headless Service puts one key per ready endpoint under its own key.

use k8s_openapi::api::core::v1::{Endpoints, Service};
use serde_json::{Value, json};

use crate::records::{Backend, ServiceKind, backends, service_entry};

/// TTL written into every SkyDNS record.
pub const SKYDNS_TTL: u32 = 30;

/// `(key, JSON value)` pairs for `service` in zone `cluster.local`. Empty for a Service
/// without name/namespace, or a headless one with no ready endpoints.
pub fn skydns_records(service: &Service, endpoints: &Endpoints) -> Vec<(String, Value)> {
    skydns_records_in_zone(service, endpoints, "cluster.local")
}

/// [`skydns_records`] for another cluster zone.
pub fn skydns_records_in_zone(service: &Service, endpoints: &Endpoints, zone: &str) -> Vec<(String, Value)> {
    let (Some(ns), Some(name)) = (&service.metadata.namespace, &service.metadata.name) else {
        return Vec::new();
    };
    let key = service_key(zone, ns, name);
    let entry = service_entry(service);
    // SkyDNS has one port per message; the first named port is the Service's main one.
    let port = entry.ports.first().map(|p| p.port);
    match entry.kind {
        ServiceKind::ClusterIp(ips) => ips
            .iter()
            .enumerate()
            .map(|(i, ip)| {
                // Dual-stack: the second family goes below the name, as the plugin merges them.
                let key = if i == 0 { key.clone() } else { format!("{key}/ip{i}") };
                (key, message(&ip.to_string(), port))
            })
            .collect(),
        ServiceKind::External(target) => vec![(key, message(&target, port))],
        ServiceKind::Headless => {
            let mut out: Vec<(String, Value)> = backends(endpoints)
                .iter()
                .map(|b: &Backend| {
                    let port = b.ports.first().map(|p| p.port).or(port);
                    (format!("{key}/{}", b.hostname), message(&b.ip.to_string(), port))
                })
                .collect();
            out.sort_by(|a, b| a.0.cmp(&b.0));
            out
        }
    }
}

/// `/skydns/<zone reversed>/svc/<ns>/<name>`: the prefix to delete when the Service goes.
pub fn service_key(zone: &str, namespace: &str, name: &str) -> String {
    let mut key = String::from("/skydns");
    for label in zone.trim_matches('.').rsplit('.') {
        key.push('/');
        key.push_str(&label.to_ascii_lowercase());
    }
    format!("{key}/svc/{namespace}/{name}")
}

fn message(host: &str, port: Option<u16>) -> Value {
    match port {
        Some(port) => json!({ "host": host, "port": port, "ttl": SKYDNS_TTL }),
        None => json!({ "host": host, "ttl": SKYDNS_TTL }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::tests::{endpoints, external, service};

    #[test]
    fn cluster_ip_service_is_one_key() {
        let svc = service("default", "web", "10.96.0.5", &[("http", "TCP", 80)]);
        let records = skydns_records(&svc, &Endpoints::default());
        assert_eq!(
            records,
            [("/skydns/local/cluster/svc/default/web".to_owned(), json!({"host": "10.96.0.5", "port": 80, "ttl": 30}))]
        );
    }

    #[test]
    fn headless_service_is_one_key_per_ready_endpoint() {
        let svc = service("d", "db", "None", &[("pg", "TCP", 5432)]);
        let eps = endpoints("d", "db", &[("10.244.0.8", None), ("10.244.0.7", Some("db-0"))], &[("pg", "TCP", 5433)]);
        let records = skydns_records(&svc, &eps);
        assert_eq!(
            records,
            [
                (
                    "/skydns/local/cluster/svc/d/db/10-244-0-8".to_owned(),
                    json!({"host": "10.244.0.8", "port": 5433, "ttl": 30})
                ),
                (
                    "/skydns/local/cluster/svc/d/db/db-0".to_owned(),
                    json!({"host": "10.244.0.7", "port": 5433, "ttl": 30})
                ),
            ]
        );
    }

    #[test]
    fn external_name_and_other_zones() {
        let records =
            skydns_records_in_zone(&external("d", "ext", "example.com"), &Endpoints::default(), "k8s.example.org.");
        assert_eq!(
            records,
            [("/skydns/org/example/k8s/svc/d/ext".to_owned(), json!({"host": "example.com", "ttl": 30}))]
        );
        assert!(skydns_records(&Service::default(), &Endpoints::default()).is_empty());
    }
}
