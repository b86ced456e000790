//! Printers for cluster-level kinds: Node, Namespace, Event and Lease (ports of Kubernetes'
//! printers).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::format::{age, arr_at, bool_at, int_at, name, since, str_at, str_or, timestamp};
use super::{AGE, Cells, Column, NAME, Printer, RowFn, col, wide};

pub(super) fn printer(kind: &str) -> Option<Printer> {
    let (columns, row): (&'static [Column], RowFn) = match kind {
        "Node" => (NODE, node),
        "Namespace" => (NAMESPACE, namespace),
        "Event" => (EVENT, event),
        "Lease" => (LEASE, lease),
        _ => return None,
    };
    Some(Printer { columns, row })
}

const NODE: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide("Internal-IP", "string", "List of addresses reachable to the node."),
    wide("External-IP", "string", "List of addresses reachable to the node."),
    wide(
        "OS-Image",
        "string",
        "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    ),
    wide(
        "Kernel-Version",
        "string",
        "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    ),
    wide(
        "Container-Runtime",
        "string",
        "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    ),
];

/// `findNodeRoles`: `node-role.kubernetes.io/<role>` keys and the legacy `kubernetes.io/role`.
fn node_roles(node: &Value) -> String {
    let mut roles: Vec<&str> = Vec::new();
    if let Some(labels) = node.pointer("/metadata/labels").and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.push(role);
                }
            } else if key == "kubernetes.io/role"
                && let Some(role) = value.as_str().filter(|r| !r.is_empty())
            {
                roles.push(role);
            }
        }
    }
    roles.sort_unstable();
    roles.dedup();
    if roles.is_empty() { "<none>".to_string() } else { roles.join(",") }
}

fn node_address(node: &Value, ty: &str) -> String {
    arr_at(node, "/status/addresses")
        .iter()
        .find(|a| str_at(a, "/type") == ty)
        .map_or_else(|| "<none>".to_string(), |a| str_at(a, "/address").to_string())
}

fn node(node: &Value, now: Timestamp) -> Cells {
    let mut status: Vec<&str> = Vec::new();
    // Only the Ready condition is summarized, as in Kubernetes.
    if let Some(ready) = arr_at(node, "/status/conditions").iter().rev().find(|c| str_at(c, "/type") == "Ready") {
        status.push(if str_at(ready, "/status") == "True" { "Ready" } else { "NotReady" });
    }
    if status.is_empty() {
        status.push("Unknown");
    }
    if bool_at(node, "/spec/unschedulable") {
        status.push("SchedulingDisabled");
    }
    vec![
        json!(name(node)),
        json!(status.join(",")),
        json!(node_roles(node)),
        json!(age(node, now)),
        json!(str_at(node, "/status/nodeInfo/kubeletVersion")),
        json!(node_address(node, "InternalIP")),
        json!(node_address(node, "ExternalIP")),
        json!(str_or(node, "/status/nodeInfo/osImage", "<unknown>")),
        json!(str_or(node, "/status/nodeInfo/kernelVersion", "<unknown>")),
        json!(str_or(node, "/status/nodeInfo/containerRuntimeVersion", "<unknown>")),
    ]
}

const NAMESPACE: &[Column] = &[NAME, col("Status", "string", "The status of the namespace"), AGE];

fn namespace(ns: &Value, now: Timestamp) -> Cells {
    vec![json!(name(ns)), json!(str_at(ns, "/status/phase")), json!(age(ns, now))]
}

const EVENT: &[Column] = &[
    col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
    col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
    col(
        "Reason",
        "string",
        "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    ),
    col("Object", "string", "The object that this event is about."),
    wide(
        "Subobject",
        "string",
        "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement.",
    ),
    wide("Source", "string", "The component reporting this event."),
    col("Message", "string", "A human-readable description of the status of this operation."),
    wide("First Seen", "string", "The time at which the event was first recorded."),
    wide("Count", "string", "The number of times this event has occurred."),
    Column { priority: 1, ..NAME },
];

fn event(ev: &Value, now: Timestamp) -> Cells {
    let first = match timestamp(ev, "/firstTimestamp") {
        Some(t) => since(Some(t), now),
        None => since(timestamp(ev, "/eventTime"), now),
    };
    let mut last = match timestamp(ev, "/lastTimestamp") {
        Some(t) => since(Some(t), now),
        None => first.clone(),
    };
    let mut count = int_at(ev, "/count");
    if ev.pointer("/series").is_some_and(Value::is_object) {
        last = since(timestamp(ev, "/series/lastObservedTime"), now);
        count = int_at(ev, "/series/count");
    } else if count == 0 {
        // Singleton events carry no count in the events.k8s.io API.
        count = 1;
    }
    let kind = str_at(ev, "/involvedObject/kind").to_lowercase();
    let target = match str_at(ev, "/involvedObject/name") {
        "" => kind,
        obj => format!("{kind}/{obj}"),
    };
    let component = str_or(ev, "/source/component", str_at(ev, "/reportingComponent"));
    let instance = str_or(ev, "/source/host", str_at(ev, "/reportingInstance"));
    let source = if instance.is_empty() { component.to_string() } else { format!("{component}, {instance}") };
    vec![
        json!(last),
        json!(str_at(ev, "/type")),
        json!(str_at(ev, "/reason")),
        json!(target),
        json!(str_at(ev, "/involvedObject/fieldPath")),
        json!(source),
        json!(str_at(ev, "/message").trim()),
        json!(first),
        json!(count),
        json!(name(ev)),
    ]
}

const LEASE: &[Column] = &[NAME, col("Holder", "string", "The holder of the lease"), AGE];

fn lease(l: &Value, now: Timestamp) -> Cells {
    vec![json!(name(l)), json!(str_at(l, "/spec/holderIdentity")), json!(age(l, now))]
}
