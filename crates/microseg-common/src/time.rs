//! Instants and durations as people read and write them: one RFC 3339 format and one
//! duration syntax for every daemon, the CLI and their logs.

use std::fmt;
use std::time::Duration;

/// The first and last instants [`rfc3339`] can write with a four-digit year (years 0000
/// to 9999), in Unix seconds.
const FIRST_SECOND: i64 = -62_167_219_200;
const LAST_SECOND: i64 = 253_402_300_799;

/// `unix_seconds` in UTC as `YYYY-MM-DDTHH:MM:SS.ffffffZ`: always six decimals.
///
/// Microseconds because that is what an `f64` of today's Unix time still holds (its step
/// is about 0.24 µs); nanoseconds would print noise. Truncated, not rounded, so that a
/// written instant never lies after the real one: 23:59:59.9999996 stays in its day
/// and second, and times sort as the values they stand for. The value is first rounded
/// to the nanosecond, so that 1.000001 (stored as 1.00000099999...) is written
/// `.000001`. Instants before year 0000 or after 9999 are written as the first or last
/// one; NaN as the epoch.
pub fn rfc3339(unix_seconds: f64) -> String {
    let nanos = if unix_seconds.is_nan() {
        0
    } else {
        (unix_seconds * 1e9).round() as i128
    };
    let micros = nanos
        .div_euclid(1000)
        .clamp(i64::MIN as i128, i64::MAX as i128) as i64;
    rfc3339_micros(micros)
}

/// `unix_micros` (microseconds since the epoch) in UTC, written as [`rfc3339`] writes.
pub fn rfc3339_micros(unix_micros: i64) -> String {
    let micros = unix_micros.clamp(FIRST_SECOND * 1_000_000, (LAST_SECOND + 1) * 1_000_000 - 1);
    let (secs, micro) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    let (days, second_of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_date(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micro:06}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Year, month and day of the `days`th day after 1970-01-01 (proleptic Gregorian).
fn civil_date(days: i64) -> (i64, i64, i64) {
    // Counted from 0000-03-01, so that a leap day ends its year, in 400-year eras.
    let from_march = days + 719_468;
    let era = from_march.div_euclid(146_097);
    let day_of_era = from_march.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The units of a duration, longest first: the order their terms must come in.
const UNITS: [(&str, u128); 5] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
];

/// What is wrong with a duration; shown by [`DurationError`]'s message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DurationProblem {
    Empty,
    /// Something other than a number where a term starts (at this byte).
    NotANumber {
        at: usize,
    },
    /// A number without a unit after it.
    MissingUnit {
        number: String,
    },
    UnknownUnit {
        unit: String,
    },
    /// A unit that repeats or comes after a shorter one (`30m1h`, `1m1m`).
    OutOfOrder {
        unit: String,
    },
    /// More than nine decimals: finer than a nanosecond.
    TooPrecise {
        number: String,
    },
    /// Longer than `Duration` holds.
    TooLarge,
}

/// A duration that [`parse_duration`] refuses: the text, what is wrong, and (in its
/// message) what is accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurationError {
    pub input: String,
    pub problem: DurationProblem,
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid duration {:?}: ", self.input)?;
        match &self.problem {
            DurationProblem::Empty => write!(f, "it is empty"),
            DurationProblem::NotANumber { at } => write!(f, "expected a number at byte {at}"),
            DurationProblem::MissingUnit { number } => write!(f, "{number} has no unit"),
            DurationProblem::UnknownUnit { unit } => write!(f, "unknown unit {unit:?}"),
            DurationProblem::OutOfOrder { unit } => {
                write!(f, "\"{unit}\" repeats or follows a shorter unit")
            }
            DurationProblem::TooPrecise { number } => {
                write!(f, "{number} has more than 9 decimals")
            }
            DurationProblem::TooLarge => write!(f, "too long"),
        }?;
        write!(
            f,
            "; expected a number and a unit (ms, s, m, h, d), or several from the longest \
             unit down, like 90s, 1.5h or 1h30m"
        )
    }
}

impl std::error::Error for DurationError {}

/// A duration written as numbers with units: `ms`, `s`, `m`, `h`, `d`, each number a
/// decimal (`1.5h`), several terms from the longest unit down (`1d12h`, `1h30m`), no
/// blanks, no sign. A bare number is refused: `10` could mean seconds or minutes.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let fail = |problem| DurationError {
        input: s.to_string(),
        problem,
    };
    if s.is_empty() {
        return Err(fail(DurationProblem::Empty));
    }
    let b = s.as_bytes();
    let mut total: u128 = 0;
    // Index in UNITS of the shortest unit so far: the next must be shorter still.
    let mut next_unit = 0;
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let digits = |i: &mut usize| {
            let from = *i;
            while *i < b.len() && b[*i].is_ascii_digit() {
                *i += 1;
            }
            *i > from
        };
        let whole = digits(&mut i);
        let mut decimals = 0;
        if i < b.len() && b[i] == b'.' {
            i += 1;
            let from = i;
            if !digits(&mut i) {
                return Err(fail(DurationProblem::NotANumber { at: start }));
            }
            decimals = i - from;
        }
        if !whole && decimals == 0 {
            return Err(fail(DurationProblem::NotANumber { at: start }));
        }
        let number = &s[start..i];
        // The unit: everything up to the next number, so that an error names it whole.
        let unit_start = i;
        while i < b.len() && !b[i].is_ascii_digit() && b[i] != b'.' {
            i += 1;
        }
        let unit = &s[unit_start..i];
        if unit.is_empty() {
            return Err(fail(DurationProblem::MissingUnit {
                number: number.to_string(),
            }));
        }
        let Some(index) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(fail(DurationProblem::UnknownUnit {
                unit: unit.to_string(),
            }));
        };
        if index < next_unit {
            return Err(fail(DurationProblem::OutOfOrder {
                unit: unit.to_string(),
            }));
        }
        next_unit = index + 1;
        if decimals > 9 {
            return Err(fail(DurationProblem::TooPrecise {
                number: number.to_string(),
            }));
        }
        let too_large = || fail(DurationProblem::TooLarge);
        let nanos = term_nanos(number, UNITS[index].1).ok_or_else(too_large)?;
        total = total.checked_add(nanos).ok_or_else(too_large)?;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| fail(DurationProblem::TooLarge))?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// `number` (digits, maybe a point and up to nine decimals) times `unit` nanoseconds,
/// exactly (a fraction of a nanosecond dropped); None past u128.
fn term_nanos(number: &str, unit: u128) -> Option<u128> {
    let (whole, decimals) = number.split_once('.').unwrap_or((number, ""));
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let scale = 10u128.pow(decimals.len() as u32);
    let fraction: u128 = if decimals.is_empty() {
        0
    } else {
        decimals.parse().ok()?
    };
    whole
        .checked_mul(unit)?
        .checked_add(fraction * unit / scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_written_to_the_microsecond() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(1_795_000_000.5), "2026-11-18T11:06:40.500000Z");
        assert_eq!(rfc3339(951_782_400.0), "2000-02-29T00:00:00.000000Z");
        assert_eq!(rfc3339(951_868_799.25), "2000-02-29T23:59:59.250000Z");
        assert_eq!(rfc3339(4_107_542_400.0), "2100-03-01T00:00:00.000000Z");
        assert_eq!(rfc3339(-1.5), "1969-12-31T23:59:58.500000Z");
        assert_eq!(rfc3339(1.000001), "1970-01-01T00:00:01.000001Z");
        assert_eq!(rfc3339(0.000_123_456), "1970-01-01T00:00:00.000123Z");
    }

    #[test]
    fn sub_microseconds_are_truncated_never_rounded_up() {
        // Rounding would carry these into the next second, day and year.
        assert_eq!(rfc3339(59.999_999_7), "1970-01-01T00:00:59.999999Z");
        assert_eq!(rfc3339(86_399.999_999_9), "1970-01-01T23:59:59.999999Z");
        assert_eq!(rfc3339(-0.000_000_4), "1969-12-31T23:59:59.999999Z");
    }

    #[test]
    fn instants_past_four_digit_years_are_clamped() {
        assert_eq!(rfc3339(1e300), "9999-12-31T23:59:59.999999Z");
        assert_eq!(rfc3339(f64::INFINITY), "9999-12-31T23:59:59.999999Z");
        assert_eq!(rfc3339(-1e300), "0000-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(f64::NAN), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn every_day_of_four_centuries_is_the_day_after_the_one_before() {
        let mut previous = civil_date(-1);
        assert_eq!(previous, (1969, 12, 31));
        for days in 0..146_097 {
            let (y, m, d) = civil_date(days);
            let (py, pm, pd) = previous;
            let next_day = (y, m, d) == (py, pm, pd + 1);
            let next_month = (y, m, d) == (py, pm + 1, 1);
            let next_year = (y, m, d) == (py + 1, 1, 1) && (pm, pd) == (12, 31);
            assert!(
                next_day || next_month || next_year,
                "{previous:?} then {y}-{m}-{d}"
            );
            if next_month || next_year {
                let leap = py % 4 == 0 && (py % 100 != 0 || py % 400 == 0);
                let month_length = match pm {
                    2 if leap => 29,
                    2 => 28,
                    4 | 6 | 9 | 11 => 30,
                    _ => 31,
                };
                assert_eq!(pd, month_length, "{previous:?} then {y}-{m}-{d}");
            }
            previous = (y, m, d);
        }
        assert_eq!(previous, (2369, 12, 31));
    }

    fn ok(s: &str) -> Duration {
        parse_duration(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn problem(s: &str) -> DurationProblem {
        parse_duration(s).expect_err(s).problem
    }

    #[test]
    fn durations_are_numbers_with_units() {
        assert_eq!(ok("90s"), Duration::from_secs(90));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("2h"), Duration::from_secs(7200));
        assert_eq!(ok("7d"), Duration::from_secs(7 * 86_400));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1d2h3m4s5ms"), Duration::new(93_784, 5_000_000));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("0.000000001s"), Duration::from_nanos(1));
        assert_eq!(ok("1.5ms"), Duration::from_micros(1500));
        assert_eq!(ok("90m"), Duration::from_secs(5400));
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        assert_eq!(problem(""), DurationProblem::Empty);
        assert_eq!(
            problem("10"),
            DurationProblem::MissingUnit {
                number: "10".into()
            }
        );
        assert_eq!(
            problem("1h30"),
            DurationProblem::MissingUnit {
                number: "30".into()
            }
        );
        assert_eq!(
            problem("5x"),
            DurationProblem::UnknownUnit { unit: "x".into() }
        );
        assert_eq!(
            problem("5sec"),
            DurationProblem::UnknownUnit { unit: "sec".into() }
        );
        assert_eq!(problem("h"), DurationProblem::NotANumber { at: 0 });
        assert_eq!(problem("-5s"), DurationProblem::NotANumber { at: 0 });
        assert_eq!(problem("+5s"), DurationProblem::NotANumber { at: 0 });
        assert_eq!(problem(" 5s"), DurationProblem::NotANumber { at: 0 });
        assert_eq!(
            problem("5s "),
            DurationProblem::UnknownUnit { unit: "s ".into() }
        );
        assert_eq!(
            problem("1h 30m"),
            DurationProblem::UnknownUnit { unit: "h ".into() }
        );
        assert_eq!(problem("5.s"), DurationProblem::NotANumber { at: 0 });
        assert_eq!(problem("."), DurationProblem::NotANumber { at: 0 });
        assert_eq!(
            problem("1e3s"),
            DurationProblem::UnknownUnit { unit: "e".into() }
        );
        assert_eq!(
            problem("30m1h"),
            DurationProblem::OutOfOrder { unit: "h".into() }
        );
        assert_eq!(
            problem("1m1m"),
            DurationProblem::OutOfOrder { unit: "m".into() }
        );
        assert_eq!(
            problem("0.0000000001s"),
            DurationProblem::TooPrecise {
                number: "0.0000000001".into()
            }
        );
        assert_eq!(problem("99999999999999999999d"), DurationProblem::TooLarge);
        assert_eq!(
            problem("1ｓ"),
            DurationProblem::UnknownUnit { unit: "ｓ".into() }
        );
    }

    #[test]
    fn the_message_says_what_is_wrong_and_what_is_accepted() {
        let e = parse_duration("10").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid duration \"10\": 10 has no unit; expected a number and a unit \
             (ms, s, m, h, d), or several from the longest unit down, like 90s, 1.5h or 1h30m"
        );
        let e = parse_duration("1\u{1b}[2Jh").unwrap_err().to_string();
        assert!(e.starts_with("invalid duration \"1\\u{1b}[2Jh\": "), "{e}");
    }
}
