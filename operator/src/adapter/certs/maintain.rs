//! Keeping the certificates current, one task per replica: mounted files are re-read and
//! hot-swapped when their contents change; the operator-managed Secret is read (or created) at
//! start-up, re-read every refresh interval and hot-swapped, and — on the leader only — recreated
//! when gone, renewed when due, and its CA kept as the APIService's `caBundle`.

use std::sync::Arc;
use std::time::Duration;

use ebb_scalers::common::errors::error_chain;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use tokio::sync::watch;

use super::files::{CertFiles, FileContents, changed};
use super::secret::{KubeSecret, SecretApi, SecretContents, get_or_create, renew_if_needed};
use super::{AdapterTls, CertError, CertMode, CertOptions, apiservice};

/// Longest wait between two attempts to read or create the Secret at start-up.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Keeps the certificates current; runs until aborted. `leading` is true while this replica
/// leads (it alone renews and patches the APIService), `owner` goes on a Secret it creates.
pub async fn maintain(
    tls: Arc<AdapterTls>,
    options: CertOptions,
    client: Client,
    owner: Option<OwnerReference>,
    leading: watch::Receiver<bool>,
) {
    match &options.mode {
        CertMode::SelfSigned => {}
        CertMode::Files(files) => watch_files(&tls, files, options.refresh).await,
        CertMode::Secret {
            namespace,
            name,
            apiservice,
        } => {
            let keeper = SecretKeeper {
                api: KubeSecret::new(client.clone(), namespace, name),
                client,
                tls,
                namespace: namespace.clone(),
                name: name.clone(),
                apiservice: apiservice.clone(),
                dns_names: options.dns_names.clone(),
                owner,
                loaded: None,
            };
            keeper.run(leading, options.refresh).await;
        }
    }
}

async fn watch_files(tls: &AdapterTls, files: &CertFiles, every: Duration) {
    let mut last: Option<FileContents> = files.read().ok();
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        interval.tick().await;
        let contents = match files.read() {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), "cannot re-read the metrics adapter's certificate files");
                continue;
            }
        };
        if !changed(last.as_ref(), &contents) {
            continue;
        }
        // Loaded or not, these contents are not tried again: a half-updated mount (certificate
        // and key read across a swap) differs again at the next read.
        match tls.load_files(&contents) {
            Ok(()) => tracing::info!("metrics adapter: loaded the changed certificate files"),
            Err(e) => tracing::warn!(
                error = %error_chain(&e),
                "metrics adapter: the changed certificate files cannot be used; serving the previous certificate"
            ),
        }
        last = Some(contents);
    }
}

/// The operator-managed Secret's keeper (one per replica).
struct SecretKeeper {
    api: KubeSecret,
    client: Client,
    tls: Arc<AdapterTls>,
    namespace: String,
    name: String,
    apiservice: Option<String>,
    dns_names: Vec<String>,
    owner: Option<OwnerReference>,
    loaded: Option<SecretContents>,
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

impl SecretKeeper {
    /// The Secret, created (CA and serving certificate) when absent.
    async fn read_or_create(&self) -> Result<Secret, CertError> {
        get_or_create(
            &self.api,
            &self.namespace,
            &self.name,
            &self.dns_names,
            self.owner.as_ref(),
            now(),
        )
        .await
    }

    async fn run(mut self, mut leading: watch::Receiver<bool>, every: Duration) {
        let mut backoff = Duration::from_secs(1);
        let secret = loop {
            match self.read_or_create().await {
                Ok(secret) => break secret,
                Err(e) => {
                    tracing::warn!(
                        error = %error_chain(&e),
                        retry_in = ?backoff,
                        "metrics adapter: no serving certificate yet"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        self.load(&secret);
        let mut current = Some(secret);
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            if *leading.borrow_and_update() {
                self.lead(current.take()).await;
            }
            tokio::select! {
                _ = interval.tick() => {}
                changed = leading.changed() => if changed.is_err() { return },
            }
            current = match self.api.get().await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), secret = %self.name, "metrics adapter: cannot re-read the certificate Secret");
                    continue;
                }
            };
            match &current {
                Some(secret) => self.load(secret),
                None if !*leading.borrow() => tracing::warn!(
                    secret = %self.name,
                    "metrics adapter: the certificate Secret is gone; the leader recreates it"
                ),
                None => {}
            }
        }
    }

    /// Loads a Secret read from the API when its contents changed.
    fn load(&mut self, secret: &Secret) {
        let contents = SecretContents::from_secret(secret);
        if self.loaded.as_ref() == Some(&contents) {
            return;
        }
        let first = self.loaded.is_none();
        match self.tls.load_secret(&contents) {
            Ok(()) if first => {
                tracing::info!(secret = %self.name, "metrics adapter: serving the certificate from the Secret")
            }
            Ok(()) => {
                tracing::info!(secret = %self.name, "metrics adapter: loaded the changed certificate from the Secret")
            }
            Err(e) => tracing::warn!(
                error = %error_chain(&e),
                secret = %self.name,
                "metrics adapter: the Secret's certificate cannot be used; the leader renews it"
            ),
        }
        self.loaded = Some(contents);
    }

    /// The leader's round: recreate the Secret if gone, renew it if due, keep the APIService's
    /// CA bundle equal to the CA. `current` is the Secret just read (None: read it now).
    async fn lead(&mut self, current: Option<Secret>) {
        let secret = match current {
            Some(s) => s,
            None => match self.read_or_create().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "metrics adapter: cannot read or create the certificate Secret");
                    return;
                }
            },
        };
        self.load(&secret);
        let secret = match renew_if_needed(&self.api, &secret, &self.dns_names, now()).await {
            Ok(None) => secret,
            Ok(Some((written, why))) => {
                tracing::info!(secret = %self.name, reason = %why, "metrics adapter: renewed the certificates");
                self.load(&written);
                written
            }
            Err(e) => {
                // A 409 means another writer was first: the next round reads its Secret.
                tracing::warn!(error = %error_chain(&e), "metrics adapter: cannot renew the certificates");
                secret
            }
        };
        if let (Some(apiservice), Some(ca)) = (&self.apiservice, SecretContents::from_secret(&secret).ca_crt)
        {
            let own = apiservice::own_service(&self.dns_names);
            match apiservice::sync_ca_bundle(&self.client, apiservice, &ca, own.as_ref()).await {
                Ok(true) => {
                    tracing::info!(%apiservice, "metrics adapter: set the APIService's caBundle to the CA")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "metrics adapter: cannot keep the APIService's caBundle current")
                }
            }
        }
    }
}
