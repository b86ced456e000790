//! The protobuf encoding of the Swagger 2.0 document, as gnostic's `openapi_v2.Document`.
//!
//! kubectl's discovery client asks `/openapi/v2` for
//! `application/com.github.proto-openapi.spec.v2@v1.0+protobuf` and `proto.Unmarshal`s the
//! body, so this is what kubectl actually reads. The messages are written by hand with the
//! field numbers of gnostic's `openapiv2/OpenAPIv2.proto`; only the messages and fields the
//! JSON document uses are declared (unknown fields are simply absent on the wire). Vendor
//! extensions travel as YAML text (`Any.yaml`); JSON is valid YAML, so values are written as
//! JSON.

use serde_json::Value;

/// `openapi.v2.Document`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Document {
    #[prost(string, tag = "1")]
    pub swagger: String,
    #[prost(message, optional, tag = "2")]
    pub info: Option<Info>,
    #[prost(message, optional, tag = "8")]
    pub paths: Option<Paths>,
    #[prost(message, optional, tag = "9")]
    pub definitions: Option<Definitions>,
}

/// `openapi.v2.Info`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Info {
    #[prost(string, tag = "1")]
    pub title: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `openapi.v2.Paths`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Paths {
    #[prost(message, repeated, tag = "2")]
    pub path: Vec<NamedPathItem>,
}

/// `openapi.v2.NamedPathItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedPathItem {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<PathItem>,
}

/// `openapi.v2.PathItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PathItem {
    #[prost(message, optional, tag = "2")]
    pub get: Option<Operation>,
    #[prost(message, optional, tag = "3")]
    pub put: Option<Operation>,
    #[prost(message, optional, tag = "4")]
    pub post: Option<Operation>,
    #[prost(message, optional, tag = "5")]
    pub delete: Option<Operation>,
    #[prost(message, optional, tag = "8")]
    pub patch: Option<Operation>,
    #[prost(message, repeated, tag = "9")]
    pub parameters: Vec<ParametersItem>,
}

/// `openapi.v2.Operation`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Operation {
    #[prost(string, repeated, tag = "1")]
    pub tags: Vec<String>,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "5")]
    pub operation_id: String,
    #[prost(string, repeated, tag = "6")]
    pub produces: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub consumes: Vec<String>,
    #[prost(message, repeated, tag = "8")]
    pub parameters: Vec<ParametersItem>,
    #[prost(message, optional, tag = "9")]
    pub responses: Option<Responses>,
    #[prost(string, repeated, tag = "10")]
    pub schemes: Vec<String>,
    #[prost(message, repeated, tag = "13")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.ParametersItem` (only the `parameter` arm is used).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ParametersItem {
    #[prost(message, optional, tag = "1")]
    pub parameter: Option<Parameter>,
}

/// `openapi.v2.Parameter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Parameter {
    #[prost(oneof = "parameter::Oneof", tags = "1, 2")]
    pub oneof: Option<parameter::Oneof>,
}

/// The oneof of [`Parameter`].
pub mod parameter {
    /// Body or non-body parameter.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        BodyParameter(Box<super::BodyParameter>),
        #[prost(message, tag = "2")]
        NonBodyParameter(super::NonBodyParameter),
    }
}

/// `openapi.v2.BodyParameter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BodyParameter {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(string, tag = "3")]
    pub r#in: String,
    #[prost(bool, tag = "4")]
    pub required: bool,
    #[prost(message, optional, tag = "5")]
    pub schema: Option<Schema>,
}

/// `openapi.v2.NonBodyParameter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NonBodyParameter {
    #[prost(oneof = "non_body_parameter::Oneof", tags = "3, 4")]
    pub oneof: Option<non_body_parameter::Oneof>,
}

/// The oneof of [`NonBodyParameter`].
pub mod non_body_parameter {
    /// Query or path parameter (header and form-data are not used).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "3")]
        QueryParameterSubSchema(super::SimpleParameter),
        #[prost(message, tag = "4")]
        PathParameterSubSchema(super::SimpleParameter),
    }
}

/// The common prefix of `QueryParameterSubSchema` and `PathParameterSubSchema`: both number
/// `required`, `in`, `description`, `name` as 1–4; `type` is 6 for query and 5 for path, so
/// both tags are declared and the converter fills the right one.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SimpleParameter {
    #[prost(bool, tag = "1")]
    pub required: bool,
    #[prost(string, tag = "2")]
    pub r#in: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(string, tag = "4")]
    pub name: String,
    /// `type` of a path parameter.
    #[prost(string, tag = "5")]
    pub path_type: String,
    /// `type` of a query parameter.
    #[prost(string, tag = "6")]
    pub query_type: String,
}

/// `openapi.v2.Responses`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Responses {
    #[prost(message, repeated, tag = "1")]
    pub response_code: Vec<NamedResponseValue>,
}

/// `openapi.v2.NamedResponseValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedResponseValue {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<ResponseValue>,
}

/// `openapi.v2.ResponseValue` (only the `response` arm is used).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseValue {
    #[prost(message, optional, tag = "1")]
    pub response: Option<Response>,
}

/// `openapi.v2.Response`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(message, optional, tag = "2")]
    pub schema: Option<SchemaItem>,
}

/// `openapi.v2.SchemaItem` (only the `schema` arm is used).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SchemaItem {
    #[prost(message, optional, tag = "1")]
    pub schema: Option<Schema>,
}

/// `openapi.v2.Definitions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Definitions {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// `openapi.v2.NamedSchema`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedSchema {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Schema>,
}

/// `openapi.v2.Schema` (the fields Kubernetes definitions use).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Schema {
    #[prost(string, tag = "1")]
    pub r#ref: String,
    #[prost(string, tag = "2")]
    pub format: String,
    #[prost(string, tag = "3")]
    pub title: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(string, repeated, tag = "19")]
    pub required: Vec<String>,
    #[prost(message, repeated, tag = "20")]
    pub r#enum: Vec<Any>,
    #[prost(message, optional, boxed, tag = "21")]
    pub additional_properties: Option<Box<AdditionalPropertiesItem>>,
    #[prost(message, optional, tag = "22")]
    pub r#type: Option<TypeItem>,
    #[prost(message, optional, tag = "23")]
    pub items: Option<ItemsItem>,
    #[prost(message, repeated, tag = "24")]
    pub all_of: Vec<Schema>,
    #[prost(message, optional, tag = "25")]
    pub properties: Option<Properties>,
    #[prost(bool, tag = "27")]
    pub read_only: bool,
    #[prost(message, repeated, tag = "31")]
    pub vendor_extension: Vec<NamedAny>,
}

/// `openapi.v2.AdditionalPropertiesItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AdditionalPropertiesItem {
    #[prost(oneof = "additional_properties_item::Oneof", tags = "1, 2")]
    pub oneof: Option<additional_properties_item::Oneof>,
}

/// The oneof of [`AdditionalPropertiesItem`].
pub mod additional_properties_item {
    /// A schema or a boolean.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Oneof {
        #[prost(message, tag = "1")]
        Schema(Box<super::Schema>),
        #[prost(bool, tag = "2")]
        Boolean(bool),
    }
}

/// `openapi.v2.TypeItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeItem {
    #[prost(string, repeated, tag = "1")]
    pub value: Vec<String>,
}

/// `openapi.v2.ItemsItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ItemsItem {
    #[prost(message, repeated, tag = "1")]
    pub schema: Vec<Schema>,
}

/// `openapi.v2.Properties`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Properties {
    #[prost(message, repeated, tag = "1")]
    pub additional_properties: Vec<NamedSchema>,
}

/// `openapi.v2.NamedAny`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NamedAny {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Any>,
}

/// `openapi.v2.Any` (only the `yaml` text; the `google.protobuf.Any` arm is not used).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "2")]
    pub yaml: String,
}

fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

fn any(v: &Value) -> Any {
    Any { yaml: v.to_string() }
}

fn extensions(v: &Value) -> Vec<NamedAny> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter(|(k, _)| k.starts_with("x-"))
                .map(|(k, v)| NamedAny { name: k.clone(), value: Some(any(v)) })
                .collect()
        })
        .unwrap_or_default()
}

/// Converts the JSON Swagger document built by [`super::v2::document`].
pub fn document(doc: &Value) -> Document {
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter().map(|(name, item)| NamedPathItem { name: name.clone(), value: Some(path_item(item)) }).collect()
        })
        .unwrap_or_default();
    Document {
        swagger: text(doc, "swagger"),
        info: doc.get("info").map(|i| Info { title: text(i, "title"), version: text(i, "version") }),
        paths: Some(Paths { path: paths }),
        definitions: Some(Definitions { additional_properties: named_schemas(doc.get("definitions")) }),
    }
}

fn path_item(v: &Value) -> PathItem {
    let op = |m: &str| v.get(m).map(operation);
    PathItem {
        get: op("get"),
        put: op("put"),
        post: op("post"),
        delete: op("delete"),
        patch: op("patch"),
        parameters: parameters(v.get("parameters")),
    }
}

fn operation(v: &Value) -> Operation {
    let responses = v
        .get("responses")
        .and_then(Value::as_object)
        .map(|r| {
            r.iter()
                .map(|(code, resp)| NamedResponseValue {
                    name: code.clone(),
                    value: Some(ResponseValue {
                        response: Some(Response {
                            description: text(resp, "description"),
                            schema: resp.get("schema").map(|s| SchemaItem { schema: Some(schema(s)) }),
                        }),
                    }),
                })
                .collect()
        })
        .unwrap_or_default();
    Operation {
        tags: strings(v.get("tags")),
        description: text(v, "description"),
        operation_id: text(v, "operationId"),
        produces: strings(v.get("produces")),
        consumes: strings(v.get("consumes")),
        parameters: parameters(v.get("parameters")),
        responses: Some(Responses { response_code: responses }),
        schemes: strings(v.get("schemes")),
        vendor_extension: extensions(v),
    }
}

fn parameters(v: Option<&Value>) -> Vec<ParametersItem> {
    let Some(params) = v.and_then(Value::as_array) else { return Vec::new() };
    params
        .iter()
        .map(|p| {
            let oneof = if text(p, "in") == "body" {
                parameter::Oneof::BodyParameter(Box::new(BodyParameter {
                    description: text(p, "description"),
                    name: text(p, "name"),
                    r#in: "body".into(),
                    required: p.get("required").and_then(Value::as_bool).unwrap_or(false),
                    schema: p.get("schema").map(schema),
                }))
            } else {
                let ty = text(p, "type");
                let is_path = text(p, "in") == "path";
                let simple = SimpleParameter {
                    required: p.get("required").and_then(Value::as_bool).unwrap_or(false),
                    r#in: text(p, "in"),
                    description: text(p, "description"),
                    name: text(p, "name"),
                    path_type: if is_path { ty.clone() } else { String::new() },
                    query_type: if is_path { String::new() } else { ty },
                };
                parameter::Oneof::NonBodyParameter(NonBodyParameter {
                    oneof: Some(if is_path {
                        non_body_parameter::Oneof::PathParameterSubSchema(simple)
                    } else {
                        non_body_parameter::Oneof::QueryParameterSubSchema(simple)
                    }),
                })
            };
            ParametersItem { parameter: Some(Parameter { oneof: Some(oneof) }) }
        })
        .collect()
}

fn named_schemas(v: Option<&Value>) -> Vec<NamedSchema> {
    v.and_then(Value::as_object)
        .map(|o| o.iter().map(|(name, s)| NamedSchema { name: name.clone(), value: Some(schema(s)) }).collect())
        .unwrap_or_default()
}

/// Converts one JSON schema.
pub fn schema(v: &Value) -> Schema {
    let types = match v.get("type") {
        Some(Value::String(t)) => Some(TypeItem { value: vec![t.clone()] }),
        Some(Value::Array(_)) => Some(TypeItem { value: strings(v.get("type")) }),
        _ => None,
    };
    let items = match v.get("items") {
        Some(Value::Array(a)) => Some(ItemsItem { schema: a.iter().map(schema).collect() }),
        Some(s @ Value::Object(_)) => Some(ItemsItem { schema: vec![schema(s)] }),
        _ => None,
    };
    let additional_properties = match v.get("additionalProperties") {
        Some(Value::Bool(b)) => Some(additional_properties_item::Oneof::Boolean(*b)),
        Some(s @ Value::Object(_)) => Some(additional_properties_item::Oneof::Schema(Box::new(schema(s)))),
        _ => None,
    };
    Schema {
        r#ref: text(v, "$ref"),
        format: text(v, "format"),
        title: text(v, "title"),
        description: text(v, "description"),
        required: strings(v.get("required")),
        r#enum: v.get("enum").and_then(Value::as_array).map(|a| a.iter().map(any).collect()).unwrap_or_default(),
        additional_properties: additional_properties.map(|o| Box::new(AdditionalPropertiesItem { oneof: Some(o) })),
        r#type: types,
        items,
        all_of: v.get("allOf").and_then(Value::as_array).map(|a| a.iter().map(schema).collect()).unwrap_or_default(),
        properties: v.get("properties").map(|p| Properties { additional_properties: named_schemas(Some(p)) }),
        read_only: v.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
        vendor_extension: extensions(v),
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::apiserver::openapi::{schemas, v2};

    #[test]
    fn protobuf_round_trips_and_keeps_what_kubectl_reads() {
        let json = v2::document(&schemas::Definitions::generate());
        let bytes = document(&json).encode_to_vec();
        let doc = Document::decode(bytes.as_slice()).expect("decode our own protobuf");
        assert_eq!(doc.swagger, "2.0");
        let defs = doc.definitions.expect("definitions").additional_properties;
        let pod = defs.iter().find(|d| d.name == "io.k8s.api.core.v1.Pod").and_then(|d| d.value.clone()).expect("pod");
        let gvk = pod.vendor_extension.iter().find(|e| e.name == schemas::GVK_EXT).expect("gvk extension");
        let parsed: Value = serde_yaml::from_str(&gvk.value.as_ref().expect("value").yaml).expect("yaml");
        assert_eq!(parsed[0]["kind"], "Pod");
        let props = pod.properties.expect("properties").additional_properties;
        let spec = props.iter().find(|p| p.name == "spec").and_then(|p| p.value.clone()).expect("spec");
        assert_eq!(spec.r#ref, "#/definitions/io.k8s.api.core.v1.PodSpec");

        let paths = doc.paths.expect("paths").path;
        let item = paths.iter().find(|p| p.name == "/api/v1/namespaces/{namespace}/pods/{name}").expect("path");
        let patch = item.value.as_ref().and_then(|v| v.patch.clone()).expect("patch op");
        let has_field_validation = patch.parameters.iter().any(|p| {
            matches!(
                p.parameter.as_ref().and_then(|p| p.oneof.as_ref()),
                Some(parameter::Oneof::NonBodyParameter(NonBodyParameter {
                    oneof: Some(non_body_parameter::Oneof::QueryParameterSubSchema(q))
                })) if q.name == "fieldValidation"
            )
        });
        assert!(has_field_validation);
    }
}
