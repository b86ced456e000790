//! Scale-to-zero for WASM HTTP Deployments: the annotations a Deployment opts in with, their
//! parsing and validation, and the idle decision.
//!
//! ```yaml
//! metadata:
//!   annotations:
//!     skiff.dev/scale-to-zero: "true"        # opt in ("false" or absent: off)
//!     skiff.dev/scale-to-zero-idle: "60s"    # Go duration; scale to 0 after this long idle
//! ```
//!
//! How the pieces meet: every node agent's service proxy keeps listening on a Service whose
//! selector matches the pod template of an opted-in Deployment, even while it has no ready
//! endpoint; a connection arriving then is held, the agent scales the Deployment from 0 to 1
//! and forwards the connection once a backend is ready. Agents write
//! [`LAST_ACTIVITY`] (an RFC 3339 time) on the Deployment, at most every few seconds, while
//! it has traffic. The control plane's scale-to-zero controller scales it back to 0 once
//! [`idle_decision`] says it has been idle for the idle period. The annotation lives on the
//! Deployment (not the Service) because the Deployment is what scales, and one Deployment may
//! be behind several Services.
//!
//! Pure: no I/O and the clock is passed in, so every rule here is unit-tested directly.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

/// Opt-in annotation: `"true"` or `"false"`.
pub const SCALE_TO_ZERO: &str = "skiff.dev/scale-to-zero";
/// How long a Deployment may go without connections before it is scaled to zero (a Go
/// duration such as `90s` or `5m`; [`DEFAULT_IDLE`] when absent).
pub const SCALE_TO_ZERO_IDLE: &str = "skiff.dev/scale-to-zero-idle";
/// When a node agent last saw a connection for the Deployment (RFC 3339). Written by agents;
/// never copied to ReplicaSets (it changes with traffic, the pods do not).
pub const LAST_ACTIVITY: &str = "skiff.dev/last-activity";

/// The idle period when [`SCALE_TO_ZERO_IDLE`] is absent (Knative's stable window).
pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);
/// The shortest idle period accepted (shorter would scale down between two requests).
pub const MIN_IDLE: Duration = Duration::from_secs(1);

/// A Deployment's scale-to-zero settings, when it opted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleToZero {
    /// Idle this long with no connection: scaled to zero.
    pub idle: Duration,
}

/// Why a Deployment's scale-to-zero annotations are refused (the feature is off for it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    #[error("annotation {SCALE_TO_ZERO}: {0:?} is not \"true\" or \"false\"")]
    Enabled(String),
    #[error("annotation {SCALE_TO_ZERO_IDLE}: {value:?} {reason}")]
    Idle { value: String, reason: String },
}

/// The settings `annotations` ask for: `Ok(None)` when the Deployment did not opt in, an error
/// naming the bad annotation when a value does not parse.
pub fn parse(annotations: Option<&BTreeMap<String, String>>) -> Result<Option<ScaleToZero>, AnnotationError> {
    let Some(annotations) = annotations else { return Ok(None) };
    let enabled = match annotations.get(SCALE_TO_ZERO).map(|v| v.trim()) {
        None => false,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(v) => return Err(AnnotationError::Enabled(v.to_string())),
    };
    let idle = match annotations.get(SCALE_TO_ZERO_IDLE) {
        None => DEFAULT_IDLE,
        Some(value) => {
            let idle = parse_go_duration(value.trim())
                .map_err(|reason| AnnotationError::Idle { value: value.clone(), reason })?;
            if idle < MIN_IDLE {
                return Err(AnnotationError::Idle {
                    value: value.clone(),
                    reason: format!("is shorter than the minimum {}s", MIN_IDLE.as_secs()),
                });
            }
            idle
        }
    };
    Ok(enabled.then_some(ScaleToZero { idle }))
}

/// [`LAST_ACTIVITY`] of `annotations`, when present and a valid time.
pub fn last_activity(annotations: Option<&BTreeMap<String, String>>) -> Option<Timestamp> {
    annotations?.get(LAST_ACTIVITY)?.parse().ok()
}

/// Parses a Go duration (`300ms`, `1.5h`, `2m30s`; units `ns`, `us`/`µs`, `ms`, `s`, `m`,
/// `h`). Negative durations are refused; the error says why.
pub fn parse_go_duration(input: &str) -> Result<Duration, String> {
    if input.is_empty() {
        return Err("is empty; expected a duration such as 60s or 5m".into());
    }
    if input.starts_with('-') {
        return Err("is negative".into());
    }
    let mut rest = input.strip_prefix('+').unwrap_or(input);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let value: f64 = number.parse().map_err(|_| "is not a duration such as 60s or 5m".to_string())?;
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err("has a number without a unit (use s, m or h)".into()),
            other => return Err(format!("has an unknown unit {other:?} (use ms, s, m or h)")),
        };
        total += value * seconds;
        rest = after;
    }
    Duration::try_from_secs_f64(total).map_err(|_| "is too long".to_string())
}

/// What the scale-to-zero controller does with an opted-in Deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleDecision {
    /// Already at zero: nothing to watch.
    AtZero,
    /// Traffic was seen recently: look again after this long.
    RecheckIn(Duration),
    /// Idle for the whole idle period: scale to zero.
    ScaleDown,
}

/// Whether a Deployment with `replicas` replicas goes to zero at `now`. `last_activity` is its
/// [`LAST_ACTIVITY`]; `up_since` is when the controller first saw it above zero (a Deployment
/// scaled up by hand, or created above zero, gets a full idle period before it goes).
pub fn idle_decision(
    replicas: i32,
    last_activity: Option<Timestamp>,
    up_since: Timestamp,
    now: Timestamp,
    settings: ScaleToZero,
) -> IdleDecision {
    if replicas <= 0 {
        return IdleDecision::AtZero;
    }
    let last = last_activity.map_or(up_since, |a| a.max(up_since));
    let idle_for = now.duration_since(last);
    let idle_for = Duration::try_from(idle_for).unwrap_or(Duration::ZERO);
    if idle_for >= settings.idle { IdleDecision::ScaleDown } else { IdleDecision::RecheckIn(settings.idle - idle_for) }
}

/// Whether a Service `selector` picks the pods of a template labelled `template_labels` (every
/// selector pair is among the labels; an empty selector selects nothing, as for Endpoints).
pub fn selects(
    selector: Option<&BTreeMap<String, String>>,
    template_labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else { return false };
    let Some(labels) = template_labels else { return false };
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn go_durations() {
        let ok = [
            ("60s", 60_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("2m30s", 150_000),
            ("1.5s", 1_500),
            ("300ms", 300),
            ("0", 0),
            ("1h0m10s", 3_610_000),
        ];
        for (text, millis) in ok {
            assert_eq!(parse_go_duration(text), Ok(Duration::from_millis(millis)), "{text}");
        }
        for bad in ["", "60", "-5s", "5 s", "five", "5d", "s", "1.2.3s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn opt_in_and_idle() {
        assert_eq!(parse(None), Ok(None));
        assert_eq!(parse(Some(&map(&[]))), Ok(None));
        assert_eq!(parse(Some(&map(&[(SCALE_TO_ZERO, "false"), (SCALE_TO_ZERO_IDLE, "5s")]))), Ok(None));
        assert_eq!(parse(Some(&map(&[(SCALE_TO_ZERO, "true")]))), Ok(Some(ScaleToZero { idle: DEFAULT_IDLE })));
        assert_eq!(
            parse(Some(&map(&[(SCALE_TO_ZERO, "True"), (SCALE_TO_ZERO_IDLE, "2m")]))),
            Ok(Some(ScaleToZero { idle: Duration::from_secs(120) }))
        );
    }

    #[test]
    fn bad_values_name_the_annotation() {
        let err = parse(Some(&map(&[(SCALE_TO_ZERO, "yes")]))).expect_err("yes is not a bool");
        assert!(err.to_string().contains(SCALE_TO_ZERO) && err.to_string().contains("yes"), "{err}");
        let err = parse(Some(&map(&[(SCALE_TO_ZERO, "true"), (SCALE_TO_ZERO_IDLE, "soon")]))).expect_err("bad idle");
        assert!(err.to_string().contains(SCALE_TO_ZERO_IDLE) && err.to_string().contains("soon"), "{err}");
        let err = parse(Some(&map(&[(SCALE_TO_ZERO, "true"), (SCALE_TO_ZERO_IDLE, "10ms")]))).expect_err("too short");
        assert!(err.to_string().contains("minimum"), "{err}");
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn idle_decisions() {
        let settings = ScaleToZero { idle: Duration::from_secs(60) };
        let up = ts("2026-01-01T00:00:00Z");
        assert_eq!(idle_decision(0, None, up, ts("2026-01-01T01:00:00Z"), settings), IdleDecision::AtZero);
        // No traffic ever: counted from when it was first seen up.
        assert_eq!(
            idle_decision(1, None, up, ts("2026-01-01T00:00:20Z"), settings),
            IdleDecision::RecheckIn(Duration::from_secs(40))
        );
        assert_eq!(idle_decision(1, None, up, ts("2026-01-01T00:01:00Z"), settings), IdleDecision::ScaleDown);
        // Recent traffic pushes it back.
        let active = Some(ts("2026-01-01T00:00:50Z"));
        assert_eq!(
            idle_decision(2, active, up, ts("2026-01-01T00:01:00Z"), settings),
            IdleDecision::RecheckIn(Duration::from_secs(50))
        );
        // Activity older than the scale-up (a Deployment scaled up by hand) does not count.
        let old = Some(ts("2025-12-31T00:00:00Z"));
        assert_eq!(
            idle_decision(1, old, up, ts("2026-01-01T00:00:30Z"), settings),
            IdleDecision::RecheckIn(Duration::from_secs(30))
        );
    }

    #[test]
    fn service_selector_matches_the_template() {
        let labels = map(&[("app", "web"), ("tier", "front")]);
        assert!(selects(Some(&map(&[("app", "web")])), Some(&labels)));
        assert!(selects(Some(&labels), Some(&labels)));
        assert!(!selects(Some(&map(&[("app", "api")])), Some(&labels)));
        assert!(!selects(Some(&map(&[("app", "web"), ("x", "y")])), Some(&labels)));
        assert!(!selects(Some(&map(&[])), Some(&labels)), "an empty selector selects nothing");
        assert!(!selects(None, Some(&labels)));
    }
}
