//! The `ebb` binary: one executable, several subcommands.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ebb_operator::cli::validate::{CheckOptions, check_documents_with, read_documents};

/// ebb: an event-driven autoscaler for Kubernetes.
#[derive(Parser)]
#[command(name = "ebb", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check ScaledObject and TriggerAuthentication manifests (ebb.dev or keda.sh) offline.
    ///
    /// Prints the normalised objects as JSON on stdout and one line per problem on stderr.
    /// Exits 0 when every object is valid, 1 otherwise (including unreadable files or invalid YAML).
    Validate {
        /// YAML files with one or more documents; `-` reads stdin.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print warnings on stderr too.
        #[arg(long)]
        warnings: bool,
        /// Treat references to objects missing from the input (Secrets, ConfigMaps,
        /// TriggerAuthentications, the scale target) as errors instead of warnings.
        #[arg(long)]
        strict: bool,
    },
    /// Run the operator: reconcile ScaledObjects, own 0↔1 and the HPAs (leader-elected).
    Operator(Box<OperatorArgs>),
    /// Print the CRD manifests, or write them into a directory.
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        write: Option<PathBuf>,
    },
}

/// Flags of `ebb operator`.
#[derive(clap::Args)]
struct OperatorArgs {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "EBB_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Client-side limit of API requests per second (0: unlimited).
    #[arg(long, default_value_t = 50.0)]
    kube_api_qps: f32,
    /// Client-side burst of API requests.
    #[arg(long, default_value_t = 100)]
    kube_api_burst: u32,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, default_value = "0.0.0.0:8080")]
    health_addr: std::net::SocketAddr,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "ebb-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: the watched namespace, else POD_NAMESPACE, else `default`).
    #[arg(long)]
    lease_namespace: Option<String>,
    /// Identity in the Lease (default: POD_NAME, else hostname-pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Lease duration in seconds: a standby takes over within this time when the leader dies.
    #[arg(long, default_value_t = 15)]
    lease_duration: u64,
    /// Reconciles running at once.
    #[arg(long, default_value_t = 16)]
    concurrency: u16,
    /// Timeout of one HTTP poll of an event source, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    http_timeout_ms: u64,
    /// Serve the external.metrics.k8s.io adapter (HTTPS) on this address, e.g. 0.0.0.0:6443.
    #[arg(long)]
    metrics_adapter_addr: Option<std::net::SocketAddr>,
    /// Serving certificate of the adapter (PEM); a self-signed one is generated when absent.
    #[arg(long, requires = "metrics_adapter_key")]
    metrics_adapter_cert: Option<std::path::PathBuf>,
    /// Private key of the adapter's serving certificate (PEM).
    #[arg(long, requires = "metrics_adapter_cert")]
    metrics_adapter_key: Option<std::path::PathBuf>,
    /// DNS names for the self-signed certificate (comma-separated).
    #[arg(long, value_delimiter = ',')]
    metrics_adapter_dns_names: Vec<String>,
    /// URL at which other replicas reach this adapter (default: `https://$POD_IP:PORT`, PORT being
    /// the adapter's, or `https://127.0.0.1:PORT` outside a pod). Standbys forward metric requests
    /// to the leader's.
    #[arg(long)]
    metrics_adapter_advertise_url: Option<String>,
    /// Bearer token a standby presents to the leader's adapter.
    #[arg(long, default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token")]
    metrics_forward_token_file: std::path::PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Operator(args) => operator(*args).map(|()| ExitCode::SUCCESS),
        Command::Validate {
            files,
            warnings,
            strict,
        } => validate(&files, warnings, strict),
        Command::Crds { write } => crds(write).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn validate(files: &[PathBuf], show_warnings: bool, strict: bool) -> Result<ExitCode> {
    let mut docs = Vec::new();
    let mut unreadable = Vec::new();
    for file in files {
        let name = if file.as_os_str() == "-" {
            "-".to_string()
        } else {
            file.display().to_string()
        };
        let text = if file.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map(|_| text)
                .context("reading stdin")
        } else {
            std::fs::read_to_string(file).with_context(|| format!("reading {name}"))
        };
        // One bad file does not stop the others from being checked.
        match text.and_then(|t| Ok(read_documents(&name, &t)?)) {
            Ok(found) => docs.extend(found),
            Err(e) => unreadable.push(format!("{e:#}")),
        }
    }
    let report = check_documents_with(&docs, CheckOptions { strict });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if show_warnings {
        for line in report.warning_lines() {
            eprintln!("{line}");
        }
    }
    for line in report.problem_lines().iter().chain(&unreadable) {
        eprintln!("{line}");
    }
    Ok(if report.is_valid() && unreadable.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn crds(write: Option<PathBuf>) -> Result<()> {
    use ebb_crds::generate;
    match write {
        None => print!("{}", generate::all_yaml()?),
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for crd in generate::all_crds() {
                let path = dir.join(generate::file_name(&crd));
                std::fs::write(&path, generate::to_yaml(&crd)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}

fn operator(args: OperatorArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .init();
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "ebb".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let lease_namespace = args
        .lease_namespace
        .or_else(|| args.namespace.clone())
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".to_string());
    let options = ebb_operator::run::OperatorOptions {
        namespace: args.namespace,
        qps: args.kube_api_qps,
        burst: args.kube_api_burst,
        health_addr: args.health_addr,
        lease_name: args.lease_name,
        lease_namespace,
        identity,
        lease_duration: args.lease_duration,
        concurrency: args.concurrency,
        http_timeout: std::time::Duration::from_millis(args.http_timeout_ms),
        metrics_adapter: args.metrics_adapter_addr.map(|listen| {
            let host = std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".to_string());
            ebb_operator::run::AdapterOptions {
                listen,
                cert_and_key: args.metrics_adapter_cert.zip(args.metrics_adapter_key),
                dns_names: args.metrics_adapter_dns_names,
                advertise_url: args
                    .metrics_adapter_advertise_url
                    .unwrap_or_else(|| format!("https://{host}:{}", listen.port())),
                forward_token_file: args.metrics_forward_token_file,
            }
        }),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(ebb_operator::run::run(options, shutdown_signal()))?;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}
