//! Watch streams: newline-delimited JSON `{"type": ..., "object": ...}` events over a chunked
//! (HTTP/1.1) or streamed (HTTP/2) response, as client-go and kube-rs expect.
//!
//! Semantics follow the Go API server: `resourceVersion` unset or `"0"` (or
//! `sendInitialEvents=true`) starts with synthetic `ADDED` events for what matches at one
//! revision R of a list, then streams the changes after R (no gap, no duplicate);
//! `sendInitialEvents=false` without a resourceVersion starts at the current revision with no
//! synthetic events; a specific resourceVersion replays every change after it; a compacted one
//! ends in an `ERROR` event carrying a `410 Expired` Status. With `sendInitialEvents=true` and
//! bookmarks allowed (watch-list), the initial set ends with a `BOOKMARK` annotated
//! `k8s.io/initial-events-end: "true"`. Label/field selectors turn updates that cross the
//! selector boundary into `ADDED`/`DELETED`. Bookmarks are sent periodically when allowed, and
//! the stream ends at `timeoutSeconds`, at shutdown, or when the client goes away.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{Instrument, debug};

use super::SharedState;
use super::error::ApiError;
use super::request::{Query, ResourcePath};
use super::table::{self, IncludeObject};
use crate::registry::list::{self, Filter};
use crate::registry::object;
use crate::storage::{EventKind, Revision, StoreError};

/// How often a bookmark is sent to clients that allow them.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(10);
/// Longest a watch stays open without `timeoutSeconds` (clients re-watch).
const MAX_WATCH: Duration = Duration::from_secs(30 * 60);

struct Watch {
    state: SharedState,
    path: ResourcePath,
    filter: Filter,
    name: Option<String>,
    table: bool,
    headers_sent: bool,
    tx: mpsc::Sender<Bytes>,
}

/// Starts a watch and returns its streaming response.
pub async fn serve(state: SharedState, path: ResourcePath, q: Query, table: bool) -> Result<Response, ApiError> {
    let filter = Filter::parse(path.info, q.label_selector.as_deref(), q.field_selector.as_deref())?;
    let start = match q.resource_version.as_deref() {
        None | Some("") | Some("0") => None,
        Some(rv) => {
            Some(rv.parse::<Revision>().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion {rv:?}")))?)
        }
    };
    let initial = wants_initial_events(start, q.send_initial_events_param());
    let timeout = q.timeout_seconds.map(Duration::from_secs).unwrap_or(MAX_WATCH).min(MAX_WATCH);
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let span = tracing::info_span!("watch", kind = path.info.kind, ns = ?path.namespace);
    let w = Watch { name: path.name.clone(), state: state.clone(), path, filter, table, headers_sent: false, tx };
    let bookmarks = q.bookmarks();
    let initial_end_bookmark = q.send_initial_events() && bookmarks;
    state.tasks.spawn(w.run(start, initial, initial_end_bookmark, bookmarks, timeout).instrument(span));
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Whether a watch starts with the current state: asked explicitly, or by default when no
/// specific resourceVersion was given.
fn wants_initial_events(start: Option<Revision>, send_initial_events: Option<bool>) -> bool {
    send_initial_events.unwrap_or(start.is_none())
}

impl Watch {
    async fn run(
        mut self,
        start: Option<Revision>,
        initial: bool,
        initial_end_bookmark: bool,
        bookmarks: bool,
        timeout: Duration,
    ) {
        let mut last_rev = match self.initial_events(start, initial, initial_end_bookmark).await {
            Ok(rev) => rev,
            Err(e) => {
                self.send_error(&e).await;
                return;
            }
        };
        let prefix = self.path.list_prefix();
        let mut stream = match self.state.store().watch(&prefix, last_rev).await {
            Ok(s) => s,
            Err(e) => {
                self.send_error(&ApiError::from(e)).await;
                return;
            }
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(BOOKMARK_INTERVAL);
        tick.tick().await;
        let shutdown = self.state.shutdown.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = &mut deadline => break,
                _ = self.tx.closed() => break,
                _ = tick.tick(), if bookmarks => {
                    if !self.bookmark(last_rev, false).await { break; }
                }
                ev = stream.next() => match ev {
                    None => break,
                    Some(Err(StoreError::Compacted { requested, compacted })) => {
                        self.send_error(&ApiError::from(StoreError::Compacted { requested, compacted })).await;
                        break;
                    }
                    Some(Err(e)) => {
                        self.send_error(&ApiError::from(e)).await;
                        break;
                    }
                    Some(Ok(ev)) => {
                        last_rev = ev.kv.mod_revision;
                        if !self.event(ev).await { break; }
                    }
                },
            }
        }
        debug!("watch ended");
    }

    /// Sends the initial state when asked; returns the revision to watch after.
    async fn initial_events(
        &mut self,
        start: Option<Revision>,
        initial: bool,
        end_bookmark: bool,
    ) -> Result<Revision, ApiError> {
        if !initial {
            // A compacted revision is reported by `Store::watch` itself (→ 410 ERROR event).
            return match start {
                Some(rev) => Ok(rev),
                // "Start at most recent" without the state: only changes from now on.
                None => Ok(self.state.store().current_revision().await?),
            };
        }
        let page = list::list(self.state.store(), &self.path.list_prefix(), &self.filter, 0, None).await?;
        for obj in page.items {
            if self.name_matches(&obj) && !self.send("ADDED", obj).await {
                break;
            }
        }
        if end_bookmark {
            self.bookmark(page.revision, true).await;
        }
        Ok(page.revision)
    }

    fn name_matches(&self, obj: &Value) -> bool {
        self.name.as_deref().is_none_or(|n| object::name(obj) == n)
    }

    /// Translates one store event; false when the client is gone.
    async fn event(&mut self, ev: crate::storage::WatchEvent) -> bool {
        if self.filter.is_empty() && self.name.is_none() && !self.table {
            // Every version matches: the event's kind follows from the store's, and the line
            // is the stored bytes with the resourceVersion spliced in (no decode, no encode).
            let kind = match (&ev.kind, &ev.prev) {
                (EventKind::Create, _) | (EventKind::Update, None) => "ADDED",
                (EventKind::Update, Some(_)) => "MODIFIED",
                (EventKind::Delete, _) => "DELETED",
            };
            let mut line = Vec::with_capacity(ev.kv.value.len() + 64);
            line.extend_from_slice(b"{\"type\":\"");
            line.extend_from_slice(kind.as_bytes());
            line.extend_from_slice(b"\",\"object\":");
            if object::splice_resource_version(&ev.kv.value, ev.kv.mod_revision, &mut line) {
                line.extend_from_slice(b"}\n");
                return self.tx.send(Bytes::from(line)).await.is_ok();
            }
        }
        let Ok(new) = object::decode(&ev.kv) else { return true };
        if !self.name_matches(&new) {
            return true;
        }
        let now_matches = self.filter.matches(&new);
        // Without selectors every version matches: the previous one need not be decoded (most
        // watches — every informer — have none, and decoding is most of a watch's cost).
        let was_matching = if self.filter.is_empty() {
            ev.prev.is_some()
        } else {
            ev.prev.as_ref().and_then(|p| object::decode(p).ok()).is_some_and(|p| self.filter.matches(&p))
        };
        let kind = match ev.kind {
            EventKind::Create if now_matches => "ADDED",
            EventKind::Update if now_matches && was_matching => "MODIFIED",
            EventKind::Update if now_matches => "ADDED",
            EventKind::Update if was_matching => "DELETED",
            EventKind::Delete if was_matching || (ev.prev.is_none() && now_matches) => "DELETED",
            _ => return true,
        };
        self.send(kind, new).await
    }

    async fn send(&mut self, kind: &str, obj: Value) -> bool {
        let obj = if self.table {
            let rv = object::meta_str(&obj, "resourceVersion").unwrap_or("").to_string();
            let mut t =
                table::to_table(self.path.info.kind, std::slice::from_ref(&obj), IncludeObject::Metadata, &rv, None);
            // Column definitions travel once, with the first event, as the Go server does.
            if self.headers_sent {
                t["columnDefinitions"] = json!([]);
            }
            self.headers_sent = true;
            t
        } else {
            obj
        };
        self.write(&json!({"type": kind, "object": obj})).await
    }

    async fn bookmark(&mut self, rev: Revision, initial_end: bool) -> bool {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.path.info.kind, "apiVersion": self.path.info.api_version(), "metadata": meta});
        self.write(&json!({"type": "BOOKMARK", "object": obj})).await
    }

    async fn send_error(&mut self, e: &ApiError) {
        self.write(&json!({"type": "ERROR", "object": e.to_status()})).await;
    }

    async fn write(&mut self, v: &Value) -> bool {
        let mut line = serde_json::to_vec(v).unwrap_or_default();
        line.push(b'\n');
        self.tx.send(Bytes::from(line)).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::wants_initial_events;

    #[test]
    fn initial_events_follow_kubernetes_defaults() {
        assert!(wants_initial_events(None, None), "no resourceVersion: state first");
        assert!(!wants_initial_events(Some(42), None), "a resourceVersion: only changes after it");
        assert!(wants_initial_events(Some(42), Some(true)), "watch-list asks explicitly");
        assert!(!wants_initial_events(None, Some(false)), "explicitly none: start at the most recent");
    }
}
