//! Whether a watch has delivered its first complete list, readable and awaitable by any number of
//! tasks.
//!
//! kube's `Store::wait_until_ready` keeps one waker only: a second waiter (or a poll with a no-op
//! waker, as `now_or_never` does) replaces the first one's, and the first never wakes. The
//! controller's runner is such a first waiter, so nothing else may poll that future. [`Listed`] is
//! fed by the same watch stream (after the reflector, so the store holds the list once it says
//! yes) and wakes every waiter.

use kube::runtime::watcher;
use tokio::sync::watch;

/// A flag set once a watch's first list is complete; cheap to clone, shared by every reader.
#[derive(Clone, Debug)]
pub struct Listed {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

impl Default for Listed {
    fn default() -> Self {
        Listed {
            tx: std::sync::Arc::new(watch::channel(false).0),
        }
    }
}

impl Listed {
    /// Notes a watch event: the end of the initial list (`InitDone`) sets the flag for good (a
    /// later re-list leaves it set: the store keeps serving the previous list meanwhile).
    pub fn observe<K>(&self, event: &watcher::Event<K>) {
        if matches!(event, watcher::Event::InitDone) {
            self.tx
                .send_if_modified(|listed| !std::mem::replace(listed, true));
        }
    }

    /// Whether the first list is complete.
    pub fn is_listed(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the first list is complete; any number of tasks may wait at once.
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|listed| *listed).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{FutureExt as _, StreamExt as _};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;
    use std::time::Duration;

    fn cm(name: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some("ns".into());
        cm
    }

    #[test]
    fn only_the_end_of_the_first_list_sets_it() {
        let listed = Listed::default();
        listed.observe(&watcher::Event::Init::<ConfigMap>);
        listed.observe(&watcher::Event::InitApply(cm("a")));
        listed.observe(&watcher::Event::Apply(cm("b")));
        assert!(!listed.is_listed());
        listed.observe(&watcher::Event::<ConfigMap>::InitDone);
        assert!(listed.is_listed());
        listed.observe(&watcher::Event::Init::<ConfigMap>);
        assert!(listed.is_listed(), "a re-list keeps it set");
    }

    #[tokio::test]
    async fn every_waiter_wakes() {
        let listed = Listed::default();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let l = listed.clone();
                tokio::spawn(async move { l.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(listed.wait().now_or_never().is_none());
        listed.observe(&watcher::Event::<ConfigMap>::InitDone);
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(1), w)
                .await
                .expect("a waiter was not woken")
                .unwrap();
        }
    }

    /// The bug this module exists for: reading the flag while the controller's runner waits on
    /// the store must not steal the runner's wake-up.
    #[tokio::test]
    async fn readers_never_stall_the_stores_own_waiter() {
        let (reader, writer) = reflector::store::<ConfigMap>();
        let listed = Listed::default();
        let runner = tokio::spawn({
            let reader = reader.clone();
            async move { reader.wait_until_ready().await.is_ok() }
        });
        let (tx, rx) = futures::channel::mpsc::unbounded::<watcher::Event<ConfigMap>>();
        let feed = tokio::spawn({
            let listed = listed.clone();
            reflector::reflector(writer, rx.map(Ok::<_, watcher::Error>)).for_each(move |event| {
                if let Ok(e) = &event {
                    listed.observe(e);
                }
                futures::future::ready(())
            })
        });
        tokio::task::yield_now().await;
        for _ in 0..5 {
            assert!(!listed.is_listed());
            tokio::task::yield_now().await;
        }
        tx.unbounded_send(watcher::Event::Init).unwrap();
        tx.unbounded_send(watcher::Event::InitApply(cm("a"))).unwrap();
        tx.unbounded_send(watcher::Event::InitDone).unwrap();
        tokio::time::timeout(Duration::from_secs(1), listed.wait())
            .await
            .expect("the flag was set");
        assert_eq!(reader.len(), 1, "the store holds the list once the flag says so");
        let woke = tokio::time::timeout(Duration::from_secs(1), runner).await;
        assert!(matches!(woke, Ok(Ok(true))), "the store's waiter was not woken");
        drop(tx);
        feed.await.unwrap();
    }
}
