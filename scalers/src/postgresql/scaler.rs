//! The postgresql [`Scaler`]: each poll runs the trigger's query on its target's shared pool.
//! Poll-only: a query is the tenant's own SQL, not something to run every half second.

use std::sync::Arc;

use super::config::PgConfig;
use super::pool::{PgPool, PgPools};
use crate::params::Thresholds;
use crate::{MetricTarget, Scaler, ScalerError, TriggerSample};

/// One postgresql trigger.
#[derive(Debug)]
pub struct PgScaler {
    pool: Arc<PgPool>,
    query: String,
    thresholds: Thresholds,
}

impl PgScaler {
    /// The scaler of `config`, on the pool of its target from `pools`.
    pub fn new(pools: &PgPools, config: PgConfig, thresholds: Thresholds) -> Self {
        Self {
            pool: pools.pool(&config.target),
            query: config.query,
            thresholds,
        }
    }

    /// The pool this trigger queries (shared with the other triggers of the same target).
    pub fn pool(&self) -> &Arc<PgPool> {
        &self.pool
    }
}

#[async_trait::async_trait]
impl Scaler for PgScaler {
    fn trigger_type(&self) -> &'static str {
        "postgresql"
    }

    fn metric_target(&self) -> MetricTarget {
        MetricTarget {
            target_value: self.thresholds.target,
        }
    }

    async fn sample(&self) -> Result<TriggerSample, ScalerError> {
        let value = self.pool.read_value(&self.query).await?;
        Ok(TriggerSample::with_activation(value, self.thresholds.activation))
    }
}
