//! Starting the embedded metrics adapter: delegated authentication (retried through an API
//! outage, then followed), the provider over the leader's cache, and the chain to a delegate
//! adapter when one is configured.

use std::sync::Arc;

use ebb_metrics_adapter::{AdapterConfig, AuthError, MetricsAdapter, TlsSource};
use kube::Client;
use tokio::sync::watch;

use crate::adapter::certs::AdapterTls;
use crate::adapter::delegate::ServiceDelegate;
use crate::adapter::forward_token::delegated_auth;
use crate::adapter::leader_forward::LeaderForwarder;
use crate::adapter::provider::{CacheProvider, LeaderState};
use crate::infra::startup::{self, crds_missing};
use crate::infra::telemetry::OperatorMetrics;
use crate::run::{AdapterOptions, RunError, wait_true};

/// Starts the metrics adapter; every replica serves it, answering from the leader's cache.
/// `client` (the auth client) makes its reviews and follows the API server's auth settings.
pub(crate) async fn start_adapter(
    client: &Client,
    options: &AdapterOptions,
    tls: &AdapterTls,
    leader: LeaderState,
    forward: Arc<LeaderForwarder>,
    metrics: Arc<OperatorMetrics>,
    stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, RunError> {
    // Only a kube error other than a 404 is worth waiting out; bad contents are final.
    let permanent = |e: &AuthError| !matches!(e, AuthError::Kube(k) if !crds_missing(k));
    let auth = startup::retry(
        "read the API server's authentication settings",
        stop.clone(),
        permanent,
        || delegated_auth(client.clone(), forward.service_account()),
    )
    .await
    .map_err(RunError::AdapterAuth)?;
    // (Stopped while waiting: the adapter starts and stops at once.)
    let stop = wait_true(stop);
    let Some(auth) = auth else {
        return Ok(tokio::spawn(async {}));
    };
    let auth = Arc::new(auth);
    // CA rotations and header changes in the API server's settings take effect without a restart.
    let follow = tokio::spawn(auth.clone().follow_config(client.clone()));
    let observer = metrics.adapter();
    let adapter = MetricsAdapter::bind(
        AdapterConfig::new(options.listen, TlsSource::Reloadable(tls.serving.clone())),
        auth,
        Arc::new(
            CacheProvider::new(leader, Some(forward))
                .with_metrics(metrics)
                .with_scope(options.scope.clone()),
        ),
    )
    .await
    .map_err(|e| {
        follow.abort();
        RunError::Adapter(e)
    })?
    .with_observer(observer);
    let adapter = match &options.delegate {
        Some(d) => adapter.with_delegate(Arc::new(ServiceDelegate::new(client.clone(), d.clone()))),
        None => adapter,
    };
    tracing::info!(addr = %adapter.local_addr(), "metrics adapter listening");
    Ok(tokio::spawn(async move {
        if let Err(e) = adapter.run(stop).await {
            tracing::error!(error = %e, "metrics adapter stopped");
        }
        follow.abort();
    }))
}
