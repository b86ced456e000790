//! The OpenAPI endpoints: `/openapi/v2` (Swagger 2.0, JSON or gnostic protobuf) and
//! `/openapi/v3` (index plus one OpenAPI 3.0 document per group-version).
//!
//! kubectl depends on these for `explain`, for client-side `apply` validation and patch
//! metadata, and to decide whether the server validates fields itself. Everything is derived
//! from the resource catalog and the `k8s-openapi` schemas, built once on first use (it takes
//! a moment) and then served from memory with content-hash ETags. This module owns only the
//! documents; discovery (`/api`, `/apis`) lives elsewhere.

mod paths;
mod schemas;
mod v2;
pub mod v2_proto;
mod v3;

#[cfg(test)]
mod tests;

pub(crate) use schemas::definitions;

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::sync::OnceLock;

use axum::Router;
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use prost::Message;
use serde::Deserialize;
use sha2::{Digest, Sha512};

/// The media type kubectl's discovery client asks `/openapi/v2` for.
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
/// The media type the protobuf document is labelled with: the Go server answers the `@`
/// spelling with this one because Go's `mime` parser (which kubectl runs on the response)
/// rejects `@` in a subtype.
pub const V2_PROTOBUF_RESPONSE: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// One pre-rendered body with its strong ETag (the upper-case SHA-512 of the body, as the Go
/// server computes it). The body is kept gzip-compressed: the documents are several MiB of
/// repetitive JSON that compresses about tenfold, clients (kubectl's Go transport) ask for
/// gzip anyway, and the rare client that does not gets it inflated on the fly.
#[derive(Debug)]
struct Rendered {
    gzipped: Bytes,
    hash: String,
    content_type: &'static str,
}

impl Rendered {
    fn new(body: Vec<u8>, content_type: &'static str) -> Self {
        let hash = hex::encode_upper(Sha512::digest(&body));
        let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 8), Compression::default());
        // Writing into a Vec cannot fail.
        let gzipped = encoder.write_all(&body).and_then(|()| encoder.finish()).unwrap_or_default();
        Self { gzipped: gzipped.into(), hash, content_type }
    }

    /// The body as the client accepts it: gzip-compressed (and whether it is), or inflated.
    fn body_for(&self, headers: &HeaderMap) -> Result<(Bytes, bool), std::io::Error> {
        if accepts_gzip(headers) {
            return Ok((self.gzipped.clone(), true));
        }
        let mut body = Vec::new();
        GzDecoder::new(&self.gzipped[..]).read_to_end(&mut body)?;
        Ok((body.into(), false))
    }
}

/// True when `Accept-Encoding` lists gzip with a non-zero quality.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |coding| {
            let mut parts = coding.split(';').map(str::trim);
            parts.next().is_some_and(|c| c.eq_ignore_ascii_case("gzip") || c == "*")
                && parts.all(|p| p.replace(' ', "") != "q=0")
        },
    )
}

#[derive(Debug)]
struct Documents {
    v2_json: Rendered,
    v2_proto: Rendered,
    v3_index: Rendered,
    /// Keyed by `api/v1`, `apis/apps/v1`, ...
    v3: BTreeMap<String, Rendered>,
}

static DOCUMENTS: OnceLock<Documents> = OnceLock::new();

fn build() -> Documents {
    let defs = schemas::Definitions::shared();
    let v2 = v2::document(defs);
    let v2_proto = v2_proto::document(&v2).encode_to_vec();
    let v3: BTreeMap<String, Rendered> = v3::documents(defs)
        .into_iter()
        .map(|(key, doc)| (key, Rendered::new(doc.to_string().into_bytes(), "application/json")))
        .collect();
    let hashes = v3.iter().map(|(k, r)| (k.clone(), r.hash.clone())).collect();
    Documents {
        v2_json: Rendered::new(v2.to_string().into_bytes(), "application/json"),
        v2_proto: Rendered::new(v2_proto, V2_PROTOBUF_RESPONSE),
        v3_index: Rendered::new(v3::index(&hashes).to_string().into_bytes(), "application/json"),
        v3,
    }
}

/// The documents, building them off the async runtime the first time.
async fn documents() -> Result<&'static Documents, Response> {
    if let Some(docs) = DOCUMENTS.get() {
        return Ok(docs);
    }
    tokio::task::spawn_blocking(|| DOCUMENTS.get_or_init(build)).await.map_err(|e| {
        tracing::error!(error = %e, "building OpenAPI documents failed");
        (StatusCode::INTERNAL_SERVER_ERROR, "building OpenAPI documents failed").into_response()
    })
}

/// Builds the documents now instead of on the first request (tests use it; the server
/// builds them on first use so that an idle server does not hold them).
pub fn prebuild() {
    DOCUMENTS.get_or_init(build);
}

/// The OpenAPI routes: `/openapi/v2`, `/openapi/v3`, `/openapi/v3/api/{version}` and
/// `/openapi/v3/apis/{group}/{version}`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/openapi/v2", get(serve_v2))
        .route("/openapi/v3", get(serve_v3_index))
        .route("/openapi/v3/api/{version}", get(serve_v3_core))
        .route("/openapi/v3/apis/{group}/{version}", get(serve_v3_group))
}

/// Serves `r`, answering a matching `If-None-Match` with 304.
fn respond(r: &Rendered, headers: &HeaderMap, cache_control: &'static str) -> Response {
    let etag = format!("\"{}\"", r.hash);
    let mut builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, cache_control)
        .header(header::VARY, "Accept");
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let response = if not_modified {
        builder = builder.status(StatusCode::NOT_MODIFIED);
        builder.body(axum::body::Body::empty())
    } else {
        let (body, gzipped) = match r.body_for(headers) {
            Ok(b) => b,
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("inflating: {e}")).into_response(),
        };
        if gzipped {
            builder = builder.header(header::CONTENT_ENCODING, "gzip");
        }
        builder.header(header::CONTENT_TYPE, r.content_type).body(axum::body::Body::from(body))
    };
    response.unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response())
}

/// True when the `Accept` header asks for gnostic protobuf (either spelling kubectl has used).
fn wants_protobuf(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|t| {
        let t = t.trim();
        t.starts_with("application/com.github.proto-openapi.spec.v2") && t.contains("protobuf")
    })
}

async fn serve_v2(headers: HeaderMap) -> Response {
    let docs = match documents().await {
        Ok(d) => d,
        Err(e) => return e,
    };
    let r = if wants_protobuf(&headers) { &docs.v2_proto } else { &docs.v2_json };
    respond(r, &headers, "no-cache, private")
}

async fn serve_v3_index(headers: HeaderMap) -> Response {
    match documents().await {
        Ok(docs) => respond(&docs.v3_index, &headers, "no-cache, private"),
        Err(e) => e,
    }
}

#[derive(Debug, Deserialize)]
struct HashQuery {
    hash: Option<String>,
}

async fn serve_v3_core(Path(version): Path<String>, Query(q): Query<HashQuery>, headers: HeaderMap) -> Response {
    serve_v3(v3::gv_key("", &version), q.hash, headers).await
}

async fn serve_v3_group(
    Path((group, version)): Path<(String, String)>,
    Query(q): Query<HashQuery>,
    headers: HeaderMap,
) -> Response {
    serve_v3(v3::gv_key(&group, &version), q.hash, headers).await
}

async fn serve_v3(key: String, hash: Option<String>, headers: HeaderMap) -> Response {
    let docs = match documents().await {
        Ok(d) => d,
        Err(e) => return e,
    };
    let Some(r) = docs.v3.get(&key) else {
        return (StatusCode::NOT_FOUND, format!("no OpenAPI document for {key}")).into_response();
    };
    match hash {
        // A hashed URL names immutable content: cache it for good.
        Some(h) if h == r.hash => respond(r, &headers, "public, immutable, max-age=31536000"),
        // A stale hash: send the client to the current URL, as the Go server does.
        Some(_) => {
            let location = format!("/openapi/v3/{key}?hash={}", r.hash);
            let mut resp = StatusCode::MOVED_PERMANENTLY.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            resp
        }
        None => respond(r, &headers, "no-cache, private"),
    }
}
