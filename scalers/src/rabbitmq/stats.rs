//! Queue statistics and the value maths: the [`Mode`]s and [`Operation`]s, [`QueueStats`] read
//! from management API answers, and [`evaluate`], which turns statistics into a metric value and
//! an activity exactly as KEDA does. Pure: no I/O.
//!
//! Answers are decoded into [`QueueDoc`] and [`QueueListing`], which name only the fields ebb
//! reads: the rest of a queue object (`consumer_details`, `garbage_collection`, arguments, ...)
//! is skipped as it is parsed, never built.

use serde::Deserialize;

use crate::TriggerSample;
use crate::common::json_leaf::{Leaf, present};

/// What the rabbitmq trigger measures (`mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Messages in the queue (`messages`, or `messages_ready`; ready only over AMQP).
    QueueLength,
    /// Publish rate (messages per second).
    MessageRate,
    /// Deliver-and-get rate (messages per second).
    DeliverGetRate,
    /// Publish rate divided by deliver rate.
    PublishedToDeliveredRatio,
    /// Seconds until the backlog is consumed at the current rates.
    ExpectedQueueConsumptionTime,
}

impl Mode {
    /// The mode named as in KEDA's `mode` parameter (exact case, as the parser stores it).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "QueueLength" => Self::QueueLength,
            "MessageRate" => Self::MessageRate,
            "DeliverGetRate" => Self::DeliverGetRate,
            "PublishedToDeliveredRatio" => Self::PublishedToDeliveredRatio,
            "ExpectedQueueConsumptionTime" => Self::ExpectedQueueConsumptionTime,
            _ => return None,
        })
    }

    /// The mode's name as in KEDA.
    pub fn name(self) -> &'static str {
        match self {
            Self::QueueLength => "QueueLength",
            Self::MessageRate => "MessageRate",
            Self::DeliverGetRate => "DeliverGetRate",
            Self::PublishedToDeliveredRatio => "PublishedToDeliveredRatio",
            Self::ExpectedQueueConsumptionTime => "ExpectedQueueConsumptionTime",
        }
    }
}

/// How the queues matched by a `useRegex` name are combined (`operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Sum of each statistic.
    Sum,
    /// Mean of each statistic.
    Avg,
    /// Maximum of each statistic (each taken on its own).
    Max,
}

impl Operation {
    /// The operation named as in KEDA's `operation` parameter.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "sum" => Self::Sum,
            "avg" => Self::Avg,
            "max" => Self::Max,
            _ => return None,
        })
    }
}

/// The statistics of one queue (or of the queues a regex matched, combined).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QueueStats {
    /// Ready plus unacknowledged messages (`messages`). Over AMQP: ready messages only.
    pub messages: f64,
    /// Ready messages (`messages_ready`).
    pub messages_ready: f64,
    /// `message_stats.publish_details.rate` (0 when the queue has no message stats yet).
    pub publish_rate: f64,
    /// `message_stats.deliver_get_details.rate` (0 when the queue has no message stats yet).
    pub deliver_get_rate: f64,
}

/// Combines the statistics of several queues, field by field. No queue gives all zeros (as KEDA).
pub fn aggregate(operation: Operation, queues: &[QueueStats]) -> QueueStats {
    let fold = |f: fn(&QueueStats) -> f64| -> f64 {
        let values = queues.iter().map(f);
        match operation {
            Operation::Sum => values.sum(),
            Operation::Avg if queues.is_empty() => 0.0,
            Operation::Avg => values.sum::<f64>() / queues.len() as f64,
            Operation::Max => values
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
                .unwrap_or(0.0),
        }
    };
    QueueStats {
        messages: fold(|q| q.messages),
        messages_ready: fold(|q| q.messages_ready),
        publish_rate: fold(|q| q.publish_rate),
        deliver_get_rate: fold(|q| q.deliver_get_rate),
    }
}

/// The metric value and activity of a mode, as KEDA's `GetMetricsAndActivity` computes them.
///
/// `messages` below is `stats.messages`, or `stats.messages_ready` with `exclude_unacknowledged`;
/// "active" means strictly greater than `activation`.
///
/// | mode | value | active when |
/// |---|---|---|
/// | QueueLength | messages | value active |
/// | MessageRate | publish rate | value active, or messages active |
/// | DeliverGetRate | deliver-get rate | value active |
/// | PublishedToDeliveredRatio | publish / deliver; `activation` when deliver = 0 and publish > 0; 0 when both are 0 | value active, or (publish > 0 and deliver = 0) |
/// | ExpectedQueueConsumptionTime | (publish − deliver) / deliver + messages / deliver, at least 0; 0 when messages = 0; `activation` when deliver = 0 | value active, or (deliver = 0 and messages > 0) |
pub fn evaluate(
    mode: Mode,
    stats: &QueueStats,
    exclude_unacknowledged: bool,
    activation: f64,
) -> TriggerSample {
    let messages = if exclude_unacknowledged {
        stats.messages_ready
    } else {
        stats.messages
    };
    let publish = stats.publish_rate;
    let deliver = stats.deliver_get_rate;
    let above = |v: f64| crate::is_active(v, activation);
    match mode {
        Mode::QueueLength => TriggerSample::with_activation(messages, activation),
        Mode::MessageRate => TriggerSample {
            value: publish,
            active: above(publish) || above(messages),
        },
        Mode::DeliverGetRate => TriggerSample::with_activation(deliver, activation),
        Mode::PublishedToDeliveredRatio => {
            if deliver == 0.0 {
                if publish > 0.0 {
                    TriggerSample {
                        value: activation,
                        active: true,
                    }
                } else {
                    // KEDA divides 0 by 0 here (NaN, reported as 0, never active).
                    TriggerSample {
                        value: 0.0,
                        active: false,
                    }
                }
            } else {
                TriggerSample::with_activation(publish / deliver, activation)
            }
        }
        Mode::ExpectedQueueConsumptionTime => {
            if messages == 0.0 {
                TriggerSample::with_activation(0.0, activation)
            } else if deliver == 0.0 {
                // Messages waiting and nothing consuming them: active, reported as activationValue.
                TriggerSample {
                    value: activation,
                    active: true,
                }
            } else {
                // Negative when the queue drains faster than it fills and the backlog is small:
                // reported as 0, as KEDA's milli-quantity conversion does.
                let eta = ((publish - deliver) / deliver + messages / deliver).max(0.0);
                TriggerSample::with_activation(eta, activation)
            }
        }
    }
}

/// Why management API JSON gives no statistics. `queue` is ` of queue "<name>"` when the queue
/// object names itself, else empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatsError {
    /// The queue is not a JSON object.
    #[error("the queue is not a JSON object")]
    NotAnObject,
    /// A count or rate is not a number.
    #[error("{field}{queue} is not a number")]
    NotANumber {
        /// The field, e.g. `messages` or `message_stats.publish_details.rate`.
        field: String,
        /// Which queue.
        queue: String,
    },
    /// A count or rate is a number that is not finite.
    #[error("{field}{queue} is not a finite number")]
    NotFinite {
        /// The field.
        field: String,
        /// Which queue.
        queue: String,
    },
    /// A count is missing: RabbitMQ has not collected the queue's statistics yet.
    #[error("no {field} in the statistics{queue} (RabbitMQ has not collected them yet)")]
    NotCollected {
        /// The field.
        field: String,
        /// Which queue.
        queue: String,
    },
    /// The regex listing has more than one page.
    #[error(
        "the queues matching the regex fill {page_count} pages of {page_size}; ebb reads one page \
         only: raise pageSize or narrow queueName"
    )]
    TooManyPages {
        /// Pages the broker reported.
        page_count: i64,
        /// `pageSize`.
        page_size: i64,
    },
    /// The regex listing has no `items` array.
    #[error("the queue listing has no items array")]
    NoItems,
    /// No queue the regex matched has statistics yet.
    #[error(
        "none of the {0} queues matching the regex has statistics yet (RabbitMQ has not collected \
         them)"
    )]
    NoneCollected(usize),
}

/// A management API queue object: only the fields ebb reads. A field that is there (even
/// `null`) is `Some`; a missing one is `None`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct QueueDoc {
    /// `name`.
    #[serde(default, deserialize_with = "present")]
    pub name: Option<Leaf>,
    /// `messages`: ready plus unacknowledged.
    #[serde(default, deserialize_with = "present")]
    pub messages: Option<Leaf>,
    /// `messages_ready`.
    #[serde(default, deserialize_with = "present")]
    pub messages_ready: Option<Leaf>,
    /// `message_stats` (absent until the queue has traffic).
    #[serde(default)]
    pub message_stats: Option<MessageStats>,
}

impl QueueDoc {
    /// The queue's name, when it is a string.
    pub fn name(&self) -> Option<&str> {
        match &self.name {
            Some(Leaf::String(name)) => Some(name),
            _ => None,
        }
    }
}

/// A queue's `message_stats`: the two rates ebb reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct MessageStats {
    /// `publish_details`.
    #[serde(default)]
    pub publish_details: Option<RateDetails>,
    /// `deliver_get_details`.
    #[serde(default)]
    pub deliver_get_details: Option<RateDetails>,
}

/// A `*_details` object: its `rate`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RateDetails {
    /// `rate`, messages per second.
    #[serde(default, deserialize_with = "present")]
    pub rate: Option<Leaf>,
}

/// A `useRegex` listing (`{"items": [...], "page_count": n}`): only the fields ebb reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct QueueListing {
    /// `page_count`.
    #[serde(default, deserialize_with = "present")]
    pub page_count: Option<Leaf>,
    /// `items`: the queues on this page.
    #[serde(default)]
    pub items: Option<Vec<QueueDoc>>,
}

/// Reads one queue's statistics from a management API queue object.
///
/// `messages` and `messages_ready` must be numbers (RabbitMQ omits them until it has collected
/// the queue's first statistics: that is an error, not a zero); missing rates are 0.
pub fn queue_stats(doc: &QueueDoc) -> Result<QueueStats, StatsError> {
    let queue = doc.name().map(|n| format!(" of queue {n:?}")).unwrap_or_default();
    let number = |field: String, value: &Leaf| -> Result<f64, StatsError> {
        match value {
            Leaf::Number(n) if n.is_finite() => Ok(*n),
            Leaf::Number(_) => Err(StatsError::NotFinite {
                field,
                queue: queue.clone(),
            }),
            _ => Err(StatsError::NotANumber {
                field,
                queue: queue.clone(),
            }),
        }
    };
    let count = |field: &str, value: &Option<Leaf>| -> Result<f64, StatsError> {
        match value {
            Some(value) => number(field.to_string(), value),
            None => Err(StatsError::NotCollected {
                field: field.to_string(),
                queue: queue.clone(),
            }),
        }
    };
    let rate = |detail: &str, details: Option<&RateDetails>| -> Result<f64, StatsError> {
        match details.and_then(|d| d.rate.as_ref()) {
            None | Some(Leaf::Null) => Ok(0.0),
            Some(value) => number(format!("message_stats.{detail}.rate"), value),
        }
    };
    let stats = doc.message_stats.as_ref();
    Ok(QueueStats {
        messages: count("messages", &doc.messages)?,
        messages_ready: count("messages_ready", &doc.messages_ready)?,
        publish_rate: rate("publish_details", stats.and_then(|s| s.publish_details.as_ref()))?,
        deliver_get_rate: rate(
            "deliver_get_details",
            stats.and_then(|s| s.deliver_get_details.as_ref()),
        )?,
    })
}

/// Reads and combines the queues of a `useRegex` listing. More than one page is an error (as in
/// KEDA): raise `pageSize`. Queues whose statistics RabbitMQ has not collected yet (created in
/// the last seconds) are left out; if that is every matched queue, it is an error. No matched
/// queue gives zeros.
pub fn regex_stats(
    listing: &QueueListing,
    operation: Operation,
    page_size: i64,
) -> Result<QueueStats, StatsError> {
    let page_count = match listing.page_count {
        Some(Leaf::Number(n)) if n.fract() == 0.0 => n as i64,
        _ => 1,
    };
    if page_count > 1 {
        return Err(StatsError::TooManyPages {
            page_count,
            page_size,
        });
    }
    let Some(items) = &listing.items else {
        return Err(StatsError::NoItems);
    };
    // A queue created moments ago has no counts yet: it is left out (it can hold few messages),
    // unless every matched queue is in that state.
    let collected: Vec<&QueueDoc> = items.iter().filter(|q| q.messages.is_some()).collect();
    if collected.is_empty() && !items.is_empty() {
        return Err(StatsError::NoneCollected(items.len()));
    }
    let queues = collected
        .into_iter()
        .map(queue_stats)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(aggregate(operation, &queues))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value as Json, json};

    fn queue_stats_from_json(doc: &Json) -> Result<QueueStats, StatsError> {
        let doc = QueueDoc::deserialize(doc).map_err(|_| StatsError::NotAnObject)?;
        queue_stats(&doc)
    }

    fn regex_stats_from_json(doc: &Json, op: Operation, page_size: i64) -> Result<QueueStats, StatsError> {
        let listing = QueueListing::deserialize(doc).map_err(|_| StatsError::NotAnObject)?;
        regex_stats(&listing, op, page_size)
    }

    fn stats(messages: f64, ready: f64, publish: f64, deliver: f64) -> QueueStats {
        QueueStats {
            messages,
            messages_ready: ready,
            publish_rate: publish,
            deliver_get_rate: deliver,
        }
    }

    #[test]
    fn modes_and_activity() {
        use Mode::*;
        type Case = (Mode, [f64; 4], bool, f64, f64, bool);
        // (mode, [messages, ready, publish rate, deliver rate], excludeUnacknowledged, activation)
        //   => (value, active)
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (QueueLength, [10.0, 7.0, 0.0, 0.0], false, 0.0, 10.0, true),
            (QueueLength, [10.0, 7.0, 0.0, 0.0], true, 0.0, 7.0, true),
            (QueueLength, [5.0, 5.0, 0.0, 0.0], false, 5.0, 5.0, false),
            (QueueLength, [0.0, 0.0, 0.0, 0.0], false, 0.0, 0.0, false),
            (QueueLength, [3.0, 0.0, 0.0, 0.0], true, 0.0, 0.0, false),
            (MessageRate, [0.0, 0.0, 2.5, 0.0], false, 0.0, 2.5, true),
            (MessageRate, [4.0, 4.0, 0.0, 0.0], false, 1.0, 0.0, true),
            (MessageRate, [4.0, 0.0, 0.0, 0.0], true, 1.0, 0.0, false),
            (MessageRate, [1.0, 1.0, 1.0, 0.0], false, 1.0, 1.0, false),
            (DeliverGetRate, [9.0, 9.0, 9.0, 3.0], false, 2.0, 3.0, true),
            (DeliverGetRate, [9.0, 9.0, 9.0, 2.0], false, 2.0, 2.0, false),
            (DeliverGetRate, [9.0, 9.0, 9.0, 0.0], false, 0.0, 0.0, false),
            (PublishedToDeliveredRatio, [0.0, 0.0, 6.0, 3.0], false, 1.0, 2.0, true),
            (PublishedToDeliveredRatio, [0.0, 0.0, 3.0, 3.0], false, 1.0, 1.0, false),
            // deliver = 0 and publish > 0: reports activationValue, active.
            (PublishedToDeliveredRatio, [0.0, 0.0, 3.0, 0.0], false, 1.5, 1.5, true),
            (PublishedToDeliveredRatio, [0.0, 0.0, 3.0, 0.0], false, 0.0, 0.0, true),
            // 0 / 0: 0, inactive (KEDA's NaN).
            (PublishedToDeliveredRatio, [8.0, 8.0, 0.0, 0.0], false, 0.0, 0.0, false),
            (PublishedToDeliveredRatio, [0.0, 0.0, 0.0, 4.0], false, 0.0, 0.0, false),
            // (2 - 1) / 1 + 10 / 1 = 11 seconds.
            (ExpectedQueueConsumptionTime, [10.0, 10.0, 2.0, 1.0], false, 0.0, 11.0, true),
            (ExpectedQueueConsumptionTime, [10.0, 4.0, 2.0, 1.0], true, 0.0, 5.0, true),
            (ExpectedQueueConsumptionTime, [10.0, 10.0, 2.0, 1.0], false, 11.0, 11.0, false),
            // No messages: 0, whatever the rates.
            (ExpectedQueueConsumptionTime, [0.0, 0.0, 5.0, 1.0], false, 0.0, 0.0, false),
            (ExpectedQueueConsumptionTime, [0.0, 0.0, 5.0, 0.0], false, 0.0, 0.0, false),
            // deliver = 0 with messages: reports activationValue, active.
            (ExpectedQueueConsumptionTime, [3.0, 3.0, 5.0, 0.0], false, 7.0, 7.0, true),
            (ExpectedQueueConsumptionTime, [3.0, 3.0, 0.0, 0.0], false, 0.0, 0.0, true),
            // Draining fast with a small backlog: (1 - 10) / 10 + 2 / 10 < 0, reported as 0.
            (ExpectedQueueConsumptionTime, [2.0, 2.0, 1.0, 10.0], false, 0.0, 0.0, false),
        ];
        for (i, (mode, [m, r, p, d], exclude, activation, value, active)) in cases.iter().enumerate() {
            let got = evaluate(*mode, &stats(*m, *r, *p, *d), *exclude, *activation);
            assert!(
                (got.value - value).abs() < 1e-9 && got.active == *active,
                "case {i} ({}): got {got:?}, expected value {value} active {active}",
                mode.name()
            );
        }
    }

    #[test]
    fn mode_and_operation_names() {
        for name in crate::rabbitmq::MODES {
            assert_eq!(Mode::from_name(name).map(Mode::name), Some(*name));
        }
        assert_eq!(Mode::from_name("queueLength"), None);
        assert_eq!(Operation::from_name("avg"), Some(Operation::Avg));
        assert_eq!(Operation::from_name("median"), None);
    }

    fn queue_json(name: &str, messages: u64, ready: u64, publish: f64, deliver: f64) -> Json {
        json!({
            "name": name,
            "messages": messages,
            "messages_ready": ready,
            "messages_unacknowledged": messages - ready,
            "message_stats": {
                "publish_details": {"rate": publish},
                "deliver_get_details": {"rate": deliver},
            },
        })
    }

    #[test]
    fn regex_listings_aggregate() {
        let listing = json!({
            "items": [
                queue_json("a", 10, 4, 1.0, 2.0),
                queue_json("b", 2, 2, 3.0, 0.0),
                queue_json("c", 6, 0, 0.5, 4.0),
            ],
            "page_count": 1,
            "page_size": 100,
        });
        let sum = regex_stats_from_json(&listing, Operation::Sum, 100).unwrap();
        assert_eq!(sum, stats(18.0, 6.0, 4.5, 6.0));
        let avg = regex_stats_from_json(&listing, Operation::Avg, 100).unwrap();
        assert_eq!(avg, stats(6.0, 2.0, 1.5, 2.0));
        let max = regex_stats_from_json(&listing, Operation::Max, 100).unwrap();
        assert_eq!(max, stats(10.0, 4.0, 3.0, 4.0));

        let empty = json!({"items": [], "page_count": 0});
        for op in [Operation::Sum, Operation::Avg, Operation::Max] {
            assert_eq!(
                regex_stats_from_json(&empty, op, 100).unwrap(),
                QueueStats::default()
            );
        }
        let paged = json!({"items": [queue_json("a", 1, 1, 0.0, 0.0)], "page_count": 2});
        let e = regex_stats_from_json(&paged, Operation::Sum, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 pages of 1") && e.contains("pageSize"), "{e}");
        assert!(regex_stats_from_json(&json!({"page_count": 1}), Operation::Sum, 1).is_err());
        // A queue without statistics yet is left out; only such queues is an error.
        let fresh = json!({"name": "new", "consumers": 0});
        let mixed = json!({"items": [queue_json("a", 4, 4, 0.0, 0.0), fresh.clone()], "page_count": 1});
        assert_eq!(
            regex_stats_from_json(&mixed, Operation::Avg, 100).unwrap(),
            stats(4.0, 4.0, 0.0, 0.0)
        );
        let only_fresh = json!({"items": [fresh], "page_count": 1});
        let e = regex_stats_from_json(&only_fresh, Operation::Sum, 100)
            .unwrap_err()
            .to_string();
        assert!(e.contains("statistics yet"), "{e}");
    }

    #[test]
    fn queue_objects() {
        let q = queue_json("q", 20, 17, 32.6, 30.0);
        assert_eq!(queue_stats_from_json(&q).unwrap(), stats(20.0, 17.0, 32.6, 30.0));
        // A queue without traffic has no message_stats: rates are 0.
        let idle = json!({"name": "q", "messages": 3, "messages_ready": 3});
        assert_eq!(queue_stats_from_json(&idle).unwrap(), stats(3.0, 3.0, 0.0, 0.0));
        let partial = json!({"messages": 3, "messages_ready": 3, "message_stats": {"publish": 5}});
        assert_eq!(
            queue_stats_from_json(&partial).unwrap(),
            stats(3.0, 3.0, 0.0, 0.0)
        );
        // Statistics not collected yet: an error, never a 0 that could scale to zero.
        let fresh = json!({"name": "new-q", "consumers": 0});
        let e = queue_stats_from_json(&fresh).unwrap_err().to_string();
        assert!(e.contains("messages") && e.contains("new-q"), "{e}");
        assert!(queue_stats_from_json(&json!({"messages": "3", "messages_ready": 3})).is_err());
        assert!(queue_stats_from_json(&json!([1])).is_err());
    }
}
