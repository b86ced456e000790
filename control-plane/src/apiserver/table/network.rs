//! Printers for networking kinds: Service, Endpoints and Ingress (ports of Kubernetes'
//! `printService`, `printEndpoints`, `printIngress`).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::format::{age, arr_at, format_labels, int_at, load_balancer_ingress, name, str_at};
use super::{AGE, Cells, Column, NAME, Printer, RowFn, col, wide};

pub(super) fn printer(kind: &str) -> Option<Printer> {
    let (columns, row): (&'static [Column], RowFn) = match kind {
        "Service" => (SERVICE, service),
        "Endpoints" => (ENDPOINTS, endpoints),
        "Ingress" => (INGRESS, ingress),
        _ => return None,
    };
    Some(Printer { columns, row })
}

const SERVICE: &[Column] = &[
    NAME,
    col("Type", "string", "type determines how the Service is exposed."),
    col("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly."),
    col(
        "External-IP",
        "string",
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.",
    ),
    col("Port(s)", "string", "The list of ports that are exposed by this service."),
    AGE,
    wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector."),
];

fn strings(v: &Value, pointer: &str) -> Vec<String> {
    arr_at(v, pointer).iter().filter_map(Value::as_str).map(str::to_string).collect()
}

/// `getServiceExternalIP` in wide mode.
fn external_ip(svc: &Value) -> String {
    let external = strings(svc, "/spec/externalIPs");
    match str_at(svc, "/spec/type") {
        "" | "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_ingress(svc, "/status/loadBalancer/ingress");
            let mut all: Vec<String> = lb.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect();
            all.extend(external);
            if all.is_empty() { "<pending>".to_string() } else { all.join(",") }
        }
        "ExternalName" => str_at(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// `makePortString`: `80/TCP,443:30443/TCP`.
fn ports(svc: &Value) -> String {
    let pieces: Vec<String> = arr_at(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let port = int_at(p, "/port");
            let protocol = match str_at(p, "/protocol") {
                "" => "TCP",
                proto => proto,
            };
            match int_at(p, "/nodePort") {
                node if node > 0 => format!("{port}:{node}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    if pieces.is_empty() { "<none>".to_string() } else { pieces.join(",") }
}

fn service(svc: &Value, now: Timestamp) -> Cells {
    let cluster_ip = arr_at(svc, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .or_else(|| svc.pointer("/spec/clusterIP").and_then(Value::as_str))
        .filter(|ip| !ip.is_empty())
        .unwrap_or("<none>");
    let ty = match str_at(svc, "/spec/type") {
        "" => "ClusterIP",
        ty => ty,
    };
    vec![
        json!(name(svc)),
        json!(ty),
        json!(cluster_ip),
        json!(external_ip(svc)),
        json!(ports(svc)),
        json!(age(svc, now)),
        json!(format_labels(svc, "/spec/selector")),
    ]
}

const ENDPOINTS: &[Column] = &[NAME, col("Endpoints", "string", "Endpoints of the service"), AGE];

/// `formatEndpoints` for all ports: at most three `ip:port`, then `+ N more...`.
fn format_endpoints(ep: &Value) -> String {
    const MAX: usize = 3;
    let subsets = arr_at(ep, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut list: Vec<String> = Vec::new();
    let mut count = 0;
    let mut more = false;
    for subset in subsets {
        let addresses = arr_at(subset, "/addresses");
        let ports = arr_at(subset, "/ports");
        if ports.is_empty() {
            count += addresses.len();
            for addr in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(addr, "/ip").to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for addr in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                let ip = str_at(addr, "/ip");
                let port = int_at(port, "/port");
                // net.JoinHostPort brackets IPv6 literals.
                list.push(if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") });
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else if joined.is_empty() {
        "<none>".to_string()
    } else {
        joined
    }
}

fn endpoints(ep: &Value, now: Timestamp) -> Cells {
    vec![json!(name(ep)), json!(format_endpoints(ep)), json!(age(ep, now))]
}

const INGRESS: &[Column] = &[
    NAME,
    col("Class", "string", "The name of the IngressClass resource used by this ingress."),
    col("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
    col("Address", "string", "Address is a list containing ingress points for the load-balancer"),
    col("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];

/// `formatHosts`: up to three hosts, `*` when none.
fn hosts(ing: &Value) -> String {
    const MAX: usize = 3;
    let rules = arr_at(ing, "/spec/rules");
    let mut list: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if list.len() == MAX {
            more = true;
        }
        let host = str_at(rule, "/host");
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        return "*".to_string();
    }
    let joined = list.join(",");
    if more { format!("{joined} + {} more...", rules.len() - MAX) } else { joined }
}

fn ingress(ing: &Value, now: Timestamp) -> Cells {
    let class = ing.pointer("/spec/ingressClassName").and_then(Value::as_str).unwrap_or("<none>");
    let ports = if arr_at(ing, "/spec/tls").is_empty() { "80" } else { "80, 443" };
    vec![
        json!(name(ing)),
        json!(class),
        json!(hosts(ing)),
        json!(load_balancer_ingress(ing, "/status/loadBalancer/ingress")),
        json!(ports),
        json!(age(ing, now)),
    ]
}
