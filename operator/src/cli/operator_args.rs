//! The flags of `ebb operator` (parsed by clap in `main.rs`, read by its wiring).

use crate::infra::leadership::LeaseTiming;
use crate::infra::logging::LogFormat;

/// Flags of `ebb operator`.
#[derive(clap::Args, Debug)]
pub struct OperatorArgs {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "EBB_WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Client-side limit of API requests per second (0: unlimited).
    #[arg(long, default_value_t = 50.0)]
    pub kube_api_qps: f32,
    /// Client-side burst of API requests.
    #[arg(long, default_value_t = 100)]
    pub kube_api_burst: u32,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub health_addr: std::net::SocketAddr,
    /// Export per-ScaledObject and per-trigger series on /metrics (docs/metrics.md; measured at
    /// 10,000 objects with one trigger each: 1.1 KiB of scrape and about 1.7 KiB of memory per
    /// object). `false` keeps only the fleet-wide ones.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub per_object_metrics: bool,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "ebb-operator")]
    pub lease_name: String,
    /// Namespace of the Lease (default: the operator's namespace, POD_NAMESPACE or the pod's
    /// service-account namespace; outside a pod the watched namespace, else `default`). It never
    /// follows --namespace in a pod: whoever may edit the Lease decides who leads.
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// Identity in the Lease (default: POD_NAME, else hostname-pid). With the metrics adapter it
    /// must be the pod's name: standbys find the leader as the Pod the Lease holder names.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration in seconds (3 to 3600): a standby takes over within this time when the
    /// leader dies. The leader renews every fifth of it and stops writing after two thirds of it
    /// without a successful renewal.
    #[arg(long, default_value = "15")]
    pub lease_duration: LeaseTiming,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u16,
    /// Timeout of one HTTP poll of an event source, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub http_timeout_ms: u64,
    /// Generate a ScaledObject for each Deployment or StatefulSet that declares its scaling in
    /// annotations (`autoscaling.ebb.dev/trigger` or `autoscaling.ebb.dev/scaled-object`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub workload_annotations: bool,
    /// Watch Secrets (metadata only) so that a changed Secret is re-read by the ScaledObjects and
    /// ScaledJobs whose authentications read it at once. Needs list and watch on Secrets; without
    /// it, credentials are re-read when a source refuses them and at least every 5 minutes.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub watch_secrets: bool,
    /// Serve the external.metrics.k8s.io adapter (HTTPS) on this address, e.g. 0.0.0.0:6443.
    #[arg(long)]
    pub metrics_adapter_addr: Option<std::net::SocketAddr>,
    /// Operator-managed certificates: the Secret, in the operator's namespace, holding the
    /// adapter's CA and serving certificate (`ca.crt`, `ca.key`, `tls.crt`, `tls.key`). Created
    /// with a new CA when absent, re-read every 30 s, renewed by the leader.
    #[arg(long, conflicts_with_all = ["metrics_adapter_cert", "metrics_adapter_key"])]
    pub metrics_adapter_cert_secret: Option<String>,
    /// With --metrics-adapter-cert-secret: the APIService (e.g.
    /// `v1beta1.external.metrics.k8s.io`) whose `spec.caBundle` the leader keeps equal to the CA.
    #[arg(long)]
    pub metrics_adapter_apiservice: Option<String>,
    /// Mounted certificates: the serving certificate chain (PEM), re-read when it changes.
    /// Without it and without --metrics-adapter-cert-secret every replica generates its own
    /// self-signed certificate (development only: standbys cannot verify the leader).
    #[arg(long, requires = "metrics_adapter_key")]
    pub metrics_adapter_cert: Option<std::path::PathBuf>,
    /// Private key of the adapter's serving certificate (PEM), re-read when it changes.
    #[arg(long, requires = "metrics_adapter_cert")]
    pub metrics_adapter_key: Option<std::path::PathBuf>,
    /// With --metrics-adapter-cert: the CA bundle (PEM) standbys verify the leader's certificate
    /// with, re-read when it changes (default: the system's roots).
    #[arg(long, requires = "metrics_adapter_cert")]
    pub metrics_adapter_ca: Option<std::path::PathBuf>,
    /// DNS names of the adapter's serving certificate (comma-separated), e.g.
    /// `ebb-metrics.ebb-system.svc`; standbys verify the leader's certificate for the first one.
    #[arg(long, value_delimiter = ',')]
    pub metrics_adapter_dns_names: Vec<String>,
    /// Seconds between re-reads of the certificate Secret (default 30) or files (default 10).
    #[arg(long, hide = true)]
    pub metrics_adapter_cert_refresh_seconds: Option<u64>,
    /// The Deployment (in the operator's namespace) that owns the certificate Secret and the
    /// leader Lease, so deleting it deletes them.
    #[arg(long)]
    pub owner_deployment: Option<String>,
    /// Log filter (tracing `EnvFilter` directives, e.g. `info,kube=warn,ebb_operator=debug`).
    /// Default (also when empty): `RUST_LOG` when set, else `info,kube=warn`.
    #[arg(long, env = "EBB_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format: `text` or `json` (one JSON object per line).
    #[arg(long, env = "EBB_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Service-account token naming the ServiceAccount the operator runs as (its `sub` claim).
    /// Standbys forward metric requests to the leader's Pod IP (the Lease holder's Pod, at this
    /// replica's --metrics-adapter-addr port) with short-lived tokens of that ServiceAccount for
    /// the audience `ebb-leader-forward`, and the leader accepts forwarded requests only from it.
    #[arg(long, default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token")]
    pub metrics_forward_token_file: std::path::PathBuf,
    /// Chain to another external-metrics adapter: metric requests ebb does not own (another
    /// namespace than --namespace, a ScaledObject or metric ebb does not have, a selector naming
    /// no ScaledObject) go to this Service, `namespace/name[:port]` (port 443 by default), reached
    /// as the aggregator reaches it (cluster IP, certificate checked for `<name>.<namespace>.svc`).
    #[arg(long)]
    pub metrics_adapter_delegate: Option<String>,
    /// The CA bundle (PEM) the delegate's serving certificate chains to (its APIService's
    /// caBundle).
    #[arg(long, requires = "metrics_adapter_delegate")]
    pub metrics_adapter_delegate_ca: Option<std::path::PathBuf>,
    /// Do not verify the delegate's serving certificate (only when its APIService said
    /// insecureSkipTLSVerify).
    #[arg(long, requires = "metrics_adapter_delegate")]
    pub metrics_adapter_delegate_insecure: bool,
    /// A client certificate (PEM) the delegate trusts as the front proxy (signed by the cluster's
    /// requestheader CA, CN in requestheader-allowed-names): the caller's identity is then sent
    /// in front-proxy headers. Without it ebb asks with its ServiceAccount token, and the
    /// delegate sees ebb's ServiceAccount.
    #[arg(long, requires_all = ["metrics_adapter_delegate", "metrics_adapter_delegate_client_key"])]
    pub metrics_adapter_delegate_client_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --metrics-adapter-delegate-client-cert.
    #[arg(long, requires = "metrics_adapter_delegate_client_cert")]
    pub metrics_adapter_delegate_client_key: Option<std::path::PathBuf>,
}
