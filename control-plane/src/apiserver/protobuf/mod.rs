//! Decoding `application/vnd.kubernetes.protobuf` request bodies into the JSON the same
//! object would have been sent as, so the usual typed decode and validation run unchanged.
//! kubectl's typed verbs (`create namespace`, `create configmap`, `create deployment`, ...)
//! send protobuf and client-go does not fall back to JSON on a 415.
//!
//! The body is the Kubernetes envelope: the magic `k8s\0`, then a `runtime.Unknown` message
//! (1 `typeMeta{1 apiVersion, 2 kind}`, 2 `raw`, 3 `contentEncoding`, 4 `contentType`) whose
//! `raw` is the object's own encoding, without its type meta.
//!
//! Parts: [`wire`] reads the wire format; [`schema`] holds the generated field tables;
//! [`json`] maps a message to JSON; [`special`] handles the apimachinery types with JSON forms
//! of their own. Responses are not encoded here: the server always answers JSON, which every
//! client accepts. Only the kinds the catalog serves (plus a few request types) are known.

pub mod json;
pub mod schema;
pub mod special;
pub mod wire;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

use wire::{Reader, WireValue};

/// The media type of Kubernetes protobuf bodies.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes every Kubernetes protobuf body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("the body does not start with the Kubernetes protobuf magic bytes \"k8s\\0\"")]
    BadMagic,
    #[error("truncated protobuf data")]
    Truncated,
    #[error("malformed protobuf data: {0}")]
    Malformed(String),
    #[error("wrong wire type: expected {expected}, found {found}")]
    WireType { expected: String, found: &'static str },
    #[error("nesting deeper than the decoder accepts")]
    TooDeep,
    #[error("no protobuf decoding is known for apiVersion {api_version:?}, kind {kind:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("unsupported protobuf envelope: {0}")]
    Unsupported(String),
    #[error("{path}: {source}")]
    InField { path: String, source: Box<ProtobufError> },
    /// The built-in table is broken (a bug, not bad input).
    #[error("protobuf schema table: {0}")]
    Schema(String),
}

impl ProtobufError {
    /// Prefixes the error with the JSON field it occurred in (innermost last: `.spec.replicas`).
    pub fn at(self, field: &str) -> ProtobufError {
        let field = if field.is_empty() { String::new() } else { format!(".{field}") };
        match self {
            ProtobufError::InField { path, source } => {
                ProtobufError::InField { path: format!("{field}{path}"), source }
            }
            other => ProtobufError::InField { path: field, source: Box::new(other) },
        }
    }
}

/// Decodes a whole request body (magic, envelope, object) into the object's JSON, with
/// `apiVersion` and `kind` from the envelope first.
pub fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let rest = body.strip_prefix(MAGIC.as_slice()).ok_or(ProtobufError::BadMagic)?;
    let envelope = Envelope::read(rest)?;
    if !envelope.content_encoding.is_empty() {
        return Err(ProtobufError::Unsupported(format!("content encoding {:?}", envelope.content_encoding)));
    }
    let object = if envelope.content_type.contains("json") {
        serde_json::from_slice(envelope.raw).map_err(|e| ProtobufError::Malformed(format!("embedded JSON: {e}")))?
    } else if envelope.content_type.is_empty() || envelope.content_type == MEDIA_TYPE {
        let name = message_name(&envelope.api_version, &envelope.kind);
        let schema = schema::schema()?;
        if !schema.contains_key(name.as_str()) {
            return Err(ProtobufError::UnknownKind { api_version: envelope.api_version, kind: envelope.kind });
        }
        json::message(schema, &name, envelope.raw, 0)?
    } else {
        return Err(ProtobufError::Unsupported(format!("content type {:?}", envelope.content_type)));
    };
    let Value::Object(fields) = object else {
        return Err(ProtobufError::Malformed("the embedded object is not a JSON object".into()));
    };
    let mut out = Map::new();
    out.insert("apiVersion".into(), Value::String(envelope.api_version));
    out.insert("kind".into(), Value::String(envelope.kind));
    for (k, v) in fields {
        if k != "apiVersion" && k != "kind" {
            out.insert(k, v);
        }
    }
    Ok(Value::Object(out))
}

/// The table name of a kind: `apps/v1 Deployment` is `api.apps.v1.Deployment`,
/// `v1 ConfigMap` is `api.core.v1.ConfigMap`; request option types live in meta.
fn message_name(api_version: &str, kind: &str) -> String {
    if matches!(
        kind,
        "DeleteOptions" | "ListOptions" | "GetOptions" | "CreateOptions" | "UpdateOptions" | "PatchOptions"
    ) {
        return format!("apimachinery.pkg.apis.meta.v1.{kind}");
    }
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("core", api_version));
    let group = group.strip_suffix(".k8s.io").unwrap_or(group);
    format!("api.{group}.{version}.{kind}")
}

/// The `runtime.Unknown` envelope.
#[derive(Debug, Default)]
struct Envelope<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
    content_type: String,
}

impl<'a> Envelope<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, ProtobufError> {
        let mut env = Envelope::default();
        let mut reader = Reader::new(bytes);
        while let Some((tag, value)) = reader.next_field()? {
            match (tag, value) {
                (1, WireValue::Bytes(type_meta)) => {
                    let mut tm = Reader::new(type_meta);
                    while let Some((tag, value)) = tm.next_field()? {
                        match tag {
                            1 => env.api_version = string(value).map_err(|e| e.at("apiVersion"))?,
                            2 => env.kind = string(value).map_err(|e| e.at("kind"))?,
                            _ => {}
                        }
                    }
                }
                (2, WireValue::Bytes(raw)) => env.raw = raw,
                (3, value) => env.content_encoding = string(value).map_err(|e| e.at("contentEncoding"))?,
                (4, value) => env.content_type = string(value).map_err(|e| e.at("contentType"))?,
                (1 | 2, other) => {
                    return Err(ProtobufError::WireType {
                        expected: "length-delimited".into(),
                        found: other.wire_name(),
                    });
                }
                _ => {}
            }
        }
        if env.kind.is_empty() || env.api_version.is_empty() {
            return Err(ProtobufError::Malformed("the envelope has no apiVersion or kind".into()));
        }
        Ok(env)
    }
}

fn string(value: WireValue<'_>) -> Result<String, ProtobufError> {
    match json::scalar(schema::Scalar::String, value)? {
        Value::String(s) => Ok(s),
        other => Err(ProtobufError::Malformed(format!("expected a string, got {other}"))),
    }
}
