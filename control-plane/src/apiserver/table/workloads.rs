//! Printers for workload controllers: Deployment, ReplicaSet, StatefulSet, DaemonSet, Job
//! and CronJob (ports of the corresponding Kubernetes printers).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::format::{
    age, arr_at, containers, format_labels, format_selector, human_duration, int_at, name, selector_string, since,
    str_at, terminating, timestamp,
};
use super::{AGE, Cells, Column, NAME, Printer, RowFn, col, wide};

const CONTAINERS: Column = wide("Containers", "string", "Names of each container in the template.");
const IMAGES: Column = wide("Images", "string", "Images referenced by each container in the template.");
const SELECTOR: Column = wide("Selector", "string", "Label selector for pods.");

pub(super) fn printer(kind: &str) -> Option<Printer> {
    let (columns, row): (&'static [Column], RowFn) = match kind {
        "Deployment" => (DEPLOYMENT, deployment),
        "ReplicaSet" => (REPLICA_SET, replica_set),
        "StatefulSet" => (STATEFUL_SET, stateful_set),
        "DaemonSet" => (DAEMON_SET, daemon_set),
        "Job" => (JOB, job),
        "CronJob" => (CRON_JOB, cron_job),
        _ => return None,
    };
    Some(Printer { columns, row })
}

/// `spec.replicas`, which defaults to 1 when unset.
fn desired(v: &Value) -> i64 {
    v.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
}

const DEPLOYMENT: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col(
        "Up-to-date",
        "integer",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
    ),
    col(
        "Available",
        "integer",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn deployment(v: &Value, now: Timestamp) -> Cells {
    let (names, images) = containers(v, "/spec/template/spec");
    vec![
        json!(name(v)),
        json!(format!("{}/{}", int_at(v, "/status/readyReplicas"), desired(v))),
        json!(int_at(v, "/status/updatedReplicas")),
        json!(int_at(v, "/status/availableReplicas")),
        json!(age(v, now)),
        json!(names),
        json!(images),
        json!(selector_string(v, "/spec/selector")),
    ]
}

const REPLICA_SET: &[Column] = &[
    NAME,
    col("Desired", "integer", "Replicas is the number of desired replicas."),
    col("Current", "integer", "Replicas is the most recently observed number of replicas."),
    col("Ready", "integer", "The number of ready replicas for this replica set."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn replica_set(v: &Value, now: Timestamp) -> Cells {
    let (names, images) = containers(v, "/spec/template/spec");
    vec![
        json!(name(v)),
        json!(desired(v)),
        json!(int_at(v, "/status/replicas")),
        json!(int_at(v, "/status/readyReplicas")),
        json!(age(v, now)),
        json!(names),
        json!(images),
        json!(selector_string(v, "/spec/selector")),
    ]
}

const STATEFUL_SET: &[Column] =
    &[NAME, col("Ready", "string", "Number of the pod with ready state"), AGE, CONTAINERS, IMAGES];

fn stateful_set(v: &Value, now: Timestamp) -> Cells {
    let (names, images) = containers(v, "/spec/template/spec");
    vec![
        json!(name(v)),
        json!(format!("{}/{}", int_at(v, "/status/readyReplicas"), desired(v))),
        json!(age(v, now)),
        json!(names),
        json!(images),
    ]
}

const DAEMON_SET: &[Column] = &[
    NAME,
    col("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
    col(
        "Current",
        "integer",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
    ),
    col(
        "Ready",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
    ),
    col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
    col(
        "Available",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.",
    ),
    col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn daemon_set(v: &Value, now: Timestamp) -> Cells {
    let (names, images) = containers(v, "/spec/template/spec");
    vec![
        json!(name(v)),
        json!(int_at(v, "/status/desiredNumberScheduled")),
        json!(int_at(v, "/status/currentNumberScheduled")),
        json!(int_at(v, "/status/numberReady")),
        json!(int_at(v, "/status/updatedNumberScheduled")),
        json!(int_at(v, "/status/numberAvailable")),
        json!(format_labels(v, "/spec/template/spec/nodeSelector")),
        json!(age(v, now)),
        json!(names),
        json!(images),
        json!(selector_string(v, "/spec/selector")),
    ]
}

const JOB: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col("Completions", "string", "The desired number of successfully finished pods the job should be run with."),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn job_condition(v: &Value, ty: &str) -> bool {
    arr_at(v, "/status/conditions").iter().any(|c| str_at(c, "/type") == ty && str_at(c, "/status") == "True")
}

fn job(v: &Value, now: Timestamp) -> Cells {
    let succeeded = int_at(v, "/status/succeeded");
    let completions = match v.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int_at(v, "/spec/parallelism") {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let start = timestamp(v, "/status/startTime");
    let duration = match (start, timestamp(v, "/status/completionTime")) {
        (None, _) => String::new(),
        (Some(start), None) => since(Some(start), now),
        (Some(start), Some(end)) => human_duration(end.duration_since(start).as_secs()),
    };
    let status = if job_condition(v, "Complete") {
        "Complete"
    } else if job_condition(v, "Failed") {
        "Failed"
    } else if terminating(v) {
        "Terminating"
    } else if job_condition(v, "Suspended") {
        "Suspended"
    } else if job_condition(v, "FailureTarget") {
        "FailureTarget"
    } else if job_condition(v, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let (names, images) = containers(v, "/spec/template/spec");
    vec![
        json!(name(v)),
        json!(status),
        json!(completions),
        json!(duration),
        json!(age(v, now)),
        json!(names),
        json!(images),
        json!(format_selector(v, "/spec/selector")),
    ]
}

const CRON_JOB: &[Column] = &[
    NAME,
    col("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
    col("Timezone", "string", "The time zone name for the given schedule."),
    col("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions."),
    col("Active", "integer", "A list of pointers to currently running jobs."),
    col("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cron_job(v: &Value, now: Timestamp) -> Cells {
    let suspend = match v.pointer("/spec/suspend").and_then(Value::as_bool) {
        None => "<unset>",
        Some(true) => "True",
        Some(false) => "False",
    };
    let last = match timestamp(v, "/status/lastScheduleTime") {
        Some(t) => since(Some(t), now),
        None => "<none>".to_string(),
    };
    let (names, images) = containers(v, "/spec/jobTemplate/spec/template/spec");
    vec![
        json!(name(v)),
        json!(str_at(v, "/spec/schedule")),
        json!(v.pointer("/spec/timeZone").and_then(Value::as_str).unwrap_or("<none>")),
        json!(suspend),
        json!(arr_at(v, "/status/active").len()),
        json!(last),
        json!(age(v, now)),
        json!(names),
        json!(images),
        json!(format_selector(v, "/spec/jobTemplate/spec/selector")),
    ]
}
