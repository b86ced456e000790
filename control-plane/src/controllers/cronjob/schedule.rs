//! The CronJob controller's pure time decisions, ported from Kubernetes'
//! `pkg/controller/cronjob/utils.go`: which scheduled time (if any) is due now — only the
//! most recent missed one, never a backlog — how many were missed, when to look again, and
//! the name and scheduled-timestamp annotation of the Job for a time.

use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use skiff_api::cron::Schedule;

/// More missed start times than this get the `TooManyMissedTimes` warning.
pub const TOO_MANY_MISSED: i64 = 100;

/// How late after a scheduled time the controller looks again (Kubernetes' `nextScheduleDelta`).
pub const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);

/// How many start times were missed since the last one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    None,
    Few,
    /// More than [`TOO_MANY_MISSED`].
    Many,
}

/// What a CronJob's schedule says at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The time counting starts from: the last schedule time, else creation (moved up to
    /// `now - startingDeadlineSeconds` when that is later and the deadline is included).
    pub earliest: Timestamp,
    /// The most recent scheduled time in `(earliest, now]`, if any.
    pub most_recent: Option<Timestamp>,
    pub missed: Missed,
}

/// What the controller knows of a CronJob for scheduling.
#[derive(Debug, Clone)]
pub struct Timing<'a> {
    pub schedule: &'a Schedule,
    pub tz: &'a TimeZone,
    pub created: Timestamp,
    pub last_schedule: Option<Timestamp>,
    pub starting_deadline_seconds: Option<i64>,
}

impl Timing<'_> {
    fn next(&self, after: Timestamp) -> Option<Timestamp> {
        self.schedule.next_after(after, self.tz)
    }

    /// Kubernetes' `mostRecentScheduleTime`: the latest scheduled time not after `now`
    /// (counting from [`Due::earliest`]) and roughly how many were missed.
    pub fn most_recent(&self, now: Timestamp, include_deadline: bool) -> Due {
        let mut earliest = self.last_schedule.unwrap_or(self.created);
        if include_deadline && let Some(d) = self.starting_deadline_seconds {
            let deadline = now.checked_sub(SignedDuration::from_secs(d)).unwrap_or(Timestamp::MIN);
            earliest = earliest.max(deadline);
        }
        let none = |missed| Due { earliest, most_recent: None, missed };
        let Some(t1) = self.next(earliest) else { return none(Missed::None) };
        if now < t1 {
            return none(Missed::None);
        }
        let Some(t2) = self.next(t1) else { return Due { earliest, most_recent: Some(t1), missed: Missed::None } };
        if now < t2 {
            return Due { earliest, most_recent: Some(t1), missed: Missed::None };
        }
        // Estimate the number of missed times from the interval between the first two, then
        // walk only the last few to find the most recent exactly (as Kubernetes does).
        let interval = t2.duration_since(t1).as_secs().max(1);
        let missed = now.duration_since(t1).as_secs() / interval + 1;
        let back = SignedDuration::from_secs((missed - 2).max(-1) * interval);
        let mut t = t1.checked_add(back).ok().and_then(|p| self.next(p));
        let mut most_recent = None;
        while let Some(at) = t.filter(|at| *at <= now) {
            most_recent = Some(at);
            t = self.next(at);
        }
        let missed = if missed > TOO_MANY_MISSED { Missed::Many } else { Missed::Few };
        Due { earliest, most_recent, missed }
    }

    /// How long until the controller should look again (Kubernetes' `nextScheduleTimeDuration`):
    /// just after the next scheduled time.
    pub fn requeue_after(&self, now: Timestamp) -> Option<Duration> {
        let due = self.most_recent(now, false);
        let from = match (due.most_recent, due.missed) {
            (Some(t), _) => t,
            (None, Missed::None) => due.earliest,
            (None, _) => now,
        };
        let next = self.next(from)?;
        Some(Duration::try_from(next.duration_since(now)).unwrap_or(Duration::ZERO) + NEXT_SCHEDULE_DELTA)
    }
}

/// `t` plus `secs` seconds, saturating.
pub fn plus(t: Timestamp, secs: i64) -> Timestamp {
    t.checked_add(SignedDuration::from_secs(secs)).unwrap_or(Timestamp::MAX)
}

/// The name of the Job for scheduled time `at`: `<cronjob>-<minutes since the epoch>`, so a
/// retried creation for the same time collides instead of running twice.
pub fn job_name(cronjob: &str, at: Timestamp) -> String {
    format!("{cronjob}-{}", at.as_second().div_euclid(60))
}

/// The `batch.kubernetes.io/cronjob-scheduled-timestamp` value: RFC 3339 in the CronJob's zone.
pub fn scheduled_timestamp(at: Timestamp, tz: &TimeZone) -> String {
    let zoned = at.to_zoned(tz.clone());
    if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The CronJob's time zone: `spec.timeZone`, else the controller's zone (UTC in Skiff, so
/// schedules do not depend on the host's settings).
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, String> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(n).map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn timing<'a>(s: &'a Schedule, last: Option<&str>, deadline: Option<i64>) -> Timing<'a> {
        static UTC: TimeZone = TimeZone::UTC;
        Timing {
            schedule: s,
            tz: &UTC,
            created: at("2026-01-01T00:00:00Z"),
            last_schedule: last.map(at),
            starting_deadline_seconds: deadline,
        }
    }

    #[test]
    fn nothing_due_before_the_first_time_then_exactly_it() {
        let s = Schedule::parse("*/5 * * * *").expect("schedule");
        let t = timing(&s, None, None);
        assert_eq!(t.most_recent(at("2026-01-01T00:04:59Z"), true).most_recent, None);
        let due = t.most_recent(at("2026-01-01T00:05:30Z"), true);
        assert_eq!((due.most_recent, due.missed), (Some(at("2026-01-01T00:05:00Z")), Missed::None));
        assert_eq!(t.requeue_after(at("2026-01-01T00:04:59Z")), Some(Duration::from_millis(1100)));
    }

    #[test]
    fn after_a_gap_only_the_most_recent_missed_time_is_due() {
        let s = Schedule::parse("@hourly").expect("schedule");
        let t = timing(&s, Some("2026-01-01T00:00:00Z"), None);
        let due = t.most_recent(at("2026-01-01T05:30:00Z"), true);
        assert_eq!((due.most_recent, due.missed), (Some(at("2026-01-01T05:00:00Z")), Missed::Few));
        // 200 hours later: too many to count one by one.
        let due = t.most_recent(at("2026-01-09T08:10:00Z"), true);
        assert_eq!((due.most_recent, due.missed), (Some(at("2026-01-09T08:00:00Z")), Missed::Many));
        // A starting deadline bounds how far back the controller looks.
        let t = timing(&s, Some("2026-01-01T00:00:00Z"), Some(600));
        let due = t.most_recent(at("2026-01-09T08:05:00Z"), true);
        assert_eq!((due.most_recent, due.missed), (Some(at("2026-01-09T08:00:00Z")), Missed::None));
        assert_eq!(t.most_recent(at("2026-01-09T08:20:00Z"), true).most_recent, None, "08:00 is past the deadline");
    }

    #[test]
    fn irregular_schedules_find_the_right_last_time() {
        let s = Schedule::parse("30 6-16/4 * * 1-5").expect("schedule");
        let t = timing(&s, Some("2026-01-05T06:30:00Z"), None);
        assert_eq!(t.most_recent(at("2026-01-12T12:00:00Z"), true).most_recent, Some(at("2026-01-12T10:30:00Z")));
    }

    #[test]
    fn job_names_and_annotations() {
        assert_eq!(job_name("hello", at("2026-01-01T00:05:00Z")), "hello-29453765");
        let berlin = time_zone(Some("Europe/Berlin")).expect("zone");
        assert_eq!(scheduled_timestamp(at("2026-01-01T00:05:00Z"), &berlin), "2026-01-01T01:05:00+01:00");
        assert_eq!(scheduled_timestamp(at("2026-01-01T00:05:00Z"), &TimeZone::UTC), "2026-01-01T00:05:00Z");
        assert!(time_zone(Some("Nowhere/Special")).is_err());
    }
}
