//! Verb dispatch for resource paths: one generic handler per HTTP method over the catalog,
//! delegating to the shared registry, the watch streamer and the subresource handlers.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tracing::instrument;

use super::error::ApiError;
use super::patch::{self, PatchType};
use super::request::{self, Query, ResourcePath, parse_body, read_body, wants_table};
use super::table::{self, IncludeObject};
use super::{SharedState, eviction, pod_log, scale, watch};
use crate::registry::list::{self, Filter};
use crate::registry::rest::{DeleteOptions, WriteOptions, Written};

pub async fn core(
    State(state): State<SharedState>,
    method: Method,
    Path(rest): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    dispatch(state, method, "", "v1", &rest, uri, headers, body).await.unwrap_or_else(IntoResponse::into_response)
}

pub async fn grouped(
    State(state): State<SharedState>,
    method: Method,
    Path((group, version, rest)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    dispatch(state, method, &group, &version, &rest, uri, headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

pub async fn fallback() -> Response {
    ApiError::NoRoute.into_response()
}

fn parse_query(uri: &Uri) -> Result<Query, ApiError> {
    axum::extract::Query::<Query>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::BadRequest(format!("invalid query parameters: {}", e.body_text())))
}

#[allow(clippy::too_many_arguments)]
#[instrument(level = "debug", skip_all, fields(%method, group, version, path = rest))]
async fn dispatch(
    state: SharedState,
    method: Method,
    group: &str,
    version: &str,
    rest: &str,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let path = ResourcePath::parse(group, version, rest)?;
    let query = parse_query(&uri)?;
    if path.info.namespaced && path.namespace.is_none() && path.name.is_some() {
        // `/api/v1/pods/x` is not a thing: named namespaced objects need their namespace.
        return Err(ApiError::NoRoute);
    }
    let sub = path.subresource.as_deref();
    match (&method, path.name.is_some(), sub) {
        (&Method::GET, false, None) if query.is_watch() || path.legacy_watch => {
            watch::serve(state, path, query, wants_table(&headers)).await
        }
        (&Method::GET, false, None) => list(&state, &path, &query, &headers).await,
        (&Method::GET, true, Some("scale")) => scale::get(&state, &path).await,
        (&Method::GET, true, Some("log")) => pod_log::get(&state, &path, &uri).await,
        (&Method::GET, true, _) if path.legacy_watch || query.is_watch() => {
            watch::serve(state, path, query, wants_table(&headers)).await
        }
        (&Method::GET, true, None | Some("status")) => {
            let obj = state.registry.get(path.info, path.object_namespace(), name(&path)).await?;
            Ok(object_response(StatusCode::OK, &path, obj, &headers, vec![]))
        }
        (&Method::POST, false, None) => {
            let body = parse_body(&headers, &read_body(body).await?)?;
            let w = state.registry.create(path.info, path.object_namespace(), body, write_opts(&query)?).await?;
            Ok(written(StatusCode::CREATED, &path, w, &headers))
        }
        (&Method::POST, true, Some("binding")) => {
            let body = parse_body(&headers, &read_body(body).await?)?;
            scale::bind(&state, &path, body, write_opts(&query)?).await
        }
        (&Method::POST, true, Some("eviction")) if path.info.kind == "Pod" => {
            let body = parse_body(&headers, &read_body(body).await?)?;
            eviction::create(&state, &path, body, write_opts(&query)?).await
        }
        (&Method::PUT, true, None | Some("status") | Some("finalize")) => {
            let body = parse_body(&headers, &read_body(body).await?)?;
            let sub = if sub == Some("finalize") { None } else { sub };
            let w = state
                .registry
                .update(path.info, path.object_namespace(), name(&path), sub, body, write_opts(&query)?)
                .await?;
            Ok(written(StatusCode::OK, &path, w, &headers))
        }
        (&Method::PUT, true, Some("scale")) => {
            let body = parse_body(&headers, &read_body(body).await?)?;
            scale::update(&state, &path, body, write_opts(&query)?).await
        }
        (&Method::PATCH, true, None | Some("status") | Some("scale")) => {
            let patch_type =
                PatchType::from_content_type(&request::content_type(&headers)).ok_or(ApiError::UnsupportedMediaType)?;
            let bytes = read_body(body).await?;
            if sub == Some("scale") {
                return scale::patch(&state, &path, patch_type, &bytes, write_opts(&query)?).await;
            }
            let w = patch_object(&state, &path, patch_type, &bytes, write_opts(&query)?).await?;
            Ok(written(StatusCode::OK, &path, w, &headers))
        }
        (&Method::DELETE, true, None) => {
            let opts = delete_opts(&query, body).await?;
            let d = state.registry.delete(path.info, path.object_namespace(), name(&path), &opts).await?;
            let code = if d.gone { StatusCode::OK } else { StatusCode::ACCEPTED };
            Ok(object_response(code, &path, d.object, &headers, vec![]))
        }
        (&Method::DELETE, false, None) => delete_collection(&state, &path, &query, body).await,
        _ => Err(ApiError::MethodNotAllowed),
    }
}

fn name(path: &ResourcePath) -> &str {
    path.name.as_deref().unwrap_or_default()
}

fn write_opts(q: &Query) -> Result<WriteOptions, ApiError> {
    Ok(WriteOptions { dry_run: q.dry_run()?, field_validation: q.field_validation()? })
}

/// Applies a patch to the current object and writes it back (retrying lost races unless
/// the patch itself pins a resourceVersion).
pub async fn patch_object(
    state: &SharedState,
    path: &ResourcePath,
    patch_type: PatchType,
    body: &[u8],
    opts: WriteOptions,
) -> Result<Written, ApiError> {
    let info = path.info;
    let kind = info.kind;
    let mut warnings = Vec::new();
    let ns = path.object_namespace();
    let mut written = state
        .registry
        .update_with(info, ns, name(path), path.subresource.as_deref(), opts, None, |old| {
            let patched = patch::apply_patch(patch_type, kind, old, body).map_err(|e| {
                if e.is_invalid() {
                    ApiError::Invalid { kind: info.qualified_kind(), name: crate::registry::object::name(old).into(), causes: vec![skiff_api::validation::FieldCause { field: String::new(), reason: skiff_api::validation::CauseType::FieldValueInvalid, message: e.to_string() }] }
                } else {
                    ApiError::BadRequest(e.to_string())
                }
            })?;
            // A patch that sets resourceVersion makes it a precondition.
            let old_rv = crate::registry::object::meta_str(old, "resourceVersion");
            let new_rv = crate::registry::object::meta_str(&patched, "resourceVersion");
            if new_rv.is_some() && new_rv != old_rv {
                return Err(ApiError::Conflict(format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    path.resource_name(), name(path)
                )));
            }
            let (decoded, w) = crate::registry::rest::decode_body(info, ns, patched, opts.field_validation)?;
            warnings = w;
            Ok(decoded)
        })
        .await?;
    written.warnings.extend(warnings);
    Ok(written)
}

async fn delete_opts(q: &Query, body: Body) -> Result<DeleteOptions, ApiError> {
    let mut opts = DeleteOptions {
        dry_run: q.dry_run()?,
        grace_period_seconds: q.grace_period_seconds,
        propagation_policy: q.propagation_policy.clone(),
        ..Default::default()
    };
    if q.orphan_dependents.as_deref() == Some("true") && opts.propagation_policy.is_none() {
        opts.propagation_policy = Some("Orphan".into());
    }
    let bytes = read_body(body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(opts);
    }
    let body: Value =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("invalid DeleteOptions: {e}")))?;
    if let Some(g) = body.get("gracePeriodSeconds").and_then(Value::as_i64) {
        opts.grace_period_seconds = Some(g);
    }
    if let Some(p) = body.get("propagationPolicy").and_then(Value::as_str) {
        opts.propagation_policy = Some(p.to_string());
    }
    if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) && opts.propagation_policy.is_none() {
        opts.propagation_policy = Some("Orphan".into());
    }
    if let Some(dr) = body.get("dryRun").and_then(Value::as_array) {
        opts.dry_run |= dr.iter().any(|v| v == "All");
    }
    if let Some(pre) = body.get("preconditions") {
        opts.precondition_uid = pre.get("uid").and_then(Value::as_str).map(str::to_string);
        opts.precondition_resource_version = pre.get("resourceVersion").and_then(Value::as_str).map(str::to_string);
    }
    Ok(opts)
}

async fn list(state: &SharedState, path: &ResourcePath, q: &Query, headers: &HeaderMap) -> Result<Response, ApiError> {
    let filter = Filter::parse(path.info, q.label_selector.as_deref(), q.field_selector.as_deref())?;
    let limit = q.limit.unwrap_or(0);
    let token = q.continue_token.as_deref();
    if wants_table(headers) {
        let page = list::list(state.store(), &path.list_prefix(), &filter, limit, token).await?;
        let rv = page.revision.to_string();
        let t = table::to_table(path.info.kind, &page.items, include_object(q), &rv, page.continue_token.as_deref());
        return Ok(json_response(StatusCode::OK, &t, vec![]));
    }
    // Items are serialised as they are read: a list of thousands of objects never exists as
    // a vector of JSON values, only as its response bytes.
    let mut items = Vec::with_capacity(64 * 1024);
    let mut first = true;
    let page = list::list_each(state.store(), &path.list_prefix(), &filter, limit, token, |obj| {
        if !std::mem::take(&mut first) {
            items.push(b',');
        }
        // Serialising a `Value` into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut items, &obj);
    })
    .await?;
    let mut meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(r) = page.remaining.filter(|r| *r > 0) {
        meta["remainingItemCount"] = json!(r);
    }
    let head = json!({"kind": path.info.list_kind(), "apiVersion": path.info.api_version(), "metadata": meta});
    let mut body = serde_json::to_vec(&head).map_err(|e| ApiError::Internal(format!("encoding list: {e}")))?;
    body.pop(); // the closing brace; items follow
    body.extend_from_slice(b",\"items\":[");
    body.extend_from_slice(&items);
    body.extend_from_slice(b"]}");
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn delete_collection(
    state: &SharedState,
    path: &ResourcePath,
    q: &Query,
    body: Body,
) -> Result<Response, ApiError> {
    let opts = delete_opts(q, body).await?;
    let filter = Filter::parse(path.info, q.label_selector.as_deref(), q.field_selector.as_deref())?;
    let page = list::list(state.store(), &path.list_prefix(), &filter, 0, None).await?;
    let mut deleted = Vec::new();
    for obj in page.items {
        let ns = crate::registry::object::meta_str(&obj, "namespace").map(str::to_string);
        let name = crate::registry::object::name(&obj).to_string();
        match state.registry.delete(path.info, ns.as_deref(), &name, &opts).await {
            Ok(d) => deleted.push(d.object),
            Err(ApiError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let body = json!({
        "kind": path.info.list_kind(),
        "apiVersion": path.info.api_version(),
        "metadata": {"resourceVersion": page.revision.to_string()},
        "items": deleted,
    });
    Ok(json_response(StatusCode::OK, &body, vec![]))
}

fn include_object(q: &Query) -> IncludeObject {
    match q.include_object.as_deref() {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    }
}

fn written(code: StatusCode, path: &ResourcePath, w: Written, headers: &HeaderMap) -> Response {
    object_response(code, path, w.object, headers, w.warnings)
}

/// One object, as JSON or (when asked) as a one-row Table.
pub fn object_response(
    code: StatusCode,
    path: &ResourcePath,
    obj: Value,
    headers: &HeaderMap,
    warnings: Vec<String>,
) -> Response {
    if wants_table(headers) {
        let rv = crate::registry::object::meta_str(&obj, "resourceVersion").unwrap_or("").to_string();
        let t = table::to_table(path.info.kind, std::slice::from_ref(&obj), IncludeObject::Metadata, &rv, None);
        return json_response(code, &t, warnings);
    }
    json_response(code, &obj, warnings)
}

/// A JSON response with Kubernetes `Warning` headers.
pub fn json_response(code: StatusCode, body: &Value, warnings: Vec<String>) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = (code, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response();
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "'"));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}
