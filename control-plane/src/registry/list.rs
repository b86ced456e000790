//! Lists: label and field selectors, and `limit`/`continue` pagination pinned to the
//! revision of the first page (the continue token carries it, as in Kubernetes, and expires
//! with `410 Gone` once that revision is compacted).

use base64::Engine;
use serde_json::Value;
use skiff_api::fields::field_value;
use skiff_api::selector::{FieldSelector, LabelSelector};

use super::catalog::ResourceInfo;
use super::object;
use crate::apiserver::error::ApiError;
use crate::storage::{ListOptions, Revision, SharedStore, StoreError};

/// Parsed list/watch filters.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub labels: Option<LabelSelector>,
    pub fields: Option<FieldSelector>,
    pub kind: &'static str,
}

impl Filter {
    /// Parses the `labelSelector` and `fieldSelector` parameters (400 on bad syntax or an
    /// unsupported field label).
    pub fn parse(info: &ResourceInfo, labels: Option<&str>, fields: Option<&str>) -> Result<Filter, ApiError> {
        let labels = match labels.filter(|s| !s.trim().is_empty()) {
            Some(s) => Some(
                LabelSelector::parse(s)
                    .map_err(|e| ApiError::BadRequest(format!("unable to parse requirement: {e}")))?,
            ),
            None => None,
        };
        let fields = match fields.filter(|s| !s.trim().is_empty()) {
            Some(s) => {
                let sel = FieldSelector::parse(s)
                    .map_err(|e| ApiError::BadRequest(format!("invalid field selector: {e}")))?;
                skiff_api::fields::check_supported(info.kind, &sel).map_err(|e| ApiError::BadRequest(e.to_string()))?;
                Some(sel)
            }
            None => None,
        };
        Ok(Filter { labels, fields, kind: info.kind })
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_none() && self.fields.is_none()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(l) = &self.labels
            && !l.matches(&object::labels(obj))
        {
            return false;
        }
        if let Some(f) = &self.fields
            && !f.matches(|field| field_value(self.kind, obj, field).ok().flatten())
        {
            return false;
        }
        true
    }
}

/// A page of a list response.
#[derive(Debug, Clone)]
pub struct ListResult {
    pub items: Vec<Value>,
    pub revision: Revision,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: Revision,
    start: String,
}

fn encode_continue(rv: Revision, after: &str) -> String {
    let json = serde_json::to_vec(&ContinueToken { rv, start: after.to_string() }).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_continue(token: &str) -> Result<ContinueToken, ApiError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| ApiError::BadRequest("continue key is not valid".into()))?;
    serde_json::from_slice(&bytes).map_err(|_| ApiError::BadRequest("continue key is not valid".into()))
}

/// Lists objects under `prefix` matching `filter`, `limit` at a time (0 = all).
pub async fn list(
    store: &SharedStore,
    prefix: &str,
    filter: &Filter,
    limit: i64,
    continue_token: Option<&str>,
) -> Result<ListResult, ApiError> {
    let mut items = Vec::new();
    let mut result = list_each(store, prefix, filter, limit, continue_token, |obj| items.push(obj)).await?;
    result.items = items;
    Ok(result)
}

/// Like [`list`], handing each matching object to `visit` instead of collecting them, so a
/// large list can be serialised item by item (the returned `items` is empty).
pub async fn list_each(
    store: &SharedStore,
    prefix: &str,
    filter: &Filter,
    limit: i64,
    continue_token: Option<&str>,
    mut visit: impl FnMut(Value),
) -> Result<ListResult, ApiError> {
    let (mut revision, mut start_after) = match continue_token.filter(|t| !t.is_empty()) {
        Some(t) => {
            let tok = decode_continue(t)?;
            if !tok.start.starts_with(prefix) {
                return Err(ApiError::BadRequest("continue key is not valid for this list".into()));
            }
            (tok.rv, Some(tok.start))
        }
        None => (0, None),
    };
    let mut count: i64 = 0;
    let limit = limit.max(0);
    loop {
        let want = if limit == 0 { 0 } else { limit - count };
        let page = store
            .list(prefix, ListOptions { limit: want, start_after: start_after.clone(), revision })
            .await
            .map_err(|e| match e {
                StoreError::Compacted { .. } => ApiError::Gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.".into(),
                ),
                other => ApiError::from(other),
            })?;
        revision = page.revision;
        for kv in &page.items {
            let obj = object::decode(kv)?;
            if filter.matches(&obj) {
                count += 1;
                visit(obj);
            }
        }
        match page.continue_after {
            Some(after) if limit > 0 && count >= limit => {
                let remaining = if filter.is_empty() { page.remaining } else { None };
                return Ok(ListResult {
                    items: Vec::new(),
                    revision,
                    continue_token: Some(encode_continue(revision, &after)),
                    remaining,
                });
            }
            Some(after) => start_after = Some(after),
            None => return Ok(ListResult { items: Vec::new(), revision, continue_token: None, remaining: None }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "pods/default/web-1");
        let d = decode_continue(&t).expect("decodes");
        assert_eq!(d.rv, 42);
        assert_eq!(d.start, "pods/default/web-1");
        assert!(decode_continue("not base64!").is_err());
    }
}
