//! Formatting helpers shared by the printers, ported from Kubernetes' printers and
//! apimachinery: `HumanDuration`, `translateTimestampSince`, label and selector strings, and
//! lenient accessors over raw JSON objects (a missing field reads as its zero value, the way
//! a Go struct would).

use jiff::Timestamp;
use serde_json::Value;

/// Kubernetes' `duration.HumanDuration`, for a whole number of seconds.
pub fn human_duration(secs: i64) -> String {
    // Up to 2 s in the future is clock skew and reads as "now".
    if secs < -1 {
        return "<invalid>".to_string();
    }
    if secs < 0 {
        return "0s".to_string();
    }
    if secs < 60 * 2 {
        return format!("{secs}s");
    }
    let minutes = secs / 60;
    if minutes < 10 {
        let s = secs % 60;
        return if s == 0 { format!("{minutes}m") } else { format!("{minutes}m{s}s") };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 { format!("{}d", hours / 24) } else { format!("{}d{h}h", hours / 24) };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 { format!("{}y", hours / 24 / 365) } else { format!("{}y{days}d", hours / 24 / 365) };
    }
    format!("{}y", hours / 24 / 365)
}

/// Parses an RFC 3339 timestamp field; absent or malformed reads as `None` (Go's zero time).
pub fn timestamp(v: &Value, pointer: &str) -> Option<Timestamp> {
    v.pointer(pointer)?.as_str()?.parse().ok()
}

/// Kubernetes' `translateTimestampSince`: the age of a timestamp, `<unknown>` when unset.
pub fn since(ts: Option<Timestamp>, now: Timestamp) -> String {
    match ts {
        Some(ts) => human_duration(now.duration_since(ts).as_secs()),
        None => "<unknown>".to_string(),
    }
}

/// The object's age (from `metadata.creationTimestamp`).
pub fn age(v: &Value, now: Timestamp) -> String {
    since(timestamp(v, "/metadata/creationTimestamp"), now)
}

/// A string field, `""` when absent.
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A string field, or `default` when absent or empty.
pub fn str_or<'a>(v: &'a Value, pointer: &str, default: &'a str) -> &'a str {
    match str_at(v, pointer) {
        "" => default,
        s => s,
    }
}

/// An integer field, 0 when absent.
pub fn int_at(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// A boolean field, false when absent.
pub fn bool_at(v: &Value, pointer: &str) -> bool {
    v.pointer(pointer).and_then(Value::as_bool).unwrap_or(false)
}

/// An array field, empty when absent.
pub fn arr_at<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// Number of keys of an object field, 0 when absent.
pub fn len_at(v: &Value, pointer: &str) -> usize {
    v.pointer(pointer).and_then(Value::as_object).map_or(0, serde_json::Map::len)
}

/// The object's name.
pub fn name(v: &Value) -> String {
    str_at(v, "/metadata/name").to_string()
}

/// True when the object is being deleted.
pub fn terminating(v: &Value) -> bool {
    v.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
}

/// `labels.FormatLabels`: sorted `k=v` pairs joined by commas, `<none>` when empty.
pub fn format_labels(v: &Value, pointer: &str) -> String {
    let Some(map) = v.pointer(pointer).and_then(Value::as_object) else {
        return "<none>".to_string();
    };
    let mut pairs: Vec<String> = map.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
    if pairs.is_empty() {
        return "<none>".to_string();
    }
    pairs.sort();
    pairs.join(",")
}

/// `metav1.LabelSelectorAsSelector(sel).String()`: requirements sorted by key, `""` for an
/// empty or absent selector.
pub fn selector_string(v: &Value, pointer: &str) -> String {
    let Some(sel) = v.pointer(pointer) else {
        return String::new();
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, val) in labels {
            reqs.push((k.clone(), format!("{k}={}", val.as_str().unwrap_or(""))));
        }
    }
    for expr in arr_at(sel, "/matchExpressions") {
        let key = str_at(expr, "/key");
        let mut values: Vec<&str> = arr_at(expr, "/values").iter().filter_map(Value::as_str).collect();
        values.sort_unstable();
        values.dedup();
        let text = match str_at(expr, "/operator") {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            other => format!("{key} {other} ({})", values.join(",")),
        };
        reqs.push((key.to_string(), text));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    reqs.into_iter().map(|(_, text)| text).collect::<Vec<_>>().join(",")
}

/// `metav1.FormatLabelSelector`: like [`selector_string`] but `<none>` when empty.
pub fn format_selector(v: &Value, pointer: &str) -> String {
    match selector_string(v, pointer) {
        s if s.is_empty() => "<none>".to_string(),
        s => s,
    }
}

/// `layoutContainerCells`: container names and images, each comma-joined.
pub fn containers(v: &Value, pod_spec: &str) -> (String, String) {
    let list = arr_at(v, &format!("{pod_spec}/containers"));
    let names: Vec<&str> = list.iter().map(|c| str_at(c, "/name")).collect();
    let images: Vec<&str> = list.iter().map(|c| str_at(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// Load-balancer ingress points (IP, else hostname), comma-joined.
pub fn load_balancer_ingress(v: &Value, pointer: &str) -> String {
    arr_at(v, pointer)
        .iter()
        .filter_map(|i| {
            let ip = str_at(i, "/ip");
            let host = str_at(i, "/hostname");
            (!ip.is_empty()).then_some(ip).or((!host.is_empty()).then_some(host))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `helper.GetAccessModesAsString`: short access-mode names in Kubernetes' fixed order.
pub fn access_modes(v: &Value, pointer: &str) -> String {
    let modes: Vec<&str> = arr_at(v, pointer).iter().filter_map(Value::as_str).collect();
    [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")]
        .iter()
        .filter(|(long, _)| modes.contains(long))
        .map(|(_, short)| *short)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn human_duration_matches_kubernetes() {
        let cases = [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (5, "5s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (2 * 86400 + 5 * 3600, "2d5h"),
            (3 * 86400, "3d"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (3 * 365 * 86400 + 10 * 86400, "3y10d"),
            (9 * 365 * 86400, "9y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn selectors_and_labels() {
        let v = json!({"sel": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "env", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "NotIn", "values": ["x"]},
                {"key": "canary", "operator": "Exists"},
            ]
        }, "labels": {"b": "2", "a": "1"}, "empty": {}});
        assert_eq!(selector_string(&v, "/sel"), "app=web,canary,!env,tier in (a,b),zone notin (x)");
        assert_eq!(selector_string(&v, "/missing"), "");
        assert_eq!(format_selector(&v, "/empty"), "<none>");
        assert_eq!(format_labels(&v, "/labels"), "a=1,b=2");
        assert_eq!(format_labels(&v, "/empty"), "<none>");
    }
}
