//! What one tick of the scale loop decides, as data: the replica [`Decision`] (with its
//! [`Activity`] and [`Reason`]), and the whole [`Outcome`] that
//! [`crate::scale::decision::decide`] returns and the loop executes — the `/scale` write
//! ([`ReplicaWrite`]), the values the metrics adapter serves ([`MetricWrite`], the HPA fallback
//! value included), the Events to record ([`EventNote`]) and what changed ([`Transitions`]).

/// Whether the object is active, for the `Active` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// A trigger is active (or activation is forced).
    Active,
    /// Every trigger is inactive; `in_cooldown` while the cooldown has not run out.
    Inactive {
        /// The cooldown is still running.
        in_cooldown: bool,
    },
    /// A trigger failed and none is active: activity is unknown.
    Unknown,
    /// Paused: triggers are not consulted.
    Paused,
}

/// Why the decision is what it is (for Events, logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// `paused-replicas` holds a count.
    PausedReplicas,
    /// `paused` freezes replicas.
    Paused,
    /// The fallback count applies.
    Fallback,
    /// A trigger became active at 0 or idle replicas.
    Activate,
    /// Below `minReplicaCount`.
    RaiseToMin,
    /// Cooldown over, scaling to idle or zero.
    Deactivate,
    /// Nothing for ebb to do (the HPA owns 1↔N).
    Steady,
    /// A change was wanted but the direction is paused.
    DirectionPaused,
}

/// The replica part of one poll's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Write `/scale` to this count (always different from the current count).
    pub write_replicas: Option<i32>,
    /// Activity for the `Active` condition.
    pub activity: Activity,
    /// Whether the fallback is engaged.
    pub fallback: bool,
    /// Why.
    pub reason: Reason,
}

/// Kubernetes Event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `Normal`.
    Normal,
    /// `Warning`.
    Warning,
}

/// An Event to record about the ScaledObject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventNote {
    /// Normal or Warning.
    pub kind: EventKind,
    /// The Event's reason (also its action), e.g. `ScaledToZero`.
    pub reason: &'static str,
    /// The message (never contains secrets).
    pub note: String,
}

/// A `/scale` write and what follows once it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaWrite {
    /// The count read before the write.
    pub from: i32,
    /// The count to write.
    pub replicas: i32,
    /// Label of the `scale_actions_total` metric.
    pub action: &'static str,
    /// The Event to record once written.
    pub event: EventNote,
}

/// Which metric of the object a [`MetricWrite`] is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricSlot {
    /// A trigger's, by its index in the config.
    Trigger(usize),
    /// The scalingModifiers composite (`composite-metric`).
    Composite,
}

/// A value for the poll cache, which the metrics adapter serves to the HPA.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricWrite {
    /// The metric.
    pub metric: MetricSlot,
    /// The sampled value, or while fallback is engaged and the trigger fails, the value whose HPA
    /// arithmetic gives the fallback count ([`crate::scale::decision::fallback_metric_value`]).
    pub value: f64,
    /// Whether the trigger failed in this poll (the value is then the fallback value).
    pub failed: bool,
}

/// A trigger started or stopped failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerTransition {
    /// It fails now and did not at the last poll.
    Failing,
    /// It answers now and failed at the last poll.
    Recovered,
}

/// What changed in this tick.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transitions {
    /// The activity, when it differs from the last decision's.
    pub activity: Option<Activity>,
    /// Fallback engaged (`true`) or cleared (`false`); never reported while paused.
    pub fallback: Option<bool>,
    /// Paused (`true`) or unpaused (`false`) since the last decision.
    pub pause: Option<bool>,
    /// Triggers that started failing or recovered, by index.
    pub triggers: Vec<(usize, TriggerTransition)>,
}

/// Everything one tick does, for the loop to execute in this order: put [`Outcome::metrics`] into
/// the poll cache, record [`Outcome::events`], write [`Outcome::write`] (and on success record its
/// Event), then report the status when [`Outcome::replicas`] is set.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// The replica decision; `None` when the current count could not be read.
    pub replicas: Option<Decision>,
    /// The `/scale` write, if any.
    pub write: Option<ReplicaWrite>,
    /// Values for the poll cache: every sampled value, then the HPA fallback values.
    pub metrics: Vec<MetricWrite>,
    /// Events to record now (trigger failing/recovered, fallback engaged/cleared).
    pub events: Vec<EventNote>,
    /// What changed.
    pub transitions: Transitions,
}
