//! The PodDisruptionBudget arithmetic (Kubernetes' `getExpectedPodCount` and
//! `updatePdbStatus`): how many pods are expected, how many must stay healthy, and how many
//! disruptions that leaves — for `minAvailable` / `maxUnavailable` as a count or a
//! percentage. Percentages (and any `maxUnavailable`) are taken of the controllers' scale.
//!
//! Not here: finding pods and controllers, or writing the status (see [`super`]).

use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Why a budget cannot be computed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// A percentage (or `maxUnavailable`) needs the scale of the pods' controllers.
    #[error("found no controllers for pod {0:?}")]
    NoController(String),
    /// The percentage does not parse.
    #[error("invalid value for IntOrString: invalid value {0:?}: must be an integer or a percentage")]
    Invalid(String),
}

/// Expected pods and the healthy pods the budget requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub expected: i32,
    pub desired_healthy: i32,
}

/// Whether the spec needs the controllers' scale (`maxUnavailable`, or a `minAvailable`
/// percentage); otherwise the matched pods are the expected count.
pub fn needs_scale(spec: &PodDisruptionBudgetSpec) -> bool {
    spec.max_unavailable.is_some() || matches!(spec.min_available, Some(IntOrString::String(_)))
}

/// An int, or a percentage of `total` rounded up (as `GetScaledValueFromIntOrPercent(.., true)`).
pub fn scaled(value: &IntOrString, total: i32) -> Result<i32, BudgetError> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let pct: i64 =
                s.strip_suffix('%').and_then(|p| p.parse().ok()).ok_or_else(|| BudgetError::Invalid(s.clone()))?;
            Ok(((pct * i64::from(total) + 99) / 100) as i32)
        }
    }
}

/// The budget for `spec` with `matched` pods selected and `scale` (the sum of their
/// controllers' replicas, when [`needs_scale`]).
pub fn budget(
    spec: &PodDisruptionBudgetSpec,
    matched: i32,
    scale: Result<i32, BudgetError>,
) -> Result<Budget, BudgetError> {
    if let Some(max) = &spec.max_unavailable {
        let expected = scale?;
        let max = scaled(max, expected)?;
        return Ok(Budget { expected, desired_healthy: (expected - max).max(0) });
    }
    match &spec.min_available {
        Some(IntOrString::Int(n)) => Ok(Budget { expected: matched, desired_healthy: *n }),
        Some(pct @ IntOrString::String(_)) => {
            let expected = scale?;
            Ok(Budget { expected, desired_healthy: scaled(pct, expected)? })
        }
        None => Ok(Budget { expected: matched, desired_healthy: 0 }),
    }
}

/// Disruptions left: healthy minus required, never negative, none when nothing is expected.
pub fn disruptions_allowed(b: Budget, current_healthy: i32) -> i32 {
    let allowed = current_healthy - b.desired_healthy;
    if b.expected <= 0 || allowed <= 0 { 0 } else { allowed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudgetSpec {
        PodDisruptionBudgetSpec { min_available: min, max_unavailable: max, ..PodDisruptionBudgetSpec::default() }
    }

    #[test]
    fn min_available_int_counts_matched_pods() {
        let s = spec(Some(IntOrString::Int(2)), None);
        assert!(!needs_scale(&s));
        let b = budget(&s, 3, Err(BudgetError::NoController("x".into()))).expect("no scale needed");
        assert_eq!(b, Budget { expected: 3, desired_healthy: 2 });
        assert_eq!(disruptions_allowed(b, 3), 1);
        assert_eq!(disruptions_allowed(b, 2), 0);
        assert_eq!(disruptions_allowed(b, 1), 0, "never negative");
    }

    #[test]
    fn percentages_round_up_against_the_scale() {
        let s = spec(Some(IntOrString::String("50%".into())), None);
        assert!(needs_scale(&s));
        assert_eq!(budget(&s, 2, Ok(5)), Ok(Budget { expected: 5, desired_healthy: 3 }));
        let s = spec(None, Some(IntOrString::String("30%".into())));
        // maxUnavailable 30% of 10 = 3 → 7 must stay healthy.
        assert_eq!(budget(&s, 10, Ok(10)), Ok(Budget { expected: 10, desired_healthy: 7 }));
        // 30% of 5 = 1.5 → 2 may be unavailable.
        assert_eq!(budget(&s, 5, Ok(5)), Ok(Budget { expected: 5, desired_healthy: 3 }));
        assert_eq!(
            budget(&s, 5, Err(BudgetError::NoController("p".into()))),
            Err(BudgetError::NoController("p".into()))
        );
        assert_eq!(scaled(&IntOrString::String("x".into()), 3), Err(BudgetError::Invalid("x".into())));
    }

    #[test]
    fn max_unavailable_int_and_empty_expectations() {
        let s = spec(None, Some(IntOrString::Int(1)));
        let b = budget(&s, 3, Ok(3)).expect("budget");
        assert_eq!(b, Budget { expected: 3, desired_healthy: 2 });
        assert_eq!(disruptions_allowed(b, 3), 1);
        let none = budget(&s, 0, Ok(0)).expect("budget");
        assert_eq!(disruptions_allowed(none, 0), 0);
    }
}
