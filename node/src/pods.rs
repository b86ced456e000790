//! The pod dispatcher: watches the pods bound to this node and keeps one worker per pod uid.
//!
//! What it owns: the `spec.nodeName=<node>` watch, starting a worker the first time a pod is
//! seen, feeding each worker the latest object (or `None` once the pod is gone from the API,
//! including pods missing from a re-list), and owning the worker tasks. What it does not: any
//! pod lifecycle logic (the worker's).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::worker::{self, WorkerContext};

/// Runs until `cancel` fires, then waits for every worker to stop its containers.
pub async fn dispatch(ctx: Arc<WorkerContext>, cancel: CancellationToken) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.node_name));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut d =
        Dispatcher { ctx, workers: HashMap::new(), finished: HashSet::new(), tasks: JoinSet::new(), listing: None };
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(done) = d.tasks.join_next() => {
                if let Ok(uid) = done {
                    d.workers.remove(&uid);
                    d.finished.insert(uid);
                }
            }
            event = events.next() => match event {
                None => break,
                Some(Err(e)) => warn!(error = %e, "pod watch failed; retrying"),
                Some(Ok(event)) => d.on_event(event, &cancel),
            },
        }
    }
    // Workers' tokens are children of `cancel`: they stop their containers; wait for that.
    d.workers.clear();
    while d.tasks.join_next().await.is_some() {}
    info!("pod dispatcher stopped");
}

struct Dispatcher {
    ctx: Arc<WorkerContext>,
    workers: HashMap<String, watch::Sender<Option<Pod>>>,
    /// Uids whose worker has ended (pod deleted): later events for them start nothing.
    finished: HashSet<String>,
    tasks: JoinSet<String>,
    /// Uids seen during a (re-)list, to find pods deleted while the watch was down.
    listing: Option<HashSet<String>>,
}

impl Dispatcher {
    fn on_event(&mut self, event: watcher::Event<Pod>, cancel: &CancellationToken) {
        match event {
            watcher::Event::Init => self.listing = Some(HashSet::new()),
            watcher::Event::InitApply(pod) => {
                if let (Some(seen), Some(uid)) = (&mut self.listing, &pod.metadata.uid) {
                    seen.insert(uid.clone());
                }
                self.apply(pod, cancel);
            }
            watcher::Event::InitDone => {
                let seen = self.listing.take().unwrap_or_default();
                for (uid, tx) in &self.workers {
                    if !seen.contains(uid) {
                        tx.send_replace(None);
                    }
                }
                self.finished.retain(|uid| seen.contains(uid));
            }
            watcher::Event::Apply(pod) => self.apply(pod, cancel),
            watcher::Event::Delete(pod) => {
                let Some(uid) = pod.metadata.uid else { return };
                if let Some(tx) = self.workers.get(&uid) {
                    tx.send_replace(None);
                }
                self.finished.remove(&uid);
            }
        }
    }

    fn apply(&mut self, pod: Pod, cancel: &CancellationToken) {
        let Some(uid) = pod.metadata.uid.clone() else { return };
        if self.finished.contains(&uid) {
            return;
        }
        if let Some(tx) = self.workers.get(&uid) {
            tx.send_replace(Some(pod));
            return;
        }
        let (tx, rx) = watch::channel(Some(pod.clone()));
        self.workers.insert(uid.clone(), tx);
        let ctx = self.ctx.clone();
        let cancel = cancel.clone();
        self.tasks.spawn(async move {
            worker::run(ctx, pod, rx, cancel).await;
            uid
        });
    }
}
