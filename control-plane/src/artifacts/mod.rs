//! The built-in OCI registry: the OCI Distribution API (`/v2/…`) served on the API server's
//! own listener, so `skiff push` and the node agents need no other service — the same TLS
//! certificate, the same cluster CA and the same credentials as the Kubernetes API.
//!
//! Layout: `path` parses endpoints, names, references and ranges (pure); `storage` owns the
//! files under `<data-dir>/registry/`; `error` writes the OCI error format; this module maps
//! HTTP verbs to storage operations. Authentication happens before any of this, in
//! [`crate::apiserver::auth`] (which also accepts HTTP Basic whose password is a valid
//! bearer token, as docker and oras send).
//!
//! It stores any artifact (WASM artifacts today, container images with the containers issue):
//! it verifies digests but does not interpret blobs. Not done: garbage collection, the
//! referrers API, the catalog, ranged blob reads.

pub mod error;
pub mod path;
pub mod storage;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use tracing::instrument;

use self::error::RegistryError;
use self::path::{Digest, Reference, Route, parse_content_range, parse_route, upload_range};
use self::storage::MAX_MANIFEST_BYTES;
use crate::apiserver::SharedState;

/// Header carrying a blob's or manifest's digest.
const DIGEST_HEADER: &str = "docker-content-digest";
/// Header carrying an upload's id.
const UPLOAD_UUID_HEADER: &str = "docker-upload-uuid";

/// The `/v2/` routes; the caller puts them behind authentication.
pub fn routes() -> Router<SharedState> {
    Router::new().route("/v2", get(version_check)).route("/v2/", get(version_check)).route("/v2/{*rest}", any(dispatch))
}

/// `GET /v2/`: tells clients this is a registry and that their credentials work.
async fn version_check() -> Response {
    let mut response = axum::Json(serde_json::json!({})).into_response();
    response.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    response
}

#[instrument(level = "debug", skip_all, fields(%method, path = rest))]
async fn dispatch(
    State(state): State<SharedState>,
    UrlPath(rest): UrlPath<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match handle(&state, &rest, &method, &uri, &headers, body).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn handle(
    state: &SharedState,
    rest: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    let store =
        state.artifacts.as_deref().ok_or_else(|| RegistryError::NotFound("this server has no registry".into()))?;
    let query: HashMap<String, String> =
        axum::extract::Query::try_from_uri(uri).map(|q| q.0).map_err(|e| RegistryError::Body(e.body_text()))?;
    let route = parse_route(rest)?;
    match (route, method) {
        (Route::Blob { digest, .. }, m) if m == Method::HEAD || m == Method::GET => {
            let (file, size) = store.open_blob(&digest).await?;
            let body = if m == Method::GET {
                Body::from_stream(tokio_util::io::ReaderStream::new(file))
            } else {
                Body::empty()
            };
            Ok(with_headers(
                StatusCode::OK,
                &[
                    (header::CONTENT_TYPE.as_str(), "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH.as_str(), size.to_string()),
                    (DIGEST_HEADER, digest.to_string()),
                ],
                body,
            ))
        }
        (Route::UploadStart { name }, &Method::POST) => start_upload(store, &name, &query, headers, body).await,
        (Route::Upload { name, id }, &Method::GET) => {
            let size = store.upload_size(&id).await?;
            Ok(upload_status(StatusCode::NO_CONTENT, &name, &id, size))
        }
        (Route::Upload { name, id }, &Method::PATCH) => {
            let start = match headers.get(header::CONTENT_RANGE) {
                None => None,
                Some(value) => {
                    let parsed = value.to_str().ok().and_then(parse_content_range);
                    let size = store.upload_size(&id).await?;
                    let (start, _end) = parsed.ok_or_else(|| RegistryError::RangeInvalid {
                        message: format!("bad Content-Range {value:?}"),
                        size,
                    })?;
                    Some(start)
                }
            };
            let size = store.append_upload(&id, start, body).await?;
            Ok(upload_status(StatusCode::ACCEPTED, &name, &id, size))
        }
        (Route::Upload { name, id }, &Method::PUT) => {
            let digest = required_digest(&query)?;
            store.append_upload(&id, None, body).await?;
            store.finish_upload(&id, &digest).await?;
            Ok(blob_created(&name, &digest))
        }
        (Route::Upload { id, .. }, &Method::DELETE) => {
            store.cancel_upload(&id).await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Route::Manifest { name, reference }, m) if m == Method::HEAD || m == Method::GET => {
            let digest = resolve(store, &name, &reference).await?;
            let (bytes, media_type) = store.manifest(&name, &digest).await?;
            let size = bytes.len().to_string();
            let body = if m == Method::GET { Body::from(bytes) } else { Body::empty() };
            Ok(with_headers(
                StatusCode::OK,
                &[
                    (header::CONTENT_TYPE.as_str(), media_type),
                    (header::CONTENT_LENGTH.as_str(), size),
                    (DIGEST_HEADER, digest.to_string()),
                ],
                body,
            ))
        }
        (Route::Manifest { name, reference }, &Method::PUT) => {
            put_manifest(store, &name, reference, headers, body).await
        }
        (Route::Manifest { name, reference }, &Method::DELETE) => {
            match reference {
                Reference::Digest(digest) => store.delete_manifest(&name, &digest).await?,
                Reference::Tag(tag) => store.delete_tag(&name, &tag).await?,
            }
            Ok(StatusCode::ACCEPTED.into_response())
        }
        (Route::Tags { name }, &Method::GET) => {
            let tags = paginate(store.tags(&name).await?, &query);
            Ok(axum::Json(serde_json::json!({"name": name, "tags": tags})).into_response())
        }
        (_, m) => Err(RegistryError::Unsupported(format!("{m} {}", uri.path()))),
    }
}

/// `POST …/blobs/uploads/`: a cross-repository mount (blobs are shared, so it succeeds when
/// the blob exists), a monolithic upload (`?digest=` with the body), or the start of a
/// chunked one.
async fn start_upload(
    store: &storage::Storage,
    name: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    if let Some(mount) = query.get("mount") {
        let digest = Digest::parse(mount)?;
        if store.blob_size(&digest).await?.is_some() {
            return Ok(blob_created(name, &digest));
        }
    }
    let id = store.new_upload().await?;
    if let Some(digest) = query.get("digest") {
        let digest = Digest::parse(digest)?;
        store.append_upload(&id, None, body).await?;
        store.finish_upload(&id, &digest).await?;
        return Ok(blob_created(name, &digest));
    }
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > 0);
    if has_body {
        let _ = store.cancel_upload(&id).await;
        return Err(RegistryError::BlobUploadInvalid("a body without ?digest= (monolithic uploads need one)".into()));
    }
    Ok(upload_status(StatusCode::ACCEPTED, name, &id, 0))
}

/// `PUT …/manifests/<reference>`: stores the manifest by digest (checking the digest when
/// the reference is one, and that the blobs it names exist) and points a tag at it.
async fn put_manifest(
    store: &storage::Storage,
    name: &str,
    reference: Reference,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, RegistryError> {
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| RegistryError::TooLarge(format!("manifest over {MAX_MANIFEST_BYTES} bytes or unreadable: {e}")))?;
    let parsed: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| RegistryError::ManifestInvalid(format!("not JSON: {e}")))?;
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| parsed["mediaType"].as_str().map(str::to_string))
        .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".to_string());
    for digest in referenced_blobs(&parsed) {
        let digest = Digest::parse(&digest).map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
        if store.blob_size(&digest).await?.is_none() {
            return Err(RegistryError::ManifestBlobUnknown(digest.to_string()));
        }
    }
    for digest in referenced_manifests(&parsed) {
        let digest = Digest::parse(&digest).map_err(|e| RegistryError::ManifestInvalid(e.to_string()))?;
        if store.manifest_media_type(name, &digest).await?.is_none() {
            return Err(RegistryError::ManifestBlobUnknown(digest.to_string()));
        }
    }
    if let Reference::Digest(expected) = &reference {
        let actual = Digest::from_sha256(&Sha256::digest(&bytes));
        if actual != *expected {
            return Err(RegistryError::DigestInvalid(format!("manifest digest is {actual}, not {expected}")));
        }
    }
    let digest = store.put_manifest(name, &bytes, &media_type).await?;
    if let Reference::Tag(tag) = reference {
        store.put_tag(name, &tag, &digest).await?;
    }
    Ok(with_headers(
        StatusCode::CREATED,
        &[(header::LOCATION.as_str(), format!("/v2/{name}/manifests/{digest}")), (DIGEST_HEADER, digest.to_string())],
        Body::empty(),
    ))
}

/// Digests of the blobs an image manifest names (config, layers).
fn referenced_blobs(manifest: &serde_json::Value) -> Vec<String> {
    let config = manifest["config"]["digest"].as_str().map(str::to_string);
    let layers =
        manifest["layers"].as_array().into_iter().flatten().filter_map(|l| l["digest"].as_str().map(str::to_string));
    config.into_iter().chain(layers).collect()
}

/// Digests of the manifests an index names.
fn referenced_manifests(manifest: &serde_json::Value) -> Vec<String> {
    manifest["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["digest"].as_str().map(str::to_string))
        .collect()
}

async fn resolve(store: &storage::Storage, name: &str, reference: &Reference) -> Result<Digest, RegistryError> {
    match reference {
        Reference::Digest(digest) => Ok(digest.clone()),
        Reference::Tag(tag) => store.resolve_tag(name, tag).await,
    }
}

fn required_digest(query: &HashMap<String, String>) -> Result<Digest, RegistryError> {
    let digest = query.get("digest").ok_or_else(|| RegistryError::DigestInvalid("?digest= is required".into()))?;
    Digest::parse(digest)
}

/// `?n=&last=` pagination of a sorted tag list.
fn paginate(tags: Vec<String>, query: &HashMap<String, String>) -> Vec<String> {
    let after: Vec<String> = match query.get("last") {
        Some(last) => tags.into_iter().filter(|t| t > last).collect(),
        None => tags,
    };
    match query.get("n").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) => after.into_iter().take(n).collect(),
        None => after,
    }
}

fn blob_created(name: &str, digest: &Digest) -> Response {
    with_headers(
        StatusCode::CREATED,
        &[(header::LOCATION.as_str(), format!("/v2/{name}/blobs/{digest}")), (DIGEST_HEADER, digest.to_string())],
        Body::empty(),
    )
}

fn upload_status(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    with_headers(
        status,
        &[
            (header::LOCATION.as_str(), format!("/v2/{name}/blobs/uploads/{id}")),
            (header::RANGE.as_str(), upload_range(size)),
            (UPLOAD_UUID_HEADER, id.to_string()),
            (header::CONTENT_LENGTH.as_str(), "0".to_string()),
        ],
        Body::empty(),
    )
}

fn with_headers(status: StatusCode, headers: &[(&str, String)], body: Body) -> Response {
    let mut response = (status, body).into_response();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (header::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_pagination() {
        let tags: Vec<String> = ["a", "b", "c", "d"].into_iter().map(String::from).collect();
        let q = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(paginate(tags.clone(), &q(&[])), tags);
        assert_eq!(paginate(tags.clone(), &q(&[("n", "2")])), vec!["a", "b"]);
        assert_eq!(paginate(tags.clone(), &q(&[("n", "2"), ("last", "b")])), vec!["c", "d"]);
    }

    #[test]
    fn manifest_references() {
        let manifest = serde_json::json!({
            "config": {"digest": "sha256:c"},
            "layers": [{"digest": "sha256:l1"}, {"digest": "sha256:l2"}],
        });
        assert_eq!(referenced_blobs(&manifest), vec!["sha256:c", "sha256:l1", "sha256:l2"]);
        let index = serde_json::json!({"manifests": [{"digest": "sha256:m"}]});
        assert_eq!(referenced_manifests(&index), vec!["sha256:m"]);
        assert!(referenced_blobs(&index).is_empty());
    }
}
