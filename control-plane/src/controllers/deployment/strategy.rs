//! A Deployment's strategy resolved to numbers: `maxSurge` and `maxUnavailable` as pod
//! counts for the desired replicas (Kubernetes' `ResolveFenceposts`: surge rounds up,
//! unavailable rounds down, and when both come out 0 unavailable becomes 1 so a rollout
//! can always move).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The Deployment's `spec.replicas` (1 when unset, as defaulting makes it).
pub fn desired(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// True unless the strategy is `Recreate`.
pub fn is_rolling(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()) != Some("Recreate")
}

/// An int, or a percentage of `total` rounded up or down; `default` when unset or unparsable
/// (validation refuses the latter).
pub fn scaled_value(v: Option<&IntOrString>, total: i32, round_up: bool, default: &str) -> i32 {
    let pct = |s: &str| -> Option<i64> { s.strip_suffix('%')?.trim().parse().ok() };
    let from_pct = |p: i64| {
        let x = i64::from(total) * p;
        let v = if round_up { (x + 99).div_euclid(100) } else { x.div_euclid(100) };
        i32::try_from(v).unwrap_or(i32::MAX)
    };
    match v {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => match s.parse::<i32>() {
            Ok(n) => n,
            Err(_) => pct(s).or_else(|| pct(default)).map(from_pct).unwrap_or(0),
        },
        None => pct(default).map(from_pct).unwrap_or(0),
    }
}

/// `(maxSurge, maxUnavailable)` for `d` at its desired replicas; `(0, 0)` for `Recreate`.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    if !is_rolling(d) {
        return (0, 0);
    }
    let replicas = desired(d);
    let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let surge = scaled_value(ru.and_then(|r| r.max_surge.as_ref()), replicas, true, "25%").max(0);
    let unavailable = scaled_value(ru.and_then(|r| r.max_unavailable.as_ref()), replicas, false, "25%").max(0);
    if surge == 0 && unavailable == 0 {
        // Rounding down made both 0 (validation refuses explicit zeros): allow one unavailable.
        return (0, 1);
    }
    (surge, unavailable)
}

/// `maxSurge` as a count (0 for `Recreate`).
pub fn max_surge(d: &Deployment) -> i32 {
    fenceposts(d).0
}

/// `maxUnavailable` as a count, never more than the desired replicas (0 for `Recreate` or
/// a Deployment scaled to 0).
pub fn max_unavailable(d: &Deployment) -> i32 {
    let replicas = desired(d);
    if !is_rolling(d) || replicas == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy(replicas: i32, strategy: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "web"},
            "spec": {"replicas": replicas, "strategy": strategy, "selector": {}, "template": {}}}))
        .expect("deployment")
    }

    fn rolling(surge: serde_json::Value, unavailable: serde_json::Value) -> serde_json::Value {
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}})
    }

    #[test]
    fn surge_rounds_up_and_unavailable_rounds_down() {
        let d = deploy(10, rolling(json!("25%"), json!("25%")));
        assert_eq!(fenceposts(&d), (3, 2));
        assert_eq!(
            fenceposts(&deploy(3, json!({}))),
            (1, 0),
            "defaults 25%: surge ceil(0.75) = 1, unavailable floor(0.75) = 0"
        );
        assert_eq!(fenceposts(&deploy(3, rolling(json!(1), json!(0)))), (1, 0));
        assert_eq!(fenceposts(&deploy(3, rolling(json!("10%"), json!("10%")))), (1, 0));
    }

    #[test]
    fn both_zero_after_rounding_means_one_unavailable() {
        let d = deploy(3, rolling(json!("0%"), json!("20%")));
        assert_eq!(fenceposts(&d), (0, 1));
    }

    #[test]
    fn unavailable_is_capped_and_recreate_is_zero() {
        assert_eq!(max_unavailable(&deploy(2, rolling(json!(0), json!(5)))), 2);
        assert_eq!(max_unavailable(&deploy(0, rolling(json!(1), json!(1)))), 0);
        let recreate = deploy(4, json!({"type": "Recreate"}));
        assert_eq!((max_surge(&recreate), max_unavailable(&recreate)), (0, 0));
        assert!(!is_rolling(&recreate));
    }
}
