//! Conversion of the JSON Swagger document into the gnostic messages: a mechanical walk that
//! copies each keyword into its numbered field and every `x-` key into a `NamedAny`.

use serde_json::Value;

use super::*;

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

/// Converts the JSON Swagger document built by `openapi::v2::document`.
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
