//! `ebb-external-scaler`: a small, real external scaler (KEDA's `externalscaler.proto` over gRPC)
//! for the tests. It is built from the same proto file as ebb's client, with only the generated
//! server stubs: no code of ebb's scalers.
//!
//! It serves one value and one activity that the test sets through standard input, one command
//! per line, each answered by one line on standard output:
//! - `value <number>`: the value `GetMetrics` returns (as `metricValueFloat`) → `ok`
//! - `active <true|false>`: what `IsActive` answers and `StreamIsActive` pushes at once → `ok`
//! - `target <number>`: the target `GetMetricSpec` gives when the trigger's metadata has no
//!   `targetSize` → `ok`
//! - `fail <grpc code number>` / `fail 0`: every call but the stream answers that status (0: none)
//!   → `ok`
//! - `last`: → `last <json>` with the last request's `name`, `namespace` and `metadata`, and the
//!   number of streams opened so far (`streams`)
//!
//! `GetMetricSpec` names one metric, the metadata's `metricName` (default `backlog`), with the
//! metadata's `targetSize` or the set target. It prints `listening <address>` once it listens on
//! 127.0.0.1 (`--port <n>`, default any free port), and exits when standard input closes.

use std::collections::HashMap;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use futures::Stream;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use tonic::{Code, Request, Response, Status};

mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("externalscaler");
}

use proto::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec, MetricValue,
    ScaledObjectRef,
};

#[derive(Default)]
struct State {
    value: f64,
    target: f64,
    fail: i32,
    last: Option<ScaledObjectRef>,
    streams: u64,
}

#[derive(Clone)]
struct Server {
    state: Arc<Mutex<State>>,
    active: watch::Sender<bool>,
}

impl Server {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the request and answers the set failure, if any.
    fn enter(&self, object: Option<&ScaledObjectRef>) -> Result<(), Status> {
        let mut state = self.state();
        if let Some(o) = object {
            state.last = Some(o.clone());
        }
        match state.fail {
            0 => Ok(()),
            code => Err(Status::new(Code::from_i32(code), "failing as told")),
        }
    }
}

type ActivityStream = Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for Server {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        self.enter(Some(request.get_ref()))?;
        let result = *self.active.borrow();
        Ok(Response::new(IsActiveResponse { result }))
    }

    type StreamIsActiveStream = ActivityStream;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<ActivityStream>, Status> {
        {
            let mut state = self.state();
            state.last = Some(request.into_inner());
            state.streams += 1;
        }
        let rx = self.active.subscribe();
        // The current activity at once, then every change.
        let stream = futures::stream::unfold((rx, true), |(mut rx, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let result = *rx.borrow_and_update();
            Some((Ok(IsActiveResponse { result }), (rx, false)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        self.enter(Some(request.get_ref()))?;
        let metadata = &request.get_ref().scaler_metadata;
        let target = match metadata.get("targetSize") {
            Some(t) => t
                .parse::<f64>()
                .map_err(|_| Status::invalid_argument("targetSize is not a number"))?,
            None => self.state().target,
        };
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: metric_name(metadata),
                target_size: 0,
                target_size_float: target,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let request = request.into_inner();
        self.enter(request.scaled_object_ref.as_ref())?;
        let object = request.scaled_object_ref.unwrap_or_default();
        if request.metric_name != metric_name(&object.scaler_metadata) {
            return Err(Status::not_found(format!("no metric {:?}", request.metric_name)));
        }
        let value = self.state().value;
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: request.metric_name,
                metric_value: 0,
                metric_value_float: value,
            }],
        }))
    }
}

fn metric_name(metadata: &HashMap<String, String>) -> String {
    metadata
        .get("metricName")
        .cloned()
        .unwrap_or_else(|| "backlog".to_string())
}

/// Applies one command line; the answer line.
fn command(server: &Server, line: &str) -> String {
    let (verb, arg) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
    let number = || arg.trim().parse::<f64>().ok();
    match verb {
        "value" => match number() {
            Some(v) => {
                server.state().value = v;
                "ok".into()
            }
            None => format!("error: value {arg:?}"),
        },
        "target" => match number() {
            Some(v) => {
                server.state().target = v;
                "ok".into()
            }
            None => format!("error: target {arg:?}"),
        },
        "active" => match arg.trim() {
            "true" | "false" => {
                server.active.send_replace(arg.trim() == "true");
                "ok".into()
            }
            _ => format!("error: active {arg:?}"),
        },
        "fail" => match arg.trim().parse::<i32>() {
            Ok(code) => {
                server.state().fail = code;
                "ok".into()
            }
            Err(_) => format!("error: fail {arg:?}"),
        },
        "last" => {
            let state = server.state();
            let last = state.last.clone().unwrap_or_default();
            let json = serde_json::json!({
                "name": last.name, "namespace": last.namespace,
                "metadata": last.scaler_metadata, "streams": state.streams,
            });
            format!("last {json}")
        }
        _ => format!("error: unknown command {verb:?}"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let port = match args.iter().position(|a| a == "--port") {
        None => 0,
        Some(i) => match args.get(i + 1).and_then(|p| p.parse::<u16>().ok()) {
            Some(p) => p,
            None => {
                eprintln!("--port needs a port number");
                return ExitCode::from(2);
            }
        },
    };
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::from(1);
        }
    };
    let address = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let server = Server {
        state: Arc::new(Mutex::new(State {
            target: 5.0,
            ..State::default()
        })),
        active: watch::Sender::new(false),
    };
    let control = server.clone();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let serve = tonic::transport::Server::builder()
        .add_service(ExternalScalerServer::new(server))
        .serve_with_incoming(incoming);
    println!("listening {address}");
    let commands = async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            println!("{}", command(&control, &line));
        }
    };
    tokio::select! {
        result = serve => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("server failed: {e}");
                ExitCode::from(1)
            }
        },
        () = commands => ExitCode::SUCCESS,
    }
}
