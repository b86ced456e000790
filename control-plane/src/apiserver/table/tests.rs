//! Table printer tests with fixture objects, at a fixed "now".

use jiff::Timestamp;
use serde_json::{Value, json};

use super::*;

const NOW: &str = "2025-01-01T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().expect("timestamp")
}

/// A timestamp `secs` seconds before [`NOW`].
fn ago(secs: i64) -> String {
    now().checked_sub(jiff::SignedDuration::from_secs(secs)).expect("in range").to_string()
}

fn meta(name: &str, age_secs: i64) -> Value {
    json!({"name": name, "namespace": "default", "creationTimestamp": ago(age_secs),
           "labels": {"app": name}})
}

/// The cells of the single row for `item`.
fn cells(kind: &str, item: Value) -> Vec<Value> {
    let table = to_table_at(kind, &[item], IncludeObject::None, "1", None, now());
    table["rows"][0]["cells"].as_array().expect("cells").clone()
}

fn column_names(kind: &str) -> Vec<String> {
    let table = to_table_at(kind, &[], IncludeObject::None, "1", None, now());
    table["columnDefinitions"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name").to_string())
        .collect()
}

fn running_pod() -> Value {
    json!({
        "metadata": meta("web", 300),
        "spec": {"nodeName": "node1", "containers": [{"name": "app", "image": "nginx"}]},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.5",
            "podIPs": [{"ip": "10.0.0.5"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": ago(290)}}}],
        }
    })
}

#[test]
fn table_structure_and_partial_metadata() {
    let table = to_table_at("Pod", &[running_pod()], IncludeObject::default(), "42", Some("next"), now());
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(table["metadata"]["resourceVersion"], "42");
    assert_eq!(table["metadata"]["continue"], "next");
    let first = &table["columnDefinitions"][0];
    assert_eq!(first["name"], "Name");
    assert_eq!(first["format"], "name");
    assert_eq!(first["priority"], 0);
    assert!(first["description"].is_string());
    assert_eq!(table["columnDefinitions"][5]["priority"], 1);
    let object = &table["rows"][0]["object"];
    assert_eq!(object["kind"], "PartialObjectMetadata");
    assert_eq!(object["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(object["metadata"]["name"], "web");
    assert!(object.get("spec").is_none());

    let full = to_table_at("Pod", &[running_pod()], IncludeObject::Object, "1", None, now());
    assert_eq!(full["rows"][0]["object"]["spec"]["nodeName"], "node1");
    assert!(full["metadata"].get("continue").is_none());
    let none = to_table_at("Pod", &[running_pod()], IncludeObject::None, "1", None, now());
    assert!(none["rows"][0]["object"].is_null());
    assert_eq!(IncludeObject::parse("Object"), Some(IncludeObject::Object));
    assert_eq!(IncludeObject::parse("bogus"), None);
}

#[test]
fn pod_columns() {
    assert_eq!(
        column_names("Pod"),
        ["Name", "Ready", "Status", "Restarts", "Age", "IP", "Node", "Nominated Node", "Readiness Gates"]
    );
}

#[test]
fn running_pod_row() {
    assert_eq!(
        cells("Pod", running_pod()),
        vec![
            json!("web"),
            json!("1/1"),
            json!("Running"),
            json!("0"),
            json!("5m"),
            json!("10.0.0.5"),
            json!("node1"),
            json!("<none>"),
            json!("<none>"),
        ]
    );
}

#[test]
fn crashlooping_pod_row() {
    let pod = json!({
        "metadata": meta("crash", 3600),
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
        "status": {
            "phase": "Running",
            "containerStatuses": [{"name": "app", "ready": false, "restartCount": 5,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(90)}}}],
        }
    });
    let row = cells("Pod", pod);
    assert_eq!(row[1], "0/1");
    assert_eq!(row[2], "CrashLoopBackOff");
    assert_eq!(row[3], "5 (90s ago)");
    assert_eq!(row[4], "60m");
    assert_eq!(row[5], "<none>");
}

#[test]
fn terminating_pod_row() {
    let mut pod = running_pod();
    pod["metadata"]["deletionTimestamp"] = json!(ago(5));
    assert_eq!(cells("Pod", pod.clone())[2], "Terminating");
    pod["status"]["reason"] = json!("NodeLost");
    assert_eq!(cells("Pod", pod)[2], "Unknown");
}

#[test]
fn init_container_statuses() {
    let pod = |init_state: Value| {
        json!({
            "metadata": meta("init", 10),
            "spec": {
                "initContainers": [{"name": "a"}, {"name": "b"}],
                "containers": [{"name": "app"}],
            },
            "status": {
                "phase": "Pending",
                "initContainerStatuses": [
                    {"name": "a", "restartCount": 0, "state": init_state},
                    {"name": "b", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}},
                ],
                "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}],
            }
        })
    };
    assert_eq!(cells("Pod", pod(json!({"running": {}})))[2], "Init:0/2");
    assert_eq!(cells("Pod", pod(json!({"terminated": {"exitCode": 0, "reason": "Completed"}})))[2], "Init:1/2");
    assert_eq!(cells("Pod", pod(json!({"terminated": {"exitCode": 2, "reason": "Error"}})))[2], "Init:Error");
    assert_eq!(cells("Pod", pod(json!({"terminated": {"exitCode": 137}})))[2], "Init:ExitCode:137");
    assert_eq!(cells("Pod", pod(json!({"waiting": {"reason": "ImagePullBackOff"}})))[2], "Init:ImagePullBackOff");
}

#[test]
fn sidecar_counts_and_completed_pod_conditions() {
    let pod = json!({
        "metadata": meta("side", 10),
        "spec": {
            "initContainers": [{"name": "proxy", "restartPolicy": "Always"}],
            "containers": [{"name": "app"}],
            "readinessGates": [{"conditionType": "example.com/gate"}],
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"},
                           {"type": "example.com/gate", "status": "False"}],
            "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true,
                "restartCount": 1, "state": {"running": {}}}],
            "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0,
                "state": {"running": {}}}],
        }
    });
    let row = cells("Pod", pod);
    assert_eq!(row[1], "2/2");
    assert_eq!(row[2], "Running");
    assert_eq!(row[3], "1");
    assert_eq!(row[8], "0/1");

    let done = json!({
        "metadata": meta("done", 10),
        "spec": {"containers": [{"name": "app"}]},
        "status": {"phase": "Succeeded", "containerStatuses": [{"name": "app",
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]},
    });
    let table = to_table_at("Pod", &[done], IncludeObject::None, "1", None, now());
    assert_eq!(table["rows"][0]["cells"][2], "Completed");
    assert_eq!(table["rows"][0]["conditions"][0]["type"], "Completed");
    assert_eq!(table["rows"][0]["conditions"][0]["reason"], "Succeeded");
}

#[test]
fn deployment_mid_rollout() {
    assert_eq!(
        column_names("Deployment"),
        ["Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"]
    );
    let deploy = json!({
        "metadata": meta("web", 200),
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [
                {"name": "nginx", "image": "nginx:1.27"},
                {"name": "log", "image": "busybox"},
            ]}},
        },
        "status": {"replicas": 4, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2},
    });
    assert_eq!(
        cells("Deployment", deploy),
        vec![
            json!("web"),
            json!("2/3"),
            json!(1),
            json!(2),
            json!("3m20s"),
            json!("nginx,log"),
            json!("nginx:1.27,busybox"),
            json!("app=web"),
        ]
    );
}

#[test]
fn replicaset_statefulset_daemonset() {
    let rs = json!({"metadata": meta("web-1", 10), "spec": {"replicas": 2,
        "selector": {"matchLabels": {"app": "web"}}, "template": {"spec": {"containers": []}}},
        "status": {"replicas": 2, "readyReplicas": 1}});
    assert_eq!(cells("ReplicaSet", rs)[1..4], [json!(2), json!(2), json!(1)]);
    let sts = json!({"metadata": meta("db", 10), "spec": {"replicas": 3},
        "status": {"readyReplicas": 3}});
    assert_eq!(cells("StatefulSet", sts)[1], "3/3");
    let ds = json!({"metadata": meta("agent", 10), "spec": {"template": {"spec": {
        "nodeSelector": {"kubernetes.io/os": "linux"}}}},
        "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
                   "updatedNumberScheduled": 2, "numberAvailable": 1}});
    let row = cells("DaemonSet", ds);
    assert_eq!(row[1..6], [json!(2), json!(2), json!(1), json!(2), json!(1)]);
    assert_eq!(row[6], "kubernetes.io/os=linux");
}

#[test]
fn nodeport_and_loadbalancer_services() {
    assert_eq!(column_names("Service"), ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"]);
    let svc = json!({
        "metadata": meta("web", 5),
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "selector": {"app": "web"},
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"},
                      {"port": 443, "nodePort": 30443, "protocol": "TCP"}]},
    });
    assert_eq!(
        cells("Service", svc),
        vec![
            json!("web"),
            json!("NodePort"),
            json!("10.96.0.10"),
            json!("<none>"),
            json!("80:30080/TCP,443:30443/TCP"),
            json!("5s"),
            json!("app=web"),
        ]
    );
    let lb = json!({"metadata": meta("lb", 5), "spec": {"type": "LoadBalancer",
        "clusterIPs": ["10.96.0.11"], "ports": [{"port": 53, "protocol": "UDP"}]}});
    let row = cells("Service", lb.clone());
    assert_eq!(row[3], "<pending>");
    assert_eq!(row[4], "53/UDP");
    assert_eq!(row[6], "<none>");
    let mut ready = lb;
    ready["status"] = json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}});
    assert_eq!(cells("Service", ready)[3], "192.0.2.1");
}

#[test]
fn endpoints_and_ingress() {
    let ep = json!({"metadata": meta("web", 5), "subsets": [{
        "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}, {"ip": "10.0.0.4"}],
        "ports": [{"port": 8080}]}]});
    assert_eq!(cells("Endpoints", ep)[1], "10.0.0.1:8080,10.0.0.2:8080,[fd00::3]:8080 + 1 more...");
    let empty = json!({"metadata": meta("none", 5)});
    assert_eq!(cells("Endpoints", empty)[1], "<none>");
    let ing = json!({"metadata": meta("web", 5), "spec": {"ingressClassName": "nginx",
        "rules": [{"host": "a.test"}, {"host": "b.test"}], "tls": [{"hosts": ["a.test"]}]}});
    assert_eq!(
        cells("Ingress", ing),
        vec![json!("web"), json!("nginx"), json!("a.test,b.test"), json!(""), json!("80, 443"), json!("5s")]
    );
}

#[test]
fn not_ready_cordoned_node() {
    let node = json!({
        "metadata": {"name": "n1", "creationTimestamp": ago(2 * 86400 + 5 * 3600),
            "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": ""}},
        "spec": {"unschedulable": true},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "False"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "n1"}],
            "nodeInfo": {"kubeletVersion": "v1.32.0-skiff", "osImage": "Debian GNU/Linux 12",
                "kernelVersion": "6.1.0", "containerRuntimeVersion": ""},
        }
    });
    assert_eq!(
        cells("Node", node),
        vec![
            json!("n1"),
            json!("NotReady,SchedulingDisabled"),
            json!("control-plane,worker"),
            json!("2d5h"),
            json!("v1.32.0-skiff"),
            json!("192.168.1.10"),
            json!("<none>"),
            json!("Debian GNU/Linux 12"),
            json!("6.1.0"),
            json!("<unknown>"),
        ]
    );
    let bare = json!({"metadata": {"name": "n2"}});
    let row = cells("Node", bare);
    assert_eq!(row[1], "Unknown");
    assert_eq!(row[2], "<none>");
    assert_eq!(row[3], "<unknown>");
}

#[test]
fn jobs_and_cronjobs() {
    let job = json!({
        "metadata": meta("batch", 600),
        "spec": {"completions": 3, "selector": {"matchLabels": {"job": "batch"}},
            "template": {"spec": {"containers": [{"name": "w", "image": "busybox"}]}}},
        "status": {"succeeded": 3, "startTime": ago(500), "completionTime": ago(300),
            "conditions": [{"type": "Complete", "status": "True"}]},
    });
    assert_eq!(
        cells("Job", job),
        vec![
            json!("batch"),
            json!("Complete"),
            json!("3/3"),
            json!("3m20s"),
            json!("10m"),
            json!("w"),
            json!("busybox"),
            json!("job=batch"),
        ]
    );
    let running = json!({"metadata": meta("par", 60), "spec": {"parallelism": 2},
        "status": {"startTime": ago(30)}});
    let row = cells("Job", running);
    assert_eq!(row[1..4], [json!("Running"), json!("0/1 of 2"), json!("30s")]);

    let cron = json!({"metadata": meta("nightly", 86400 * 3),
        "spec": {"schedule": "0 2 * * *", "suspend": false},
        "status": {"active": [{"name": "nightly-1"}], "lastScheduleTime": ago(3600)}});
    assert_eq!(
        cells("CronJob", cron)[1..7],
        [json!("0 2 * * *"), json!("<none>"), json!("False"), json!(1), json!("60m"), json!("3d")]
    );
}

#[test]
fn config_kinds_namespace_event_and_default() {
    let cm = json!({"metadata": meta("cfg", 5), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
    assert_eq!(cells("ConfigMap", cm), vec![json!("cfg"), json!(3), json!("5s")]);
    let secret = json!({"metadata": meta("s", 5), "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
    assert_eq!(cells("Secret", secret)[1..3], [json!("kubernetes.io/tls"), json!(2)]);
    let ns = json!({"metadata": meta("kube-system", 5), "status": {"phase": "Active"}});
    assert_eq!(cells("Namespace", ns), vec![json!("kube-system"), json!("Active"), json!("5s")]);
    let ev = json!({"metadata": meta("web.1", 100), "type": "Warning", "reason": "BackOff",
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
        "source": {"component": "kubelet", "host": "n1"}, "message": "Back-off restarting\n",
        "firstTimestamp": ago(100), "lastTimestamp": ago(10), "count": 4});
    assert_eq!(
        cells("Event", ev),
        vec![
            json!("10s"),
            json!("Warning"),
            json!("BackOff"),
            json!("pod/web"),
            json!("spec.containers{app}"),
            json!("kubelet, n1"),
            json!("Back-off restarting"),
            json!("100s"),
            json!(4),
            json!("web.1"),
        ]
    );
    let other = json!({"metadata": meta("thing", 130)});
    assert_eq!(column_names("Widget"), ["Name", "Age"]);
    assert_eq!(cells("Widget", other), vec![json!("thing"), json!("2m10s")]);
}

#[test]
fn storage_lease_and_hpa() {
    let sc = json!({"metadata": {"name": "local", "creationTimestamp": ago(5),
        "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "skiff.dev/local"});
    assert_eq!(
        cells("StorageClass", sc),
        vec![
            json!("local (default)"),
            json!("skiff.dev/local"),
            json!("Delete"),
            json!("Immediate"),
            json!(false),
            json!("5s")
        ]
    );
    let pvc = json!({"metadata": meta("data", 5), "spec": {"volumeName": "pv1",
        "storageClassName": "local"}, "status": {"phase": "Bound",
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"]}});
    assert_eq!(
        cells("PersistentVolumeClaim", pvc),
        vec![
            json!("data"),
            json!("Bound"),
            json!("pv1"),
            json!("1Gi"),
            json!("RWO"),
            json!("local"),
            json!("<unset>"),
            json!("5s"),
            json!("<unset>")
        ]
    );
    let pv = json!({"metadata": {"name": "pv1", "creationTimestamp": ago(5)}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
        "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": "default", "name": "data"},
        "volumeMode": "Filesystem"}, "status": {"phase": "Bound"}});
    let row = cells("PersistentVolume", pv);
    assert_eq!(row[1..6], [json!("1Gi"), json!("RWO,RWX"), json!("Retain"), json!("Bound"), json!("default/data")]);
    assert_eq!(row[10], "Filesystem");
    let lease = json!({"metadata": meta("n1", 5), "spec": {"holderIdentity": "n1"}});
    assert_eq!(cells("Lease", lease)[1], "n1");
    let hpa = json!({"metadata": meta("web", 5), "spec": {
        "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 80}}}]},
        "status": {"currentReplicas": 2, "currentMetrics": [{"type": "Resource",
            "resource": {"name": "cpu", "current": {"averageUtilization": 50}}}]}});
    assert_eq!(
        cells("HorizontalPodAutoscaler", hpa),
        vec![json!("web"), json!("Deployment/web"), json!("cpu: 50%/80%"), json!("1"), json!(5), json!(2), json!("5s")]
    );
}
