//! Start-up calls to the API server, retried with backoff while it is unreachable or failing, so
//! an operator started during an outage waits (serving `/healthz`, not ready) instead of
//! crash-looping with a misleading message. Only an answer that cannot change by waiting ends
//! the wait: for the ScaledObject list, a 404 ([`crds_missing`]).

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::infra::backoff::{Backoff, jitter};

/// Backoff between start-up attempts: 1 s doubling to 5 s, ±25 %. The cap is small because an
/// operator that waits at start-up is one that scales nothing: after an API outage of any length
/// it resumes at most ~6 s after the API server is back (a replica's one call per 5 s is nothing
/// to the API server).
pub const STARTUP_BACKOFF: Backoff = Backoff {
    base: Duration::from_secs(1),
    cap: Duration::from_secs(5),
};

/// Whether listing ScaledObjects failed because the CRDs are not installed: only a 404 says so
/// (a timeout, a 5xx or a 429 is the API server's state, not the cluster's contents).
pub fn crds_missing(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Calls `call` until it succeeds (`Ok(Some)`), fails with an error `permanent` calls final
/// (`Err`), or `stop` turns true (`Ok(None)`); other failures are logged with `what` and retried
/// after [`STARTUP_BACKOFF`].
pub async fn retry<T, E, Fut>(
    what: &str,
    mut stop: watch::Receiver<bool>,
    permanent: impl Fn(&E) -> bool,
    mut call: impl FnMut() -> Fut,
) -> Result<Option<T>, E>
where
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    let mut attempt: u32 = 0;
    loop {
        let result = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Ok(None),
            result = call() => result,
        };
        let e = match result {
            Ok(v) => return Ok(Some(v)),
            Err(e) if permanent(&e) => return Err(e),
            Err(e) => e,
        };
        attempt = attempt.saturating_add(1);
        let delay = STARTUP_BACKOFF.delay(attempt, jitter((what, attempt)));
        tracing::warn!(call = what, error = %e, retry_in = ?delay, attempt, "API server call failed at start-up; retrying");
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return Ok(None),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use tokio::time::Instant;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(kube::core::Status::failure("x", "x").with_code(code).boxed())
    }

    #[test]
    fn only_a_404_means_the_crds_are_missing() {
        assert!(crds_missing(&api_error(404)));
        for code in [401, 403, 429, 500, 503, 504] {
            assert!(!crds_missing(&api_error(code)), "{code}");
        }
        assert!(!crds_missing(&kube::Error::Service("connection refused".into())));
    }

    /// A call that fails with `errors` in turn, then succeeds; records when it was made.
    struct Script {
        errors: Mutex<Vec<kube::Error>>,
        calls: Mutex<Vec<Instant>>,
    }

    impl Script {
        fn new(mut errors: Vec<kube::Error>) -> Script {
            errors.reverse();
            Script {
                errors: Mutex::new(errors),
                calls: Mutex::default(),
            }
        }
        async fn call(&self) -> Result<&'static str, kube::Error> {
            self.calls.lock().expect("lock").push(Instant::now());
            match self.errors.lock().expect("lock").pop() {
                Some(e) => Err(e),
                None => Ok("listed"),
            }
        }
        fn gaps(&self) -> Vec<Duration> {
            let calls = self.calls.lock().expect("lock");
            calls.windows(2).map(|w| w[1] - w[0]).collect()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_at_start_up_is_waited_out_with_growing_delays() {
        let script = Script::new(vec![
            kube::Error::Service("connection refused".into()),
            api_error(503),
            api_error(429),
            api_error(500),
        ]);
        let (_stop_tx, stop) = watch::channel(false);
        let got = retry("list", stop, crds_missing, || script.call()).await;
        assert_eq!(got.expect("no final error"), Some("listed"));
        let gaps = script.gaps();
        assert_eq!(gaps.len(), 4);
        // 1, 2, 4, 5 s nominal, each within ±25 %.
        for (gap, nominal) in gaps.iter().zip([1.0, 2.0, 4.0, 5.0]) {
            let s = gap.as_secs_f64();
            assert!((0.75 * nominal..=1.25 * nominal).contains(&s), "{gaps:?}");
        }
    }

    /// However long the outage, the next attempt is at most 5 s × 1.25 away: the operator resumes
    /// promptly once the API server is back.
    #[tokio::test(start_paused = true)]
    async fn a_long_outage_is_retried_at_least_every_six_and_a_quarter_seconds() {
        let script = Script::new((0..12).map(|_| api_error(503)).collect());
        let (_stop_tx, stop) = watch::channel(false);
        let got = retry("list", stop, crds_missing, || script.call()).await;
        assert_eq!(got.expect("no final error"), Some("listed"));
        let gaps = script.gaps();
        assert_eq!(gaps.len(), 12);
        let longest = gaps.iter().max().expect("gaps");
        assert!(*longest <= Duration::from_millis(6_250), "{gaps:?}");
        // Still a backoff: the later gaps are at the cap, not at the first delay.
        assert!(gaps[11] >= Duration::from_millis(3_750), "{gaps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_404_ends_the_wait_at_once() {
        let script = Script::new(vec![api_error(503), api_error(404)]);
        let (_stop_tx, stop) = watch::channel(false);
        let got = retry("list", stop, crds_missing, || script.call()).await;
        assert!(matches!(got, Err(kube::Error::Api(s)) if s.code == 404));
        assert_eq!(script.calls.lock().expect("lock").len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_wait() {
        let script = Script::new((0..100).map(|_| api_error(503)).collect());
        let (stop_tx, stop) = watch::channel(false);
        let waiting = tokio::spawn(async move {
            retry("list", stop, crds_missing, || script.call())
                .await
                .map(|_| ())
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop_tx.send_replace(true);
        let got = tokio::time::timeout(Duration::from_millis(1), waiting).await;
        assert!(matches!(got, Ok(Ok(Ok(())))));
    }
}
