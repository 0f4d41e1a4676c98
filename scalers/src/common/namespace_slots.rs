//! A namespace's share of requests in flight to servers its tenants name (metrics-api URLs,
//! Prometheus servers): one semaphore per namespace ([`NamespaceLimits`]), held by each of the
//! namespace's triggers ([`NamespaceSlots`]) while one lives, so one tenant's slow server cannot
//! hold every request the operator can make.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::pool::WeakPool;
use crate::ScalerError;

/// Every namespace's slots for one kind of request.
pub struct NamespaceLimits {
    /// What is counted, plural, for the error ("metrics-api requests").
    what: &'static str,
    namespaces: WeakPool<String, Semaphore>,
    per_namespace: usize,
}

impl NamespaceLimits {
    /// `per_namespace` slots for each namespace; `what` names the requests in errors.
    pub fn new(what: &'static str, per_namespace: usize) -> Self {
        Self {
            what,
            namespaces: WeakPool::new(),
            per_namespace,
        }
    }

    /// The slots of `namespace`, shared by its triggers while one of them lives.
    pub fn slots(&self, namespace: &str) -> NamespaceSlots {
        let limit = self.per_namespace;
        NamespaceSlots {
            what: self.what,
            namespace: namespace.to_string(),
            slots: self
                .namespaces
                .get_or_insert_with(namespace.to_string(), || Semaphore::new(limit)),
            limit,
        }
    }

    /// How many namespaces have a live trigger holding their slots.
    pub fn namespace_count(&self) -> usize {
        self.namespaces.len()
    }
}

/// One namespace's slots, held by each of its triggers.
#[derive(Debug, Clone)]
pub struct NamespaceSlots {
    what: &'static str,
    namespace: String,
    slots: Arc<Semaphore>,
    limit: usize,
}

/// A slot taken from a namespace's [`NamespaceSlots`], given back when dropped.
#[derive(Debug)]
pub struct NamespaceSlot(#[allow(dead_code)] OwnedSemaphorePermit);

impl NamespaceSlots {
    /// Takes a slot, waiting up to `patience`; then fails with [`ScalerError::Overloaded`]
    /// naming the namespace and the limit (`shown` is the endpoint as errors show it).
    pub async fn enter(&self, shown: &str, patience: Duration) -> Result<NamespaceSlot, ScalerError> {
        match tokio::time::timeout(patience, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(NamespaceSlot(permit)),
            _ => Err(ScalerError::overloaded(
                shown,
                format!(
                    "namespace {:?} already has {} {} in flight (the limit per namespace); none \
                     finished within {patience:?}",
                    self.namespace, self.limit, self.what
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_namespace_shares_its_slots_and_others_keep_theirs() {
        let limits = NamespaceLimits::new("test requests", 1);
        let a1 = limits.slots("a");
        let a2 = limits.slots("a");
        let b = limits.slots("b");
        assert_eq!(limits.namespace_count(), 2);
        let held = a1.enter("h", Duration::from_millis(10)).await.unwrap();
        let e = a2.enter("h", Duration::from_millis(10)).await.unwrap_err();
        assert!(matches!(e, ScalerError::Overloaded { .. }));
        assert!(
            e.to_string()
                .contains("namespace \"a\" already has 1 test requests in flight"),
            "{e}"
        );
        b.enter("h", Duration::from_millis(10)).await.unwrap();
        drop(held);
        a2.enter("h", Duration::from_millis(10)).await.unwrap();
        drop((a1, a2));
        assert_eq!(
            limits.namespace_count(),
            1,
            "a's semaphore goes with its last holder"
        );
    }
}
