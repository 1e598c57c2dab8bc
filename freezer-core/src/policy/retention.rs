//! Retention: which snapshots of each series to forget.
//!
//! Two kinds of rule, applied per series (`hostname` + `backup_name`):
//!
//! * **Removal rules**, upstream's: `remove_older_than` (days, fractional, counted from now),
//!   `remove_from_date` and `remove_before_date` (a date; the latter also takes an epoch
//!   number, as upstream's admin job does). A snapshot older than any of them is a candidate.
//!   Without removal rules every snapshot is a candidate.
//! * **Keep rules**, restic's: the last N, the newest of each of the last N hours, days, ISO
//!   weeks, months and years that have snapshots, and every snapshot within a span of the
//!   series' newest one. A snapshot any keep rule picks stays, whatever the removal rules say.
//!
//! A candidate no keep rule picks is forgotten. With no rule at all nothing is: retention
//! refuses to run without one. Each decision carries its reasons, for `--dry-run`.
//!
//! Upstream deletes whole chains (a level 0 and its increments); here every snapshot is
//! complete, so snapshots are forgotten one by one and a kept level 2 never loses its data.

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::snapshot::Snapshot;

/// The rules.
#[derive(Clone, Debug, Default)]
pub struct Retention {
    /// Forget snapshots older than this many days (upstream's `remove_older_than`).
    pub remove_older_than_days: Option<f64>,
    /// Forget snapshots older than this date (upstream's `remove_from_date`).
    pub remove_from_date: Option<Timestamp>,
    /// Forget snapshots older than this date (upstream's `remove_before_date`).
    pub remove_before_date: Option<Timestamp>,
    /// Keep the newest N.
    pub keep_last: Option<u32>,
    /// Keep the newest of each of the last N hours with snapshots.
    pub keep_hourly: Option<u32>,
    /// ... days.
    pub keep_daily: Option<u32>,
    /// ... ISO weeks.
    pub keep_weekly: Option<u32>,
    /// ... months.
    pub keep_monthly: Option<u32>,
    /// ... years.
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot within this span of the series' newest (`10d`, `2w`, `1y6mo`).
    pub keep_within: Option<Span>,
}

/// What happens to one snapshot, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// The snapshot.
    pub id: Id,
    /// Its host.
    pub hostname: String,
    /// Its backup name.
    pub backup_name: String,
    /// Its time.
    pub time: Timestamp,
    /// Its level.
    pub level: u32,
    /// Kept (true) or forgotten.
    pub keep: bool,
    /// The rules that decided: `last 3`, `daily 2026-11-20`, `older than ... (remove_older_than 30)`.
    pub reasons: Vec<String>,
}

impl Retention {
    /// Whether any rule is set.
    pub fn is_empty(&self) -> bool {
        !self.has_removal() && !self.has_keep()
    }

    fn has_removal(&self) -> bool {
        self.remove_older_than_days.is_some()
            || self.remove_from_date.is_some()
            || self.remove_before_date.is_some()
    }

    fn has_keep(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_hourly.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || self.keep_within.is_some()
    }

    /// Checks the rules; errors name the option.
    pub fn validate(&self) -> Result<()> {
        if self.is_empty() {
            return Err(Error::bad_input(
                "remove_older_than",
                "no retention rule given: set remove_older_than, remove_from_date, remove_before_date or a keep rule",
            ));
        }
        if let Some(d) = self.remove_older_than_days
            && !(d.is_finite() && d > 0.0)
        {
            return Err(Error::bad_input(
                "remove_older_than",
                format!("{d} is not a number of days above 0 (0 would forget every snapshot)"),
            ));
        }
        // A keep rule of 0 keeps nothing: alone, it would forget every snapshot.
        for (name, n) in [
            ("keep_last", self.keep_last),
            ("keep_hourly", self.keep_hourly),
            ("keep_daily", self.keep_daily),
            ("keep_weekly", self.keep_weekly),
            ("keep_monthly", self.keep_monthly),
            ("keep_yearly", self.keep_yearly),
        ] {
            if n == Some(0) {
                return Err(Error::bad_input(
                    name,
                    "0 keeps nothing; give 1 or more, or leave the rule out",
                ));
            }
        }
        Ok(())
    }

    /// Decides for every snapshot in `snaps` (several series at once), at `now`, with calendar
    /// buckets in time zone `tz`. Decisions come grouped by series, newest first.
    pub fn apply(
        &self,
        snaps: &[(Id, Snapshot)],
        now: Timestamp,
        tz: &TimeZone,
    ) -> Result<Vec<Decision>> {
        self.validate()?;
        let mut series: BTreeMap<(&str, &str), Vec<&(Id, Snapshot)>> = BTreeMap::new();
        for s in snaps {
            series
                .entry((&s.1.hostname, &s.1.backup_name))
                .or_default()
                .push(s);
        }
        let cutoffs = self.cutoffs(now)?;
        let mut out = Vec::with_capacity(snaps.len());
        for (_, mut list) in series {
            list.sort_by_key(|(id, s)| std::cmp::Reverse((s.time, *id)));
            let kept = self.keep_reasons(&list, tz)?;
            for ((id, s), keep_why) in list.iter().zip(kept) {
                let removal: Vec<String> = cutoffs
                    .iter()
                    .filter(|(t, _)| s.time < *t)
                    .map(|(_, why)| why.clone())
                    .collect();
                let candidate = !self.has_removal() || !removal.is_empty();
                let keep = !candidate || !keep_why.is_empty();
                let reasons = match (keep, candidate) {
                    (true, false) => vec!["newer than every removal date".to_string()],
                    (true, true) => keep_why,
                    (false, _) if removal.is_empty() => vec!["no keep rule keeps it".into()],
                    (false, _) => removal,
                };
                out.push(Decision {
                    id: *id,
                    hostname: s.hostname.clone(),
                    backup_name: s.backup_name.clone(),
                    time: s.time,
                    level: s.level,
                    keep,
                    reasons,
                });
            }
        }
        Ok(out)
    }

    /// The removal dates, each with how it reads in a reason.
    fn cutoffs(&self, now: Timestamp) -> Result<Vec<(Timestamp, String)>> {
        let mut out = vec![];
        if let Some(days) = self.remove_older_than_days {
            let ms = (days * 86_400_000.0).round() as i64;
            let t = now
                .checked_sub(jiff::SignedDuration::from_millis(ms))
                .map_err(|_| {
                    Error::bad_input("remove_older_than", format!("{days} days is too long"))
                })?;
            out.push((t, format!("older than {t} (remove_older_than {days} days)")));
        }
        if let Some(t) = self.remove_from_date {
            out.push((t, format!("older than {t} (remove_from_date)")));
        }
        if let Some(t) = self.remove_before_date {
            out.push((t, format!("older than {t} (remove_before_date)")));
        }
        Ok(out)
    }

    /// For each snapshot of one series (newest first), the keep rules that pick it.
    fn keep_reasons(&self, list: &[&(Id, Snapshot)], tz: &TimeZone) -> Result<Vec<Vec<String>>> {
        let mut why: Vec<Vec<String>> = vec![vec![]; list.len()];
        if let Some(n) = self.keep_last {
            for w in why.iter_mut().take(n as usize) {
                w.push(format!("last {n}"));
            }
        }
        type Bucket = fn(&jiff::ZonedDateTime) -> String;
        let buckets: [(&str, Option<u32>, Bucket); 5] = [
            ("hourly", self.keep_hourly, |z| {
                z.strftime("%Y-%m-%d %H:00").to_string()
            }),
            ("daily", self.keep_daily, |z| {
                z.strftime("%Y-%m-%d").to_string()
            }),
            ("weekly", self.keep_weekly, |z| {
                let w = z.date().iso_week_date();
                format!("{}-W{:02}", w.year(), w.week())
            }),
            ("monthly", self.keep_monthly, |z| {
                z.strftime("%Y-%m").to_string()
            }),
            ("yearly", self.keep_yearly, |z| z.strftime("%Y").to_string()),
        ];
        for (name, n, bucket) in buckets {
            let Some(n) = n else { continue };
            let mut last: Option<String> = None;
            let mut taken = 0;
            for (i, (_, s)) in list.iter().enumerate() {
                if taken == n {
                    break;
                }
                let b = bucket(&s.time.to_zoned_datetime(tz.clone()));
                // Newest first: the first snapshot of each bucket is its newest.
                if last.as_ref() != Some(&b) {
                    why[i].push(format!("{name} {b}"));
                    taken += 1;
                    last = Some(b);
                }
            }
        }
        if let (Some(span), Some((_, newest))) = (self.keep_within, list.first()) {
            let from = newest
                .time
                .to_zoned_datetime(tz.clone())
                .checked_sub(span)
                .map_err(|e| Error::bad_input("keep_within", e))?
                .timestamp();
            for (i, (_, s)) in list.iter().enumerate() {
                if s.time >= from {
                    why[i].push(format!("within {span:#} of the newest"));
                }
            }
        }
        Ok(why)
    }
}

/// Parses a positive span for `keep_within`: `36h`, `10d`, `2w`, `6m` (months, as restic
/// reads it), `1y6m`, or an ISO 8601 duration (`P1Y6M`).
pub fn parse_span(s: &str, field: &str) -> Result<Span> {
    let bad = || {
        Error::bad_input(
            field,
            format!("{s:?} is not a span; use a number and a unit: 36h, 10d, 2w, 6m, 1y6m"),
        )
    };
    let t = s.trim();
    let span = if !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || b"ymwdh".contains(&b))
    {
        let mut span = Span::new();
        let mut num = String::new();
        for c in t.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: i64 = num.parse().map_err(|_| bad())?;
            num.clear();
            span = match c {
                'y' => span.try_years(i64::from(span.get_years()) + n),
                'm' => span.try_months(i64::from(span.get_months()) + n),
                'w' => span.try_weeks(i64::from(span.get_weeks()) + n),
                'd' => span.try_days(i64::from(span.get_days()) + n),
                _ => span.try_hours(i64::from(span.get_hours()) + n),
            }
            .map_err(|_| bad())?;
        }
        if !num.is_empty() {
            return Err(bad());
        }
        span
    } else {
        t.parse::<Span>().map_err(|_| bad())?
    };
    if span.signum() <= 0 {
        return Err(bad());
    }
    Ok(span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::ToSpan;

    const DAY: i64 = 86_400;

    fn snap(host: &str, name: &str, t: Timestamp) -> Snapshot {
        serde_json::from_value(serde_json::json!({
            "version": 1, "time": t, "time_stamp": t.as_second(), "hostname": host,
            "backup_name": name, "mode": "fs", "level": 0, "parent": null,
            "path_to_backup": "/", "tree": Id([0; 32]), "program": "t"}))
        .unwrap()
    }

    /// 60 daily snapshots at 03:00 UTC, the newest on 2026-11-24 (a Tuesday), id n = days ago.
    fn sixty_days() -> (Vec<(Id, Snapshot)>, Timestamp) {
        let newest: Timestamp = "2026-11-24T03:00:00Z".parse().unwrap();
        let snaps = (0..60)
            .map(|ago| {
                let t = Timestamp::from_second(newest.as_second() - ago * DAY).unwrap();
                (Id([ago as u8; 32]), snap("h", "b", t))
            })
            .collect();
        (snaps, newest + jiff::SignedDuration::from_hours(1))
    }

    /// The days-ago of the kept snapshots.
    fn kept(r: &Retention) -> Vec<u8> {
        let (snaps, now) = sixty_days();
        let mut k: Vec<u8> = r
            .apply(&snaps, now, &TimeZone::UTC)
            .unwrap()
            .iter()
            .filter(|d| d.keep)
            .map(|d| d.id.0[0])
            .collect();
        k.sort();
        k
    }

    #[test]
    fn sixty_daily_snapshots_under_each_policy() {
        let none = Retention::default();
        let cases: Vec<(Retention, Vec<u8>)> = vec![
            (
                Retention {
                    keep_last: Some(10),
                    ..none.clone()
                },
                (0..10).collect(),
            ),
            (
                Retention {
                    keep_daily: Some(7),
                    ..none.clone()
                },
                (0..7).collect(),
            ),
            (
                // Hours: one snapshot per day, so the last 5 hours with snapshots are 5 days.
                Retention {
                    keep_hourly: Some(5),
                    ..none.clone()
                },
                (0..5).collect(),
            ),
            (
                // ISO weeks end on Sunday; the newest (Tue 24th) is in week 48, the newest of
                // week 47 is Sun 22nd (2 days ago), then Sun 15th (9), Sun 8th (16).
                Retention {
                    keep_weekly: Some(4),
                    ..none.clone()
                },
                vec![0, 2, 9, 16],
            ),
            (
                // Nov 24 (0), Oct 31 (24), Sep 30 (55); the series starts on Sep 26.
                Retention {
                    keep_monthly: Some(12),
                    ..none.clone()
                },
                vec![0, 24, 55],
            ),
            (
                Retention {
                    keep_yearly: Some(3),
                    ..none.clone()
                },
                vec![0],
            ),
            (
                Retention {
                    keep_within: Some(parse_span("2w", "keep_within").unwrap()),
                    ..none.clone()
                },
                (0..=14).collect(),
            ),
            (
                // Older than 30 days (from now = newest + 1 h): days 0..=29 are newer.
                Retention {
                    remove_older_than_days: Some(30.0),
                    ..none.clone()
                },
                (0..30).collect(),
            ),
            (
                Retention {
                    remove_older_than_days: Some(0.5),
                    ..none.clone()
                },
                vec![0],
            ),
            (
                Retention {
                    remove_from_date: Some("2026-11-20T00:00:00Z".parse().unwrap()),
                    ..none.clone()
                },
                (0..5).collect(),
            ),
            (
                // Removal rules narrow the candidates, keep rules protect: older than 30 days
                // goes unless it is the newest of its month.
                Retention {
                    remove_older_than_days: Some(30.0),
                    keep_monthly: Some(12),
                    ..none.clone()
                },
                (0..30).chain([55]).collect(),
            ),
            (
                Retention {
                    keep_last: Some(3),
                    keep_weekly: Some(2),
                    ..none.clone()
                },
                vec![0, 1, 2],
            ),
            (
                Retention {
                    keep_daily: Some(2),
                    keep_weekly: Some(3),
                    ..none.clone()
                },
                vec![0, 1, 2, 9],
            ),
        ];
        for (rule, want) in cases {
            assert_eq!(kept(&rule), want, "{rule:?}");
        }
    }

    #[test]
    fn series_are_decided_apart_with_reasons() {
        let t0: Timestamp = "2026-11-24T00:00:00Z".parse().unwrap();
        let at = |d: i64| Timestamp::from_second(t0.as_second() - d * DAY).unwrap();
        let snaps = vec![
            (Id([1; 32]), snap("a", "web", at(0))),
            (Id([2; 32]), snap("a", "web", at(1))),
            (Id([3; 32]), snap("a", "db", at(5))),
            (Id([4; 32]), snap("b", "web", at(2))),
        ];
        let r = Retention {
            keep_last: Some(1),
            ..Retention::default()
        };
        let d = r.apply(&snaps, t0, &TimeZone::UTC).unwrap();
        let by: BTreeMap<u8, &Decision> = d.iter().map(|d| (d.id.0[0], d)).collect();
        assert!(by[&1].keep && by[&3].keep && by[&4].keep);
        assert!(!by[&2].keep);
        assert_eq!(by[&1].reasons, ["last 1"]);
        assert_eq!(by[&2].reasons, ["no keep rule keeps it"]);
        let r = Retention {
            remove_older_than_days: Some(3.0),
            ..Retention::default()
        };
        let d = r.apply(&snaps, t0, &TimeZone::UTC).unwrap();
        let gone: Vec<&Decision> = d.iter().filter(|d| !d.keep).collect();
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].id, Id([3; 32]));
        assert!(gone[0].reasons[0].contains("remove_older_than 3 days"));
    }

    #[test]
    fn rules_are_checked() {
        let e = Retention::default()
            .apply(&[], Timestamp::UNIX_EPOCH, &TimeZone::UTC)
            .unwrap_err();
        assert!(e.to_string().contains("no retention rule"), "{e}");
        let e = Retention {
            remove_older_than_days: Some(f64::NAN),
            ..Retention::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("remove_older_than"), "{e}");
        for r in [
            Retention {
                keep_last: Some(0),
                ..Retention::default()
            },
            Retention {
                remove_older_than_days: Some(0.0),
                ..Retention::default()
            },
        ] {
            assert!(r.validate().is_err(), "{r:?}");
        }
        assert_eq!(
            parse_span("1y6m", "k").unwrap().fieldwise(),
            1.year().months(6).fieldwise()
        );
        assert_eq!(parse_span("36h", "k").unwrap().get_hours(), 36);
        for bad in ["", "10", "d", "5x", "-3d"] {
            assert!(parse_span(bad, "keep_within").is_err(), "{bad}");
        }
    }
}
