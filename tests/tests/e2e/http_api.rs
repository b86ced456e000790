//! Raw HTTP checks of the API conventions kubectl does not exercise directly: authentication,
//! body limits, unknown resources, kind mismatch, optimistic concurrency, dry run,
//! generateName, delete options and preconditions, deletecollection, field selectors and
//! Table output.

use anyhow::{Context, Result, ensure};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use skiff_tests::{Skiff, StoreKind, both_stores};

use crate::item_names;

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

both_stores!(rejections, writes, deletes_and_selectors, table_output);
