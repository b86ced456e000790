//! Decoder tests: real bodies captured from kubectl 1.32 (`testdata/*.pb`, recorded by pointing
//! `kubectl create ...` at a listener that saved each POST body), hand-built messages for the
//! cases kubectl did not exercise, hostile input, and a check of the generated JSON names
//! against the k8s-openapi schemas.

use std::collections::BTreeSet;

use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::schema::{Kind, schema};
use super::*;
use crate::registry::catalog::RESOURCES;

const NAMESPACE: &[u8] = include_bytes!("testdata/namespace.pb");
const CONFIGMAP: &[u8] = include_bytes!("testdata/configmap.pb");
const SECRET: &[u8] = include_bytes!("testdata/secret.pb");
const DEPLOYMENT: &[u8] = include_bytes!("testdata/deployment.pb");

/// A minimal protobuf encoder for building test messages.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn varint(mut self, tag: u32, v: u64) -> Self {
        self.key(tag, 0);
        self.raw_varint(v);
        self
    }
    fn bytes(mut self, tag: u32, b: &[u8]) -> Self {
        self.key(tag, 2);
        self.raw_varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn msg(self, tag: u32, m: Enc) -> Self {
        self.bytes(tag, &m.0)
    }
    fn key(&mut self, tag: u32, wire: u64) {
        self.raw_varint((u64::from(tag) << 3) | wire);
    }
    fn raw_varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    /// Wraps an object encoding in the magic and the `runtime.Unknown` envelope.
    fn envelope(self, api_version: &str, kind: &str) -> Vec<u8> {
        let type_meta = Enc::default().bytes(1, api_version.as_bytes()).bytes(2, kind.as_bytes());
        let mut out = MAGIC.to_vec();
        out.extend(Enc::default().msg(1, type_meta).bytes(2, &self.0).0);
        out
    }
}

#[test]
fn kubectl_create_namespace() {
    let v = decode(NAMESPACE).expect("decode");
    assert_eq!(
        v,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "verbs", "generation": 0}, "spec": {}, "status": {}})
    );
}

#[test]
fn kubectl_create_configmap() {
    let v = decode(CONFIGMAP).expect("decode");
    assert_eq!(v["metadata"]["name"], "settings");
    assert_eq!(v["metadata"]["namespace"], "verbs");
    assert_eq!(v["data"], json!({"a": "1", "b": "2"}));
    // Go's zero values for non-pointer strings and times are dropped, not sent as "".
    assert!(v["metadata"].get("uid").is_none() && v["metadata"].get("creationTimestamp").is_none(), "{v}");
}

#[test]
fn kubectl_create_secret_has_base64_data() {
    let v = decode(SECRET).expect("decode");
    assert_eq!(v["kind"], "Secret");
    assert_eq!(v["data"], json!({"password": "aHVudGVyMg=="}));
    // kubectl leaves `type` to the server's defaulting (Opaque).
    assert!(v.get("type").is_none(), "{v}");
}

#[test]
fn kubectl_create_deployment() {
    let v = decode(DEPLOYMENT).expect("decode");
    assert_eq!(v["apiVersion"], "apps/v1");
    assert_eq!(v["spec"]["replicas"], 1);
    assert_eq!(v["spec"]["selector"], json!({"matchLabels": {"app": "web"}}));
    let container = &v["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"], "web");
    assert_eq!(container["image"], "registry.example/web:1");
    assert!(container.get("imagePullPolicy").is_none(), "{container}");
    // The typed decode the handlers run next accepts it.
    let codec = crate::registry::catalog::find("apps", "v1", "deployments").expect("deployments").codec;
    let decoded = codec.decode(v).expect("typed decode");
    assert!(decoded.unknown_fields.is_empty(), "{:?}", decoded.unknown_fields);
}

#[test]
fn special_types_lists_and_inlined_structs() {
    let quantity = |s: &str| Enc::default().bytes(1, s.as_bytes());
    let entry = |k: &str, q: &str| Enc::default().bytes(1, k.as_bytes()).msg(2, quantity(q));
    let resources = Enc::default().msg(1, entry("cpu", "500m")).msg(1, entry("memory", "64Mi"));
    let port = Enc::default().varint(3, 8080);
    let http_get = Enc::default().bytes(1, b"/healthz").msg(2, Enc::default().varint(1, 1).bytes(3, b"http"));
    let probe = Enc::default().msg(1, Enc::default().msg(2, http_get)).varint(2, 5);
    let container = Enc::default()
        .bytes(1, b"app")
        .bytes(2, b"img")
        .bytes(4, b"--a")
        .bytes(4, b"")
        .msg(6, port)
        .msg(8, resources)
        .msg(10, probe);
    let volume = Enc::default().bytes(1, b"data").msg(2, Enc::default().msg(2, Enc::default()));
    let spec = Enc::default()
        .msg(1, volume)
        .msg(2, container)
        .varint(4, (-1i64) as u64) // terminationGracePeriodSeconds: int64, sign-extended
        .varint(11, 0);
    let meta = Enc::default().bytes(1, b"p").msg(8, Enc::default().varint(1, 1_700_000_000).varint(2, 5));
    let body = Enc::default().msg(1, meta).msg(2, spec).envelope("v1", "Pod");
    let v = decode(&body).expect("decode");
    assert_eq!(v["metadata"], json!({"name": "p", "creationTimestamp": "2023-11-14T22:13:20Z"}));
    let c = &v["spec"]["containers"][0];
    assert_eq!(c["args"], json!(["--a", ""]));
    assert_eq!(c["ports"], json!([{"containerPort": 8080}]));
    assert_eq!(c["resources"]["limits"], json!({"cpu": "500m", "memory": "64Mi"}));
    assert_eq!(c["livenessProbe"], json!({"httpGet": {"path": "/healthz", "port": "http"}, "initialDelaySeconds": 5}));
    assert_eq!(v["spec"]["volumes"], json!([{"name": "data", "emptyDir": {}}]));
    assert_eq!(v["spec"]["terminationGracePeriodSeconds"], -1);
    assert_eq!(v["spec"]["hostNetwork"], false);
}

#[test]
fn envelope_errors_are_clear() {
    assert!(matches!(decode(b"{}"), Err(ProtobufError::BadMagic)));
    let unknown = Enc::default().envelope("example.com/v1", "Widget");
    assert!(matches!(decode(&unknown), Err(ProtobufError::UnknownKind { .. })));
    // `data` (field 2 of ConfigMap) as a varint instead of a map entry.
    let wrong = Enc::default().varint(2, 7).envelope("v1", "ConfigMap");
    let err = decode(&wrong).expect_err("wrong wire type");
    assert!(err.to_string().starts_with(".data: wrong wire type"), "{err}");
    let nested = Enc::default().msg(1, Enc::default().varint(1, 3)).envelope("v1", "ConfigMap");
    assert_eq!(
        decode(&nested).expect_err("nested").to_string(),
        ".metadata.name: wrong wire type: expected string, found varint"
    );
}

#[test]
fn hostile_input_never_panics() {
    for body in [NAMESPACE, CONFIGMAP, SECRET, DEPLOYMENT] {
        for len in 0..body.len() {
            let _ = decode(&body[..len]);
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..20_000 {
        let mut body = DEPLOYMENT.to_vec();
        for _ in 0..rng.random_range(1..6) {
            let i = rng.random_range(4..body.len());
            body[i] = rng.random();
        }
        let _ = decode(&body);
        let noise: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
        let _ = decode(&[MAGIC.as_slice(), &noise].concat());
    }
    // Deep nesting is refused rather than recursing without bound.
    let mut selector = Enc::default();
    for _ in 0..200 {
        selector = Enc::default().msg(1, Enc::default().msg(1, Enc::default().msg(1, selector)));
    }
    let _ = decode(&selector.envelope("v1", "Pod"));
}

/// Every served kind has a table entry, and no generated JSON name differs only in case from
/// a property of the k8s-openapi schema (the acronym mistake naive camelCase makes).
#[test]
fn json_names_match_the_openapi_schemas() {
    let schema = schema().expect("schema");
    let mut generator = schemars::SchemaGenerator::new(schemars::generate::SchemaSettings::draft2020_12());
    for r in RESOURCES {
        let name = message_name(&r.api_version(), r.kind);
        assert!(schema.contains_key(name.as_str()), "no protobuf table for {name}");
        let _ = r.codec.schema(&mut generator);
    }
    let defs = generator.take_definitions(false);
    let defs_lower: std::collections::HashMap<String, &Value> =
        defs.iter().map(|(k, v)| (k.to_lowercase(), v)).collect();
    let (mut checked, mut missing) = (0, BTreeSet::new());
    for (name, message) in schema {
        let Some(def) = defs_lower.get(&format!("io.k8s.{name}").to_lowercase()) else { continue };
        let props: Vec<&String> = def["properties"].as_object().map(|p| p.keys().collect()).unwrap_or_default();
        for field in &message.fields {
            let Some(json) = field.json else {
                assert!(matches!(field.kind, Kind::Message(_)), "{name}: inline non-message");
                continue;
            };
            checked += 1;
            if !props.iter().any(|p| *p == json) {
                assert!(!props.iter().any(|p| p.eq_ignore_ascii_case(json)), "{name}.{json} differs in case");
                missing.insert(format!("{name}.{json}"));
            }
        }
    }
    // Fields newer than k8s-openapi's v1_33 types are expected to be missing; few of them.
    assert!(checked > 1000 && missing.len() * 20 < checked, "{checked} checked, missing {missing:?}");
}
