//! When a job runs: upstream's `job_schedule`, parsed once into a [`JobSchedule`], and the
//! next fire time after a given instant.
//!
//! Pure: the time is always passed in (`now` when the job is armed, `after` for the next
//! fire), as in [`crate::policy`]; this module never reads the clock and never sleeps.
//!
//! Upstream's scheduler hands these fields to APScheduler, in this order of priority:
//! `schedule_date` (a one-shot `date` trigger), `schedule_interval` (an `interval` trigger,
//! `continuous` being every second), the cron fields `schedule_{year,month,day,week,
//! day_of_week,hour,minute,second}` (a `cron` trigger), and with none of them a single run
//! two seconds later. `schedule_start_date` and `schedule_end_date` bound the interval and cron
//! triggers; a start date in the past becomes now + 2 s, an end date before the start date is
//! no end date. The cron fields follow APScheduler's `CronTrigger`: lists (`1,15`), ranges
//! (`1-5`), steps (`*/10`, `1-30/5`, `5/10`), names (`jan`, `mon-fri`), `last` and
//! `1st mon`..`5th sun`/`last fri` in the day field, day_of_week 0 = Monday, and the
//! defaults APScheduler gives unset fields (those finer than the finest field set take their
//! minimum, the others `*`).

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use serde_json::Value;

use crate::error::{Error, Result};

/// Seconds after `now` that upstream starts a job whose start date is past or absent.
pub const START_DELAY_SECS: i64 = 2;
/// How late a one-shot `schedule_date` may be and still run (APScheduler's
/// `misfire_grace_time` as upstream sets it).
pub const MISFIRE_GRACE_SECS: i64 = 3600;

/// The fields of `job_schedule` this module reads or knows (upstream's schema is closed).
const KNOWN_FIELDS: &[&str] = &[
    "time_created",
    "time_started",
    "time_ended",
    "current_pid",
    "event",
    "status",
    "result",
    "schedule_date",
    "schedule_interval",
    "schedule_start_date",
    "schedule_end_date",
    "schedule_year",
    "schedule_month",
    "schedule_day",
    "schedule_week",
    "schedule_day_of_week",
    "schedule_hour",
    "schedule_minute",
    "schedule_second",
];

/// A parsed `job_schedule`, armed at the instant it was parsed (`now`).
#[derive(Clone, Debug, PartialEq)]
pub struct JobSchedule {
    trigger: Trigger,
    /// No fire before this (interval and cron).
    start: Timestamp,
    /// No fire after this.
    end: Option<Timestamp>,
}

/// Which kind of trigger a schedule is.
#[derive(Clone, Debug, PartialEq)]
enum Trigger {
    /// Once, at this instant.
    Once(Timestamp),
    /// Every `nanos`, from the start.
    Interval { nanos: i128 },
    /// Whenever the civil time in `tz` matches.
    Cron(Box<Cron>),
}

impl JobSchedule {
    /// Parses a `job_schedule` object (null or absent: run once, 2 s after `now`). Dates
    /// without an offset are read in `tz`, as APScheduler reads them in the local zone.
    /// Errors name the field (`job_schedule.schedule_interval`).
    pub fn parse(v: Option<&Value>, tz: &TimeZone, now: Timestamp) -> Result<JobSchedule> {
        let empty = serde_json::Map::new();
        let obj = match v {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(o)) => o,
            Some(_) => return Err(Error::bad_input("job_schedule", "expected an object")),
        };
        if let Some(k) = obj.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
            return Err(Error::bad_input(
                format!("job_schedule.{k}"),
                "unknown field (upstream's job_schedule has schedule_date, schedule_interval, schedule_start_date, schedule_end_date and schedule_{year,month,day,week,day_of_week,hour,minute,second})",
            ));
        }
        let soon = add_secs(now, START_DELAY_SECS);
        let date = |name: &str| -> Result<Option<Timestamp>> {
            match text_of(obj, name)? {
                None => Ok(None),
                Some(s) => {
                    crate::time::parse_date(&s, &format!("job_schedule.{name}"), tz).map(Some)
                }
            }
        };
        if let Some(at) = date("schedule_date")? {
            // A date a little in the past runs at once, as APScheduler's misfire grace does;
            // one more than an hour past never runs.
            let at = if at < now && at.as_second() >= now.as_second() - MISFIRE_GRACE_SECS {
                now
            } else {
                at
            };
            return Ok(JobSchedule {
                trigger: Trigger::Once(at),
                start: at,
                end: None,
            });
        }
        let start = date("schedule_start_date")?.map(|s| if s < now { soon } else { s });
        let end = date("schedule_end_date")?;
        let bounded = |trigger: Trigger, default_start: Timestamp| {
            // Upstream drops an end date before the start date it was given.
            let end = end.filter(|e| start.is_none_or(|s| *e >= s));
            JobSchedule {
                trigger,
                start: start.unwrap_or(default_start),
                end,
            }
        };
        if let Some(interval) = text_of(obj, "schedule_interval")? {
            let nanos = parse_interval(&interval)?;
            // APScheduler starts an interval without a start date one interval from now.
            let first = Timestamp::from_nanosecond(now.as_nanosecond().saturating_add(nanos))
                .unwrap_or(Timestamp::MAX);
            return Ok(bounded(Trigger::Interval { nanos }, first));
        }
        let mut given = Vec::new();
        for f in CronFieldName::ALL {
            if let Some(text) = text_of(obj, f.key())? {
                given.push((f, text));
            }
        }
        if given.is_empty() {
            return Ok(JobSchedule {
                trigger: Trigger::Once(soon),
                start: soon,
                end: None,
            });
        }
        let cron = Cron::parse(&given, tz.clone())?;
        Ok(bounded(Trigger::Cron(Box::new(cron)), now))
    }

    /// The first fire time strictly after `after`, or `None` when the schedule has no more
    /// (a one-shot that fired, past the end date, a cron that never matches again).
    pub fn next_fire(&self, after: Timestamp) -> Option<Timestamp> {
        self.fire_from(after, false)
    }

    /// The first fire time at or after `now` (what a job armed at `now` waits for).
    pub fn first_fire(&self, now: Timestamp) -> Option<Timestamp> {
        self.fire_from(now, true)
    }

    /// Whether the schedule fires once only (`schedule_date`, or no schedule at all).
    pub fn is_one_shot(&self) -> bool {
        matches!(self.trigger, Trigger::Once(_))
    }

    fn fire_from(&self, t: Timestamp, inclusive: bool) -> Option<Timestamp> {
        let after_ok = |x: Timestamp| if inclusive { x >= t } else { x > t };
        let fire = match &self.trigger {
            Trigger::Once(at) => return after_ok(*at).then_some(*at),
            Trigger::Interval { nanos } => {
                let (a, t_n) = (self.start.as_nanosecond(), t.as_nanosecond());
                let k = if t_n < a {
                    0
                } else {
                    let k = (t_n - a) / nanos;
                    if inclusive && a + k * nanos == t_n {
                        k
                    } else {
                        k + 1
                    }
                };
                Timestamp::from_nanosecond(a.checked_add(k.checked_mul(*nanos)?)?).ok()?
            }
            Trigger::Cron(c) => {
                // Before the start: the start itself may fire; else strictly after `t` unless
                // `inclusive` (a fire at `t` is never given twice by `next_fire(t)`).
                let (from, incl) = if self.start > t {
                    (self.start, true)
                } else {
                    (t, inclusive)
                };
                c.next_at_or_after(from, incl)?
            }
        };
        match self.end {
            Some(e) if fire > e => None,
            _ => Some(fire),
        }
    }
}

fn add_secs(t: Timestamp, secs: i64) -> Timestamp {
    Timestamp::from_second(t.as_second().saturating_add(secs))
        .ok()
        .and_then(|s| Timestamp::new(s.as_second(), t.subsec_nanosecond()).ok())
        .unwrap_or(Timestamp::MAX)
}

/// A schedule field as text: a string, or a number (APScheduler takes both); empty and
/// null are "not given", as upstream's `if value:` reads them.
fn text_of(obj: &serde_json::Map<String, Value>, name: &str) -> Result<Option<String>> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(Value::Number(n)) if n.is_u64() => Ok(Some(n.to_string())),
        Some(other) => Err(Error::bad_input(
            format!("job_schedule.{name}"),
            format!("expected a string, got {other}"),
        )),
    }
}

/// `continuous` (every second) or `N weeks|days|hours|minutes|seconds`, as upstream's API
/// validates it; N = 0 is one second, as in APScheduler.
fn parse_interval(s: &str) -> Result<i128> {
    let bad = |why: &str| {
        Error::bad_input(
            "job_schedule.schedule_interval",
            format!("{s:?}: {why}; expected continuous or N weeks|days|hours|minutes|seconds"),
        )
    };
    if s == "continuous" {
        return Ok(1_000_000_000);
    }
    let mut parts = s.split(' ').filter(|p| !p.is_empty());
    let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad("not an interval"));
    };
    if !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("the count is not a whole number"));
    }
    let n: i128 = n.parse().map_err(|_| bad("the count is too large"))?;
    let unit: i128 = match unit {
        "weeks" => 7 * 86_400,
        "days" => 86_400,
        "hours" => 3_600,
        "minutes" => 60,
        "seconds" => 1,
        _ => return Err(bad("unknown unit (upstream takes the plural only)")),
    };
    let secs = n
        .checked_mul(unit)
        .filter(|s| *s <= 1_000 * 365 * 86_400)
        .ok_or_else(|| bad("longer than a thousand years"))?;
    Ok(secs.max(1) * 1_000_000_000)
}

/// The cron fields, most significant first (APScheduler's `FIELD_NAMES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CronFieldName {
    Year,
    Month,
    Day,
    Week,
    DayOfWeek,
    Hour,
    Minute,
    Second,
}

impl CronFieldName {
    const ALL: [CronFieldName; 8] = [
        Self::Year,
        Self::Month,
        Self::Day,
        Self::Week,
        Self::DayOfWeek,
        Self::Hour,
        Self::Minute,
        Self::Second,
    ];

    fn key(self) -> &'static str {
        match self {
            Self::Year => "schedule_year",
            Self::Month => "schedule_month",
            Self::Day => "schedule_day",
            Self::Week => "schedule_week",
            Self::DayOfWeek => "schedule_day_of_week",
            Self::Hour => "schedule_hour",
            Self::Minute => "schedule_minute",
            Self::Second => "schedule_second",
        }
    }

    fn range(self) -> (u32, u32) {
        match self {
            Self::Year => (1970, 9999),
            Self::Month => (1, 12),
            Self::Day => (1, 31),
            Self::Week => (1, 53),
            Self::DayOfWeek => (0, 6),
            Self::Hour => (0, 23),
            Self::Minute | Self::Second => (0, 59),
        }
    }

    /// APScheduler's `DEFAULT_VALUES`, given to fields finer than the finest one set.
    fn default_expr(self) -> &'static str {
        match self {
            Self::Month | Self::Day => "1",
            Self::Hour | Self::Minute | Self::Second => "0",
            Self::Year | Self::Week | Self::DayOfWeek => "*",
        }
    }

    /// The value a name stands for in this field (`jan` = 1, `mon` = 0).
    fn name_value(self, s: &str) -> Option<u32> {
        const MONTHS: [&str; 12] = [
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        let s = s.to_ascii_lowercase();
        match self {
            Self::Month => MONTHS.iter().position(|m| *m == s).map(|i| i as u32 + 1),
            Self::DayOfWeek => WEEKDAYS.iter().position(|d| *d == s).map(|i| i as u32),
            _ => None,
        }
    }
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One comma-separated part of a cron field.
#[derive(Clone, Debug, PartialEq)]
enum Expr {
    /// `first..=last` every `step` (`*`, `a`, `a-b`, `*/n`, `a-b/n`, `a/n`).
    Range { first: u32, last: u32, step: u32 },
    /// `last`: the last day of the month (day field).
    LastDay,
    /// `1st mon`..`5th sun` (`nth` 1 to 5) or `last fri` (`nth` 0): day field.
    NthWeekday { nth: u8, weekday: u8 },
}

#[derive(Clone, Debug, PartialEq)]
struct CronField {
    exprs: Vec<Expr>,
}

impl CronField {
    fn parse(name: CronFieldName, text: &str) -> Result<CronField> {
        let field = format!("job_schedule.{}", name.key());
        let (min, max) = name.range();
        let mut exprs = Vec::new();
        for part in text.split(',') {
            let part = part.trim().to_ascii_lowercase();
            let bad = |why: String| Error::bad_input(&field, format!("{part:?}: {why}"));
            if part.is_empty() {
                return Err(bad("an empty list item".into()));
            }
            if name == CronFieldName::Day {
                if part == "last" {
                    exprs.push(Expr::LastDay);
                    continue;
                }
                let words: Vec<&str> = part.split_whitespace().collect();
                if let [nth, wd] = words[..] {
                    let nth = match nth {
                        "1st" => 1,
                        "2nd" => 2,
                        "3rd" => 3,
                        "4th" => 4,
                        "5th" => 5,
                        "last" => 0,
                        _ => return Err(bad("expected 1st..5th or last before a weekday".into())),
                    };
                    let weekday = CronFieldName::DayOfWeek
                        .name_value(wd)
                        .ok_or_else(|| bad(format!("{wd:?} is not a weekday (mon..sun)")))?;
                    exprs.push(Expr::NthWeekday {
                        nth,
                        weekday: weekday as u8,
                    });
                    continue;
                }
            }
            let (range, step) =
                match part.split_once('/') {
                    Some((r, s)) => {
                        let step: u32 =
                            s.trim().parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                                bad("the step must be a whole number above 0".into())
                            })?;
                        (r.trim(), Some(step))
                    }
                    None => (part.as_str(), None),
                };
            let value = |s: &str| -> Result<u32> {
                let s = s.trim();
                let v = match s.parse::<u32>() {
                    Ok(v) => v,
                    Err(_) => name.name_value(s).ok_or_else(|| {
                        bad(format!(
                            "{s:?} is neither a number nor a name this field takes"
                        ))
                    })?,
                };
                if v < min || v > max {
                    return Err(bad(format!("{v} is outside {min}..{max}")));
                }
                Ok(v)
            };
            let (first, last) = if range == "*" {
                (min, max)
            } else if let Some((a, b)) = range.split_once('-') {
                let (a, b) = (value(a)?, value(b)?);
                if a > b {
                    return Err(bad(format!("the range starts above its end ({a} > {b})")));
                }
                (a, b)
            } else {
                let a = value(range)?;
                (a, if step.is_some() { max } else { a })
            };
            exprs.push(Expr::Range {
                first,
                last,
                step: step.unwrap_or(1),
            });
        }
        Ok(CronField { exprs })
    }

    fn matches(&self, v: u32) -> bool {
        self.exprs.iter().any(|e| range_matches(e, v))
    }

    fn matches_day(&self, d: Date) -> bool {
        let day = d.day() as u32;
        self.exprs.iter().any(|e| match e {
            Expr::Range { .. } => range_matches(e, day),
            Expr::LastDay => d.day() == d.days_in_month(),
            Expr::NthWeekday { nth, weekday } => {
                d.weekday().to_monday_zero_offset() as u8 == *weekday
                    && if *nth == 0 {
                        d.day() + 7 > d.days_in_month()
                    } else {
                        (d.day() - 1) / 7 + 1 == *nth as i8
                    }
            }
        })
    }

    /// The values of a time field (hour, minute, second), sorted.
    fn values(&self, max: u32) -> Vec<u8> {
        (0..=max)
            .filter(|v| self.matches(*v))
            .map(|v| v as u8)
            .collect()
    }
}

fn range_matches(e: &Expr, v: u32) -> bool {
    match e {
        Expr::Range { first, last, step } => {
            v >= *first && v <= *last && (v - first).is_multiple_of(*step)
        }
        _ => false,
    }
}

/// APScheduler's cron trigger over civil time in one zone.
#[derive(Clone, Debug, PartialEq)]
struct Cron {
    year: CronField,
    month: CronField,
    day: CronField,
    week: CronField,
    day_of_week: CronField,
    hours: Vec<u8>,
    minutes: Vec<u8>,
    seconds: Vec<u8>,
    tz: TimeZone,
}

/// Days looked at before a cron is declared never to fire again (month and year misses skip
/// whole months and years, so this is thousands of years of schedules).
const CRON_SEARCH_LIMIT: u32 = 3_000_000;

impl Cron {
    fn parse(given: &[(CronFieldName, String)], tz: TimeZone) -> Result<Cron> {
        let finest = given.iter().map(|(f, _)| *f).max_by_key(|f| *f as u8);
        let mut fields = Vec::new();
        for f in CronFieldName::ALL {
            let text = match given.iter().find(|(g, _)| *g == f) {
                Some((_, t)) => t.as_str(),
                None if finest.is_some_and(|fin| (f as u8) > (fin as u8)) => f.default_expr(),
                None => "*",
            };
            fields.push(CronField::parse(f, text)?);
        }
        let mut it = fields.into_iter();
        let mut next = || it.next().expect("eight fields");
        let (year, month, day, week, day_of_week) = (next(), next(), next(), next(), next());
        let (hour, minute, second) = (next(), next(), next());
        Ok(Cron {
            year,
            month,
            day,
            week,
            day_of_week,
            hours: hour.values(23),
            minutes: minute.values(59),
            seconds: second.values(59),
            tz,
        })
    }

    /// The first matching whole second at (`inclusive`) or after `t`.
    fn next_at_or_after(&self, t: Timestamp, inclusive: bool) -> Option<Timestamp> {
        // Whole seconds: the first second >= t (inclusive) or > t.
        let secs = if inclusive && t.subsec_nanosecond() == 0 {
            t.as_second()
        } else {
            t.as_second() + 1
        };
        let from = Timestamp::from_second(secs).ok()?;
        let start = self.tz.to_datetime(from);
        let mut date = start.date();
        for _ in 0..CRON_SEARCH_LIMIT {
            let (y, m) = (date.year() as u32, date.month() as u32);
            if !self.year.matches(y) {
                date = Date::new(date.year().checked_add(1)?, 1, 1).ok()?;
                continue;
            }
            if !self.month.matches(m) {
                date = date.last_of_month().tomorrow().ok()?;
                continue;
            }
            let ok = self.day.matches_day(date)
                && self.week.matches(date.iso_week_date().week() as u32)
                && self
                    .day_of_week
                    .matches(date.weekday().to_monday_zero_offset() as u32);
            if ok {
                let lb = if date == start.date() {
                    (start.hour(), start.minute(), start.second())
                } else {
                    (0, 0, 0)
                };
                if let Some(ts) = self.time_on(date, lb, from) {
                    return Some(ts);
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The first matching time of `date` at or after `lb` whose instant is at or after `from`.
    fn time_on(&self, date: Date, lb: (i8, i8, i8), from: Timestamp) -> Option<Timestamp> {
        for &h in self.hours.iter().filter(|h| **h as i8 >= lb.0) {
            let same_h = h as i8 == lb.0;
            for &m in self.minutes.iter().filter(|m| !same_h || **m as i8 >= lb.1) {
                let same_m = same_h && m as i8 == lb.1;
                for &s in self.seconds.iter().filter(|s| !same_m || **s as i8 >= lb.2) {
                    let dt = DateTime::new(
                        date.year(),
                        date.month(),
                        date.day(),
                        h as i8,
                        m as i8,
                        s as i8,
                        0,
                    )
                    .ok()?;
                    // A time a clock change skips or repeats may map before `from`.
                    if let Ok(ts) = self.tz.to_timestamp(dt)
                        && ts >= from
                    {
                        return Some(ts);
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn utc(s: &str) -> Timestamp {
        crate::time::parse_date(s, "t", &TimeZone::UTC).unwrap()
    }

    fn sched(v: Value, now: &str) -> JobSchedule {
        JobSchedule::parse(Some(&v), &TimeZone::UTC, utc(now)).unwrap()
    }

    fn err(v: Value) -> String {
        JobSchedule::parse(Some(&v), &TimeZone::UTC, utc("2026-01-01T00:00:00"))
            .unwrap_err()
            .to_string()
    }

    /// The first `n` fire times from `now`.
    fn fires(s: &JobSchedule, now: &str, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut t = s.first_fire(utc(now));
        while let Some(x) = t {
            out.push(x.to_string());
            if out.len() == n {
                break;
            }
            t = s.next_fire(x);
        }
        out
    }

    #[test]
    fn nothing_given_runs_once_two_seconds_later() {
        let now = "2026-01-01T00:00:00";
        for v in [
            None,
            Some(json!(null)),
            Some(json!({})),
            Some(json!({"status":"scheduled","event":"","schedule_interval":""})),
        ] {
            let s = JobSchedule::parse(v.as_ref(), &TimeZone::UTC, utc(now)).unwrap();
            assert!(s.is_one_shot());
            assert_eq!(fires(&s, now, 5), ["2026-01-01T00:00:02Z"]);
        }
    }

    #[test]
    fn schedule_date_is_one_shot_with_an_hour_of_grace() {
        let s = sched(
            json!({"schedule_date":"2026-01-02T03:04:05"}),
            "2026-01-01T00:00:00",
        );
        assert_eq!(
            fires(&s, "2026-01-01T00:00:00", 5),
            ["2026-01-02T03:04:05Z"]
        );
        assert_eq!(s.next_fire(utc("2026-01-02T03:04:05")), None);
        // With an offset, and a fraction.
        let s = sched(
            json!({"schedule_date":"2026-01-02T03:04:05.5+01:00"}),
            "2026-01-01T00:00:00",
        );
        assert_eq!(
            fires(&s, "2026-01-01T00:00:00", 2),
            ["2026-01-02T02:04:05.5Z"]
        );
        // Half an hour late: at once. Two hours late: never.
        let s = sched(
            json!({"schedule_date":"2026-01-01T00:00:00"}),
            "2026-01-01T00:30:00",
        );
        assert_eq!(
            fires(&s, "2026-01-01T00:30:00", 2),
            ["2026-01-01T00:30:00Z"]
        );
        let s = sched(
            json!({"schedule_date":"2026-01-01T00:00:00"}),
            "2026-01-01T02:00:00",
        );
        assert_eq!(fires(&s, "2026-01-01T02:00:00", 2), Vec::<String>::new());
        // schedule_date wins over the others.
        let s = sched(
            json!({"schedule_date":"2026-01-02T00:00:00","schedule_interval":"1 seconds","schedule_hour":"3"}),
            "2026-01-01T00:00:00",
        );
        assert!(s.is_one_shot());
    }

    #[test]
    fn intervals_start_one_interval_later_or_at_the_start_date() {
        let s = sched(
            json!({"schedule_interval":"2 seconds"}),
            "2026-01-01T00:00:00",
        );
        assert_eq!(
            fires(&s, "2026-01-01T00:00:00", 3),
            [
                "2026-01-01T00:00:02Z",
                "2026-01-01T00:00:04Z",
                "2026-01-01T00:00:06Z"
            ]
        );
        // After a late run the next fire stays on the grid.
        assert_eq!(
            s.next_fire(utc("2026-01-01T00:00:05")).unwrap(),
            utc("2026-01-01T00:00:06")
        );
        let s = sched(
            json!({"schedule_interval":"continuous"}),
            "2026-01-01T00:00:00",
        );
        assert_eq!(
            fires(&s, "2026-01-01T00:00:00", 2),
            ["2026-01-01T00:00:01Z", "2026-01-01T00:00:02Z"]
        );
        for (text, secs) in [
            ("3 minutes", 180),
            ("2 hours", 7200),
            ("1 days", 86400),
            ("1 weeks", 604800),
            ("0 seconds", 1),
            ("5   seconds", 5),
        ] {
            let s = sched(json!({"schedule_interval": text}), "2026-01-01T00:00:00");
            let f = s.first_fire(utc("2026-01-01T00:00:00")).unwrap();
            assert_eq!(
                f.as_second() - utc("2026-01-01T00:00:00").as_second(),
                secs,
                "{text}"
            );
        }
        // A future start date anchors the grid; a past one becomes now + 2 s.
        let s = sched(
            json!({"schedule_interval":"1 hours","schedule_start_date":"2026-01-05T10:00:00","schedule_end_date":"2026-01-05T12:00:00"}),
            "2026-01-01T00:00:00",
        );
        assert_eq!(
            fires(&s, "2026-01-01T00:00:00", 9),
            [
                "2026-01-05T10:00:00Z",
                "2026-01-05T11:00:00Z",
                "2026-01-05T12:00:00Z"
            ]
        );
        let s = sched(
            json!({"schedule_interval":"10 seconds","schedule_start_date":"2025-01-01T00:00:00"}),
            "2026-01-01T00:00:00",
        );
        assert_eq!(
            fires(&s, "2026-01-01T00:00:00", 2),
            ["2026-01-01T00:00:02Z", "2026-01-01T00:00:12Z"]
        );
        // An end before the start is no end.
        let s = sched(
            json!({"schedule_interval":"1 days","schedule_start_date":"2026-02-01T00:00:00","schedule_end_date":"2026-01-15T00:00:00"}),
            "2026-01-01T00:00:00",
        );
        assert_eq!(fires(&s, "2026-01-01T00:00:00", 3).len(), 3);
        // Past the end: nothing.
        let s = sched(
            json!({"schedule_interval":"1 days","schedule_end_date":"2025-12-01T00:00:00"}),
            "2026-01-01T00:00:00",
        );
        assert_eq!(s.first_fire(utc("2026-01-01T00:00:00")), None);
    }

    #[test]
    fn cron_fields_follow_apscheduler() {
        let now = "2026-01-01T10:30:00"; // a Thursday
        // hour=3: minute and second default to 0, the rest is '*'.
        let s = sched(json!({"schedule_hour":"3"}), now);
        assert_eq!(
            fires(&s, now, 2),
            ["2026-01-02T03:00:00Z", "2026-01-03T03:00:00Z"]
        );
        // A list of weekday names, 0 = Monday.
        let s = sched(
            json!({"schedule_day_of_week":"mon, wed,fri","schedule_hour":"1","schedule_minute":"15"}),
            now,
        );
        assert_eq!(
            fires(&s, now, 3),
            [
                "2026-01-02T01:15:00Z",
                "2026-01-05T01:15:00Z",
                "2026-01-07T01:15:00Z"
            ]
        );
        let s = sched(json!({"schedule_day_of_week":"0","schedule_hour":"0"}), now);
        assert_eq!(fires(&s, now, 1), ["2026-01-05T00:00:00Z"]);
        let s = sched(
            json!({"schedule_day_of_week":"sat-sun","schedule_hour":"0"}),
            now,
        );
        assert_eq!(
            fires(&s, now, 2),
            ["2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z"]
        );
        // Steps and ranges, spaces after commas as upstream's examples write them.
        let s = sched(json!({"schedule_minute":"*/20"}), now);
        assert_eq!(
            fires(&s, now, 3),
            [
                "2026-01-01T10:40:00Z",
                "2026-01-01T11:00:00Z",
                "2026-01-01T11:20:00Z"
            ]
        );
        let s = sched(json!({"schedule_second":"5/20"}), now);
        assert_eq!(
            fires(&s, now, 3),
            [
                "2026-01-01T10:30:05Z",
                "2026-01-01T10:30:25Z",
                "2026-01-01T10:30:45Z"
            ]
        );
        let s = sched(
            json!({"schedule_month":"1-6, 9-12","schedule_day":"1-31/10"}),
            now,
        );
        // month and day given: hour, minute, second default to 0.
        assert_eq!(
            fires(&s, now, 3),
            [
                "2026-01-11T00:00:00Z",
                "2026-01-21T00:00:00Z",
                "2026-01-31T00:00:00Z"
            ]
        );
        // Month names, last day, nth weekday, ISO week, year.
        let s = sched(json!({"schedule_month":"feb","schedule_day":"last"}), now);
        assert_eq!(
            fires(&s, now, 2),
            ["2026-02-28T00:00:00Z", "2027-02-28T00:00:00Z"]
        );
        let s = sched(json!({"schedule_day":"1st mon, last fri"}), now);
        assert_eq!(
            fires(&s, now, 3),
            [
                "2026-01-05T00:00:00Z",
                "2026-01-30T00:00:00Z",
                "2026-02-02T00:00:00Z"
            ]
        );
        let s = sched(
            json!({"schedule_week":"10","schedule_day_of_week":"tue","schedule_hour":12}),
            now,
        );
        assert_eq!(
            fires(&s, now, 2),
            ["2026-03-03T12:00:00Z", "2027-03-09T12:00:00Z"]
        );
        let s = sched(
            json!({"schedule_year":"2028","schedule_month":"2","schedule_day":"29"}),
            now,
        );
        assert_eq!(fires(&s, now, 2), ["2028-02-29T00:00:00Z"]);
        // Never matches: none, quickly.
        let s = sched(json!({"schedule_month":"2","schedule_day":"30"}), now);
        assert_eq!(s.first_fire(utc(now)), None);
        // At the very second: first_fire includes it, next_fire does not.
        let s = sched(json!({"schedule_minute":"30"}), now);
        assert_eq!(s.first_fire(utc(now)).unwrap(), utc(now));
        assert_eq!(s.next_fire(utc(now)).unwrap(), utc("2026-01-01T11:30:00"));
        // Start and end dates bound a cron.
        let s = sched(
            json!({"schedule_hour":"*","schedule_start_date":"2026-01-03T00:00:00","schedule_end_date":"2026-01-03T02:00:00"}),
            now,
        );
        assert_eq!(
            fires(&s, now, 9),
            [
                "2026-01-03T00:00:00Z",
                "2026-01-03T01:00:00Z",
                "2026-01-03T02:00:00Z"
            ]
        );
    }

    #[test]
    fn cron_in_a_zone_with_clock_changes() {
        let tz = TimeZone::get("Europe/Paris").unwrap();
        let now = utc("2026-03-28T12:00:00");
        let s = JobSchedule::parse(
            Some(&json!({"schedule_hour":"2","schedule_minute":"30"})),
            &tz,
            now,
        )
        .unwrap();
        // 02:30 does not exist on 2026-03-29 in Paris; it is taken as 03:30 (jiff's compatible
        // choice, as APScheduler moves it forward), and the day after is normal.
        let a = s.first_fire(now).unwrap();
        let b = s.next_fire(a).unwrap();
        assert!(b > a);
        assert_eq!(b, utc("2026-03-30T00:30:00"));
    }

    #[test]
    fn bad_input_names_the_field() {
        for (v, field) in [
            (
                json!({"schedule_interval":"2 second"}),
                "job_schedule.schedule_interval",
            ),
            (
                json!({"schedule_interval":"every day"}),
                "job_schedule.schedule_interval",
            ),
            (
                json!({"schedule_interval":"-1 days"}),
                "job_schedule.schedule_interval",
            ),
            (
                json!({"schedule_interval":"99999999999999999999 weeks"}),
                "job_schedule.schedule_interval",
            ),
            (
                json!({"schedule_interval":5}),
                "job_schedule.schedule_interval",
            ),
            (
                json!({"schedule_date":"tomorrow"}),
                "job_schedule.schedule_date",
            ),
            (
                json!({"schedule_interval":"1 days","schedule_start_date":"2026-13-01T00:00:00"}),
                "job_schedule.schedule_start_date",
            ),
            (
                json!({"schedule_interval":"1 days","schedule_end_date":true}),
                "job_schedule.schedule_end_date",
            ),
            (json!({"schedule_hour":"24"}), "job_schedule.schedule_hour"),
            (json!({"schedule_hour":"5-3"}), "job_schedule.schedule_hour"),
            (
                json!({"schedule_minute":"*/0"}),
                "job_schedule.schedule_minute",
            ),
            (
                json!({"schedule_minute":"1,,2"}),
                "job_schedule.schedule_minute",
            ),
            (
                json!({"schedule_second":"x"}),
                "job_schedule.schedule_second",
            ),
            (
                json!({"schedule_day_of_week":"7"}),
                "job_schedule.schedule_day_of_week",
            ),
            (
                json!({"schedule_day_of_week":"monday"}),
                "job_schedule.schedule_day_of_week",
            ),
            (
                json!({"schedule_month":"13"}),
                "job_schedule.schedule_month",
            ),
            (
                json!({"schedule_day":"6th mon"}),
                "job_schedule.schedule_day",
            ),
            (
                json!({"schedule_day":"1st xyz"}),
                "job_schedule.schedule_day",
            ),
            (json!({"schedule_week":"0"}), "job_schedule.schedule_week"),
            (
                json!({"schedule_year":"1969"}),
                "job_schedule.schedule_year",
            ),
            (json!({"schedule_hour":-1}), "job_schedule.schedule_hour"),
            (json!({"schedule_hours":"1"}), "job_schedule.schedule_hours"),
            (json!([1]), "job_schedule"),
        ] {
            let e = err(v.clone());
            assert!(e.starts_with(&format!("{field}:")), "{v}: {e}");
        }
    }
}
