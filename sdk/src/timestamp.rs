//! Timestamps: the one way spoor writes them and the many ways it reads them.
//!
//! Output is always RFC 3339 with exactly nine fraction digits and an offset
//! (`2026-11-30T03:21:03.000000000Z`, `2026-11-30T04:21:03.000000000+01:00`), never trimmed,
//! so lines sort and compare as text within one offset. Input accepts RFC 3339 with any
//! precision and offset, and Unix epoch numbers in seconds, milliseconds, microseconds or
//! nanoseconds, told apart by magnitude.

use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// Why a timestamp could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// Neither RFC 3339 nor an epoch number.
    #[error("`{input}` is not an RFC 3339 timestamp or a Unix epoch number")]
    Unrecognised {
        /// The text that was given.
        input: String,
    },
    /// An epoch number or date outside the range spoor can represent (years 0000-9999).
    #[error("`{input}` is out of range for a timestamp")]
    OutOfRange {
        /// The text that was given.
        input: String,
    },
}

/// Writes `ts` as RFC 3339 with nine fraction digits and its offset (`Z` for UTC).
///
/// Years outside 0000-9999 cannot be written in RFC 3339; they are clamped to that range
/// (such timestamps only come from a broken clock, and a parseable line beats a lost one).
pub fn format_timestamp(ts: OffsetDateTime) -> String {
    let mut out = String::with_capacity(35);
    write_timestamp(&mut out, ts);
    out
}

/// Writes the current time like [`write_timestamp`], reusing the date and time of day
/// while the second has not changed: an event's calling thread then reads the clock and
/// writes nine digits, instead of working out the calendar date each time.
#[derive(Debug, Default)]
pub struct TimestampCache {
    /// The second since the epoch and the offset that `text` was written for; `text` is
    /// that second written out, whose fraction is replaced for each event.
    key: Option<(i64, Option<UtcOffset>)>,
    text: String,
}

impl TimestampCache {
    /// Appends `now`, in `offset` (UTC when `None`), to `out`.
    pub fn write(
        &mut self,
        out: &mut String,
        now: std::time::SystemTime,
        offset: Option<UtcOffset>,
    ) {
        let Ok(since) = now.duration_since(std::time::UNIX_EPOCH) else {
            // Before 1970: a broken clock; no need to be fast.
            let ts = OffsetDateTime::from(now);
            write_timestamp(out, offset.map_or(ts, |o| ts.to_offset(o)));
            return;
        };
        let second = i64::try_from(since.as_secs()).unwrap_or(i64::MAX);
        if self.key != Some((second, offset)) {
            let ts = OffsetDateTime::from(now);
            self.text.clear();
            write_timestamp(&mut self.text, offset.map_or(ts, |o| ts.to_offset(o)));
            self.key = Some((second, offset));
        }
        // `text` is `YYYY-MM-DDTHH:MM:SS.` (20 bytes), nine fraction digits, the offset.
        let (Some(head), Some(tail)) = (self.text.get(..20), self.text.get(29..)) else {
            write_timestamp(out, OffsetDateTime::from(now));
            return;
        };
        out.push_str(head);
        let mut digits = [b'0'; 9];
        let mut nanos = since.subsec_nanos();
        for d in digits.iter_mut().rev() {
            *d = b'0' + (nanos % 10) as u8;
            nanos /= 10;
        }
        // Only ASCII digits were written above.
        out.push_str(std::str::from_utf8(&digits).unwrap_or("000000000"));
        out.push_str(tail);
    }
}

/// Appends `ts` to `out` in the format of [`format_timestamp`].
///
/// Digits are written by hand rather than through `write!`: this runs once per event on
/// the task's own thread, and the formatting machinery costs several times more.
pub fn write_timestamp(out: &mut String, ts: OffsetDateTime) {
    let mut buf = [0u8; 35];
    let mut put = |at: usize, value: u32, width: usize| {
        let mut v = value;
        for i in (0..width).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    let year = ts.year().clamp(0, 9999) as u32;
    put(0, year, 4);
    put(5, u32::from(u8::from(ts.month())), 2);
    put(8, u32::from(ts.day()), 2);
    put(11, u32::from(ts.hour()), 2);
    put(14, u32::from(ts.minute()), 2);
    put(17, u32::from(ts.second()), 2);
    put(20, ts.nanosecond(), 9);
    let offset = ts.offset();
    let len = if offset == UtcOffset::UTC {
        buf[29] = b'Z';
        30
    } else {
        let (h, m, _) = offset.as_hms();
        put(30, u32::from(h.unsigned_abs()), 2);
        put(33, u32::from(m.unsigned_abs()), 2);
        buf[29] = if offset.is_negative() { b'-' } else { b'+' };
        buf[32] = b':';
        35
    };
    for (i, sep) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ] {
        buf[i] = sep;
    }
    // Only ASCII digits and separators were written above.
    out.push_str(std::str::from_utf8(&buf[..len]).unwrap_or_default());
}

/// Reads a timestamp: RFC 3339 (any precision, any offset, `t`/`z` in either case) or a
/// Unix epoch number. Epoch numbers are told apart by magnitude: below 10^11 seconds,
/// below 10^14 milliseconds, below 10^17 microseconds, otherwise nanoseconds. A fractional
/// part is allowed on epoch seconds (`1700000000.25`).
pub fn parse_timestamp(input: &str) -> Result<OffsetDateTime, TimestampError> {
    let s = input.trim();
    if s.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'-')
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
        && !s[1..].contains('-')
    {
        return parse_epoch(s).ok_or_else(|| TimestampError::OutOfRange {
            input: input.to_string(),
        });
    }
    if let Ok(ts) = OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(ts);
    }
    // RFC 3339 allows lowercase `t` and `z`, and a space for `T` is common (RFC 3339 §5.6 note).
    let upper: String = s
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if i == 10 && c == ' ' {
                'T'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    OffsetDateTime::parse(&upper, &Rfc3339).map_err(|_| TimestampError::Unrecognised {
        input: input.to_string(),
    })
}

fn parse_epoch(s: &str) -> Option<OffsetDateTime> {
    let (int_part, frac_part) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let int: i128 = int_part.parse().ok()?;
    let magnitude = int.unsigned_abs();
    let nanos: i128 = if magnitude < 100_000_000_000 {
        let frac_nanos = match frac_part {
            Some(f) if !f.is_empty() => {
                if !f.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let digits: String = f.chars().chain(std::iter::repeat('0')).take(9).collect();
                digits.parse::<i128>().ok()?
            }
            _ => 0,
        };
        int * 1_000_000_000 + if int < 0 { -frac_nanos } else { frac_nanos }
    } else if frac_part.is_some() {
        return None;
    } else if magnitude < 100_000_000_000_000 {
        int * 1_000_000
    } else if magnitude < 100_000_000_000_000_000 {
        int * 1_000
    } else {
        int
    };
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[track_caller]
    fn check(input: &str, expected: &str) {
        let ts = parse_timestamp(input).expect("parses");
        assert_eq!(format_timestamp(ts), expected, "input {input:?}");
    }

    #[test]
    fn cache_writes_what_write_timestamp_writes() {
        let mut cache = TimestampCache::default();
        let start = std::time::SystemTime::now();
        let offset = UtcOffset::from_hms(5, 30, 0).ok();
        for step in [0u64, 1, 999_999_999, 1_000_000_000, 86_400_000_000_000] {
            let now = start + std::time::Duration::from_nanos(step);
            for off in [None, offset] {
                let mut cached = String::new();
                cache.write(&mut cached, now, off);
                let ts = OffsetDateTime::from(now);
                let expected = format_timestamp(off.map_or(ts, |o| ts.to_offset(o)));
                assert_eq!(cached, expected, "step {step} offset {off:?}");
            }
        }
    }

    #[test]
    fn writes_nine_digits_and_offset() {
        assert_eq!(
            format_timestamp(datetime!(2026-11-30 03:21:03 UTC)),
            "2026-11-30T03:21:03.000000000Z"
        );
        assert_eq!(
            format_timestamp(datetime!(2026-11-30 04:21:03.5 +01:00)),
            "2026-11-30T04:21:03.500000000+01:00"
        );
        assert_eq!(
            format_timestamp(datetime!(2026-11-29 22:51:03.000000001 -04:30)),
            "2026-11-29T22:51:03.000000001-04:30"
        );
    }

    #[test]
    fn reads_rfc3339_at_any_precision() {
        check("2026-11-30T03:21:03Z", "2026-11-30T03:21:03.000000000Z");
        check("2026-11-30T03:21:03.1Z", "2026-11-30T03:21:03.100000000Z");
        check(
            "2026-11-30T03:21:03.123456Z",
            "2026-11-30T03:21:03.123456000Z",
        );
        check(
            "2026-11-30T03:21:03.123456789+05:30",
            "2026-11-30T03:21:03.123456789+05:30",
        );
        check("2026-11-30t03:21:03.5z", "2026-11-30T03:21:03.500000000Z");
        check("2026-11-30 03:21:03Z", "2026-11-30T03:21:03.000000000Z");
    }

    #[test]
    fn reads_epochs_by_magnitude() {
        check("1764472863", "2025-11-30T03:21:03.000000000Z");
        check("1764472863.25", "2025-11-30T03:21:03.250000000Z");
        check("1764472863123", "2025-11-30T03:21:03.123000000Z");
        check("1764472863123456", "2025-11-30T03:21:03.123456000Z");
        check("1764472863123456789", "2025-11-30T03:21:03.123456789Z");
        check("0", "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn rejects_what_is_not_a_time() {
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("2026-13-01T00:00:00Z").is_err());
        assert!(parse_timestamp("12.5.6").is_err());
        assert!(parse_timestamp("").is_err());
    }
}
