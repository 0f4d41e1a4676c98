//! Readiness (`/readyz`): a replica is ready when an HPA request sent to it gets an answer.
//!
//! - The leader: once its controller runs (and, with the adapter, a serving certificate is
//!   loaded).
//! - A standby with the adapter: while it has a serving certificate and the Lease is held, not
//!   expired, by *another* identity that advertised an endpoint other than this replica's (the
//!   standby forwards there).
//! - A standby without the adapter: always (it serves nothing the Service routes to).
//!
//! [`assess`] is the rule, pure; [`keep_ready`] re-evaluates it every two seconds (and when
//! leadership changes), reading the Lease through the forwarder's two-second cache.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use crate::adapter::certs::AdapterTls;
use crate::adapter::leader_forward::{LeaderForwarder, LeaseView};
use crate::adapter::provider::LeaderState;

/// How often readiness is re-evaluated.
pub const READINESS_TICK: Duration = Duration::from_secs(2);

/// What readiness depends on.
#[derive(Debug, Clone)]
pub struct ReadinessInputs<'a> {
    /// Whether this replica serves the metrics adapter.
    pub adapter: bool,
    /// Whether the adapter has a serving certificate.
    pub cert_loaded: bool,
    /// Whether this replica holds the Lease.
    pub leading: bool,
    /// Whether its controller runs (the leader's shared state is published).
    pub controller_started: bool,
    /// The Lease as last read (standbys with the adapter).
    pub lease: Option<&'a LeaseView>,
    /// This replica's identity.
    pub identity: &'a str,
    /// This replica's advertised adapter URL.
    pub own_url: &'a str,
    /// Now.
    pub now: Timestamp,
}

/// Why a replica is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// The adapter has no serving certificate yet.
    #[error("the metrics adapter has no serving certificate yet")]
    NoCertificate,
    /// The leader's controller is not running yet.
    #[error("leading, but the controller has not started yet")]
    ControllerStarting,
    /// No live Lease holder other than this replica.
    #[error("standby: no live leader holds the Lease")]
    NoLeader,
    /// The leader has not advertised its adapter (or the endpoint is this replica's own).
    #[error("standby: the leader has not advertised its metrics adapter yet")]
    NoLeaderEndpoint,
}

/// Whether the replica is ready, or why not.
pub fn assess(i: &ReadinessInputs<'_>) -> Result<(), NotReady> {
    if i.adapter && !i.cert_loaded {
        return Err(NotReady::NoCertificate);
    }
    if i.leading {
        return if i.controller_started {
            Ok(())
        } else {
            Err(NotReady::ControllerStarting)
        };
    }
    if !i.adapter {
        return Ok(());
    }
    let lease = i.lease.ok_or(NotReady::NoLeader)?;
    match lease.live_holder(i.now) {
        Some(holder) if holder != i.identity => {}
        _ => return Err(NotReady::NoLeader),
    }
    match lease.leader_endpoint() {
        Some(endpoint) if endpoint != i.own_url => Ok(()),
        _ => Err(NotReady::NoLeaderEndpoint),
    }
}

/// Where [`keep_ready`] reads its inputs.
pub struct ReadinessSources {
    /// This replica's identity.
    pub identity: String,
    /// True while this replica leads.
    pub leading: watch::Receiver<bool>,
    /// The leader's shared state (published once the controller runs).
    pub leader_state: LeaderState,
    /// The adapter's certificates and the forwarder (its Lease cache), when the adapter is served.
    pub adapter: Option<(Arc<AdapterTls>, Arc<LeaderForwarder>)>,
}

/// Publishes readiness on `ready` until every receiver is gone; logs each change.
pub async fn keep_ready(mut sources: ReadinessSources, ready: watch::Sender<bool>) {
    let mut last: Option<Result<(), NotReady>> = None;
    loop {
        let leading = *sources.leading.borrow_and_update();
        let controller_started = sources
            .leader_state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        let (cert_loaded, lease, own_url) = match &sources.adapter {
            Some((tls, forwarder)) => {
                let lease = if leading {
                    None
                } else {
                    forwarder.lease_view().await
                };
                (tls.serving.is_loaded(), lease, forwarder.own_url().to_owned())
            }
            None => (true, None, String::new()),
        };
        let verdict = assess(&ReadinessInputs {
            adapter: sources.adapter.is_some(),
            cert_loaded,
            leading,
            controller_started,
            lease: lease.as_ref(),
            identity: &sources.identity,
            own_url: &own_url,
            now: Timestamp::now(),
        });
        if last != Some(verdict) {
            match verdict {
                Ok(()) => tracing::info!("ready"),
                Err(why) => tracing::info!(reason = %why, "not ready"),
            }
            last = Some(verdict);
        }
        if ready.send(verdict.is_ok()).is_err() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(READINESS_TICK) => {}
            changed = sources.leading.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "ebb-0";
    const MY_URL: &str = "https://10.0.0.2:6443";

    fn lease(holder: &str, endpoint: Option<&str>) -> LeaseView {
        LeaseView {
            holder: Some(holder.to_owned()),
            renewed: Some(at("2026-01-01T00:00:00Z")),
            duration_secs: Some(15),
            endpoint: endpoint.map(str::to_owned),
            endpoint_identity: Some(holder.to_owned()),
        }
    }

    fn at(t: &str) -> Timestamp {
        t.parse().unwrap()
    }

    fn inputs(lease: Option<&LeaseView>) -> ReadinessInputs<'_> {
        ReadinessInputs {
            adapter: true,
            cert_loaded: true,
            leading: false,
            controller_started: false,
            lease,
            identity: ME,
            own_url: MY_URL,
            now: at("2026-01-01T00:00:05Z"),
        }
    }

    #[test]
    fn the_leader_is_ready_once_its_controller_runs_with_a_certificate() {
        let leader = ReadinessInputs {
            leading: true,
            ..inputs(None)
        };
        assert_eq!(assess(&leader), Err(NotReady::ControllerStarting));
        let running = ReadinessInputs {
            controller_started: true,
            ..leader.clone()
        };
        assert_eq!(assess(&running), Ok(()));
        let no_cert = ReadinessInputs {
            cert_loaded: false,
            ..running
        };
        assert_eq!(assess(&no_cert), Err(NotReady::NoCertificate));
    }

    #[test]
    fn a_standby_is_ready_while_a_live_other_leader_advertises_an_endpoint() {
        let good = lease("ebb-1", Some("https://10.0.0.3:6443"));
        assert_eq!(assess(&inputs(Some(&good))), Ok(()));
        // Expired.
        let late = ReadinessInputs {
            now: at("2026-01-01T00:00:20Z"),
            ..inputs(Some(&good))
        };
        assert_eq!(assess(&late), Err(NotReady::NoLeader));
        // Held by this replica's identity (a restart of the same pod name before takeover).
        let mine = lease(ME, Some("https://10.0.0.3:6443"));
        assert_eq!(assess(&inputs(Some(&mine))), Err(NotReady::NoLeader));
        // No endpoint, or this replica's own.
        let silent = lease("ebb-1", None);
        assert_eq!(assess(&inputs(Some(&silent))), Err(NotReady::NoLeaderEndpoint));
        let own = lease("ebb-1", Some(MY_URL));
        assert_eq!(assess(&inputs(Some(&own))), Err(NotReady::NoLeaderEndpoint));
        // Advertised by the previous leader, not the holder.
        let mut stale = lease("ebb-1", Some("https://10.0.0.9:6443"));
        stale.endpoint_identity = Some("ebb-9".into());
        assert_eq!(assess(&inputs(Some(&stale))), Err(NotReady::NoLeaderEndpoint));
        // Unreadable Lease.
        assert_eq!(assess(&inputs(None)), Err(NotReady::NoLeader));
        // No certificate yet.
        let no_cert = ReadinessInputs {
            cert_loaded: false,
            ..inputs(Some(&good))
        };
        assert_eq!(assess(&no_cert), Err(NotReady::NoCertificate));
    }

    #[test]
    fn without_the_adapter_a_standby_is_ready() {
        let plain = ReadinessInputs {
            adapter: false,
            cert_loaded: false,
            ..inputs(None)
        };
        assert_eq!(assess(&plain), Ok(()));
        let leading = ReadinessInputs {
            leading: true,
            ..plain
        };
        assert_eq!(assess(&leading), Err(NotReady::ControllerStarting));
    }
}
