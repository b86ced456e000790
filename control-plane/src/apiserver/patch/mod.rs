//! PATCH semantics: applying a JSON patch (RFC 6902), a JSON merge patch (RFC 7386) or a
//! Kubernetes strategic merge patch to the current object.
//!
//! This module owns only the pure transformation `(original, patch body) -> patched object`
//! over `serde_json::Value`. It does no I/O and knows nothing of the store, of
//! `resourceVersion` preconditions, defaulting or validation; the PATCH handler does those
//! around it. Server-side apply (`application/apply-patch+yaml`) is not handled here.
//!
//! * [`strategic`] implements apimachinery's `strategicpatch` merge as kubectl 1.32 sends it
//!   (`apply`, `label`, `annotate`, `scale`, `patch`, `set image`, `rollout restart`).
//! * [`merge_keys`] holds the patch metadata (merge strategy and merge key per field) of the
//!   built-in types, keyed by OpenAPI definition and property like the Go struct tags; the
//!   OpenAPI documents publish the same table.
//! * [`schema`] walks the served kinds' OpenAPI schemas so strategic merge knows which
//!   definition, and so which tags, each field of the patched object belongs to.

pub(crate) mod merge_keys;
mod schema;
mod strategic;

use std::fmt;

use serde_json::Value;

/// The three PATCH flavours the API server accepts, told apart by the request's Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`: an RFC 6902 list of operations.
    Json,
    /// `application/merge-patch+json`: an RFC 7386 merge patch; lists are replaced.
    Merge,
    /// `application/strategic-merge-patch+json`: a merge patch that merges lists by key.
    StrategicMerge,
}

impl PatchType {
    /// The patch type for a request Content-Type, ignoring parameters such as `charset`;
    /// `None` for any other media type (the handler answers 415).
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let media_type = ct.split(';').next().unwrap_or_default().trim();
        if media_type.eq_ignore_ascii_case("application/json-patch+json") {
            Some(PatchType::Json)
        } else if media_type.eq_ignore_ascii_case("application/merge-patch+json") {
            Some(PatchType::Merge)
        } else if media_type.eq_ignore_ascii_case("application/strategic-merge-patch+json") {
            Some(PatchType::StrategicMerge)
        } else {
            None
        }
    }

    /// The media type that selects this patch type.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
        }
    }
}

impl fmt::Display for PatchType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PatchType::Json => "JSON",
            PatchType::Merge => "JSON merge",
            PatchType::StrategicMerge => "strategic merge",
        })
    }
}

/// Why a patch could not be applied.
///
/// Kubernetes answers a malformed patch with 400 Bad Request and a well-formed patch that
/// does not fit the object (a failed `test`, a path that does not exist, a list item without
/// its merge key) with 422 Unprocessable Entity; [`PatchError::is_invalid`] tells which.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The body is not valid JSON, or not the JSON shape the patch type requires.
    #[error("the body of a {patch_type} patch is malformed: {source}")]
    Malformed {
        patch_type: PatchType,
        #[source]
        source: serde_json::Error,
    },
    /// A merge or strategic merge patch whose top level is not a JSON object.
    #[error("a {patch_type} patch must be a JSON object, got {found}")]
    NotAnObject { patch_type: PatchType, found: &'static str },
    /// A JSON patch operation failed: a `test` did not match, or a path does not exist.
    #[error("JSON patch could not be applied: {0}")]
    JsonPatch(#[from] json_patch::PatchError),
    /// A strategic merge directive (`$patch`, `$retainKeys`, `$setElementOrder/…`,
    /// `$deleteFromPrimitiveList/…`) is malformed.
    #[error("invalid strategic merge patch at {path:?}: {message}")]
    BadDirective { path: String, message: String },
    /// A list item in a patch of a merged list lacks the list's merge key.
    #[error("strategic merge patch at {path:?}: {item} does not contain declared merge key {key:?}")]
    MissingMergeKey { path: String, key: &'static str, item: String },
    /// The patch is well-formed but cannot be merged into this object.
    #[error("strategic merge patch at {path:?} cannot be applied: {message}")]
    Unmergeable { path: String, message: String },
}

impl PatchError {
    /// True when the patch was well-formed but does not apply to the object (HTTP 422
    /// `Invalid`); false when the patch itself is malformed (HTTP 400 `BadRequest`).
    pub fn is_invalid(&self) -> bool {
        match self {
            PatchError::Malformed { .. } | PatchError::NotAnObject { .. } | PatchError::BadDirective { .. } => false,
            PatchError::JsonPatch(_) | PatchError::MissingMergeKey { .. } | PatchError::Unmergeable { .. } => true,
        }
    }
}

/// Applies `patch_body` of `patch_type` to `original`, an object of `kind` (e.g.
/// `"Deployment"`), and returns the patched object. `original` is left untouched.
///
/// `kind` only matters for strategic merge, which needs the merge keys of the kind's
/// lists; an unknown kind merges like a JSON merge patch below `metadata`.
pub fn apply_patch(
    patch_type: PatchType,
    kind: &str,
    original: &Value,
    patch_body: &[u8],
) -> Result<Value, PatchError> {
    let malformed = |source| PatchError::Malformed { patch_type, source };
    match patch_type {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_slice(patch_body).map_err(malformed)?;
            let mut doc = original.clone();
            json_patch::patch(&mut doc, &ops.0)?;
            Ok(doc)
        }
        PatchType::Merge => {
            let patch: Value = serde_json::from_slice(patch_body).map_err(malformed)?;
            require_object(patch_type, &patch)?;
            let mut doc = original.clone();
            json_patch::merge(&mut doc, &patch);
            Ok(doc)
        }
        PatchType::StrategicMerge => {
            let patch: Value = serde_json::from_slice(patch_body).map_err(malformed)?;
            let patch = require_object(patch_type, &patch)?;
            strategic::apply(kind, original, patch)
        }
    }
}

/// Kubernetes rejects merge patches that are not objects: replacing the whole object with a
/// scalar or a list can never produce a valid resource.
fn require_object(patch_type: PatchType, patch: &Value) -> Result<&serde_json::Map<String, Value>, PatchError> {
    match patch {
        Value::Object(map) => Ok(map),
        other => Err(PatchError::NotAnObject { patch_type, found: json_type_name(other) }),
    }
}

/// A JSON type's name, for error messages.
fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
