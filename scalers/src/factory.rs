//! [`ScalerFactory`]: builds a [`Scaler`] per parsed trigger through the [`registry`](crate::registry),
//! sharing clients across every trigger it builds in a map keyed by the clients' type, so that
//! only a scaler's own folder names its client type.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::registry::{ParsedTrigger, ScalerKind, Shape, kind};
use crate::{Scaler, ScalerError};

/// Settings shared by every scaler a [`ScalerFactory`] builds.
#[derive(Debug, Clone, PartialEq)]
pub struct FactoryOptions {
    /// Timeout of one HTTP poll (connect, request and whole response body). Default 3 s.
    pub http_timeout: Duration,
}

impl FactoryOptions {
    /// The default HTTP timeout (3 s, as KEDA's default `KEDA_HTTP_DEFAULT_TIMEOUT`).
    pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(3);
}

impl Default for FactoryOptions {
    fn default() -> Self {
        Self {
            http_timeout: Self::DEFAULT_HTTP_TIMEOUT,
        }
    }
}

/// One shared value per type.
type SharedMap = HashMap<TypeId, Arc<dyn Any + Send + Sync>>;

/// Builds scalers from parsed triggers, sharing one client (pool) per type across them (e.g. one
/// HTTP client for all metrics-api triggers). Cheap to clone: clones share the clients.
#[derive(Clone)]
pub struct ScalerFactory {
    inner: Arc<FactoryInner>,
}

struct FactoryInner {
    options: FactoryOptions,
    /// The clients shared by the scalers built so far, created on first use.
    shared: Mutex<SharedMap>,
}

fn lock(m: &Mutex<SharedMap>) -> MutexGuard<'_, SharedMap> {
    // Inserts and lookups leave the map consistent, even if a holder panicked.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ScalerFactory {
    /// A factory with these options. Creates no client yet (and needs no async runtime).
    pub fn new(options: FactoryOptions) -> Self {
        Self {
            inner: Arc::new(FactoryInner {
                options,
                shared: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The options this factory was created with.
    pub fn options(&self) -> &FactoryOptions {
        &self.inner.options
    }

    /// Builds the scaler for a parsed trigger with its kind's `build` from the registry. Trigger
    /// types without a client yet return [`ScalerError::Unsupported`]. Needs no async runtime;
    /// sampling does.
    pub fn build(&self, trigger: &ParsedTrigger) -> Result<Arc<dyn Scaler>, ScalerError> {
        match kind(trigger.decl.trigger_type) {
            Some(ScalerKind {
                shape: Shape::Polled(build),
                ..
            }) => build(self, trigger),
            Some(_) => Err(ScalerError::InvalidConfig(format!(
                "{} is read by the HPA from the metrics server: ebb does not poll it",
                trigger.decl.trigger_type
            ))),
            None => Err(ScalerError::Unsupported {
                trigger_type: trigger.decl.trigger_type.to_string(),
            }),
        }
    }

    /// The factory's one value of type `T`, created by `init` on first use and shared by every
    /// later caller asking for a `T` (the type is the key: scalers sharing a client type share
    /// the client). `init` runs without the factory's lock held, so it may call `shared` too.
    pub fn shared<T: Send + Sync + 'static>(&self, init: impl FnOnce(&FactoryOptions) -> T) -> Arc<T> {
        let key = TypeId::of::<T>();
        if let Some(value) = self.lookup::<T>(key) {
            return value;
        }
        let fresh: Arc<T> = Arc::new(init(&self.inner.options));
        let mut map = lock(&self.inner.shared);
        // A concurrent first use may have won the race: keep the value already there.
        let value = map.entry(key).or_insert_with(|| fresh.clone()).clone();
        value.downcast::<T>().unwrap_or_else(|_| {
            map.insert(key, fresh.clone());
            fresh
        })
    }

    fn lookup<T: Send + Sync + 'static>(&self, key: TypeId) -> Option<Arc<T>> {
        let value = lock(&self.inner.shared).get(&key)?.clone();
        value.downcast::<T>().ok()
    }
}

impl Default for ScalerFactory {
    fn default() -> Self {
        Self::new(FactoryOptions::default())
    }
}

impl fmt::Debug for ScalerFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScalerFactory")
            .field("options", &self.inner.options)
            .field("shared_clients", &lock(&self.inner.shared).len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn factory_is_shareable() {
        fn assert_shareable<T: Clone + Send + Sync + 'static>() {}
        assert_shareable::<ScalerFactory>();
        fn assert_object(_: Option<Arc<dyn Scaler>>) {}
        assert_object(None);
        assert_eq!(FactoryOptions::default().http_timeout, Duration::from_secs(3));
    }

    #[test]
    fn shared_values_are_keyed_by_type_and_made_once() {
        struct Pool(Duration);
        struct Other;
        let factory = ScalerFactory::new(FactoryOptions {
            http_timeout: Duration::from_millis(250),
        });
        let made = AtomicUsize::new(0);
        let make = |o: &FactoryOptions| {
            made.fetch_add(1, Ordering::SeqCst);
            Pool(o.http_timeout)
        };
        let a = factory.shared(make);
        let b = factory.clone().shared(make);
        assert!(Arc::ptr_eq(&a, &b), "clones share the value");
        assert_eq!(made.load(Ordering::SeqCst), 1);
        assert_eq!(a.0, Duration::from_millis(250), "init sees the options");
        // A different type is a different value; init may itself ask for a shared value.
        let other = factory.shared(|_| {
            let _ = factory.shared(|_| Pool(Duration::ZERO));
            Other
        });
        let _: &Other = &other;
        assert_eq!(made.load(Ordering::SeqCst), 1);
        assert!(format!("{factory:?}").contains("shared_clients: 2"));
    }

    #[test]
    fn every_registered_kind_builds_without_a_runtime() {
        let cases: [(&str, &[(&str, &str)]); 10] = [
            ("external", &[("scalerAddress", "scaler:9090")]),
            (
                "external-push",
                &[("scalerAddress", "scaler:9090"), ("queue", "q")],
            ),
            (
                "cron",
                &[
                    ("timezone", "Etc/UTC"),
                    ("start", "0 8 * * *"),
                    ("end", "0 9 * * *"),
                    ("desiredReplicas", "2"),
                ],
            ),
            (
                "metrics-api",
                &[
                    ("url", "http://h/m"),
                    ("valueLocation", "v"),
                    ("targetValue", "1"),
                ],
            ),
            ("rabbitmq", &[("host", "amqp://h/"), ("queueName", "q")]),
            (
                "nats-jetstream",
                &[
                    ("natsServerMonitoringEndpoint", "n:8222"),
                    ("account", "$G"),
                    ("stream", "s"),
                    ("consumer", "c"),
                ],
            ),
            (
                "aws-sqs-queue",
                &[
                    ("queueURL", "https://sqs.eu-west-1.amazonaws.com/1/q"),
                    ("awsRegion", "eu-west-1"),
                ],
            ),
            ("kafka", &[("bootstrapServers", "b:9092"), ("consumerGroup", "g")]),
            (
                "postgresql",
                &[
                    ("query", "SELECT 1"),
                    ("targetQueryValue", "1"),
                    ("host", "db"),
                    ("port", "5432"),
                    ("userName", "u"),
                    ("dbName", "d"),
                    ("sslmode", "disable"),
                ],
            ),
            (
                "prometheus",
                &[
                    ("serverAddress", "http://h:9090"),
                    ("query", "up"),
                    ("threshold", "1"),
                ],
            ),
        ];
        let factory = ScalerFactory::default();
        for (ty, meta) in cases {
            let meta: BTreeMap<String, String> =
                meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let mut trigger = crate::parse_trigger(0, ty, &meta, Some(&BTreeMap::new()), None)
                .unwrap_or_else(|e| panic!("{ty}: {e}"));
            // aws-sqs-queue without keys needs the pod identity.
            trigger.context.aws_pod_identity = true;
            let scaler = factory.build(&trigger).unwrap_or_else(|e| panic!("{ty}: {e}"));
            assert_eq!(scaler.trigger_type(), ty);
        }
        // Resource kinds have no scaler: the HPA reads them.
        let meta: BTreeMap<String, String> = [("value".to_string(), "50".to_string())].into();
        let cpu = crate::parse_trigger(0, "cpu", &meta, None, None).unwrap();
        let Err(e) = factory.build(&cpu) else {
            panic!("cpu built a scaler")
        };
        assert!(e.to_string().contains("ebb does not poll it"), "{e}");
    }
}
