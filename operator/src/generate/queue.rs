//! The generator's work queue: each workload at most once in the queue and at most once in
//! progress; a change that arrives while a workload is being handled queues it again when that
//! ends, so the last change is always acted on and never by two tasks at once.

use std::collections::{HashSet, VecDeque};
use std::sync::{Mutex, PoisonError};

use tokio::sync::Notify;

use crate::cache::workloads::WorkloadRef;

#[derive(Default)]
struct State {
    order: VecDeque<WorkloadRef>,
    queued: HashSet<WorkloadRef>,
    running: HashSet<WorkloadRef>,
    again: HashSet<WorkloadRef>,
}

/// A de-duplicating queue of workloads.
#[derive(Default)]
pub struct WorkQueue {
    state: Mutex<State>,
    ready: Notify,
}

impl WorkQueue {
    /// Queues `w` (nothing if it is queued already; after the current run if it runs).
    pub fn push(&self, w: WorkloadRef) {
        let mut s = self.lock();
        if s.running.contains(&w) {
            s.again.insert(w);
        } else if s.queued.insert(w.clone()) {
            s.order.push_back(w);
            drop(s);
            self.ready.notify_one();
        }
    }

    /// The next workload to handle, marked as running; waits for one.
    pub async fn pop(&self) -> WorkloadRef {
        loop {
            let ready = self.ready.notified();
            if let Some(w) = self.try_pop() {
                return w;
            }
            ready.await;
        }
    }

    /// The next workload to handle, if one is queued.
    pub fn try_pop(&self) -> Option<WorkloadRef> {
        let mut s = self.lock();
        let w = s.order.pop_front()?;
        s.queued.remove(&w);
        s.running.insert(w.clone());
        let more = !s.order.is_empty();
        drop(s);
        if more {
            // Wake another task for the rest.
            self.ready.notify_one();
        }
        Some(w)
    }

    /// Marks `w` as handled; queues it again if it changed meanwhile.
    pub fn done(&self, w: &WorkloadRef) {
        let mut s = self.lock();
        s.running.remove(w);
        let again = s.again.remove(w);
        drop(s);
        if again {
            self.push(w.clone());
        }
    }

    /// Workloads queued (not running).
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::workloads::WorkloadKind;

    fn w(name: &str) -> WorkloadRef {
        WorkloadRef {
            kind: WorkloadKind::Deployment,
            namespace: "n".into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_workload_is_queued_once_and_in_order() {
        let q = WorkQueue::default();
        for name in ["a", "b", "a", "c", "b"] {
            q.push(w(name));
        }
        assert_eq!(q.len(), 3);
        let order: Vec<String> = std::iter::from_fn(|| q.try_pop()).map(|w| w.name).collect();
        assert_eq!(order, ["a", "b", "c"]);
    }

    #[test]
    fn a_change_during_a_run_is_handled_after_it_not_beside_it() {
        let q = WorkQueue::default();
        q.push(w("a"));
        let running = q.try_pop().expect("a");
        q.push(w("a"));
        q.push(w("a"));
        assert!(q.try_pop().is_none(), "never handled twice at once");
        q.done(&running);
        assert_eq!(q.try_pop(), Some(w("a")), "queued once more after the run");
        q.done(&w("a"));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn pop_waits_for_a_push() {
        let q = std::sync::Arc::new(WorkQueue::default());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await }
        });
        tokio::task::yield_now().await;
        q.push(w("late"));
        let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
        assert_eq!(got, w("late"));
    }
}
