//! The `from`/`to` parameters: RFC 3339, epoch numbers, `now`, or a duration back from now
//! (`15m`, `1h`, `7d`).

use time::{Duration as TimeDuration, OffsetDateTime};

use crate::config::duration_text;

/// A time bound that could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "`{0}` is not a time: use RFC 3339 (2026-11-30T03:21:03Z), `now`, or a duration back from now (15m, 1h, 7d)"
)]
pub struct TimeRangeError(pub String);

/// Reads one bound relative to `now`.
pub fn parse_bound(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, TimeRangeError> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("now") {
        return Ok(now);
    }
    let relative = text.strip_prefix("now-").unwrap_or(text);
    if let Some(d) = duration_text::parse(relative) {
        let d = TimeDuration::try_from(d).map_err(|_| TimeRangeError(text.to_string()))?;
        return now
            .checked_sub(d)
            .ok_or_else(|| TimeRangeError(text.to_string()));
    }
    spoor_sdk::timestamp::parse_timestamp(text).map_err(|_| TimeRangeError(text.to_string()))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn reads_absolute_relative_and_now() {
        let now = datetime!(2026-11-30 03:00 UTC);
        assert_eq!(parse_bound("now", now).expect("now"), now);
        assert_eq!(
            parse_bound("15m", now).expect("15m"),
            datetime!(2026-11-30 02:45 UTC)
        );
        assert_eq!(
            parse_bound("now-1h", now).expect("1h"),
            datetime!(2026-11-30 02:00 UTC)
        );
        assert_eq!(
            parse_bound("2026-11-29T00:00:00+01:00", now).expect("rfc3339"),
            datetime!(2026-11-28 23:00 UTC)
        );
        assert!(parse_bound("last tuesday", now).is_err());
    }
}
