//! [`PushStream`]: an `external-push` trigger's `StreamIsActive` stream, kept open by one task per
//! trigger. Each message's activity goes to a change-only watch channel (the scale loop polls at
//! once when it flips); a stream that ends or fails is opened again after a backoff
//! ([`backoff_after`]). The task starts with the first sample or subscription (scalers are built
//! without a runtime) and ends when the trigger's scaler is dropped.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::client::GrpcServer;
use super::proto::ScaledObjectRef;

/// The first pause before a failed or ended stream is opened again.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest pause between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The shortest time between two flips of the channel: a server that flips faster wakes the scale
/// loop at most this often (the latest activity is sent once the gap has passed).
pub const MIN_FLIP_GAP: Duration = Duration::from_millis(250);

/// The pause before attempt `failures + 1` after `failures` attempts in a row that delivered no
/// message: [`FIRST_BACKOFF`], doubling, capped at [`MAX_BACKOFF`].
pub fn backoff_after(failures: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(MAX_BACKOFF)
}

/// The pushed activity as the last message told it.
const UNKNOWN: u8 = 0;
const INACTIVE: u8 = 1;
const ACTIVE: u8 = 2;

/// State shared by the trigger and its stream task.
struct Shared {
    server: Arc<GrpcServer>,
    object: ScaledObjectRef,
    /// Flips (only) when the streamed activity changes; starts inactive.
    activity: watch::Sender<bool>,
    /// The latest message's activity while a stream is open, [`UNKNOWN`] otherwise.
    latest: AtomicU8,
}

/// One trigger's activity stream (see the [module docs](self)).
pub struct PushStream {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl PushStream {
    /// A stream of `object`'s activity from `server`, not started yet.
    pub fn new(server: Arc<GrpcServer>, object: ScaledObjectRef) -> Self {
        Self {
            shared: Arc::new(Shared {
                server,
                object,
                activity: watch::Sender::new(false),
                latest: AtomicU8::new(UNKNOWN),
            }),
            task: Mutex::new(None),
        }
    }

    /// Starts the stream's task if it is not running and a tokio runtime is at hand.
    pub fn ensure_running(&self) {
        let mut task = self.task.lock().unwrap_or_else(|p| p.into_inner());
        if task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            *task = Some(runtime.spawn(run(self.shared.clone())));
        }
    }

    /// A receiver that wakes on later changes of the streamed activity.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.shared.activity.subscribe()
    }

    /// Whether an open stream's latest message said active.
    pub fn pushed_active(&self) -> bool {
        self.shared.latest.load(Ordering::Acquire) == ACTIVE
    }
}

impl Drop for PushStream {
    fn drop(&mut self) {
        if let Some(task) = self.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// The task: open the stream, follow it, and open it again after a backoff, forever (it is
/// aborted with its trigger).
async fn run(shared: Arc<Shared>) {
    let mut failures = 0u32;
    let mut last_flip: Option<Instant> = None;
    loop {
        let delivered = follow(&shared, &mut last_flip).await;
        shared.latest.store(UNKNOWN, Ordering::Release);
        failures = if delivered { 1 } else { failures.saturating_add(1) };
        tokio::time::sleep(backoff_after(failures)).await;
    }
}

/// Follows one stream until it ends or fails; whether it delivered a message.
async fn follow(shared: &Shared, last_flip: &mut Option<Instant>) -> bool {
    let shown = shared.server.shown();
    let mut client = match shared.server.client() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(server = %shown, error = %e, "external-push: no client");
            return false;
        }
    };
    let opened = shared
        .server
        .call("StreamIsActive", client.stream_is_active(shared.object.clone()))
        .await;
    let mut stream = match opened {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(server = %shown, error = %e, "external-push: cannot open the stream");
            return false;
        }
    };
    let mut delivered = false;
    loop {
        match stream.message().await {
            Ok(Some(message)) => {
                delivered = true;
                let active = message.result;
                shared
                    .latest
                    .store(if active { ACTIVE } else { INACTIVE }, Ordering::Release);
                if *shared.activity.borrow() != active {
                    // Rapid flips are spaced out; the trigger's latest activity is sent.
                    if let Some(at) = *last_flip {
                        tokio::time::sleep_until(at + MIN_FLIP_GAP).await;
                    }
                    let latest = shared.latest.load(Ordering::Acquire) == ACTIVE;
                    if shared
                        .activity
                        .send_if_modified(|v| crate::common::activity::flip(v, latest))
                    {
                        *last_flip = Some(Instant::now());
                    }
                }
            }
            Ok(None) => {
                tracing::debug!(server = %shown, "external-push: the server ended the stream");
                return delivered;
            }
            Err(status) => {
                tracing::debug!(server = %shown, code = ?status.code(), message = %status.message(), "external-push: the stream failed");
                return delivered;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_a_second_to_thirty() {
        let pauses: Vec<u64> = (0..10).map(|f| backoff_after(f).as_millis() as u64).collect();
        assert_eq!(
            pauses,
            [500, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        assert_eq!(backoff_after(u32::MAX), MAX_BACKOFF);
    }
}
