//! Dates as Freezer's users write them, and timestamps as the repository stores them.
//!
//! Upstream's options (`restore_from_date`, `remove_from_date`) take `YYYY-MM-DDThh:mm:ss` in
//! the local time zone. We accept that, the same with a space instead of `T`, a bare date
//! (midnight), any RFC 3339 timestamp with `Z` or an offset, and `@<epoch seconds>`.
//! This module never reads the clock except in [`now`], which tests can bypass.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::TimeZone;

use crate::error::{Error, Result};

/// The current time.
pub fn now() -> Timestamp {
    Timestamp::now()
}

/// The current time as RFC 3339, UTC.
pub fn now_rfc3339() -> String {
    now().to_string()
}

/// Parses a date as upstream's options take it; `field` names the option in errors.
pub fn parse_date(s: &str, field: &str, tz: &TimeZone) -> Result<Timestamp> {
    let s = s.trim();
    let bad = || {
        Error::bad_input(
            field,
            format!(
                "{s:?} is not a date; use YYYY-MM-DDThh:mm:ss (local time), RFC 3339 or @<epoch seconds>"
            ),
        )
    };
    if let Some(secs) = s.strip_prefix('@') {
        let n: i64 = secs.parse().map_err(|_| bad())?;
        return Timestamp::from_second(n).map_err(|_| bad());
    }
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let civil = s
        .replacen(' ', "T", 1)
        .parse::<DateTime>()
        .or_else(|_| {
            s.parse::<jiff::civil::Date>()
                .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
        })
        .map_err(|_| bad())?;
    tz.to_timestamp(civil).map_err(|_| bad())
}

/// Formats a timestamp as local `YYYY-MM-DD hh:mm:ss`, for listings.
pub fn local_display(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned_datetime(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_and_modern_forms_parse() {
        let utc = TimeZone::UTC;
        let want = Timestamp::from_second(1_700_000_000).unwrap();
        for s in [
            "2023-11-14T22:13:20",
            "2023-11-14 22:13:20",
            "2023-11-14T22:13:20Z",
            "@1700000000",
            "2023-11-14T23:13:20+01:00",
        ] {
            assert_eq!(
                parse_date(s, "restore_from_date", &utc).unwrap(),
                want,
                "{s}"
            );
        }
        let plus2 = TimeZone::fixed(jiff::tz::offset(2));
        assert_eq!(
            parse_date("2023-11-15T00:13:20", "x", &plus2).unwrap(),
            want
        );
        assert_eq!(
            parse_date("2023-11-14", "x", &utc).unwrap().as_second(),
            1_699_920_000
        );
        let e = parse_date("yesterday", "restore_from_date", &utc).unwrap_err();
        assert!(e.to_string().starts_with("restore_from_date:"), "{e}");
    }
}
