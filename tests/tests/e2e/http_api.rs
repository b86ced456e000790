//! Raw HTTP checks of the API conventions kubectl does not exercise directly: authentication,
//! body limits, unknown resources, kind mismatch, optimistic concurrency, dry run,
//! generateName, delete options and preconditions, deletecollection, field selectors, Table
//! output, and watches that start from the current state (no resourceVersion, `"0"`, and
//! `sendInitialEvents`).

use anyhow::{Context, Result, ensure};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use skiff_tests::{Skiff, StoreKind, both_stores};

use crate::{EVENT_TIMEOUT, item_names};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn configmap(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"},
    })
}

/// Status and parsed JSON body of a response.
async fn parts(response: Response) -> Result<(StatusCode, Value)> {
    let status = response.status();
    let text = response.text().await.context("reading body")?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, body))
}

async fn post(http: &Client, url: &str, body: &Value) -> Result<(StatusCode, Value)> {
    parts(http.post(url).json(body).send().await.context("POST")?).await
}

async fn get(http: &Client, url: &str) -> Result<(StatusCode, Value)> {
    parts(http.get(url).send().await.context("GET")?).await
}

/// Authentication, limits and request validation.
async fn rejections(store: StoreKind) -> Result<()> {
    let skiff = Skiff::start(store).await?;
    let http = skiff.http()?;
    let base = &skiff.url;

    let (status, body) = get(&skiff.http_anonymous()?, &format!("{base}/api/v1/namespaces")).await?;
    ensure!(status == StatusCode::UNAUTHORIZED, "no token: {status} {body}");

    let (status, _) = get(&http, &format!("{base}/api/v1/namespaces")).await?;
    ensure!(status == StatusCode::OK, "with token: {status}");

    let mut big = configmap("big", json!({}));
    big["data"]["k"] = Value::String("x".repeat(3 * 1024 * 1024 + 1024));
    let (status, _) = post(&http, &format!("{base}{CMS}"), &big).await?;
    ensure!(status == StatusCode::PAYLOAD_TOO_LARGE, "3 MiB body: {status}");

    let (status, body) = get(&http, &format!("{base}/api/v1/namespaces/default/widgets")).await?;
    ensure!(status == StatusCode::NOT_FOUND, "unknown resource: {status} {body}");
    let (status, _) = get(&http, &format!("{base}/apis/nope.example/v1/things")).await?;
    ensure!(status == StatusCode::NOT_FOUND, "unknown group: {status}");

    let mut secret = configmap("mismatch", json!({}));
    secret["kind"] = json!("Secret");
    let (status, body) = post(&http, &format!("{base}{CMS}"), &secret).await?;
    ensure!(status == StatusCode::BAD_REQUEST, "kind mismatch: {status} {body}");
    ensure!(body["kind"] == "Status", "errors are Status objects: {body}");
    Ok(())
}

/// resourceVersion conflicts, dry run and generateName.
async fn writes(store: StoreKind) -> Result<()> {
    let skiff = Skiff::start(store).await?;
    let http = skiff.http()?;
    let list_url = format!("{}{CMS}", skiff.url);

    let (status, created) = post(&http, &list_url, &configmap("cas", json!({}))).await?;
    ensure!(status == StatusCode::CREATED, "create: {status} {created}");
    let (status, body) = post(&http, &list_url, &configmap("cas", json!({}))).await?;
    ensure!(status == StatusCode::CONFLICT && body["reason"] == "AlreadyExists", "{status} {body}");

    let item_url = format!("{list_url}/cas");
    let mut update = created.clone();
    update["data"]["k"] = json!("v2");
    let (status, updated) = parts(http.put(&item_url).json(&update).send().await?).await?;
    ensure!(status == StatusCode::OK, "update: {status} {updated}");
    ensure!(
        updated["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"],
        "resourceVersion did not change: {updated}"
    );
    // `update` still carries the old resourceVersion.
    update["data"]["k"] = json!("v3");
    let (status, body) = parts(http.put(&item_url).json(&update).send().await?).await?;
    ensure!(status == StatusCode::CONFLICT, "stale update: {status} {body}");
    ensure!(body["reason"] == "Conflict", "{body}");

    let (status, body) = post(&http, &format!("{list_url}?dryRun=All"), &configmap("dry", json!({}))).await?;
    ensure!(status.is_success(), "dry run: {status} {body}");
    let (status, _) = get(&http, &format!("{list_url}/dry")).await?;
    ensure!(status == StatusCode::NOT_FOUND, "dry run stored the object: {status}");

    let generated = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"generateName": "gen-"},
    });
    let (status, body) = post(&http, &list_url, &generated).await?;
    ensure!(status == StatusCode::CREATED, "generateName: {status} {body}");
    let name = body["metadata"]["name"].as_str().context("generated name")?;
    ensure!(name.starts_with("gen-") && name.len() > 4, "generated name {name}");
    let (status, _) = get(&http, &format!("{list_url}/{name}")).await?;
    ensure!(status == StatusCode::OK, "generated object readable: {status}");
    Ok(())
}

/// Delete options, preconditions, deletecollection and selectors.
async fn deletes_and_selectors(store: StoreKind) -> Result<()> {
    let skiff = Skiff::start(store).await?;
    let http = skiff.http()?;
    let list_url = format!("{}{CMS}", skiff.url);
    for (name, group) in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")] {
        let (status, body) = post(&http, &list_url, &configmap(name, json!({"group": group}))).await?;
        ensure!(status == StatusCode::CREATED, "create {name}: {status} {body}");
    }

    let (status, list) = get(&http, &format!("{list_url}?fieldSelector=metadata.name%3Db1")).await?;
    ensure!(status == StatusCode::OK && item_names(&list) == ["b1"], "{status} {list}");

    let wrong_uid = json!({
        "apiVersion": "v1", "kind": "DeleteOptions",
        "preconditions": {"uid": "00000000-0000-0000-0000-000000000000"},
    });
    let (status, body) = parts(http.delete(format!("{list_url}/b1")).json(&wrong_uid).send().await?).await?;
    ensure!(status == StatusCode::CONFLICT, "uid precondition: {status} {body}");

    let (_, b1) = get(&http, &format!("{list_url}/b1")).await?;
    let right_uid = json!({
        "apiVersion": "v1", "kind": "DeleteOptions",
        "propagationPolicy": "Background",
        "preconditions": {"uid": b1["metadata"]["uid"]},
    });
    let (status, body) = parts(http.delete(format!("{list_url}/b1")).json(&right_uid).send().await?).await?;
    ensure!(status.is_success(), "delete with matching uid: {status} {body}");
    let (status, _) = get(&http, &format!("{list_url}/b1")).await?;
    ensure!(status == StatusCode::NOT_FOUND, "b1 still there: {status}");

    let (status, body) =
        parts(http.delete(format!("{list_url}/a3?propagationPolicy=Background")).send().await?).await?;
    ensure!(status.is_success(), "propagationPolicy query: {status} {body}");

    let (status, body) = parts(http.delete(format!("{list_url}?labelSelector=group%3Da")).send().await?).await?;
    ensure!(status.is_success(), "deletecollection: {status} {body}");
    let (_, list) = get(&http, &format!("{list_url}?labelSelector=group")).await?;
    ensure!(item_names(&list).is_empty(), "group=a left: {list}");
    Ok(())
}

/// `as=Table` returns the Pod columns kubectl prints.
async fn table_output(store: StoreKind) -> Result<()> {
    let skiff = Skiff::start(store).await?;
    let http = skiff.http()?;
    let pods = format!("{}/api/v1/namespaces/default/pods", skiff.url);
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "tabled"},
        "spec": {"containers": [{"name": "main", "image": "registry.example/app:1"}]},
    });
    let (status, body) = post(&http, &pods, &pod).await?;
    ensure!(status == StatusCode::CREATED, "create pod: {status} {body}");

    let response = http.get(&pods).header("Accept", "application/json;as=Table;g=meta.k8s.io;v=v1").send().await?;
    let (status, table) = parts(response).await?;
    ensure!(status == StatusCode::OK, "{status} {table}");
    ensure!(table["kind"] == "Table", "{table}");
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .context("columnDefinitions")?
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    for column in ["Name", "Ready", "Status", "Restarts", "Age"] {
        ensure!(columns.contains(&column), "missing column {column}: {columns:?}");
    }
    ensure!(table["rows"][0]["cells"][0] == "tabled", "{table}");
    Ok(())
}

/// A watch response read as newline-delimited JSON events.
struct WatchEvents {
    response: Response,
    buffer: Vec<u8>,
}

impl WatchEvents {
    async fn open(http: &Client, url: &str) -> Result<WatchEvents> {
        let response = http.get(url).send().await.context("opening the watch")?;
        ensure!(response.status() == StatusCode::OK, "watch {url}: {}", response.status());
        Ok(WatchEvents { response, buffer: Vec::new() })
    }

    /// The next event, failing after [`EVENT_TIMEOUT`] or at the end of the stream.
    async fn next(&mut self) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                return serde_json::from_slice(&line).context("a watch event is not JSON");
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .with_context(|| format!("no watch event within {EVENT_TIMEOUT:?}"))??
                .context("the watch ended")?;
            self.buffer.extend_from_slice(&chunk);
        }
    }

    /// The next event as (type, object name).
    async fn next_named(&mut self) -> Result<(String, String)> {
        let event = self.next().await?;
        let kind = event["type"].as_str().with_context(|| format!("event without type: {event}"))?.to_string();
        let name = event["object"]["metadata"]["name"].as_str().unwrap_or_default().to_string();
        Ok((kind, name))
    }

    /// `n` events, which must all be ADDED; their names, sorted.
    async fn added(&mut self, n: usize) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for _ in 0..n {
            let (kind, name) = self.next_named().await?;
            ensure!(kind == "ADDED", "expected ADDED, got {kind} {name} (after {names:?})");
            names.push(name);
        }
        names.sort();
        Ok(names)
    }
}

async fn merge_patch(http: &Client, url: &str, patch: &Value) -> Result<()> {
    let response = http.patch(url).header("content-type", "application/merge-patch+json").json(patch).send().await?;
    ensure!(response.status() == StatusCode::OK, "patch {url}: {}", response.status());
    Ok(())
}

/// A watch without resourceVersion (or with `"0"`) first lists what matches now as ADDED
/// events, then streams changes after that revision: no gap, no duplicate, selectors honoured.
async fn watch_starts_from_current_state(store: StoreKind) -> Result<()> {
    let skiff = Skiff::start(store).await?;
    let http = skiff.http()?;
    let list_url = format!("{}{CMS}", skiff.url);
    for (name, group) in [("w1", "x"), ("w2", "x"), ("w3", "y")] {
        let (status, body) = post(&http, &list_url, &configmap(name, json!({"group": group}))).await?;
        ensure!(status == StatusCode::CREATED, "create {name}: {status} {body}");
    }

    let mut all = WatchEvents::open(&http, &format!("{list_url}?watch=true&timeoutSeconds=60")).await?;
    ensure!(all.added(3).await? == ["w1", "w2", "w3"], "initial events of the unfiltered watch");
    let mut group_x =
        WatchEvents::open(&http, &format!("{list_url}?watch=1&resourceVersion=0&labelSelector=group%3Dx")).await?;
    ensure!(group_x.added(2).await? == ["w1", "w2"], "initial events of group=x");

    // A change to an object outside the selector is not an event of the filtered watch; the
    // next change shows up once, as MODIFIED, on both.
    merge_patch(&http, &format!("{list_url}/w3"), &json!({"data": {"k": "changed"}})).await?;
    merge_patch(&http, &format!("{list_url}/w2"), &json!({"data": {"k": "changed"}})).await?;
    let (kind, name) = all.next_named().await?;
    ensure!((kind.as_str(), name.as_str()) == ("MODIFIED", "w3"), "unfiltered: {kind} {name}");
    let (kind, name) = all.next_named().await?;
    ensure!((kind.as_str(), name.as_str()) == ("MODIFIED", "w2"), "unfiltered: {kind} {name}");
    let (kind, name) = group_x.next_named().await?;
    ensure!((kind.as_str(), name.as_str()) == ("MODIFIED", "w2"), "group=x: {kind} {name}");
    // Moving into the selector reads as ADDED.
    merge_patch(&http, &format!("{list_url}/w3"), &json!({"metadata": {"labels": {"group": "x"}}})).await?;
    let (kind, name) = group_x.next_named().await?;
    ensure!((kind.as_str(), name.as_str()) == ("ADDED", "w3"), "group=x after relabel: {kind} {name}");

    // sendInitialEvents=false without a resourceVersion: only changes from now on.
    let url = format!("{list_url}?watch=true&sendInitialEvents=false&resourceVersionMatch=NotOlderThan");
    let mut changes_only = WatchEvents::open(&http, &url).await?;
    merge_patch(&http, &format!("{list_url}/w1"), &json!({"data": {"k": "again"}})).await?;
    let (kind, name) = changes_only.next_named().await?;
    ensure!((kind.as_str(), name.as_str()) == ("MODIFIED", "w1"), "sendInitialEvents=false: {kind} {name}");

    // Watch-list (newer client-go): the initial set ends with a bookmark marked as its end.
    let url = format!(
        "{list_url}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&labelSelector=group%3Dx"
    );
    let mut watch_list = WatchEvents::open(&http, &url).await?;
    ensure!(watch_list.added(3).await? == ["w1", "w2", "w3"], "watch-list initial events");
    let bookmark = watch_list.next().await?;
    ensure!(bookmark["type"] == "BOOKMARK", "expected the end-of-initial-events bookmark: {bookmark}");
    ensure!(
        bookmark["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true",
        "bookmark without the initial-events-end annotation: {bookmark}"
    );
    let rv: u64 = bookmark["object"]["metadata"]["resourceVersion"].as_str().unwrap_or_default().parse()?;
    let (_, w1) = get(&http, &format!("{list_url}/w1")).await?;
    let w1_rv: u64 = w1["metadata"]["resourceVersion"].as_str().unwrap_or_default().parse()?;
    ensure!(rv >= w1_rv, "bookmark at {rv}, before the latest change {w1_rv}");
    Ok(())
}

both_stores!(rejections, writes, deletes_and_selectors, table_output, watch_starts_from_current_state);
