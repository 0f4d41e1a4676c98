//! Five-field cron expressions (`minute hour day-of-month month day-of-week`), read with the
//! grammar of robfig/cron's standard parser, which KEDA uses: `*` and `?`, numbers, names
//! (`jan`–`dec`, `sun`–`sat`, any case), ranges `a-b`, steps `/n` (`n/step` runs to the field's
//! maximum), lists `a,b`. Descriptors (`@daily`) and a `CRON_TZ=` prefix are refused.
//!
//! Pure: [`CronSpec::parse`] and the matching of a civil date and time.

use jiff::civil::{Date, Weekday};

/// The longest expression accepted (tenants' input is bounded).
pub const MAX_EXPRESSION_LEN: usize = 256;

/// Set when a field was written `*` or `?` (without a step above 1): the day-of-month and
/// day-of-week fields are then ANDed, else ORed (robfig's rule).
const STAR: u64 = 1 << 63;

/// A parsed five-field cron expression: one bit per allowed value of each field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CronSpec {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
}

/// Why an expression is not a five-field cron expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// Longer than [`MAX_EXPRESSION_LEN`].
    #[error("longer than {MAX_EXPRESSION_LEN} characters")]
    TooLong,
    /// `@daily` and the like.
    #[error("descriptors such as @daily are not accepted: write the five fields")]
    Descriptor,
    /// `CRON_TZ=` or `TZ=` before the fields.
    #[error("a CRON_TZ= or TZ= prefix is not accepted: set `timezone` instead")]
    TimeZonePrefix,
    /// Not exactly five fields.
    #[error("expected exactly 5 fields (minute hour day-of-month month day-of-week), found {0}")]
    FieldCount(usize),
    /// One field is wrong.
    #[error("{field} field {text:?}: {problem}")]
    Field {
        /// `minute`, `hour`, `day-of-month`, `month` or `day-of-week`.
        field: &'static str,
        /// The field as written (bounded by the expression's length).
        text: String,
        /// What is wrong with it.
        problem: String,
    },
}

struct Bounds {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Bounds = Bounds {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Bounds = Bounds {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
/// Month names map to 1..=12 (index + 1).
const MONTH: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
/// Day names map to 0..=6 (Sunday is 0).
const DOW: Bounds = Bounds {
    name: "day-of-week",
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl CronSpec {
    /// Parses `expr` as robfig/cron's standard parser does (five fields, no seconds).
    pub fn parse(expr: &str) -> Result<Self, SpecError> {
        if expr.len() > MAX_EXPRESSION_LEN {
            return Err(SpecError::TooLong);
        }
        let trimmed = expr.trim();
        if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
            return Err(SpecError::TimeZonePrefix);
        }
        if trimmed.starts_with('@') {
            return Err(SpecError::Descriptor);
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields.as_slice() else {
            return Err(SpecError::FieldCount(fields.len()));
        };
        Ok(Self {
            minute: field(minute, &MINUTE)?,
            hour: field(hour, &HOUR)?,
            dom: field(dom, &DOM)?,
            month: field(month, &MONTH)?,
            dow: field(dow, &DOW)?,
        })
    }

    /// Whether the expression allows this day (month, then day-of-month and day-of-week: ANDed
    /// when either is `*`, ORed otherwise).
    pub fn matches_date(&self, date: Date) -> bool {
        if !bit(self.month, date.month() as u32) {
            return false;
        }
        let dom = bit(self.dom, date.day() as u32);
        let dow = bit(self.dow, sunday_zero(date.weekday()));
        if self.dom & STAR != 0 || self.dow & STAR != 0 {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// Whether the expression allows this hour (0–23).
    pub fn matches_hour(&self, hour: i8) -> bool {
        bit(self.hour, u32::from(hour.unsigned_abs()))
    }

    /// Whether the expression allows this minute (0–59).
    pub fn matches_minute(&self, minute: i8) -> bool {
        bit(self.minute, u32::from(minute.unsigned_abs()))
    }

    /// Whether any calendar day matches: false for e.g. `0 0 30 2 *` (February 30th), which
    /// would never fire. Leap days count (they come within eight years).
    pub fn fires_on_some_day(&self) -> bool {
        if self.dom & STAR == 0 && self.dow & STAR == 0 {
            return true; // ORed with a day of the week, which every month has
        }
        if self.dow & !STAR & 0x7f == 0 {
            return false;
        }
        (1..=12u32).any(|m| {
            let days = match m {
                2 => 29,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            bit(self.month, m) && (1..=days).any(|d| bit(self.dom, d))
        })
    }
}

/// The day of the week as robfig counts it (Sunday 0).
pub fn sunday_zero(weekday: Weekday) -> u32 {
    u32::from(weekday.to_sunday_zero_offset().unsigned_abs())
}

fn bit(set: u64, value: u32) -> bool {
    value < 63 && set & (1 << value) != 0
}

fn field(text: &str, bounds: &Bounds) -> Result<u64, SpecError> {
    let mut bits = 0;
    for part in text.split(',') {
        bits |= range(part, bounds).map_err(|problem| SpecError::Field {
            field: bounds.name,
            text: text.to_string(),
            problem,
        })?;
    }
    Ok(bits)
}

/// One list element: `*`, `?`, `n`, `a-b`, each optionally `/step`.
fn range(expr: &str, b: &Bounds) -> Result<u64, String> {
    let mut slash = expr.split('/');
    let span = slash.next().unwrap_or_default();
    let step = slash.next();
    if slash.next().is_some() {
        return Err(format!("too many slashes in {expr:?}"));
    }
    if let Some(n) = span.strip_prefix('-') {
        return Err(format!("negative number -{n} is not allowed"));
    }
    let ends: Vec<&str> = span.split('-').collect();
    let (start, mut end, mut star) = match ends.as_slice() {
        ["*" | "?", ..] => (b.min, b.max, true),
        [one] => {
            let v = number_or_name(one, b)?;
            (v, v, false)
        }
        [low, high] => (number_or_name(low, b)?, number_or_name(high, b)?, false),
        _ => return Err(format!("too many hyphens in {expr:?}")),
    };
    let step = match step {
        None => 1,
        Some(s) => {
            let s = number(s)?;
            if ends.len() == 1 && !star {
                end = b.max; // `n/step` means `n-max/step`
            }
            if s > 1 {
                star = false;
            }
            s
        }
    };
    if start < b.min {
        return Err(format!("{start} is below the minimum {}", b.min));
    }
    if end > b.max {
        return Err(format!("{end} is above the maximum {}", b.max));
    }
    if start > end {
        return Err(format!("the range starts at {start}, after its end {end}"));
    }
    if step == 0 {
        return Err("the step must be a positive number".to_string());
    }
    let mut bits = 0u64;
    let mut v = start;
    while v <= end {
        bits |= 1 << v;
        v = v.saturating_add(step);
    }
    Ok(if star { bits | STAR } else { bits })
}

fn number_or_name(text: &str, b: &Bounds) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    match b.names.iter().position(|n| *n == lower) {
        Some(i) => Ok(u32::try_from(i).unwrap_or(0) + if b.names.len() == 12 { 1 } else { 0 }),
        None => number(text),
    }
}

/// A non-negative decimal number (an optional `+`, as Go's `Atoi` takes it).
fn number(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return Err(match text.strip_prefix('-') {
            Some(n) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => {
                format!("negative number -{n} is not allowed")
            }
            _ => format!("{text:?} is not a number"),
        });
    }
    digits.parse().map_err(|_| format!("{text:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    fn ok(expr: &str) -> CronSpec {
        CronSpec::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    #[test]
    fn keda_parse_table() {
        // KEDA's cron_scaler_test.go cases (start/end), plus robfig's grammar.
        for expr in [
            "0 0 * * Thu",
            "59 23 * * Thu",
            "0 */2 * * *",
            "0 1-23/2 * * *",
            "0,30 * * * *",
            "15,45 * * * *",
            "30-33 * * * *",
            "45-50 * * * *",
            "? ? ? ? ?",
            "0 9 * JAN-mar MON-FRI",
            "5/15 * * * *",
            "+5 * * * *",
        ] {
            ok(expr);
        }
        for (expr, wanted) in [
            ("-30 * * * *", "negative number -30"),
            ("30 * * -3 *", "negative number -3"),
            ("", "found 0"),
            ("* * * *", "found 4"),
            ("0 * * * * *", "found 6"),
            ("60 * * * *", "above the maximum 59"),
            ("* 24 * * *", "above the maximum 23"),
            ("* * 0 * *", "below the minimum 1"),
            ("* * * 13 *", "above the maximum 12"),
            ("* * * * 7", "above the maximum 6"),
            ("5-1 * * * *", "after its end"),
            ("*/0 * * * *", "positive"),
            ("1/2/3 * * * *", "too many slashes"),
            ("1-2-3 * * * *", "too many hyphens"),
            ("1,,2 * * * *", "not a number"),
            ("x * * * *", "not a number"),
            ("* * * * funday", "not a number"),
            ("@daily", "descriptors"),
            ("CRON_TZ=UTC 0 * * * *", "CRON_TZ"),
            ("99999999999 * * * *", "not a number"),
        ] {
            let e = CronSpec::parse(expr).unwrap_err().to_string();
            assert!(e.contains(wanted), "{expr:?}: {e}");
        }
        assert_eq!(
            CronSpec::parse(&"1,".repeat(200)).unwrap_err(),
            SpecError::TooLong
        );
    }

    #[test]
    fn fields_mean_what_robfig_says() {
        let s = ok("0 1-23/2 * * *");
        assert!(s.matches_hour(1) && s.matches_hour(23) && !s.matches_hour(0) && !s.matches_hour(2));
        let s = ok("5/15 * * * *");
        let minutes: Vec<i8> = (0..60).filter(|m| s.matches_minute(*m)).collect();
        assert_eq!(minutes, [5, 20, 35, 50]);
        // 2026-03-05 is a Thursday.
        let thu = date(2026, 3, 5);
        assert!(ok("0 0 * * Thu").matches_date(thu));
        assert!(!ok("0 0 * * fri").matches_date(thu));
        assert!(ok("0 0 * mar *").matches_date(thu) && !ok("0 0 * apr *").matches_date(thu));
        // Both days restricted: ORed. One of them `*`: ANDed.
        assert!(ok("0 0 1 * thu").matches_date(thu));
        assert!(!ok("0 0 1 * *").matches_date(thu));
        assert!(!ok("0 0 1 * ?").matches_date(thu));
        // A step above 1 clears the star: `*/2` days ORed with Friday.
        assert!(ok("0 0 */2 * fri").matches_date(date(2026, 3, 6)));
        assert!(ok("0 0 */2 * fri").matches_date(thu)); // the 5th is odd: 1,3,5…
        assert!(!ok("0 0 */2 * fri").matches_date(date(2026, 3, 4)));
        assert_eq!(sunday_zero(date(2026, 3, 8).weekday()), 0);
    }

    #[test]
    fn days_that_never_come_are_found() {
        assert!(!ok("0 0 30 2 *").fires_on_some_day());
        assert!(!ok("0 0 31 4,6 *").fires_on_some_day());
        assert!(ok("0 0 29 2 *").fires_on_some_day());
        assert!(ok("0 0 30 2 mon").fires_on_some_day());
        assert!(ok("* * * * *").fires_on_some_day());
    }
}
