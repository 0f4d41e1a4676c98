//! The replay: time advances by `step`; ebb's scale loop polls every `pollingInterval` (and at
//! once when a push-capable trigger's activity flips, as its watcher makes the real loop do),
//! hands the series' values to the operator's own [`decide`] and executes the outcome on the
//! simulated target; the HPA model syncs every sync period on the values the adapter would
//! serve (the poll cache while younger than `pollingInterval`, else a fresh read of the series;
//! a failing read is an error for the HPA unless a fallback value is cached).

use jiff::{SignedDuration, Timestamp};

use crate::scale::composite::{CompositeValue, Input, evaluate};
use crate::scale::decision::{Observation, PollResult, TickMemory, TriggerPoll, decide};
use crate::scale::outcome::{Activity, MetricSlot};

use super::hpa_model::{HpaState, SyncNote, milli};
use super::input::{Cell, Series};
use super::scenario::Scenario;

/// How the replay runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunOptions {
    /// The HPA's sync period, ms.
    pub sync_ms: i64,
    /// The time step, ms.
    pub step_ms: i64,
    /// The target's replicas at the start.
    pub initial_replicas: i32,
}

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    /// ebb's scale loop (a poll).
    Ebb,
    /// The HPA (a sync).
    Hpa,
}

/// One poll or sync.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// Seconds since the series' first point.
    pub time: f64,
    /// A poll (ebb) or a sync (the HPA).
    pub by: Actor,
    /// Each trigger's value in the series at this time (`None`: failing).
    pub values: Vec<Option<f64>>,
    /// The object's activity after a poll.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity: Option<&'static str>,
    /// Whether the fallback is engaged after a poll.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback: Option<bool>,
    /// The count ebb wants after a poll (the current one when it leaves it to the HPA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ebb_desired: Option<i32>,
    /// What the HPA read at a sync, per HPA metric (`None`: an error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hpa_read: Option<Vec<Option<f64>>>,
    /// The count the HPA wants at a sync (`None` while it is disabled at 0 replicas or its
    /// metrics fail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hpa_desired: Option<i32>,
    /// The target's replicas afterwards.
    pub replicas: i32,
}

/// Something that happened: an Event ebb records, or an HPA rescale.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Happening {
    /// Seconds since the series' first point.
    pub time: f64,
    /// Who.
    pub by: Actor,
    /// The reason, e.g. `Activated`, `ScaledToZero`, `FallbackEngaged`, `SuccessfulRescale`.
    pub reason: String,
    /// The message.
    pub message: String,
    /// The replicas after it.
    pub replicas: i32,
}

/// The replayed timeline.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Timeline {
    /// Every poll and sync, in time order (a poll before a sync at the same time).
    pub rows: Vec<Row>,
    /// Every Event and rescale, in time order.
    pub events: Vec<Happening>,
}

#[derive(Debug, Clone, Copy)]
struct Cached {
    value: f64,
    at_ms: i64,
    failed: bool,
}

/// Replays `series` against `scenario`.
pub fn run(scenario: &Scenario, series: &Series, options: RunOptions) -> Timeline {
    Replay::new(scenario, series, options).run()
}

struct Replay<'a> {
    sc: &'a Scenario,
    series: &'a Series,
    options: RunOptions,
    base: Timestamp,
    replicas: i32,
    memory: TickMemory,
    /// The poll cache: per trigger, then the composite.
    cache: Vec<Option<Cached>>,
    hpa: HpaState,
    out: Timeline,
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn label(a: Activity) -> &'static str {
    match a {
        Activity::Active => "active",
        Activity::Inactive { in_cooldown: true } => "cooldown",
        Activity::Inactive { in_cooldown: false } => "inactive",
        Activity::Unknown => "unknown",
        Activity::Paused => "paused",
    }
}

impl<'a> Replay<'a> {
    fn new(sc: &'a Scenario, series: &'a Series, options: RunOptions) -> Self {
        Replay {
            sc,
            series,
            options,
            base: series
                .start
                .unwrap_or_else(|| Timestamp::from_second(1_700_000_000).unwrap_or(Timestamp::UNIX_EPOCH)),
            replicas: options.initial_replicas,
            memory: TickMemory::default(),
            cache: vec![None; sc.triggers.len() + 1],
            hpa: HpaState::default(),
            out: Timeline {
                rows: Vec::new(),
                events: Vec::new(),
            },
        }
    }

    /// Each trigger's served value and activity at `t_ms` (`None`: failing).
    fn samples(&self, t_ms: i64) -> Vec<Option<(f64, bool)>> {
        let cells = self.series.at(t_ms);
        self.sc
            .triggers
            .iter()
            .map(|t| match cells.get(t.column) {
                Some(Cell::Value(v)) => Some(t.sample(*v)),
                _ => None,
            })
            .collect()
    }

    fn values(&self, t_ms: i64) -> Vec<Option<f64>> {
        let cells = self.series.at(t_ms);
        self.sc
            .triggers
            .iter()
            .map(|t| match cells.get(t.column) {
                Some(Cell::Value(v)) => Some(*v),
                _ => None,
            })
            .collect()
    }

    fn run(mut self) -> Timeline {
        let end = self.series.end_ms();
        let step = self.options.step_ms.max(1);
        let (mut next_poll, mut next_sync) = (0i64, 0i64);
        // What each push-capable trigger's watcher last saw.
        let mut watched: Vec<Option<bool>> = vec![None; self.sc.triggers.len()];
        let mut t = 0i64;
        while t <= end {
            let samples = self.samples(t);
            let mut flipped = false;
            for ((trigger, sample), seen) in self.sc.triggers.iter().zip(&samples).zip(&mut watched) {
                if let (true, Some((_, active))) = (trigger.pushes, sample) {
                    flipped |= seen.is_some_and(|s| s != *active);
                    *seen = Some(*active);
                }
            }
            if t >= next_poll || (flipped && !self.sc.pause.is_paused()) {
                self.poll(t, &samples);
                next_poll = t + self.sc.polling_ms;
            }
            // The HPA exists while the object is not paused as a whole.
            if t >= next_sync {
                if !self.sc.pause.is_paused() {
                    self.sync(t, &samples);
                }
                while next_sync <= t {
                    next_sync += self.options.sync_ms.max(1);
                }
            }
            t += step;
        }
        self.out
    }

    fn poll(&mut self, t: i64, samples: &[Option<(f64, bool)>]) {
        let paused = self.sc.pause.is_paused();
        let polls: Vec<TriggerPoll<'_>> = self
            .sc
            .triggers
            .iter()
            .zip(samples)
            .map(|(tr, s)| TriggerPoll {
                metric_name: &tr.metric_name,
                target: tr.target,
                metric_type: tr.metric_type,
                pushes_activity: tr.pushes,
                result: match s {
                    _ if paused => PollResult::Skipped,
                    Some((value, active)) => PollResult::Sampled {
                        value: *value,
                        active: *active,
                    },
                    None => PollResult::Failed("the series has no value (error)".into()),
                },
            })
            .collect();
        let now = self
            .base
            .checked_add(SignedDuration::from_millis(t))
            .unwrap_or(self.base);
        let obs = Observation {
            now,
            created: self.base,
            spec: &self.sc.spec,
            current: Some(self.replicas),
            triggers: &polls,
            force_activation: self.sc.force_activation,
            pause: self.sc.pause,
            target: "the target",
            composite: self.sc.composite.as_ref(),
        };
        let outcome = decide(&obs, &mut self.memory);
        let before = self.replicas;
        for w in &outcome.metrics {
            let slot = match w.metric {
                MetricSlot::Trigger(i) => i,
                MetricSlot::Composite => self.sc.triggers.len(),
            };
            if let Some(c) = self.cache.get_mut(slot) {
                *c = Some(Cached {
                    value: w.value,
                    at_ms: t,
                    failed: w.failed,
                });
            }
        }
        for e in &outcome.events {
            self.happen(t, Actor::Ebb, e.reason, e.note.clone());
        }
        if let Some(w) = &outcome.write {
            self.replicas = w.replicas;
            self.happen(t, Actor::Ebb, w.event.reason, w.event.note.clone());
        }
        let decision = outcome.replicas;
        self.out.rows.push(Row {
            time: secs(t),
            by: Actor::Ebb,
            values: self.values(t),
            activity: decision.map(|d| label(d.activity)),
            fallback: decision.map(|d| d.fallback),
            ebb_desired: decision.map(|d| d.write_replicas.unwrap_or(before)),
            hpa_read: None,
            hpa_desired: None,
            replicas: self.replicas,
        });
    }

    fn happen(&mut self, t: i64, by: Actor, reason: &str, message: String) {
        self.out.events.push(Happening {
            time: secs(t),
            by,
            reason: reason.to_string(),
            message,
            replicas: self.replicas,
        });
    }

    /// What the adapter answers for a trigger's metric at `t`.
    fn served_trigger(&self, i: usize, t: i64, sample: Option<(f64, bool)>) -> Option<f64> {
        let cached = self.cache.get(i).copied().flatten();
        let trigger = self.sc.triggers.get(i)?;
        match cached {
            Some(c) if trigger.use_cached || t - c.at_ms < self.sc.polling_ms => Some(c.value),
            _ => match sample {
                Some((value, _)) => Some(value),
                None => cached.filter(|c| c.failed).map(|c| c.value),
            },
        }
    }

    /// What the adapter answers for the composite metric at `t`.
    fn served_composite(&self, t: i64, samples: &[Option<(f64, bool)>]) -> Option<f64> {
        let cached = self.cache.last().copied().flatten();
        if let Some(c) = cached
            && t - c.at_ms < self.sc.polling_ms
        {
            return Some(c.value);
        }
        let c = self.sc.composite.as_ref()?;
        let inputs: Vec<Input<'_>> = samples
            .iter()
            .zip(&self.sc.triggers)
            .enumerate()
            .map(|(i, (s, tr))| match s {
                Some((v, _)) => Input::Value(*v),
                None => Input::Failed {
                    metric: &tr.metric_name,
                    failures: self.memory.triggers.get(i).map_or(1, |m| m.failures.max(1)),
                },
            })
            .collect();
        match evaluate(c, &inputs, self.sc.spec.fallback.as_ref()) {
            CompositeValue::Value { value, .. } => Some(value),
            _ => cached.filter(|c| c.failed).map(|c| c.value),
        }
    }

    fn sync(&mut self, t: i64, samples: &[Option<(f64, bool)>]) {
        let read: Vec<Option<f64>> = if self.sc.composite.is_some() {
            vec![self.served_composite(t, samples)]
        } else {
            (0..self.sc.triggers.len())
                .map(|i| self.served_trigger(i, t, samples.get(i).copied().flatten()))
                .collect()
        };
        let usage: Vec<Option<i64>> = read.iter().map(|v| v.map(milli)).collect();
        let before = self.replicas;
        let sync = self.hpa.sync(&self.sc.hpa, t, before, &usage);
        if sync.desired != before && sync.note == SyncNote::Computed {
            self.replicas = sync.desired;
            let reason = if sync.desired > before {
                "above target"
            } else {
                "All metrics below target"
            };
            self.happen(
                t,
                Actor::Hpa,
                "SuccessfulRescale",
                format!("New size: {}; reason: {reason}", sync.desired),
            );
        }
        self.out.rows.push(Row {
            time: secs(t),
            by: Actor::Hpa,
            values: self.values(t),
            activity: None,
            fallback: None,
            ebb_desired: None,
            hpa_read: Some(read),
            hpa_desired: (sync.note == SyncNote::Computed).then_some(sync.desired),
            replicas: self.replicas,
        });
    }
}
