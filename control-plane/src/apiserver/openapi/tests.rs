//! HTTP behaviour of the OpenAPI routes, and the real check: `kubectl explain` (v1.32, at
//! `/usr/bin/kubectl`) against these routes plus a minimal hard-coded discovery.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use prost::Message;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;

async fn call(uri: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = routes::<()>().oneshot(req.body(Body::empty()).expect("request")).await.expect("infallible");
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, body.collect().await.expect("body").to_bytes())
}

#[tokio::test]
async fn v2_negotiates_json_and_protobuf() {
    let (status, headers, body) = call("/openapi/v2", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let doc: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(doc["swagger"], "2.0");
    let etag = headers.get(header::ETAG).expect("etag").to_str().expect("ascii").to_owned();

    let (status, headers, body) = call("/openapi/v2", &[("accept", V2_PROTOBUF)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], V2_PROTOBUF_RESPONSE);
    let doc = v2_proto::Document::decode(body).expect("protobuf");
    assert!(doc.definitions.expect("definitions").additional_properties.len() > 100);

    let (status, _, body) = call("/openapi/v2", &[("if-none-match", &etag)]).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
}

#[tokio::test]
async fn v3_index_links_hashed_documents() {
    let (status, _, body) = call("/openapi/v3", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let index: Value = serde_json::from_slice(&body).expect("json");
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"].as_str().expect("apps url").to_owned();
    assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
    assert!(index["paths"]["api/v1"]["serverRelativeURL"].is_string());

    let (status, headers, body) = call(&url, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CACHE_CONTROL].to_str().expect("ascii").contains("immutable"));
    let doc: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(doc["openapi"], "3.0.0");

    let (status, headers, _) = call("/openapi/v3/apis/apps/v1?hash=stale", &[]).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers[header::LOCATION], url.as_str());

    let (status, _, _) = call("/openapi/v3/apis/nope/v1", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Just enough legacy discovery for kubectl to map `pod` and `deployment` to their kinds.
fn discovery() -> Router {
    let resource = |name: &str, singular: &str, kind: &str| {
        json!({
            "name": name, "singularName": singular, "namespaced": true, "kind": kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        })
    };
    let api = json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []});
    let core = json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [resource("pods", "pod", "Pod")]});
    let apis = json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{
        "name": "apps",
        "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
        "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"},
    }]});
    let apps = json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
        "resources": [resource("deployments", "deployment", "Deployment")],
    });
    let serve = |v: Value| get(move || std::future::ready(axum::Json(v)));
    Router::new()
        .route("/api", serve(api))
        .route("/api/v1", serve(core))
        .route("/apis", serve(apis))
        .route("/apis/apps/v1", serve(apps))
}

async fn kubectl(server: &str, dir: &std::path::Path, args: &[&str]) -> String {
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, "").expect("write empty kubeconfig");
    let output = tokio::process::Command::new("/usr/bin/kubectl")
        .arg(format!("--server={server}"))
        .arg(format!("--cache-dir={}", dir.join("cache").display()))
        .args(args)
        .env("KUBECONFIG", &kubeconfig)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("kubectl timed out")
        .expect("kubectl runs (is kubectl 1.32 installed at /usr/bin/kubectl?)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "kubectl {args:?} failed: {}\n{stdout}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[tokio::test]
async fn kubectl_explain_works() {
    prebuild();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = format!("http://{}", listener.local_addr().expect("addr"));
    let app = routes::<()>().merge(discovery());
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().expect("tempdir");

    // OpenAPI v3 (the default since kubectl 1.27).
    let pod = kubectl(&server, dir.path(), &["explain", "pod"]).await;
    assert!(pod.contains("KIND:       Pod") && pod.contains("VERSION:    v1"), "{pod}");
    assert!(pod.contains("spec\t<PodSpec>"), "{pod}");
    let strategy = kubectl(&server, dir.path(), &["explain", "deployment.spec.strategy"]).await;
    assert!(strategy.contains("FIELD: strategy <DeploymentStrategy>"), "{strategy}");
    assert!(strategy.contains("rollingUpdate\t<RollingUpdateDeployment>"), "{strategy}");

    // OpenAPI v2, through the protobuf document.
    let v2 =
        kubectl(&server, dir.path(), &["explain", "deployment.spec.strategy", "--output=plaintext-openapiv2"]).await;
    assert!(v2.contains("RESOURCE: strategy <Object>"), "{v2}");
    assert!(v2.contains("rollingUpdate"), "{v2}");

    serving.abort();
}

/// `kubectl apply` computes its strategic merge patch from the OpenAPI documents: with the
/// `containers` merge key it deletes the dropped container by name (`$patch: delete`) instead
/// of sending a replacement list the server would merge into the old one.
#[tokio::test]
async fn kubectl_apply_merges_containers_by_name() {
    let pod = |containers: Value| {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "default"},
               "spec": {"containers": containers}})
    };
    let old = pod(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]));
    let mut live = old.clone();
    live["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/last-applied-configuration": old.to_string()});
    let patches = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = patches.clone();
    let live_for_patch = live.clone();
    let item = get(move || std::future::ready(axum::Json(live.clone()))).patch(move |body: String| {
        seen.lock().expect("lock").push(body);
        std::future::ready(axum::Json(live_for_patch.clone()))
    });
    let app = routes::<()>().merge(discovery()).route("/api/v1/namespaces/default/pods/web", item);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = format!("http://{}", listener.local_addr().expect("addr"));
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().expect("tempdir");

    let manifest = dir.path().join("pod.json");
    std::fs::write(&manifest, pod(json!([{"name": "a", "image": "a:2"}])).to_string()).expect("write manifest");
    let manifest = manifest.display().to_string();
    kubectl(&server, dir.path(), &["apply", "-f", &manifest]).await;

    let patches = patches.lock().expect("lock").clone();
    let [patch] = patches.as_slice() else { panic!("expected one PATCH, got {patches:?}") };
    let patch: Value = serde_json::from_str(patch).expect("patch is JSON");
    assert_eq!(patch["spec"]["$setElementOrder/containers"], json!([{"name": "a"}]), "{patch}");
    let containers = patch["spec"]["containers"].as_array().expect("containers");
    assert!(containers.contains(&json!({"$patch": "delete", "name": "b"})), "{patch}");
    serving.abort();
}
