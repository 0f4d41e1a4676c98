//! Discovery answers per `(apiVersion, kind)`, kept for the leadership term: the first lookup of a
//! kind asks the API server, later ones (every reconcile that reads a workload's pod template for
//! `<param>FromEnv`) do not. Failures are not kept, so a kind installed later is found.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use kube::Client;
use kube::api::{ApiResource, GroupVersionKind};

/// Resolves a kind to its API resource (the API server, or a fake in tests).
#[async_trait]
pub trait Discover: Send + Sync {
    /// The API resource of `gvk`.
    async fn pinned_kind(&self, gvk: &GroupVersionKind) -> Result<ApiResource, kube::Error>;
}

#[async_trait]
impl Discover for Client {
    async fn pinned_kind(&self, gvk: &GroupVersionKind) -> Result<ApiResource, kube::Error> {
        kube::discovery::pinned_kind(self, gvk)
            .await
            .map(|(ar, _caps)| ar)
    }
}

/// Successful discovery answers by `(apiVersion, kind)`. Share it as `Arc`.
#[derive(Debug, Default)]
pub struct KindCache {
    kinds: Mutex<HashMap<(String, String), ApiResource>>,
}

impl KindCache {
    /// The API resource of `kind` in `api_version` (`group/version`, or `v1` for the core group),
    /// from the cache or else from `discover` (and then cached).
    pub async fn resolve(
        &self,
        discover: &dyn Discover,
        api_version: &str,
        kind: &str,
    ) -> Result<ApiResource, kube::Error> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(ar) = self
            .kinds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(ar.clone());
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let ar = discover
            .pinned_kind(&GroupVersionKind::gvk(group, version, kind))
            .await?;
        self.kinds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, ar.clone());
        Ok(ar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Serves `apps/v1` kinds; fails `fail` times first with a 503.
    #[derive(Default)]
    struct FakeDiscovery {
        calls: AtomicUsize,
        fail: AtomicUsize,
    }

    #[async_trait]
    impl Discover for FakeDiscovery {
        async fn pinned_kind(&self, gvk: &GroupVersionKind) -> Result<ApiResource, kube::Error> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                .is_ok()
            {
                return Err(kube::Error::Api(
                    kube::core::Status::failure("down", "ServiceUnavailable")
                        .with_code(503)
                        .boxed(),
                ));
            }
            Ok(ApiResource::from_gvk_with_plural(
                gvk,
                &format!("{}s", gvk.kind.to_lowercase()),
            ))
        }
    }

    #[tokio::test]
    async fn a_kind_is_discovered_once() {
        let cache = KindCache::default();
        let api = FakeDiscovery::default();
        for _ in 0..3 {
            let ar = cache.resolve(&api, "apps/v1", "Deployment").await.expect("found");
            assert_eq!(ar.plural, "deployments");
            assert_eq!(ar.group, "apps");
        }
        assert_eq!(api.calls.load(Ordering::SeqCst), 1);
        cache
            .resolve(&api, "apps/v1", "StatefulSet")
            .await
            .expect("found");
        assert_eq!(api.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failure_is_not_kept() {
        let cache = KindCache::default();
        let api = FakeDiscovery {
            fail: AtomicUsize::new(1),
            ..FakeDiscovery::default()
        };
        assert!(cache.resolve(&api, "apps/v1", "Deployment").await.is_err());
        assert!(cache.resolve(&api, "apps/v1", "Deployment").await.is_ok());
        assert!(cache.resolve(&api, "apps/v1", "Deployment").await.is_ok());
        assert_eq!(api.calls.load(Ordering::SeqCst), 2);
    }
}
