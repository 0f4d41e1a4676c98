//! Readiness (`/readyz`): a replica is ready when an HPA request sent to it gets an answer.
//!
//! - The leader: once its controller runs (and, with the adapter, a serving certificate is
//!   loaded).
//! - A standby with the adapter: while it has a serving certificate and it finds a leader to
//!   forward to: the Lease held, not expired, by *another* identity whose Pod, in the operator's
//!   namespace and running as its ServiceAccount, has an IP (see `leader_forward`).
//! - A standby without the adapter: always (it serves nothing the Service routes to).
//!
//! [`assess`] is the rule, pure; [`keep_ready`] re-evaluates it every two seconds (and when
//! leadership changes), finding the leader through the forwarder's two-second cache.

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::adapter::certs::AdapterTls;
use crate::adapter::leader_forward::{LeaderForwarder, NoLeader};
use crate::adapter::provider::LeaderState;

/// How often readiness is re-evaluated.
pub const READINESS_TICK: Duration = Duration::from_secs(2);

/// What readiness depends on.
#[derive(Debug, Clone)]
pub struct ReadinessInputs {
    /// Whether this replica serves the metrics adapter.
    pub adapter: bool,
    /// Whether the adapter has a serving certificate.
    pub cert_loaded: bool,
    /// Whether this replica holds the Lease.
    pub leading: bool,
    /// Whether its controller runs (the leader's shared state is published).
    pub controller_started: bool,
    /// Where the leader is, as the forwarder last found it (standbys with the adapter; `None`:
    /// not looked up).
    pub leader: Option<Result<SocketAddr, NoLeader>>,
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
    /// No leader to forward to.
    #[error("standby: {0}")]
    NoLeader(#[source] NoLeader),
}

/// Whether the replica is ready, or why not.
pub fn assess(i: &ReadinessInputs) -> Result<(), NotReady> {
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
    match i.leader {
        Some(Ok(_)) => Ok(()),
        Some(Err(why)) => Err(NotReady::NoLeader(why)),
        None => Err(NotReady::NoLeader(NoLeader::NoLease)),
    }
}

/// Where [`keep_ready`] reads its inputs.
pub struct ReadinessSources {
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
        let (cert_loaded, leader) = match &sources.adapter {
            Some((tls, forwarder)) => {
                let leader = if leading {
                    None
                } else {
                    Some(forwarder.leader().await)
                };
                (tls.serving.is_loaded(), leader)
            }
            None => (true, None),
        };
        let verdict = assess(&ReadinessInputs {
            adapter: sources.adapter.is_some(),
            cert_loaded,
            leading,
            controller_started,
            leader,
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

    fn inputs(leader: Option<Result<SocketAddr, NoLeader>>) -> ReadinessInputs {
        ReadinessInputs {
            adapter: true,
            cert_loaded: true,
            leading: false,
            controller_started: false,
            leader,
        }
    }

    const LEADER: Option<Result<SocketAddr, NoLeader>> = Some(Ok(SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3)),
        6443,
    )));

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
    fn a_standby_is_ready_while_it_finds_a_leader_to_forward_to() {
        assert_eq!(assess(&inputs(LEADER)), Ok(()));
        for why in [
            NoLeader::NoLease,
            NoLeader::NotHeld,
            NoLeader::ThisReplica,
            NoLeader::NoPod,
            NoLeader::NoPodIp,
            NoLeader::ForeignPod,
        ] {
            assert_eq!(assess(&inputs(Some(Err(why)))), Err(NotReady::NoLeader(why)));
        }
        assert_eq!(assess(&inputs(None)), Err(NotReady::NoLeader(NoLeader::NoLease)));
        // No certificate yet.
        let no_cert = ReadinessInputs {
            cert_loaded: false,
            ..inputs(LEADER)
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
