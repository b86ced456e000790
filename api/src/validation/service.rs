//! Service and Endpoints validation: types, ports, protocols, cluster IPs.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::Value;

use super::FieldCause;
use super::names::{dns1123_label_errors, dns1123_subdomain_errors, label_value_errors, port_name_errors};
use super::util::{array_at, check_enum, check_port, str_at};

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

pub(crate) fn validate_service(obj: &Value, old: Option<&Value>, errs: &mut Vec<FieldCause>) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    check_enum(errs, "spec.type", spec.get("type"), SERVICE_TYPES);
    check_enum(errs, "spec.sessionAffinity", spec.get("sessionAffinity"), &["ClientIP", "None"]);
    check_enum(errs, "spec.internalTrafficPolicy", spec.get("internalTrafficPolicy"), &["Cluster", "Local"]);
    check_enum(errs, "spec.externalTrafficPolicy", spec.get("externalTrafficPolicy"), &["Cluster", "Local"]);
    check_enum(
        errs,
        "spec.ipFamilyPolicy",
        spec.get("ipFamilyPolicy"),
        &["PreferDualStack", "RequireDualStack", "SingleStack"],
    );
    let ty = str_at(spec, "/type");
    let cluster_ip = str_at(spec, "/clusterIP");
    let headless = cluster_ip == "None";
    if ty == "ExternalName" {
        match str_at(spec, "/externalName") {
            "" => errs.push(FieldCause::required("spec.externalName", "")),
            name => {
                for e in dns1123_subdomain_errors(name.trim_end_matches('.')) {
                    errs.push(FieldCause::invalid("spec.externalName", &Value::from(name), &e));
                }
            }
        }
    }
    if !cluster_ip.is_empty() && !headless && cluster_ip.parse::<IpAddr>().is_err() {
        errs.push(FieldCause::invalid(
            "spec.clusterIP",
            &Value::from(cluster_ip),
            "must be empty, 'None', or a valid IP address",
        ));
    }
    if headless && matches!(ty, "NodePort" | "LoadBalancer") {
        errs.push(FieldCause::invalid(
            "spec.clusterIP",
            &Value::from(cluster_ip),
            &format!("may not be set to 'None' for {ty} services"),
        ));
    }
    let ports = array_at(spec, "/ports");
    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(FieldCause::required("spec.ports", ""));
    }
    let mut names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = format!("spec.ports[{i}]");
        let name = port.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            if ports.len() > 1 {
                errs.push(FieldCause::required(format!("{p}.name"), ""));
            }
        } else {
            // A Service port name is a DNS label (`kubectl create service --tcp=80:8080` names
            // it "80-8080"); only target ports follow the container port-name rule.
            for e in dns1123_label_errors(name) {
                errs.push(FieldCause::invalid(format!("{p}.name"), &Value::from(name), &e));
            }
            if !names.insert(name) {
                errs.push(FieldCause::duplicate(format!("{p}.name"), &Value::from(name)));
            }
        }
        match port.get("port") {
            None => errs.push(FieldCause::required(format!("{p}.port"), "")),
            Some(v) => check_port(errs, &format!("{p}.port"), v, 1),
        }
        check_enum(errs, &format!("{p}.protocol"), port.get("protocol"), PROTOCOLS);
        match port.get("targetPort") {
            Some(v @ Value::Number(_)) => check_port(errs, &format!("{p}.targetPort"), v, 1),
            Some(Value::String(s)) => {
                for e in port_name_errors(s) {
                    errs.push(FieldCause::invalid(format!("{p}.targetPort"), &Value::from(s.as_str()), &e));
                }
            }
            _ => {}
        }
        if let Some(v) = port.get("nodePort")
            && v.as_i64() != Some(0)
        {
            if matches!(ty, "NodePort" | "LoadBalancer") {
                check_port(errs, &format!("{p}.nodePort"), v, 1);
            } else {
                errs.push(FieldCause::forbidden(format!("{p}.nodePort"), "may not be used when `type` is 'ClusterIP'"));
            }
        }
    }
    if let Some(sel) = spec.get("selector").and_then(Value::as_object) {
        for (k, v) in sel {
            for e in super::names::qualified_name_errors(k) {
                errs.push(FieldCause::invalid("spec.selector", &Value::from(k.as_str()), &e));
            }
            for e in label_value_errors(v.as_str().unwrap_or("")) {
                errs.push(FieldCause::invalid("spec.selector", v, &e));
            }
        }
    }
    if let Some(old_spec) = old.and_then(|o| o.get("spec")) {
        let old_ip = str_at(old_spec, "/clusterIP");
        // Changing the type to or from ExternalName releases or allocates the IP.
        let type_change = (str_at(old_spec, "/type") == "ExternalName") != (ty == "ExternalName");
        if !old_ip.is_empty() && old_ip != cluster_ip && !type_change {
            errs.push(FieldCause::immutable("spec.clusterIP", spec.get("clusterIP").unwrap_or(&Value::Null)));
        }
    }
}

pub(crate) fn validate_endpoints(obj: &Value, errs: &mut Vec<FieldCause>) {
    for (i, subset) in array_at(obj, "/subsets").iter().enumerate() {
        let p = format!("subsets[{i}]");
        for list in ["addresses", "notReadyAddresses"] {
            for (j, addr) in array_at(subset, &format!("/{list}")).iter().enumerate() {
                let ip = str_at(addr, "/ip");
                if ip.parse::<IpAddr>().is_err() {
                    errs.push(FieldCause::invalid(
                        format!("{p}.{list}[{j}].ip"),
                        &Value::from(ip),
                        "must be a valid IP address",
                    ));
                }
            }
        }
        for (j, port) in array_at(subset, "/ports").iter().enumerate() {
            match port.get("port") {
                None => errs.push(FieldCause::required(format!("{p}.ports[{j}].port"), "")),
                Some(v) => check_port(errs, &format!("{p}.ports[{j}].port"), v, 1),
            }
            check_enum(errs, &format!("{p}.ports[{j}].protocol"), port.get("protocol"), PROTOCOLS);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::validation::{CauseType, FieldCause, validate};
    use serde_json::{Value, json};

    fn fields(errs: &[FieldCause]) -> Vec<&str> {
        errs.iter().map(|e| e.field.as_str()).collect()
    }

    fn svc(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn valid_services() {
        let s = svc(json!({"type": "ClusterIP", "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                      {"name": "grpc", "port": 9090, "targetPort": "grpc"}]}));
        assert_eq!(validate("Service", &s, None), vec![]);
        assert_eq!(validate("Service", &svc(json!({"clusterIP": "None"})), None), vec![]);
        assert_eq!(
            validate("Service", &svc(json!({"type": "ExternalName", "externalName": "example.com"})), None),
            vec![]
        );
    }

    #[test]
    fn service_problems() {
        assert_eq!(fields(&validate("Service", &svc(json!({})), None)), vec!["spec.ports"]);
        let s = svc(json!({"type": "Magic", "ports": [{"port": 0, "protocol": "ICMP"}, {"port": 80}]}));
        assert_eq!(
            fields(&validate("Service", &s, None)),
            vec![
                "spec.type",
                "spec.ports[0].name",
                "spec.ports[0].port",
                "spec.ports[0].protocol",
                "spec.ports[1].name"
            ]
        );
        let dup = svc(json!({"ports": [{"name": "a", "port": 80}, {"name": "a", "port": 81}]}));
        let e = validate("Service", &dup, None);
        assert_eq!(e[0].reason, CauseType::FieldValueDuplicate);
        assert_eq!(
            fields(&validate("Service", &svc(json!({"type": "ExternalName"})), None)),
            vec!["spec.externalName"]
        );
        let bad_ip = svc(json!({"clusterIP": "10.0.0.300", "ports": [{"port": 80}]}));
        assert_eq!(fields(&validate("Service", &bad_ip, None)), vec!["spec.clusterIP"]);
        let node_port = svc(json!({"ports": [{"port": 80, "nodePort": 30080}]}));
        assert_eq!(fields(&validate("Service", &node_port, None)), vec!["spec.ports[0].nodePort"]);
        // Port names are DNS labels: all digits and dashes is fine (kubectl's "80-8080"),
        // upper case is not.
        let digits = svc(json!({"ports": [{"name": "80-8080", "port": 80}]}));
        assert_eq!(validate("Service", &digits, None), vec![]);
        let upper = svc(json!({"ports": [{"name": "Web", "port": 80}]}));
        assert_eq!(fields(&validate("Service", &upper, None)), vec!["spec.ports[0].name"]);
    }

    #[test]
    fn cluster_ip_immutable() {
        let old = svc(json!({"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}));
        let new = svc(json!({"clusterIP": "10.96.0.11", "ports": [{"port": 80}]}));
        let e = validate("Service", &new, Some(&old));
        assert_eq!(fields(&e), vec!["spec.clusterIP"]);
        assert_eq!(e[0].message, "Invalid value: \"10.96.0.11\": field is immutable");
        assert_eq!(validate("Service", &old, Some(&old)), vec![]);
    }

    #[test]
    fn endpoints() {
        let ok = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}],
            "ports": [{"port": 80, "protocol": "TCP"}]}]});
        assert_eq!(validate("Endpoints", &ok, None), vec![]);
        let bad = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "nope"}],
            "ports": [{"port": 0}]}]});
        assert_eq!(
            fields(&validate("Endpoints", &bad, None)),
            vec!["subsets[0].addresses[0].ip", "subsets[0].ports[0].port"]
        );
    }
}
