//! Leader election over a Lease (kube-lease-manager) with prompt takeover.
//!
//! kube-lease-manager's own loop lets a standby sleep until the current term ends, so a leader
//! that releases the Lease on SIGTERM is replaced only a lease duration later (and a freshly
//! started replica, which reads the Lease at once, usually wins instead of the waiting standby).
//! Here a standby also re-reads the Lease every [`RECHECK`]; when it is free ([`is_free`]) the
//! standby starts over with a fresh manager, which takes it at once. A replica that has just
//! started waits [`STARTUP_DEFERRAL`] before it contends for a Lease that exists already, so the
//! running standby (its adapter already serving) wins the race against the leader's replacement
//! pod. (A released Lease keeps no renewal time, so "exists" is the signal; a fresh install has
//! no Lease and does not wait.)

use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often a standby re-reads the Lease.
pub const RECHECK: Duration = Duration::from_millis(250);

/// How long a just-started replica leaves a recently held Lease to the running standby.
pub const STARTUP_DEFERRAL: Duration = Duration::from_secs(1);

/// Which Lease, and who this replica is.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (the Lease's `holderIdentity` while it leads).
    pub identity: String,
    /// Term length in seconds.
    pub duration: u64,
}

impl LeaseSettings {
    async fn manager(&self, client: &Client) -> Result<LeaseManager, LeaseManagerError> {
        LeaseManagerBuilder::new(client.clone(), &self.name)
            .with_namespace(&self.namespace)
            .with_identity(&self.identity)
            .with_duration(self.duration)
            .with_grace(self.duration.div_ceil(3).max(1))
            .build()
            .await
    }
}

/// Whether nobody holds `lease` at `now`: no holder, or the holder's term (last renewal plus
/// duration) is over.
pub fn is_free(lease: &Lease, now: SystemTime) -> bool {
    let Some(spec) = &lease.spec else {
        return true;
    };
    if spec.holder_identity.as_deref().is_none_or(str::is_empty) {
        return true;
    }
    let (Some(renewed), Some(secs)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    let renewed: SystemTime = renewed.0.into();
    let secs = u64::try_from(secs).unwrap_or(0);
    renewed
        .checked_add(Duration::from_secs(secs))
        .is_none_or(|end| end < now)
}

/// Starts electing: the receiver says whether this replica leads. Dropping every receiver makes
/// the task release the Lease (if held) and end.
pub async fn elect(
    client: Client,
    settings: LeaseSettings,
) -> Result<(watch::Receiver<bool>, JoinHandle<Result<(), LeaseManagerError>>), LeaseManagerError> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &settings.namespace);
    // (Read before the manager is built: building creates the Lease.)
    let existed = matches!(leases.get_opt(&settings.name).await, Ok(Some(_)));
    let manager = settings.manager(&client).await?;
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        if existed {
            tokio::time::sleep(STARTUP_DEFERRAL).await;
        }
        run(client, settings, leases, manager, tx).await
    });
    Ok((rx, task))
}

/// What one round of the election loop ended with.
enum Round {
    /// The manager reports a (new) state.
    Changed(Result<bool, LeaseManagerError>),
    /// A standby saw the Lease free: start over with a fresh manager.
    Free,
    /// Every receiver is gone.
    Closed,
}

async fn run(
    client: Client,
    settings: LeaseSettings,
    leases: Api<Lease>,
    mut manager: LeaseManager,
    tx: watch::Sender<bool>,
) -> Result<(), LeaseManagerError> {
    loop {
        let leading = *tx.borrow();
        let round = tokio::select! {
            biased;
            () = tx.closed() => Round::Closed,
            changed = manager.changed() => Round::Changed(changed),
            () = wait_until_free(&leases, &settings.name), if !leading => Round::Free,
        };
        match round {
            Round::Closed => break,
            Round::Changed(Ok(state)) => {
                tx.send_replace(state);
            }
            Round::Changed(Err(e)) => {
                tracing::warn!(error = %e, lease = %settings.name, "leader election");
                tokio::time::sleep(RECHECK).await;
            }
            Round::Free => match settings.manager(&client).await {
                Ok(fresh) => manager = fresh,
                Err(e) => {
                    tracing::warn!(error = %e, lease = %settings.name, "leader election");
                    tokio::time::sleep(RECHECK).await;
                }
            },
        }
    }
    manager.release().await
}

/// Returns once a read of the Lease finds it free (reads every [`RECHECK`]; a failed read counts
/// as not free).
async fn wait_until_free(leases: &Api<Lease>, name: &str) {
    loop {
        tokio::time::sleep(RECHECK).await;
        if let Ok(Some(lease)) = leases.get_opt(name).await
            && is_free(&lease, SystemTime::now())
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn lease(holder: Option<&str>, renewed_secs_ago: u64, duration: Option<i32>) -> Lease {
        let renewed = SystemTime::now() - Duration::from_secs(renewed_secs_ago);
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: Some(MicroTime(renewed.try_into().expect("a recent time"))),
                lease_duration_seconds: duration,
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn a_released_lease_is_free() {
        assert!(is_free(&lease(None, 0, Some(15)), SystemTime::now()));
        assert!(is_free(&lease(Some(""), 0, Some(15)), SystemTime::now()));
        assert!(is_free(&Lease::default(), SystemTime::now()));
    }

    #[test]
    fn a_held_lease_is_free_only_after_its_term() {
        assert!(!is_free(&lease(Some("a"), 5, Some(15)), SystemTime::now()));
        assert!(is_free(&lease(Some("a"), 20, Some(15)), SystemTime::now()));
    }

    #[test]
    fn a_lease_without_a_term_is_free() {
        assert!(is_free(&lease(Some("a"), 0, None), SystemTime::now()));
    }
}
