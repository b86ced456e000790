//! Cron schedules as Kubernetes' CronJob reads them (`robfig/cron/v3`'s `ParseStandard`):
//! five fields (minute, hour, day of month, month, day of week) with `*`, `?`, lists,
//! ranges, steps and month/weekday names, the macros `@yearly`, `@annually`, `@monthly`,
//! `@weekly`, `@daily`, `@midnight`, `@hourly`, and `@every <duration>`; and the next
//! time a schedule fires after an instant, in a time zone.
//!
//! It lives here rather than in the controller so API validation and the CronJob controller
//! share one parser (a schedule the server accepts is one the controller can run).
//! Hand-written rather than a crate: the cron crates compute in `chrono`, Skiff's time crate
//! is `jiff`, and robfig's exact rules (day-of-month/day-of-week OR unless one is `*`,
//! `N/step` meaning `N-max/step`, no `TZ=` prefix) are small enough to port.
//!
//! Not here: seconds fields, `L`/`W`/`#` extensions (robfig's standard parser has none).

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

/// Why a schedule does not parse (the message is what the API returns).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CronError(String);

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Five cron fields.
    Spec(Spec),
    /// `@every <duration>`: fixed intervals (whole seconds, at least one).
    Every(SignedDuration),
}

/// The five fields as bit sets (bit n = value n allowed), plus whether the day fields were `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// Day of month or day of week started with `*`/`?`: both must then match (else either).
    day_star: bool,
}

struct Bounds {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Bounds = Bounds { name: "minute", min: 0, max: 59, names: &[] };
const HOUR: Bounds = Bounds { name: "hour", min: 0, max: 23, names: &[] };
const DOM: Bounds = Bounds { name: "day of month", min: 1, max: 31, names: &[] };
const MONTH: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    names: &["", "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
};
const DOW: Bounds =
    Bounds { name: "day of week", min: 0, max: 6, names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"] };

/// How far ahead [`Schedule::next_after`] looks before deciding a schedule never fires
/// (robfig gives up after five years too, e.g. for `0 0 30 2 *`).
const SEARCH_YEARS: i16 = 5;

impl Schedule {
    /// Parses a schedule the way Kubernetes does; `TZ=`/`CRON_TZ=` prefixes are refused
    /// (Kubernetes ≥ 1.25 wants `spec.timeZone` instead).
    pub fn parse(text: &str) -> Result<Schedule, CronError> {
        let text = text.trim();
        if text.starts_with("TZ=") || text.starts_with("CRON_TZ=") {
            return Err(CronError("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into()));
        }
        if let Some(rest) = text.strip_prefix('@') {
            let expanded = match rest {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => match rest.strip_prefix("every ") {
                    Some(d) => return parse_every(d.trim()),
                    None => return Err(CronError(format!("unrecognized descriptor: @{rest}"))),
                },
            };
            return Self::parse(expanded);
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError(format!("expected exactly 5 fields, found {}: {text}", fields.len())));
        }
        let (minute, _) = field(fields[0], &MINUTE)?;
        let (hour, _) = field(fields[1], &HOUR)?;
        let (dom, dom_star) = field(fields[2], &DOM)?;
        let (month, _) = field(fields[3], &MONTH)?;
        let (dow, dow_star) = field(fields[4], &DOW)?;
        Ok(Schedule::Spec(Spec { minute, hour, dom, month, dow, day_star: dom_star || dow_star }))
    }

    /// The first time strictly after `after` at which the schedule fires, read on the wall
    /// clock of `tz`; `None` when it never fires (e.g. February 30th).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Every(d) => {
                // robfig: whole seconds from `after` (its sub-second part dropped).
                let base = Timestamp::from_second(after.as_second()).ok()?;
                base.checked_add(*d).ok()
            }
            Schedule::Spec(s) => s.next_after(after, tz),
        }
    }
}

impl Spec {
    fn day_matches(&self, dt: DateTime) -> bool {
        let dom = bit(&self.dom, dt.day() as u32);
        let dow = bit(&self.dow, dt.weekday().to_sunday_zero_offset() as u32);
        if self.day_star { dom && dow } else { dom || dow }
    }

    fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = after.to_zoned(tz.clone()).datetime();
        let start = local.with().second(0).subsec_nanosecond(0).build().ok()?;
        let mut dt = start.checked_add(1.minute()).ok()?;
        let limit = local.year().saturating_add(SEARCH_YEARS);
        while dt.year() <= limit {
            if !bit(&self.month, dt.month() as u32) {
                dt = dt.date().first_of_month().checked_add(1.month()).ok()?.to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if !self.day_matches(dt) {
                dt = dt.date().tomorrow().ok()?.to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if !bit(&self.hour, dt.hour() as u32) {
                dt = dt.with().minute(0).build().ok()?.checked_add(1.hour()).ok()?;
                continue;
            }
            if !bit(&self.minute, dt.minute() as u32) {
                dt = dt.checked_add(1.minute()).ok()?;
                continue;
            }
            // A wall time skipped by a DST jump fires just after the jump, as Go's time does.
            let ts = tz.to_ambiguous_zoned(dt).compatible().ok()?.timestamp();
            if ts > after {
                return Some(ts);
            }
            dt = dt.checked_add(1.minute()).ok()?;
        }
        None
    }
}

fn bit(set: &u64, n: u32) -> bool {
    set & (1u64 << n) != 0
}

/// One field: comma-separated ranges. Returns the bit set and whether it started with `*`/`?`
/// without a step above one (robfig's "star bit").
fn field(text: &str, b: &Bounds) -> Result<(u64, bool), CronError> {
    let mut bits = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (r, s) = range(part, b)?;
        bits |= r;
        star |= s;
    }
    Ok((bits, star))
}

fn range(expr: &str, b: &Bounds) -> Result<(u64, bool), CronError> {
    let (range, step) = match expr.split_once('/') {
        Some((r, s)) => {
            let step = s
                .parse::<u32>()
                .map_err(|_| CronError(format!("failed to parse int from {s}: invalid step in {expr}")))?;
            if step == 0 {
                return Err(CronError(format!("step of range should be a positive number: {expr}")));
            }
            (r, Some(step))
        }
        None => (expr, None),
    };
    let (start, mut end, mut star) = if range == "*" || range == "?" {
        (b.min, b.max, true)
    } else {
        match range.split_once('-') {
            Some((lo, hi)) => (value(lo, b)?, value(hi, b)?, false),
            None => {
                let v = value(range, b)?;
                (v, v, false)
            }
        }
    };
    if let Some(step) = step {
        // `N/step` means `N-max/step`.
        if !range.contains('-') && !star {
            end = b.max;
        }
        if step > 1 {
            star = false;
        }
    }
    if start < b.min {
        return Err(CronError(format!("beginning of range ({start}) below minimum ({}): {expr}", b.min)));
    }
    if end > b.max {
        return Err(CronError(format!("end of range ({end}) above maximum ({}): {expr}", b.max)));
    }
    if start > end {
        return Err(CronError(format!("beginning of range ({start}) beyond end of range ({end}): {expr}")));
    }
    let bits = (start..=end).step_by(step.unwrap_or(1) as usize).fold(0u64, |acc, v| acc | (1 << v));
    Ok((bits, star))
}

fn value(text: &str, b: &Bounds) -> Result<u32, CronError> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| !n.is_empty() && *n == lower) {
        return Ok(i as u32);
    }
    text.parse::<u32>().map_err(|_| CronError(format!("failed to parse int from {text}: invalid {} value", b.name)))
}

/// `@every` takes a Go duration (`90s`, `1h30m`); robfig rounds it down to whole seconds.
fn parse_every(text: &str) -> Result<Schedule, CronError> {
    let bad = || CronError(format!("failed to parse duration @every {text}"));
    let mut total = 0f64;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_len..];
    }
    let secs = total.floor() as i64;
    Ok(Schedule::Every(SignedDuration::from_secs(secs.max(1))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn next(schedule: &str, after: &str, tz: &str) -> Option<Timestamp> {
        let tz = TimeZone::get(tz).expect("time zone");
        Schedule::parse(schedule).expect("parses").next_after(ts(after), &tz)
    }

    #[test]
    fn macros_expand_to_their_fields() {
        for (m, f) in [
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
            ("@monthly", "0 0 1 * *"),
            ("@weekly", "0 0 * * 0"),
            ("@daily", "0 0 * * *"),
            ("@midnight", "0 0 * * *"),
            ("@hourly", "0 * * * *"),
        ] {
            assert_eq!(Schedule::parse(m), Schedule::parse(f), "{m}");
        }
        assert_eq!(Schedule::parse("@every 1h30m"), Ok(Schedule::Every(SignedDuration::from_secs(5400))));
    }

    #[test]
    fn bad_schedules_are_refused_with_a_reason() {
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 7",
            "*/0 * * * *",
            "5-2 * * * *",
            "x * * * *",
            "@fortnightly",
            "@every soon",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} should not parse");
        }
        let e = Schedule::parse("CRON_TZ=UTC 0 * * * *").expect_err("TZ prefix");
        assert!(e.to_string().contains("use timeZone field instead"), "{e}");
        assert!(Schedule::parse("TZ=Europe/Berlin 0 * * * *").is_err());
    }

    #[test]
    fn next_times_in_utc() {
        assert_eq!(next("*/1 * * * *", "2026-01-01T00:00:00Z", "UTC"), Some(ts("2026-01-01T00:01:00Z")));
        assert_eq!(next("*/15 * * * *", "2026-01-01T00:15:30Z", "UTC"), Some(ts("2026-01-01T00:30:00Z")));
        assert_eq!(next("30 6-16/4 * * 1-5", "2026-01-02T15:00:00Z", "UTC"), Some(ts("2026-01-05T06:30:00Z")));
        assert_eq!(next("@hourly", "2026-01-01T10:59:59Z", "UTC"), Some(ts("2026-01-01T11:00:00Z")));
        assert_eq!(next("@yearly", "2026-03-01T00:00:00Z", "UTC"), Some(ts("2027-01-01T00:00:00Z")));
        assert_eq!(next("0 0 * * sun", "2026-01-01T00:00:00Z", "UTC"), Some(ts("2026-01-04T00:00:00Z")));
        assert_eq!(next("0 0 1 jan,JUL *", "2026-02-01T00:00:00Z", "UTC"), Some(ts("2026-07-01T00:00:00Z")));
        assert_eq!(next("0 0 30 2 *", "2026-01-01T00:00:00Z", "UTC"), None, "February 30th never comes");
    }

    #[test]
    fn day_of_month_and_weekday_combine_like_cron() {
        // Both restricted: either matches (the 13th, or a Friday).
        assert_eq!(next("0 0 13 * 5", "2026-01-01T00:00:00Z", "UTC"), Some(ts("2026-01-02T00:00:00Z")));
        // One is `*`: both must match (Friday the 13th).
        assert_eq!(next("0 0 13 * *", "2026-01-01T00:00:00Z", "UTC"), Some(ts("2026-01-13T00:00:00Z")));
        assert_eq!(next("0 0 */1 * 5", "2026-01-01T00:00:00Z", "UTC"), Some(ts("2026-01-02T00:00:00Z")));
    }

    #[test]
    fn time_zones_move_the_wall_clock() {
        // 09:00 in Berlin is 08:00 UTC in winter, 07:00 UTC in summer.
        assert_eq!(next("0 9 * * *", "2026-01-10T12:00:00Z", "Europe/Berlin"), Some(ts("2026-01-11T08:00:00Z")));
        assert_eq!(next("0 9 * * *", "2026-07-10T12:00:00Z", "Europe/Berlin"), Some(ts("2026-07-11T07:00:00Z")));
        // 02:30 does not exist on 2026-03-29 in Berlin: it fires right after the jump.
        assert_eq!(next("30 2 * * *", "2026-03-29T00:00:00Z", "Europe/Berlin"), Some(ts("2026-03-29T01:30:00Z")));
        assert_eq!(next("@daily", "2026-01-01T00:00:00Z", "America/New_York"), Some(ts("2026-01-01T05:00:00Z")));
    }

    #[test]
    fn every_counts_from_the_last_time() {
        assert_eq!(next("@every 90s", "2026-01-01T00:00:00.5Z", "UTC"), Some(ts("2026-01-01T00:01:30Z")));
    }
}
