use super::*;
use crate::cron::time_zone;
use jiff::civil::date;
use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

fn window(tz: &str, start: &str, end: &str) -> CronWindow {
    CronWindow {
        tz: time_zone(tz).unwrap(),
        start: CronSpec::parse(start).unwrap(),
        end: CronSpec::parse(end).unwrap(),
        desired_replicas: 7,
    }
}

fn utc(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn inside(w: &CronWindow, at: &str) -> bool {
    window_at(w, utc(at)).inside
}

#[test]
fn value_and_activity_inside_and_outside() {
    let w = window("Etc/UTC", "0 9 * * *", "0 17 * * *");
    let s = window_at(&w, utc("2026-03-05T12:00:00Z"));
    assert_eq!((s.inside, s.value), (true, 7.0));
    assert_eq!(s.next_boundary, Some(utc("2026-03-05T17:00:00Z")));
    let s = window_at(&w, utc("2026-03-05T17:00:00Z"));
    assert_eq!((s.inside, s.value), (false, 0.0));
    assert_eq!(s.next_boundary, Some(utc("2026-03-06T09:00:00Z")));
    // The opening minute is inside, the closing one is not.
    assert!(inside(&w, "2026-03-05T09:00:00Z"));
    assert!(inside(&w, "2026-03-05T16:59:59.999Z"));
    assert!(!inside(&w, "2026-03-05T08:59:59Z"));
}

#[test]
fn keda_examples() {
    // Thursdays all day (2026-03-05 is a Thursday), and even hours.
    let thu = window("Etc/UTC", "0 0 * * Thu", "59 23 * * Thu");
    assert!(inside(&thu, "2026-03-05T10:00:00Z"));
    assert!(!inside(&thu, "2026-03-05T23:59:30Z"));
    assert!(!inside(&thu, "2026-03-06T10:00:00Z"));
    let even = window("Etc/UTC", "0 */2 * * *", "0 1-23/2 * * *");
    for hour in 0..24 {
        let at = format!("2026-03-05T{hour:02}:30:00Z");
        assert_eq!(inside(&even, &at), hour % 2 == 0, "{at}");
    }
    let halves = window("Etc/UTC", "0,30 * * * *", "15,45 * * * *");
    assert!(inside(&halves, "2026-03-05T10:10:00Z") && !inside(&halves, "2026-03-05T10:20:00Z"));
    assert!(inside(&halves, "2026-03-05T10:40:00Z") && !inside(&halves, "2026-03-05T10:50:00Z"));
}

#[test]
fn a_window_may_cross_midnight() {
    let w = window("Asia/Kolkata", "0 22 * * *", "0 2 * * *");
    // Kolkata is UTC+05:30.
    assert!(inside(&w, "2026-03-05T17:00:00Z")); // 22:30
    assert!(inside(&w, "2026-03-05T19:00:00Z")); // 00:30
    assert!(!inside(&w, "2026-03-05T20:30:00Z")); // 02:00
    assert!(!inside(&w, "2026-03-05T06:30:00Z")); // 12:00
}

#[test]
fn a_start_and_an_end_at_the_same_instant_close_the_window() {
    // Hourly start, daily end at midnight: open only in the last hour before midnight (KEDA).
    let w = window("Etc/UTC", "0 * * * *", "0 0 * * *");
    assert!(inside(&w, "2026-03-05T23:30:00Z"));
    assert!(!inside(&w, "2026-03-05T00:30:00Z"));
    assert!(!inside(&w, "2026-03-05T12:30:00Z"));
}

#[test]
fn a_start_in_the_skipped_hour_opens_at_the_transition() {
    // Berlin springs forward on 2026-03-29 at 02:00 CET (01:00 UTC) to 03:00 CEST.
    let w = window("Europe/Berlin", "30 2 * * *", "0 4 * * *");
    assert!(!inside(&w, "2026-03-28T12:00:00Z")); // robfig skips 02:30: KEDA is open here
    assert!(!inside(&w, "2026-03-29T00:59:59Z")); // 01:59:59 CET
    let open = window_at(&w, utc("2026-03-29T00:59:59Z"));
    assert_eq!(open.next_boundary, Some(utc("2026-03-29T01:00:00Z")));
    assert!(inside(&w, "2026-03-29T01:00:00Z")); // 03:00 CEST
    assert!(inside(&w, "2026-03-29T01:59:00Z"));
    assert!(!inside(&w, "2026-03-29T02:00:00Z")); // 04:00 CEST
    // The day after, the window is 02:30–04:00 CEST again.
    assert!(!inside(&w, "2026-03-30T00:15:00Z"));
    assert!(inside(&w, "2026-03-30T00:30:00Z"));
    // An end in the skipped hour closes the window at the transition.
    let w = window("Europe/Berlin", "0 1 * * *", "30 2 * * *");
    assert!(inside(&w, "2026-03-29T00:30:00Z"));
    assert!(!inside(&w, "2026-03-29T01:00:00Z"));
    assert!(!inside(&w, "2026-03-29T12:00:00Z"));
}

#[test]
fn a_repeated_hour_fires_once() {
    // Berlin falls back on 2026-10-25 at 03:00 CEST (01:00 UTC) to 02:00 CET.
    let w = window("Europe/Berlin", "30 2 * * *", "0 3 * * *");
    assert!(!inside(&w, "2026-10-25T00:29:00Z")); // 02:29 CEST
    assert!(inside(&w, "2026-10-25T00:30:00Z")); // 02:30 CEST
    assert!(inside(&w, "2026-10-25T01:15:00Z")); // 02:15 CET, the second time round
    assert!(inside(&w, "2026-10-25T01:45:00Z")); // 02:45 CET
    assert!(!inside(&w, "2026-10-25T02:00:00Z")); // 03:00 CET
    // New York: 01:00–02:00 EDT repeats as EST on 2026-11-01.
    let w = window("America/New_York", "30 1 * * *", "0 2 * * *");
    assert!(inside(&w, "2026-11-01T05:30:00Z")); // 01:30 EDT
    assert!(inside(&w, "2026-11-01T06:10:00Z")); // 01:10 EST
    assert!(!inside(&w, "2026-11-01T07:00:00Z")); // 02:00 EST
}

#[test]
fn next_fire_is_strictly_after_and_searches_years() {
    let tz = time_zone("UTC").unwrap();
    let leap = CronSpec::parse("0 0 29 2 *").unwrap();
    assert_eq!(
        next_fire(&leap, &tz, utc("2026-03-01T00:00:00Z")),
        Some(utc("2028-02-29T00:00:00Z"))
    );
    let never = CronSpec::parse("0 0 30 2 *").unwrap();
    assert_eq!(next_fire(&never, &tz, utc("2026-03-01T00:00:00Z")), None);
    let every = CronSpec::parse("* * * * *").unwrap();
    assert_eq!(
        next_fire(&every, &tz, utc("2026-03-01T00:00:00Z")),
        Some(utc("2026-03-01T00:01:00Z"))
    );
    // A window whose start never fires is never open.
    let w = CronWindow {
        tz,
        start: never,
        end: every,
        desired_replicas: 3,
    };
    assert!(!window_at(&w, utc("2026-03-01T00:00:00Z")).inside);
    let _ = date(2026, 1, 1);
}

/// An oracle independent of [`next_fire`]'s walk over wall-clock fields: it steps the time line
/// minute by minute and decides, from the zone's offsets alone, whether `spec` fires there.
fn fires_at(spec: &CronSpec, tz: &TimeZone, at: Timestamp) -> bool {
    let minute = SignedDuration::from_mins(1);
    let civil = tz.to_datetime(at);
    let prev = tz.to_datetime(at - minute);
    let matches = |c: DateTime| {
        spec.matches_date(c.date()) && spec.matches_hour(c.hour()) && spec.matches_minute(c.minute())
    };
    // A repeated wall-clock minute fires only the first time it is shown.
    let shown_before = || (1..=26 * 60).any(|k| tz.to_datetime(at - minute * k) == civil);
    if matches(civil) && !shown_before() {
        return true;
    }
    // At a spring-forward, the skipped minutes fire at the transition.
    let mut skipped = prev + minute;
    while skipped < civil {
        if matches(skipped) {
            return true;
        }
        skipped += minute;
    }
    false
}

fn oracle_inside(w: &CronWindow, now: Timestamp) -> bool {
    let first = Timestamp::from_second(now.as_second().div_euclid(60) * 60 + 60).unwrap();
    for k in 0..3 * 24 * 60 {
        let at = first + SignedDuration::from_mins(k);
        let (start, end) = (fires_at(&w.start, &w.tz, at), fires_at(&w.end, &w.tz, at));
        if end {
            return true;
        }
        if start {
            return false;
        }
    }
    false
}

/// Days with a DST transition: Berlin's and New York's spring-forward and fall-back in 2026.
const TRANSITIONS: &[(&str, &str)] = &[
    ("Europe/Berlin", "2026-03-29T01:00:00Z"),
    ("Europe/Berlin", "2026-10-25T01:00:00Z"),
    ("America/New_York", "2026-03-08T07:00:00Z"),
    ("America/New_York", "2026-11-01T06:00:00Z"),
];

/// The wall-clock hour each of [`TRANSITIONS`] skips or repeats.
const TRANSITION_HOURS: &[i8] = &[2, 2, 2, 1];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    // Daily windows of any start and end (crossing midnight or not, in the skipped or repeated
    // hour or not), at any instant within a day and a half of a DST transition: the state is the
    // oracle's, and holds until the reported boundary.
    #[test]
    fn daily_windows_across_dst_agree_with_the_oracle(
        zone in 0..TRANSITIONS.len(),
        (sh, sm, eh, em) in (0..24i8, 0..60i8, 0..24i8, 0..60i8),
        near_hours in prop::sample::select(vec![0i8, 1, 2, 3, 22, 23]),
        use_near in any::<bool>(),
        offset_secs in -36 * 3600i64..36 * 3600,
    ) {
        prop_assume!((sh, sm) != (eh, em));
        // Half the cases put the start in the hours around a transition.
        let sh = if use_near { near_hours } else { sh };
        let (tz, transition) = TRANSITIONS[zone];
        let w = window(tz, &format!("{sm} {sh} * * *"), &format!("{em} {eh} * * *"));
        prop_assume!(w.start != w.end);
        let now = utc(transition) + SignedDuration::from_secs(offset_secs);
        let state = window_at(&w, now);
        prop_assert_eq!(state.inside, oracle_inside(&w, now), "at {}", now);
        prop_assert_eq!(state.value, if state.inside { 7.0 } else { 0.0 });
        let boundary = state.next_boundary.unwrap();
        prop_assert!(boundary > now);
        let just_before = boundary - SignedDuration::from_millis(1);
        prop_assert_eq!(window_at(&w, just_before.max(now)).inside, state.inside);
    }

    // A start or an end in the skipped or repeated hour, at instants within three hours of the
    // transition: the state is the oracle's.
    #[test]
    fn boundaries_in_the_transition_hour_agree_with_the_oracle(
        zone in 0..TRANSITIONS.len(),
        minute in 0..60i8,
        (other_hour, other_minute) in (0..24i8, 0..60i8),
        end_in_the_hour in any::<bool>(),
        offset_secs in -2 * 3600i64..2 * 3600,
    ) {
        let (tz, transition) = TRANSITIONS[zone];
        let hour = TRANSITION_HOURS[zone];
        let (fixed, other) = (format!("{minute} {hour} * * *"), format!("{other_minute} {other_hour} * * *"));
        let w = if end_in_the_hour { window(tz, &other, &fixed) } else { window(tz, &fixed, &other) };
        prop_assume!(w.start != w.end);
        let now = utc(transition) + SignedDuration::from_secs(offset_secs);
        prop_assert_eq!(window_at(&w, now).inside, oracle_inside(&w, now), "at {}", now);
    }

    // Windows crossing midnight with several hours: the state at any instant is the oracle's.
    #[test]
    fn hour_lists_and_steps_agree_with_the_oracle(
        zone in 0..TRANSITIONS.len(),
        step in 2..6u8,
        first in 0..2u8,
        minute in 0..60u8,
        offset_secs in -30 * 3600i64..30 * 3600,
    ) {
        let (tz, transition) = TRANSITIONS[zone];
        let w = window(tz, &format!("{minute} {first}/{step} * * *"), &format!("{minute} 23 * * *"));
        prop_assume!(w.start != w.end);
        let now = utc(transition) + SignedDuration::from_secs(offset_secs);
        prop_assert_eq!(window_at(&w, now).inside, oracle_inside(&w, now), "at {}", now);
    }
}
