//! Whether an instant is inside a cron trigger's window, and the value it reports: a pure function
//! of the parsed configuration and the instant ([`window_at`]).
//!
//! KEDA's rule: the window is open when the next `end` comes no later than the next `start`
//! (both strictly after now). So a window may cross midnight, a `start` that fires again while
//! the window is open changes nothing, and a `start` and an `end` firing at the same instant
//! close the window.
//!
//! Occurrences are found on the wall clock of the time zone, then placed on the time line: a
//! wall-clock time that a spring-forward skips fires at the transition (robfig/cron skips it, so
//! KEDA's window stays open, or closed, for a day), and one that a fall-back repeats fires once,
//! at its first occurrence.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone};

use super::spec::CronSpec;

/// How far ahead [`next_fire`] looks (robfig/cron's five years, plus a day).
const HORIZON_DAYS: i32 = 5 * 366 + 1;

/// A cron trigger's typed configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct CronWindow {
    /// The zone whose wall clock `start` and `end` read.
    pub tz: TimeZone,
    /// When the window opens.
    pub start: CronSpec,
    /// When the window closes.
    pub end: CronSpec,
    /// The value reported inside the window (the replica count, at the HPA target 1).
    pub desired_replicas: i64,
}

/// The window's state at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowState {
    /// Inside the window: the trigger is active.
    pub inside: bool,
    /// `desiredReplicas` inside, 0 outside.
    pub value: f64,
    /// The next instant at which `start` or `end` fires: the state holds until then.
    pub next_boundary: Option<Timestamp>,
}

/// The window's state at `now`.
pub fn window_at(window: &CronWindow, now: Timestamp) -> WindowState {
    let start = next_fire(&window.start, &window.tz, now);
    let end = next_fire(&window.end, &window.tz, now);
    let inside = matches!((start, end), (Some(s), Some(e)) if e <= s);
    let next_boundary = match (start, end) {
        (Some(s), Some(e)) => Some(s.min(e)),
        (s, e) => s.or(e),
    };
    WindowState {
        inside,
        value: if inside {
            window.desired_replicas as f64
        } else {
            0.0
        },
        next_boundary,
    }
}

/// The first instant strictly after `after` at which `spec` fires in `tz`, within five years.
pub fn next_fire(spec: &CronSpec, tz: &TimeZone, after: Timestamp) -> Option<Timestamp> {
    // Wall-clock times are placed on the time line monotonically (a skipped time at the
    // transition, a repeated one at its first occurrence), so the first matching wall-clock time
    // whose instant is after `after` is the earliest, and none before today's date can be.
    let first_day: Date = tz.to_datetime(after).date();
    let mut day = first_day;
    for _ in 0..HORIZON_DAYS {
        if spec.matches_date(day) {
            for hour in (0..24).filter(|h| spec.matches_hour(*h)) {
                for minute in (0..60).filter(|m| spec.matches_minute(*m)) {
                    let civil = day.at(hour, minute, 0, 0);
                    if let Some(at) = place(tz, civil)
                        && at > after
                    {
                        return Some(at);
                    }
                }
            }
        }
        day = day.tomorrow().ok()?;
    }
    None
}

/// The instant of a wall-clock time: a skipped one at the transition that skips it, a repeated
/// one at its first occurrence.
pub fn place(tz: &TimeZone, civil: DateTime) -> Option<Timestamp> {
    match tz.to_ambiguous_timestamp(civil).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(civil).ok(),
        AmbiguousOffset::Fold { before, .. } => before.to_timestamp(civil).ok(),
        AmbiguousOffset::Gap { after, .. } => {
            // Read with the later offset, the time lies before the gap; the transition follows.
            let before_gap = after.to_timestamp(civil).ok()?;
            tz.following(before_gap).next().map(|t| t.timestamp())
        }
    }
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
