//! The Pod printer, a port of Kubernetes' `printPod`: the READY count, the STATUS reason
//! (init progress, waiting/terminated reasons, `Terminating`), RESTARTS with the time since
//! the last restart, and the wide columns.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::format::{age, arr_at, bool_at, int_at, name, since, str_at, terminating, timestamp};
use super::{AGE, Cells, Column, NAME, Printer, col, wide};

const COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", "The aggregate status of the containers in this pod."),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide("IP", "string", "IP address allocated to the pod. Routable at least within the cluster."),
    wide("Node", "string", "NodeName indicates in which node this pod is scheduled."),
    wide("Nominated Node", "string", "nominatedNodeName is set when this pod preempts other pods on the node."),
    wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness."),
];

pub(super) fn printer(kind: &str) -> Option<Printer> {
    (kind == "Pod").then_some(Printer { columns: COLUMNS, row })
}

/// Row conditions marking finished pods, as Kubernetes sets them.
pub(super) fn row_conditions(pod: &Value) -> Option<Value> {
    let (reason, message) = match str_at(pod, "/status/phase") {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]))
}

fn condition_true(pod: &Value, ty: &str) -> bool {
    arr_at(pod, "/status/conditions").iter().any(|c| str_at(c, "/type") == ty && str_at(c, "/status") == "True")
}

/// `finishedAt` of the container's last termination, if any.
fn last_termination(status: &Value) -> Option<Timestamp> {
    timestamp(status, "/lastState/terminated/finishedAt")
}

/// `Init:…`/`…` reason for a terminated container without a reason.
fn exit_reason(terminated: &Value, prefix: &str) -> String {
    let signal = int_at(terminated, "/signal");
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", int_at(terminated, "/exitCode"))
    }
}

fn row(pod: &Value, now: Timestamp) -> Cells {
    let init_specs = arr_at(pod, "/spec/initContainers");
    let restartable =
        |name: &str| init_specs.iter().any(|c| str_at(c, "/name") == name && str_at(c, "/restartPolicy") == "Always");
    let sidecars = init_specs.iter().filter(|c| str_at(c, "/restartPolicy") == "Always").count();
    let total = arr_at(pod, "/spec/containers").len() + sidecars;

    let mut restarts = 0;
    let mut sidecar_restarts = 0;
    let mut ready = 0;
    let mut last_restart: Option<Timestamp> = None;
    let mut last_sidecar_restart: Option<Timestamp> = None;

    let mut reason = str_or_phase(pod);
    if arr_at(pod, "/status/conditions")
        .iter()
        .any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let mut initializing = false;
    let init_statuses = arr_at(pod, "/status/initContainerStatuses");
    for (i, status) in init_statuses.iter().enumerate() {
        let cname = str_at(status, "/name");
        restarts += int_at(status, "/restartCount");
        last_restart = last_restart.max(last_termination(status));
        let is_sidecar = restartable(cname);
        if is_sidecar {
            sidecar_restarts += int_at(status, "/restartCount");
            last_sidecar_restart = last_sidecar_restart.max(last_termination(status));
        }
        let terminated = status.pointer("/state/terminated").filter(|t| t.is_object());
        let waiting_reason = str_at(status, "/state/waiting/reason");
        match terminated {
            Some(t) if int_at(t, "/exitCode") == 0 => continue,
            _ if is_sidecar && bool_at(status, "/started") => {
                if bool_at(status, "/ready") {
                    ready += 1;
                }
                continue;
            }
            Some(t) => {
                reason = match str_at(t, "/reason") {
                    "" => exit_reason(t, "Init:"),
                    r => format!("Init:{r}"),
                };
            }
            None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                reason = format!("Init:{waiting_reason}");
            }
            None => reason = format!("Init:{i}/{}", init_specs.len()),
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for status in arr_at(pod, "/status/containerStatuses").iter().rev() {
            restarts += int_at(status, "/restartCount");
            last_restart = last_restart.max(last_termination(status));
            let waiting = str_at(status, "/state/waiting/reason");
            let terminated = status.pointer("/state/terminated").filter(|t| t.is_object());
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = terminated {
                reason = match str_at(t, "/reason") {
                    "" => exit_reason(t, ""),
                    r => r.to_string(),
                };
            } else if bool_at(status, "/ready") && status.pointer("/state/running").is_some_and(Value::is_object) {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose containers partly completed but some still run is not "Completed".
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "Ready") { "Running".to_string() } else { "NotReady".to_string() };
        }
    }

    let phase = str_at(pod, "/status/phase");
    if terminating(pod) && str_at(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".to_string();
    } else if terminating(pod) && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(at) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(at), now)),
        _ => restarts.to_string(),
    };

    let ip = arr_at(pod, "/status/podIPs")
        .first()
        .map(|p| str_at(p, "/ip"))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| str_at(pod, "/status/podIP"));
    let gates = arr_at(pod, "/spec/readinessGates");
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = arr_at(pod, "/status/conditions");
        let passing = gates
            .iter()
            .filter(|g| {
                let ty = str_at(g, "/conditionType");
                conditions.iter().find(|c| str_at(c, "/type") == ty).is_some_and(|c| str_at(c, "/status") == "True")
            })
            .count();
        format!("{passing}/{}", gates.len())
    };

    vec![
        json!(name(pod)),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        json!(age(pod, now)),
        json!(none_if_empty(ip)),
        json!(none_if_empty(str_at(pod, "/spec/nodeName"))),
        json!(none_if_empty(str_at(pod, "/status/nominatedNodeName"))),
        json!(gates_cell),
    ]
}

/// The starting reason: `status.reason` if set, else the phase.
fn str_or_phase(pod: &Value) -> String {
    match str_at(pod, "/status/reason") {
        "" => str_at(pod, "/status/phase").to_string(),
        r => r.to_string(),
    }
}

fn none_if_empty(s: &str) -> &str {
    if s.is_empty() { "<none>" } else { s }
}
