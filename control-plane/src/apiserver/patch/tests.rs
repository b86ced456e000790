//! Tests of the three patch types with the bodies kubectl 1.32 actually sends.

use serde_json::{Value, json};

use super::{PatchError, PatchType, apply_patch};

fn patch(patch_type: PatchType, kind: &str, original: &Value, body: Value) -> Result<Value, PatchError> {
    apply_patch(patch_type, kind, original, body.to_string().as_bytes())
}

fn smp(kind: &str, original: &Value, body: Value) -> Value {
    patch(PatchType::StrategicMerge, kind, original, body).expect("strategic merge patch applies")
}

fn smp_err(kind: &str, original: &Value, body: Value) -> PatchError {
    match patch(PatchType::StrategicMerge, kind, original, body) {
        Ok(v) => panic!("expected the patch to fail, got {v}"),
        Err(e) => e,
    }
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "labels": {"app": "web", "tier": "front"},
            "finalizers": ["a.example/x"]
        },
        "spec": {
            "replicas": 1,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": "nginx:1.26",
                            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}]
                        },
                        {"name": "sidecar", "image": "busybox"}
                    ],
                    "tolerations": [{"key": "k1", "operator": "Exists"}]
                }
            }
        }
    })
}

fn containers(obj: &Value) -> &Vec<Value> {
    obj["spec"]["template"]["spec"]["containers"].as_array().expect("containers is a list")
}

fn names(list: &[Value]) -> Vec<&str> {
    list.iter().map(|c| c["name"].as_str().expect("item has a name")).collect()
}

fn assert_no_directives(value: &Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                assert!(!k.starts_with('$'), "directive {k} leaked into {value}");
                assert!(!v.is_null(), "null {k} leaked into {value}");
                assert_no_directives(v);
            }
        }
        Value::Array(list) => list.iter().for_each(assert_no_directives),
        _ => {}
    }
}

#[test]
fn content_types_ignore_parameters_and_case() {
    assert_eq!(PatchType::from_content_type("application/json-patch+json"), Some(PatchType::Json));
    assert_eq!(PatchType::from_content_type("application/merge-patch+json; charset=utf-8"), Some(PatchType::Merge));
    assert_eq!(PatchType::from_content_type("Application/Strategic-Merge-Patch+JSON"), Some(PatchType::StrategicMerge));
    assert_eq!(PatchType::from_content_type("application/apply-patch+yaml"), None);
    assert_eq!(PatchType::from_content_type("application/json"), None);
    for t in [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge] {
        assert_eq!(PatchType::from_content_type(t.content_type()), Some(t));
    }
}

#[test]
fn json_patch_add_remove_replace() {
    let original = deployment();
    let body = json!([
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/metadata/labels/new", "value": "yes"},
        {"op": "remove", "path": "/metadata/labels/tier"},
        {"op": "add", "path": "/spec/template/spec/containers/-", "value": {"name": "c3", "image": "x"}},
        {"op": "test", "path": "/spec/template/spec/containers/0/name", "value": "web"}
    ]);
    let out = patch(PatchType::Json, "Deployment", &original, body).expect("json patch applies");
    assert_eq!(out["spec"]["replicas"], 3);
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "new": "yes"}));
    assert_eq!(names(containers(&out)), ["web", "sidecar", "c3"]);
    assert_eq!(original, deployment(), "the original is left untouched");
}

#[test]
fn json_patch_failed_test_or_bad_path_is_invalid() {
    let original = deployment();
    let failed_test = json!([{"op": "test", "path": "/spec/replicas", "value": 5}]);
    let err = patch(PatchType::Json, "Deployment", &original, failed_test).expect_err("test fails");
    assert!(matches!(err, PatchError::JsonPatch(_)) && err.is_invalid(), "{err}");

    let bad_path = json!([{"op": "remove", "path": "/spec/nope"}]);
    let err = patch(PatchType::Json, "Deployment", &original, bad_path).expect_err("path missing");
    assert!(err.is_invalid(), "{err}");
}

#[test]
fn malformed_bodies_are_bad_requests() {
    let original = deployment();
    for t in [PatchType::Json, PatchType::Merge, PatchType::StrategicMerge] {
        let err = apply_patch(t, "Deployment", &original, b"{not json").expect_err("malformed");
        assert!(matches!(err, PatchError::Malformed { .. }) && !err.is_invalid(), "{err}");
    }
    let not_ops =
        apply_patch(PatchType::Json, "Deployment", &original, br#"{"op":"add"}"#).expect_err("a JSON patch is a list");
    assert!(!not_ops.is_invalid());
    let unknown_op = apply_patch(PatchType::Json, "Deployment", &original, br#"[{"op":"frob","path":"/a"}]"#)
        .expect_err("unknown op");
    assert!(!unknown_op.is_invalid());
    for t in [PatchType::Merge, PatchType::StrategicMerge] {
        let err = apply_patch(t, "Deployment", &original, b"[1,2]").expect_err("not an object");
        assert!(matches!(err, PatchError::NotAnObject { .. }) && !err.is_invalid(), "{err}");
    }
}

#[test]
fn merge_patch_kubectl_label_scale_and_null_delete() {
    let original = deployment();
    // `kubectl label deploy web env=prod tier-` and `kubectl scale --replicas=3`.
    let body = json!({"metadata": {"labels": {"env": "prod", "tier": null}}, "spec": {"replicas": 3}});
    let out = patch(PatchType::Merge, "Deployment", &original, body).expect("merge patch applies");
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "env": "prod"}));
    assert_eq!(out["spec"]["replicas"], 3);
    assert_eq!(containers(&out).len(), 2);
}

#[test]
fn merge_patch_replaces_lists() {
    let body = json!({"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}]}}}});
    let out = patch(PatchType::Merge, "Deployment", &deployment(), body).expect("merge patch applies");
    assert_eq!(containers(&out), &vec![json!({"name": "only", "image": "x"})]);
}

#[test]
fn smp_kubectl_apply_changes_one_image() {
    // What `kubectl apply` sends after the image of `web` changed in the manifest.
    let body = json!({
        "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}\n"}},
        "spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
            "containers": [{"image": "nginx:1.27", "name": "web"}]
        }}}
    });
    let out = smp("Deployment", &deployment(), body);
    let cs = containers(&out);
    assert_eq!(names(cs), ["web", "sidecar"]);
    assert_eq!(cs[0]["image"], "nginx:1.27");
    assert_eq!(cs[0]["env"], deployment()["spec"]["template"]["spec"]["containers"][0]["env"]);
    assert_eq!(cs[1]["image"], "busybox");
    assert_eq!(out["metadata"]["labels"]["tier"], "front");
    assert_no_directives(&out);
}

#[test]
fn smp_set_element_order_reorders_and_keeps_server_only_items() {
    let body = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "new"}, {"name": "web"}],
        "containers": [{"name": "new", "image": "n"}]
    }}}});
    let out = smp("Deployment", &deployment(), body);
    // `sidecar` is not in the order list: it stays after `web`, where it was live.
    assert_eq!(names(containers(&out)), ["new", "web", "sidecar"]);
    assert_no_directives(&out);
}

#[test]
fn smp_null_deletes_a_label() {
    let out = smp("Deployment", &deployment(), json!({"metadata": {"labels": {"tier": null}}}));
    assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
}

#[test]
fn smp_kubectl_set_image_and_rollout_restart() {
    let set_image = json!({"spec": {"template": {"spec": {"containers": [{"image": "nginx:2", "name": "web"}]}}}});
    let out = smp("Deployment", &deployment(), set_image);
    assert_eq!(names(containers(&out)), ["web", "sidecar"]);
    assert_eq!(containers(&out)[0]["image"], "nginx:2");

    let restart = json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"
    }}}}});
    let out = smp("Deployment", &out, restart);
    let template_meta = &out["spec"]["template"]["metadata"];
    assert_eq!(template_meta["labels"], json!({"app": "web"}));
    assert_eq!(template_meta["annotations"]["kubectl.kubernetes.io/restartedAt"], "2025-01-01T00:00:00Z");
}

#[test]
fn smp_adds_and_removes_env_entries() {
    let add = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "env": [{"name": "C", "value": "3"}]}
    ]}}}});
    let out = smp("Deployment", &deployment(), add);
    // Without `$setElementOrder`, apimachinery puts patch items before the live-only ones.
    assert_eq!(names(containers(&out)[0]["env"].as_array().expect("env")), ["C", "A", "B"]);

    // kubectl apply after removing `A` from the manifest.
    let remove = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
        "containers": [{
            "name": "web",
            "$setElementOrder/env": [{"name": "B"}, {"name": "C"}],
            "env": [{"$patch": "delete", "name": "A"}]
        }]
    }}}});
    let out = smp("Deployment", &out, remove);
    let env = containers(&out)[0]["env"].as_array().expect("env");
    assert_eq!(env, &vec![json!({"name": "B", "value": "2"}), json!({"name": "C", "value": "3"})]);
    assert_no_directives(&out);
}

#[test]
fn smp_patch_delete_removes_a_container() {
    let body = json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete", "name": "sidecar"}]}}}});
    let out = smp("Deployment", &deployment(), body);
    assert_eq!(names(containers(&out)), ["web"]);
    assert_no_directives(&out);
}

#[test]
fn smp_patch_replace_on_list_and_map() {
    let list = json!({"spec": {"template": {"spec": {"containers": [
        {"$patch": "replace"}, {"name": "solo", "image": "s"}
    ]}}}});
    let out = smp("Deployment", &deployment(), list);
    assert_eq!(containers(&out), &vec![json!({"name": "solo", "image": "s"})]);

    let map = json!({"metadata": {"labels": {"$patch": "replace", "only": "me"}}});
    let out = smp("Deployment", &deployment(), map);
    assert_eq!(out["metadata"]["labels"], json!({"only": "me"}));

    let delete = json!({"spec": {"strategy": {"$patch": "delete"}}});
    assert_eq!(smp("Deployment", &deployment(), delete)["spec"]["strategy"], json!({}));
}

#[test]
fn smp_finalizers_merge_as_a_set_and_delete_from_primitive_list() {
    let add = json!({"metadata": {"finalizers": ["b.example/y", "a.example/x"]}});
    let out = smp("Deployment", &deployment(), add);
    assert_eq!(out["metadata"]["finalizers"], json!(["b.example/y", "a.example/x"]));

    let remove = json!({"metadata": {
        "$setElementOrder/finalizers": ["b.example/y"],
        "$deleteFromPrimitiveList/finalizers": ["a.example/x"]
    }});
    let out = smp("Deployment", &out, remove);
    assert_eq!(out["metadata"]["finalizers"], json!(["b.example/y"]));
    assert_no_directives(&out);
}

#[test]
fn smp_container_ports_merge_by_container_port_and_tolerations_are_replaced() {
    let body = json!({"spec": {"template": {"spec": {
        "containers": [{"name": "web", "ports": [{"containerPort": 443}]}],
        "tolerations": [{"key": "k2", "operator": "Exists"}]
    }}}});
    let out = smp("Deployment", &deployment(), body);
    let ports = &containers(&out)[0]["ports"];
    assert_eq!(ports, &json!([{"containerPort": 443}, {"containerPort": 80, "protocol": "TCP"}]));
    assert_eq!(out["spec"]["template"]["spec"]["tolerations"], json!([{"key": "k2", "operator": "Exists"}]));
}

#[test]
fn smp_service_ports_merge_by_port() {
    let svc = json!({"kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [
        {"name": "http", "port": 80, "targetPort": 8080},
        {"name": "https", "port": 443}
    ]}});
    let body = json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}]}});
    let out = smp("Service", &svc, body);
    assert_eq!(
        out["spec"]["ports"],
        json!([{"name": "http", "port": 80, "targetPort": 9090}, {"name": "https", "port": 443}])
    );
}

#[test]
fn smp_node_taints_are_replaced_and_conditions_merge_by_type() {
    let node = json!({"kind": "Node", "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
        "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}]}});
    let body = json!({"spec": {"taints": [{"key": "b", "effect": "NoExecute"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let out = smp("Node", &node, body);
    assert_eq!(out["spec"]["taints"], json!([{"key": "b", "effect": "NoExecute"}]));
    assert_eq!(
        out["status"]["conditions"],
        json!([{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}])
    );
}

#[test]
fn smp_retain_keys_clears_the_old_strategy() {
    // kubectl apply switching a Deployment from RollingUpdate to Recreate.
    let body = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}});
    let out = smp("Deployment", &deployment(), body);
    assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));

    let mismatch = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {"maxSurge": 2}}}});
    assert!(smp_err("Deployment", &deployment(), mismatch).is_invalid());
    let bad = json!({"spec": {"strategy": {"$retainKeys": "type"}}});
    assert!(!smp_err("Deployment", &deployment(), bad).is_invalid());
}

#[test]
fn smp_new_fields_are_cleaned_of_directives_and_nulls() {
    let pod = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {}});
    let body = json!({"spec": {
        "$setElementOrder/containers": [{"name": "a"}],
        "containers": [{"name": "a", "image": "x", "args": null,
            "env": [{"name": "E", "value": "1"}, {"$patch": "delete", "name": "gone"}]}],
        "securityContext": {"$patch": "replace", "runAsUser": 1, "fsGroup": null}
    }});
    let out = smp("Pod", &pod, body);
    assert_eq!(out["spec"]["containers"], json!([{"name": "a", "image": "x", "env": [{"name": "E", "value": "1"}]}]));
    assert_eq!(out["spec"]["securityContext"], json!({"runAsUser": 1}));
    assert_no_directives(&out);
}

#[test]
fn smp_rejects_bad_directives_and_missing_merge_keys() {
    let no_key = json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
    let err = smp_err("Deployment", &deployment(), no_key);
    assert!(matches!(err, PatchError::MissingMergeKey { key: "name", .. }) && err.is_invalid(), "{err}");

    let bad_patch = json!({"metadata": {"labels": {"$patch": "frob"}}});
    assert!(!smp_err("Deployment", &deployment(), bad_patch).is_invalid());

    let unknown = json!({"metadata": {"$frob": 1}});
    assert!(!smp_err("Deployment", &deployment(), unknown).is_invalid());

    let unordered = json!({"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "web"}],
        "containers": [{"name": "other", "image": "o"}]
    }}}});
    assert!(!smp_err("Deployment", &deployment(), unordered).is_invalid());
}

#[test]
fn smp_on_unknown_kind_merges_maps_and_replaces_lists() {
    let obj = json!({"kind": "Widget", "metadata": {"finalizers": ["a"]}, "spec": {"items": [1, 2], "m": {"x": 1}}});
    let body = json!({"metadata": {"finalizers": ["b"]}, "spec": {"items": [3], "m": {"y": 2}}});
    let out = smp("Widget", &obj, body);
    assert_eq!(out["metadata"]["finalizers"], json!(["b", "a"]));
    assert_eq!(out["spec"], json!({"items": [3], "m": {"x": 1, "y": 2}}));
}
