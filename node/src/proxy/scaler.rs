//! The agent's side of scale-to-zero: scaling a Deployment from zero when a connection is held
//! for it, and reporting traffic so the control plane knows when it went idle.
//!
//! What it owns:
//! * **Scale from zero** ([`Scaler::wake`]): one JSON patch that tests `spec.replicas == 0`,
//!   sets it to 1 and stamps `skiff.dev/last-activity` — atomic on the API server, so any number
//!   of held connections on any number of agents scale a Deployment up once (the losers' patch
//!   fails its `test` with 422, which means "already up"). The patch is only sent while the
//!   agent's copy of the Deployment (the proxy's watch) says zero replicas and no patch of this
//!   agent is in flight, so a burst of connections costs one request; a held connection looks
//!   again every [`REWAKE`] (the Deployment may have been scaled back down meanwhile). `ScaledFromZero` is recorded on the Deployment; a failed
//!   scale or a connection given up after the hold limit (`listener`) is a `Warning` event.
//! * **Activity** ([`Scaler::connection`] and [`Scaler::report`]): connections are counted per
//!   Deployment, and `skiff.dev/last-activity` is merge-patched when there was traffic since
//!   the last report (or a connection is still open), at most every quarter of the idle period
//!   (1–10 s): the API sees a few writes per minute, not one per connection.
//!
//! What it does not: decide to scale down (the control plane's scale-to-zero controller does),
//! or wait for backends (`listener` holds the connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;
use skiff_api::scale_to_zero::LAST_ACTIVITY;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::wake::WakeTarget;
use crate::events::{EventRecorder, EventType, Record};

/// How often a held connection looks again whether its Deployment needs scaling up.
pub const REWAKE: Duration = Duration::from_secs(1);
/// How often the activity reporter looks for something to report.
const REPORT_TICK: Duration = Duration::from_millis(500);
/// Bookkeeping of a Deployment with no traffic for this long is dropped.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Why a scale-up could not be asked for.
#[derive(Debug, thiserror::Error)]
pub enum ScaleError {
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
    #[error("scaling {target} from zero: {source}")]
    Api {
        target: String,
        #[source]
        source: kube::Error,
    },
}

/// What a wake did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Woken {
    /// This call scaled the Deployment from 0 to 1.
    Scaled,
    /// It was not at zero (someone else scaled it), or this agent asked recently.
    AlreadyUp,
}

/// Per-Deployment bookkeeping.
#[derive(Debug, Default)]
struct Entry {
    /// When this agent last asked for a scale-up.
    woken: Option<Instant>,
    /// Whether a scale-up request of this agent is in flight.
    waking: bool,
    /// Open connections for it through this agent.
    open: usize,
    /// Last connection opened or closed.
    touched: Option<Instant>,
    /// Last activity report written.
    reported: Option<Instant>,
    /// Its idle period, as the frontend last saw it.
    idle: Duration,
    /// Its uid (for events).
    uid: String,
}

/// Scale-ups and activity reports of one agent (share it through an `Arc`).
pub struct Scaler {
    client: kube::Client,
    events: EventRecorder,
    /// The proxy's copy of every Deployment.
    deployments: Store<Deployment>,
    entries: Mutex<HashMap<(String, String), Entry>>,
}

impl std::fmt::Debug for Scaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scaler").field("entries", &self.entries).finish_non_exhaustive()
    }
}

impl Scaler {
    pub fn new(client: kube::Client, events: EventRecorder, deployments: Store<Deployment>) -> Scaler {
        Scaler { client, events, deployments, entries: Mutex::new(HashMap::new()) }
    }

    fn with_entry<T>(&self, target: &WakeTarget, f: impl FnOnce(&mut Entry) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.entry((target.namespace.clone(), target.name.clone())).or_default();
        entry.idle = target.idle;
        entry.uid.clone_from(&target.uid);
        f(entry)
    }

    /// Scales `target` from zero to one replica, unless this agent's copy says it is not at zero
    /// or a request of this agent is already in flight.
    pub async fn wake(&self, target: &WakeTarget, why: &str) -> Result<Woken, ScaleError> {
        let now = Instant::now();
        let at_zero = self
            .deployments
            .get(&ObjectRef::new(&target.name).within(&target.namespace))
            .is_none_or(|d| d.spec.as_ref().and_then(|s| s.replicas) == Some(0));
        if !at_zero {
            return Ok(Woken::AlreadyUp);
        }
        let fresh = self.with_entry(target, |e| {
            let fresh = !e.waking;
            if fresh {
                e.waking = true;
                e.woken = Some(now);
            }
            fresh
        });
        if !fresh {
            return Ok(Woken::AlreadyUp);
        }
        let _waking = Waking { scaler: self, target };
        let patch = json!([
            {"op": "test", "path": "/spec/replicas", "value": 0},
            {"op": "replace", "path": "/spec/replicas", "value": 1},
            {"op": "add", "path": format!("/metadata/annotations/{}", LAST_ACTIVITY.replace('/', "~1")),
             "value": Timestamp::now().to_string()},
        ]);
        let url = format!("/apis/apps/v1/namespaces/{}/deployments/{}", target.namespace, target.name);
        let request = http::Request::patch(url)
            .header(http::header::CONTENT_TYPE, "application/json-patch+json")
            .body(patch.to_string().into_bytes())?;
        match self.client.request::<Deployment>(request).await {
            Ok(_) => {
                info!(%target, took = ?now.elapsed(), "scaled from zero");
                self.event(target, EventType::Normal, "ScaledFromZero", format!("Scaled from 0 to 1 replica: {why}"));
                Ok(Woken::Scaled)
            }
            // The `test` failed: not at zero any more (another connection or agent won).
            Err(kube::Error::Api(e)) if e.code == 422 => {
                debug!(%target, "not at zero; nothing to scale");
                Ok(Woken::AlreadyUp)
            }
            Err(source) => {
                let error = ScaleError::Api { target: target.to_string(), source };
                self.event(target, EventType::Warning, "FailedScaleFromZero", error.to_string());
                Err(error)
            }
        }
    }

    /// Records a Warning about `target` (a held connection given up, and why).
    pub fn warn(&self, target: &WakeTarget, reason: &str, message: String) {
        self.event(target, EventType::Warning, reason, message);
    }

    fn event(&self, target: &WakeTarget, type_: EventType, reason: &str, message: String) {
        let involved = ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            name: Some(target.name.clone()),
            namespace: Some(target.namespace.clone()),
            uid: Some(target.uid.clone()).filter(|u| !u.is_empty()),
            ..ObjectReference::default()
        };
        self.events.record(Record {
            involved,
            type_,
            reason: reason.into(),
            message,
            occurrences: 1,
            at: Timestamp::now(),
        });
    }

    /// Counts a connection for `targets` until the guard drops.
    pub fn connection(self: &Arc<Self>, targets: &[WakeTarget]) -> Connection {
        let now = Instant::now();
        for target in targets {
            self.with_entry(target, |e| {
                e.open += 1;
                e.touched = Some(now);
            });
        }
        Connection { scaler: Arc::clone(self), targets: targets.to_vec() }
    }

    /// Writes activity reports until `shutdown` fires.
    pub async fn report(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(REPORT_TICK) => {}
            }
            for (namespace, name) in self.due(Instant::now()) {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), &namespace);
                let patch = json!({"metadata": {"annotations": {LAST_ACTIVITY: Timestamp::now().to_string()}}});
                if let Err(error) = api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    warn!(deployment = %format!("{namespace}/{name}"), %error, "could not report activity");
                }
            }
        }
    }

    /// The Deployments whose activity should be reported at `now` (marked reported); entries
    /// quiet for an hour are forgotten.
    fn due(&self, now: Instant) -> Vec<(String, String)> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let mut due = Vec::new();
        entries.retain(|key, e| {
            if e.due(now) {
                due.push(key.clone());
            }
            let last = e.touched.into_iter().chain(e.woken).max();
            e.open > 0 || last.is_some_and(|t| now.duration_since(t) < FORGET_AFTER)
        });
        due
    }
}

impl Entry {
    /// Whether activity is to be reported at `now` (traffic since the last report, or a
    /// connection still open, and the report interval passed); if so, marks it reported.
    fn due(&mut self, now: Instant) -> bool {
        let traffic = self.open > 0 || self.touched.is_some_and(|t| self.reported.is_none_or(|r| t > r));
        let spaced = self.reported.is_none_or(|r| now.duration_since(r) >= report_every(self.idle));
        if traffic && spaced {
            self.reported = Some(now);
        }
        traffic && spaced
    }
}

/// Clears the in-flight mark of a scale-up when the request ends (or is dropped).
struct Waking<'a> {
    scaler: &'a Scaler,
    target: &'a WakeTarget,
}

impl Drop for Waking<'_> {
    fn drop(&mut self) {
        self.scaler.with_entry(self.target, |e| e.waking = false);
    }
}

/// How often activity is reported for a Deployment idle after `idle`.
fn report_every(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// An open connection, counted for its Deployments' activity until dropped.
#[derive(Debug)]
pub struct Connection {
    scaler: Arc<Scaler>,
    targets: Vec<WakeTarget>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let now = Instant::now();
        for target in &self.targets {
            self.scaler.with_entry(target, |e| {
                e.open = e.open.saturating_sub(1);
                e.touched = Some(now);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_spaced_by_a_quarter_of_the_idle_period_within_bounds() {
        assert_eq!(report_every(Duration::from_secs(2)), Duration::from_secs(1));
        assert_eq!(report_every(Duration::from_secs(20)), Duration::from_secs(5));
        assert_eq!(report_every(Duration::from_secs(600)), Duration::from_secs(10));
    }

    #[test]
    fn activity_is_reported_once_per_interval_while_there_is_traffic() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut e = Entry { idle: Duration::from_secs(20), ..Entry::default() };
        assert!(!e.due(at(0)), "no traffic yet");
        e.touched = Some(at(10));
        assert!(e.due(at(100)), "first traffic is reported at once");
        e.touched = Some(at(200));
        assert!(!e.due(at(1_000)), "within the 5s interval");
        assert!(e.due(at(5_200)), "the interval passed with traffic since");
        assert!(!e.due(at(20_000)), "no traffic since the last report");
        e.open = 1;
        assert!(e.due(at(20_100)), "an open connection counts as traffic");
        assert!(!e.due(at(21_000)));
        assert!(e.due(at(25_100)));
    }
}
