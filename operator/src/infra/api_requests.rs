//! Counts the operator's Kubernetes API requests by verb and resource, like client-go's
//! `rest_client_requests_total`, so that "how many writes does ebb make when nothing changes"
//! is a number anyone can read from `/metrics` (`ebb_kube_requests_total`).
//!
//! [`classify`] is pure: it turns a method and a request path into a verb (`get`, `list`,
//! `watch`, `create`, `update`, `patch`, `delete`) and a resource (`deployments/scale`,
//! `horizontalpodautoscalers`, …). [`RequestCountLayer`] calls a recorder with that pair for
//! every request leaving the client.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

/// What a request does, in the API server's own verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// GET of one object.
    Get,
    /// GET of a collection.
    List,
    /// GET with `watch=true` (or the legacy `/watch/` path).
    Watch,
    /// POST.
    Create,
    /// PUT.
    Update,
    /// PATCH (merge, JSON, strategic or server-side apply).
    Patch,
    /// DELETE.
    Delete,
    /// Any other method.
    Other,
}

impl Verb {
    /// The verb's label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::Other => "other",
        }
    }

    /// Whether the request changes state on the server.
    pub fn is_write(self) -> bool {
        matches!(self, Verb::Create | Verb::Update | Verb::Patch | Verb::Delete)
    }
}

/// Classifies a request: its verb and its resource (`plural` or `plural/subresource`; `other`
/// for paths outside `/api` and `/apis`, e.g. discovery of `/version`).
pub fn classify(method: &http::Method, path: &str, query: Option<&str>) -> (Verb, String) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... or /apis/group/version/...
    let rest: &[&str] = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => &[],
    };
    let (legacy_watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    // Drop the namespace scope; what is left is resource[/name[/subresource]].
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        _ => rest,
    };
    let (resource, named) = match rest {
        [] => ("other".to_string(), false),
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    let watch = legacy_watch
        || query
            .unwrap_or("")
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match *method {
        http::Method::GET if watch => Verb::Watch,
        http::Method::GET if named => Verb::Get,
        http::Method::GET => Verb::List,
        http::Method::POST => Verb::Create,
        http::Method::PUT => Verb::Update,
        http::Method::PATCH => Verb::Patch,
        http::Method::DELETE => Verb::Delete,
        _ => Verb::Other,
    };
    (verb, resource)
}

/// Receives one call per request with its verb and resource.
pub type RequestRecorder = Arc<dyn Fn(Verb, &str) + Send + Sync>;

/// A tower layer that reports every request to a [`RequestRecorder`] before sending it.
#[derive(Clone)]
pub struct RequestCountLayer {
    record: RequestRecorder,
}

impl RequestCountLayer {
    /// A layer reporting to `record`.
    pub fn new(record: RequestRecorder) -> Self {
        Self { record }
    }
}

impl<S> Layer<S> for RequestCountLayer {
    type Service = RequestCountService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestCountService {
            inner,
            record: self.record.clone(),
        }
    }
}

/// The service made by [`RequestCountLayer`].
#[derive(Clone)]
pub struct RequestCountService<S> {
    inner: S,
    record: RequestRecorder,
}

impl<S, B> Service<http::Request<B>> for RequestCountService<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (verb, resource) = classify(request.method(), request.uri().path(), request.uri().query());
        (self.record)(verb, &resource);
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn classifies_the_requests_the_operator_makes() {
        let cases = [
            (
                Method::GET,
                "/apis/apps/v1/deployments",
                Some("watch=true&resourceVersion=1"),
                Verb::Watch,
                "deployments",
            ),
            (
                Method::GET,
                "/apis/apps/v1/namespaces/a/deployments",
                Some("limit=500"),
                Verb::List,
                "deployments",
            ),
            (
                Method::GET,
                "/apis/apps/v1/namespaces/a/deployments/web/scale",
                None,
                Verb::Get,
                "deployments/scale",
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/a/deployments/web/scale",
                None,
                Verb::Patch,
                "deployments/scale",
            ),
            (
                Method::PATCH,
                "/apis/ebb.dev/v1alpha1/namespaces/a/scaledobjects/so/status",
                Some("fieldManager=ebb"),
                Verb::Patch,
                "scaledobjects/status",
            ),
            (
                Method::PATCH,
                "/apis/autoscaling/v2/namespaces/a/horizontalpodautoscalers/h",
                Some("fieldManager=ebb&force=true"),
                Verb::Patch,
                "horizontalpodautoscalers",
            ),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/a/events",
                None,
                Verb::Create,
                "events",
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/ebb",
                None,
                Verb::Update,
                "leases",
            ),
            (
                Method::DELETE,
                "/apis/autoscaling/v2/namespaces/a/horizontalpodautoscalers/h",
                None,
                Verb::Delete,
                "horizontalpodautoscalers",
            ),
            (Method::GET, "/api/v1/namespaces/a", None, Verb::Get, "namespaces"),
            (
                Method::GET,
                "/api/v1/namespaces/a/secrets/s",
                None,
                Verb::Get,
                "secrets",
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/a/pods",
                None,
                Verb::Watch,
                "pods",
            ),
            (Method::GET, "/apis/autoscaling/v2", None, Verb::List, "other"),
            (Method::GET, "/version", None, Verb::List, "other"),
        ];
        for (method, path, query, verb, resource) in cases {
            assert_eq!(
                classify(&method, path, query),
                (verb, resource.to_string()),
                "{method} {path}"
            );
        }
    }

    #[test]
    fn only_changing_verbs_are_writes() {
        let writes: Vec<Verb> = [
            Verb::Get,
            Verb::List,
            Verb::Watch,
            Verb::Create,
            Verb::Update,
            Verb::Patch,
            Verb::Delete,
            Verb::Other,
        ]
        .into_iter()
        .filter(|v| v.is_write())
        .collect();
        assert_eq!(writes, [Verb::Create, Verb::Update, Verb::Patch, Verb::Delete]);
    }

    #[tokio::test]
    async fn the_layer_reports_each_request_before_passing_it_on() {
        use std::sync::Mutex;
        let seen: Arc<Mutex<Vec<(Verb, String)>>> = Arc::default();
        let sink = seen.clone();
        let layer = RequestCountLayer::new(Arc::new(move |verb, resource: &str| {
            sink.lock().unwrap().push((verb, resource.to_string()));
        }));
        let inner = tower::service_fn(|req: http::Request<()>| async move {
            Ok::<_, std::convert::Infallible>(req.uri().path().to_string())
        });
        let mut service = layer.layer(inner);
        let request = http::Request::patch("/apis/ebb.dev/v1alpha1/namespaces/a/scaledobjects/x/status")
            .body(())
            .unwrap();
        let answer = tower::ServiceExt::oneshot(&mut service, request).await.unwrap();
        assert_eq!(
            answer,
            "/apis/ebb.dev/v1alpha1/namespaces/a/scaledobjects/x/status"
        );
        assert_eq!(
            *seen.lock().unwrap(),
            [(Verb::Patch, "scaledobjects/status".to_string())]
        );
    }
}
