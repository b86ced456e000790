//! Events the node agent writes about pods, as the kubelet does: `Pulling`, `Pulled`,
//! `Created`, `Started`, `Killing`, `BackOff`, `Unhealthy`, `Failed`, … so that
//! `kubectl describe pod` and `kubectl get events` tell what happened on the node.
//!
//! What it owns: a cheap, cloneable [`EventRecorder`] handle that never blocks its caller (a
//! bounded queue; a full queue drops the event with a debug log), the writer task behind it
//! (core/v1 Event create over the kube client; errors are logged, never fatal), and folding
//! repeats of the same reason, message and object into one Event whose `count` and
//! `lastTimestamp` move — remembered in a small in-memory map, so repeats are only folded
//! while this agent runs (a restarted agent starts new series). What it does not: decide
//! which events happen (the pod worker and its launches do).

use std::collections::HashMap;
use std::future::Future;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// The component name the kubelet reports events as.
pub const COMPONENT: &str = "kubelet";
/// Events waiting to be written before new ones are dropped.
const QUEUE: usize = 1024;
/// Series remembered for folding repeats; the map is cleared past this (a new series starts).
const MAX_SERIES: usize = 4096;

/// `Normal` or `Warning`, as Kubernetes spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One event to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub involved: ObjectReference,
    pub type_: EventType,
    pub reason: String,
    pub message: String,
    /// How many occurrences this record stands for (a counter read since the last look may
    /// have grown by more than one).
    pub occurrences: i32,
    /// When it happened (a pull is reported after the fact with its start time).
    pub at: Timestamp,
}

/// Queues events for the writer task. Cloneable; a recorder from [`EventRecorder::disabled`]
/// drops everything (for tests that run workers without an API server).
#[derive(Debug, Clone)]
pub struct EventRecorder {
    tx: Option<mpsc::Sender<Record>>,
}

impl EventRecorder {
    /// A recorder and the writer task that drains it into the API; the caller owns the task
    /// (it ends when `cancel` fires or every recorder is dropped).
    pub fn start(
        client: kube::Client,
        node_name: String,
        cancel: CancellationToken,
    ) -> (EventRecorder, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (EventRecorder { tx: Some(tx) }, write_events(client, node_name, rx, cancel))
    }

    /// A recorder that writes nothing.
    pub fn disabled() -> EventRecorder {
        EventRecorder { tx: None }
    }

    /// Queues `record`; never waits.
    pub fn record(&self, record: Record) {
        let Some(tx) = &self.tx else { return };
        if let Err(e) = tx.try_send(record) {
            debug!(error = %e, "event dropped");
        }
    }
}

/// Events about one pod and its containers.
#[derive(Debug, Clone)]
pub struct PodEvents {
    recorder: EventRecorder,
    pod: ObjectReference,
}

impl PodEvents {
    pub fn new(recorder: EventRecorder, pod: &Pod) -> PodEvents {
        let meta = &pod.metadata;
        let pod = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            field_path: None,
        };
        PodEvents { recorder, pod }
    }

    /// An event about the pod itself.
    pub fn pod(&self, type_: EventType, reason: &str, message: impl Into<String>) {
        self.emit(None, type_, reason, message.into(), 1, Timestamp::now());
    }

    /// An event about one container; `field_path` is [`field_path`]'s.
    pub fn container(&self, field_path: &str, type_: EventType, reason: &str, message: impl Into<String>) {
        self.emit(Some(field_path), type_, reason, message.into(), 1, Timestamp::now());
    }

    /// As [`PodEvents::container`], for `occurrences` occurrences that happened by `at`.
    pub fn container_at(
        &self,
        field_path: &str,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
        occurrences: i32,
        at: Timestamp,
    ) {
        self.emit(Some(field_path), type_, reason, message.into(), occurrences, at);
    }

    fn emit(
        &self,
        field_path: Option<&str>,
        type_: EventType,
        reason: &str,
        message: String,
        occurrences: i32,
        at: Timestamp,
    ) {
        let involved = ObjectReference { field_path: field_path.map(str::to_string), ..self.pod.clone() };
        self.recorder.record(Record { involved, type_, reason: reason.into(), message, occurrences, at });
    }
}

/// `involvedObject.fieldPath` of a container: `spec.containers{web}` or
/// `spec.initContainers{setup}`.
pub fn field_path(init: bool, container: &str) -> String {
    let list = if init { "initContainers" } else { "containers" };
    format!("spec.{list}{{{container}}}")
}

/// A duration as Go prints it (`523ms`, `1.2s`), the way kubelet messages show pull times.
pub fn go_duration(d: std::time::Duration) -> String {
    if d < std::time::Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else if d < std::time::Duration::from_secs(1) {
        let ms = format!("{:.3}", d.as_secs_f64() * 1000.0);
        format!("{}ms", ms.trim_end_matches('0').trim_end_matches('.'))
    } else {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// Which series an event belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    namespace: String,
    uid: String,
    field_path: String,
    type_: EventType,
    reason: String,
    message: String,
}

/// A series already written: its Event's name and count so far.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Series {
    name: String,
    count: i32,
}

/// What to do with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Write {
    Create { name: String },
    Bump { name: String, count: i32 },
}

/// Remembered series (pure bookkeeping, tested).
#[derive(Debug, Default)]
struct SeriesMap(HashMap<SeriesKey, Series>);

impl SeriesMap {
    fn key(record: &Record) -> SeriesKey {
        let i = &record.involved;
        SeriesKey {
            namespace: i.namespace.clone().unwrap_or_default(),
            uid: i.uid.clone().unwrap_or_else(|| i.name.clone().unwrap_or_default()),
            field_path: i.field_path.clone().unwrap_or_default(),
            type_: record.type_,
            reason: record.reason.clone(),
            message: record.message.clone(),
        }
    }

    /// Decides how `record` is written; `fresh_name` names a new Event.
    fn plan(&mut self, record: &Record, fresh_name: impl FnOnce() -> String) -> Write {
        let key = Self::key(record);
        if let Some(series) = self.0.get_mut(&key) {
            series.count = series.count.saturating_add(record.occurrences.max(1));
            return Write::Bump { name: series.name.clone(), count: series.count };
        }
        if self.0.len() >= MAX_SERIES {
            self.0.clear();
        }
        let name = fresh_name();
        self.0.insert(key, Series { name: name.clone(), count: record.occurrences.max(1) });
        Write::Create { name }
    }

    /// The Event of `record`'s series is gone (expired or deleted): start the series over.
    fn forget(&mut self, record: &Record) {
        self.0.remove(&Self::key(record));
    }
}

/// The Event object for a new series.
fn event_body(record: &Record, name: &str, node: &str) -> Event {
    let at = Time(record.at);
    Event {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: record.involved.namespace.clone(),
            ..ObjectMeta::default()
        },
        involved_object: record.involved.clone(),
        reason: Some(record.reason.clone()),
        message: Some(record.message.clone()),
        type_: Some(record.type_.as_str().into()),
        count: Some(record.occurrences.max(1)),
        first_timestamp: Some(at.clone()),
        last_timestamp: Some(at),
        source: Some(EventSource { component: Some(COMPONENT.into()), host: Some(node.into()) }),
        reporting_component: Some(COMPONENT.into()),
        reporting_instance: Some(node.into()),
        ..Event::default()
    }
}

/// The writer task: one API call per record, in order.
async fn write_events(client: kube::Client, node: String, mut rx: mpsc::Receiver<Record>, cancel: CancellationToken) {
    let mut series = SeriesMap::default();
    loop {
        let record = tokio::select! {
            _ = cancel.cancelled() => return,
            r = rx.recv() => match r { Some(r) => r, None => return },
        };
        let ns = record.involved.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        let object = record.involved.name.clone().unwrap_or_else(|| "unknown".into());
        let fresh = || format!("{object}.{:x}", Timestamp::now().as_nanosecond());
        let result = match series.plan(&record, fresh) {
            Write::Create { name } => api.create(&PostParams::default(), &event_body(&record, &name, &node)).await,
            Write::Bump { name, count } => {
                let patch = json!({ "count": count, "lastTimestamp": Time(record.at) });
                match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Err(kube::Error::Api(e)) if e.code == 404 => {
                        series.forget(&record);
                        let Write::Create { name } = series.plan(&record, fresh) else { continue };
                        api.create(&PostParams::default(), &event_body(&record, &name, &node)).await
                    }
                    other => other,
                }
            }
        };
        if let Err(e) = result {
            debug!(error = %e, reason = %record.reason, "could not record an event");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn record(reason: &str, message: &str, uid: &str) -> Record {
        Record {
            involved: ObjectReference {
                kind: Some("Pod".into()),
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some(uid.into()),
                field_path: Some(field_path(false, "app")),
                ..ObjectReference::default()
            },
            type_: EventType::Normal,
            reason: reason.into(),
            message: message.into(),
            occurrences: 1,
            at: Timestamp::from_second(100).expect("timestamp"),
        }
    }

    #[test]
    fn repeats_fold_into_one_series() {
        let mut map = SeriesMap::default();
        let mut n = 0;
        let mut fresh = || {
            n += 1;
            format!("web.{n}")
        };
        assert_eq!(map.plan(&record("BackOff", "m", "u1"), &mut fresh), Write::Create { name: "web.1".into() });
        assert_eq!(map.plan(&record("BackOff", "m", "u1"), &mut fresh), Write::Bump { name: "web.1".into(), count: 2 });
        let many = Record { occurrences: 3, ..record("BackOff", "m", "u1") };
        assert_eq!(map.plan(&many, &mut fresh), Write::Bump { name: "web.1".into(), count: 5 });
        // Another message, another pod (uid), another reason: new series.
        assert_eq!(map.plan(&record("BackOff", "other", "u1"), &mut fresh), Write::Create { name: "web.2".into() });
        assert_eq!(map.plan(&record("BackOff", "m", "u2"), &mut fresh), Write::Create { name: "web.3".into() });
        assert_eq!(map.plan(&record("Started", "m", "u1"), &mut fresh), Write::Create { name: "web.4".into() });
        map.forget(&record("BackOff", "m", "u1"));
        assert_eq!(map.plan(&record("BackOff", "m", "u1"), &mut fresh), Write::Create { name: "web.5".into() });
    }

    #[test]
    fn event_reads_like_the_kubelets() {
        let ev = event_body(&record("Pulled", "done", "u1"), "web.1", "node-a");
        assert_eq!(ev.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(ev.involved_object.field_path.as_deref(), Some("spec.containers{app}"));
        let source = ev.source.expect("source");
        assert_eq!((source.component.as_deref(), source.host.as_deref()), (Some("kubelet"), Some("node-a")));
        assert_eq!(ev.reporting_component.as_deref(), Some("kubelet"));
        assert_eq!((ev.type_.as_deref(), ev.count), (Some("Normal"), Some(1)));
        assert_eq!(ev.first_timestamp, ev.last_timestamp);
    }

    #[test]
    fn field_paths_and_durations() {
        assert_eq!(field_path(true, "setup"), "spec.initContainers{setup}");
        assert_eq!(go_duration(Duration::from_millis(1200)), "1.2s");
        assert_eq!(go_duration(Duration::from_millis(523)), "523ms");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_secs(2)), "2s");
        assert_eq!(go_duration(Duration::from_micros(20)), "20µs");
    }

    #[test]
    fn pod_events_name_the_container() {
        let (tx, mut rx) = mpsc::channel(4);
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        };
        let events = PodEvents::new(EventRecorder { tx: Some(tx) }, &pod);
        events.container(&field_path(true, "setup"), EventType::Normal, "Started", "Started container setup");
        events.pod(EventType::Warning, "Failed", "x");
        let first = rx.try_recv().expect("queued");
        assert_eq!(first.involved.field_path.as_deref(), Some("spec.initContainers{setup}"));
        assert_eq!((first.involved.kind.as_deref(), first.involved.uid.as_deref()), (Some("Pod"), Some("u1")));
        assert_eq!(first.reason, "Started");
        assert_eq!(rx.try_recv().expect("queued").involved.field_path, None);
        // A disabled recorder drops without a channel.
        PodEvents::new(EventRecorder::disabled(), &pod).pod(EventType::Normal, "Nothing", "dropped");
        assert!(rx.try_recv().is_err());
    }
}
