//! When a failing trigger is worth a log line: once when it starts failing (warn, with the
//! error), once when it recovers (info), and while it keeps failing a reminder at most every
//! [`REMINDER_EVERY`], saying for how long and how many polls failed. Pure: the loop hands in
//! each poll's result and the time, and logs what [`FailureLog::observe`] returns.

use std::time::{Duration, Instant};

/// The least time between two "still failing" reminders of one trigger.
pub const REMINDER_EVERY: Duration = Duration::from_secs(300);

/// What to log about one trigger after one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureLine {
    /// Nothing (healthy as before, or failing and reminded recently).
    Quiet,
    /// It failed now and answered at the last poll (or this is the first poll).
    Failing,
    /// It still fails: a reminder.
    StillFailing {
        /// Since the first failed poll of this run of failures.
        for_: Duration,
        /// Failed polls in a row.
        failures: u32,
    },
    /// It answers again.
    Recovered {
        /// How long it failed.
        after: Duration,
        /// Failed polls in a row before this one.
        failures: u32,
    },
}

/// One trigger's failure run, as far as logging goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureLog {
    /// The first failed poll of the current run, while failing.
    since: Option<Instant>,
    /// The last line logged about the current run (the first failure or a reminder).
    last_line: Option<Instant>,
    /// Failed polls in the current run.
    failures: u32,
}

impl FailureLog {
    /// Takes one poll's result (`failed`) at `now`, with reminders every `every`, and says what
    /// to log. A skipped poll (paused object) is not a poll: do not call this for it.
    pub fn observe(&mut self, failed: bool, now: Instant, every: Duration) -> FailureLine {
        match (failed, self.since) {
            (false, None) => FailureLine::Quiet,
            (false, Some(since)) => {
                let line = FailureLine::Recovered {
                    after: now.saturating_duration_since(since),
                    failures: self.failures,
                };
                *self = FailureLog::default();
                line
            }
            (true, None) => {
                *self = FailureLog {
                    since: Some(now),
                    last_line: Some(now),
                    failures: 1,
                };
                FailureLine::Failing
            }
            (true, Some(since)) => {
                self.failures = self.failures.saturating_add(1);
                let due = self
                    .last_line
                    .is_none_or(|last| now.saturating_duration_since(last) >= every);
                if !due {
                    return FailureLine::Quiet;
                }
                self.last_line = Some(now);
                FailureLine::StillFailing {
                    for_: now.saturating_duration_since(since),
                    failures: self.failures,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(300);

    /// Feeds one poll every `step` seconds and collects the non-quiet lines with their time.
    fn run(polls: &[bool], step: u64) -> Vec<(u64, FailureLine)> {
        let start = Instant::now();
        let mut log = FailureLog::default();
        polls
            .iter()
            .enumerate()
            .filter_map(|(i, &failed)| {
                let at = i as u64 * step;
                let line = log.observe(failed, start + Duration::from_secs(at), EVERY);
                (line != FailureLine::Quiet).then_some((at, line))
            })
            .collect()
    }

    #[test]
    fn a_healthy_trigger_logs_nothing() {
        assert_eq!(run(&[false; 100], 30), vec![]);
    }

    #[test]
    fn a_failure_run_logs_once_at_start_then_every_five_minutes_then_once_at_recovery() {
        // 30 s polls: fails from 0 s to 690 s (24 polls), answers at 720 s.
        let mut polls = vec![true; 24];
        polls.push(false);
        polls.push(false);
        assert_eq!(
            run(&polls, 30),
            vec![
                (0, FailureLine::Failing),
                (
                    300,
                    FailureLine::StillFailing {
                        for_: Duration::from_secs(300),
                        failures: 11
                    }
                ),
                (
                    600,
                    FailureLine::StillFailing {
                        for_: Duration::from_secs(600),
                        failures: 21
                    }
                ),
                (
                    720,
                    FailureLine::Recovered {
                        after: Duration::from_secs(720),
                        failures: 24
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_flapping_trigger_logs_every_transition_and_a_new_run_starts_over() {
        let lines = run(&[true, false, true, true, false], 10);
        assert_eq!(
            lines,
            vec![
                (0, FailureLine::Failing),
                (
                    10,
                    FailureLine::Recovered {
                        after: Duration::from_secs(10),
                        failures: 1
                    }
                ),
                (20, FailureLine::Failing),
                (
                    40,
                    FailureLine::Recovered {
                        after: Duration::from_secs(20),
                        failures: 2
                    }
                ),
            ]
        );
    }

    #[test]
    fn slow_polls_remind_at_every_poll_past_the_interval() {
        // Polls every 10 min: each failing poll after the first is a reminder.
        let lines = run(&[true, true, true], 600);
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[2].1,
            FailureLine::StillFailing {
                for_: Duration::from_secs(1200),
                failures: 3
            }
        );
    }
}
