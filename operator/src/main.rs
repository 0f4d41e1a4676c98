//! The `ebb` binary: one executable, several subcommands.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ebb_operator::adapter::certs::files::CertFiles;
use ebb_operator::adapter::certs::{CertMode, CertOptions};
use ebb_operator::adapter::chain_record;
use ebb_operator::adapter::delegate::{DelegateAuth, DelegateOptions, ServiceRef};
use ebb_operator::cli::migrate::{MigrateOptions, migrate};
use ebb_operator::cli::operator_args::OperatorArgs;
use ebb_operator::cli::simulate::args::{SimulateArgs, SimulateOutput};
use ebb_operator::cli::validate::{CheckOptions, InputDocument, check_documents_with, read_documents};
use ebb_operator::infra::logging;

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
    /// Rewrite KEDA's objects (keda.sh ScaledObjects, ScaledJobs, TriggerAuthentications,
    /// ClusterTriggerAuthentications) as ebb's.
    ///
    /// Writes every document as YAML (other kinds unchanged; a `kind: List` as its items) to
    /// stdout or `-o FILE`; prints each change, each field ebb does not support and each problem
    /// ebb's checks find in the result on stderr. Exits 0 when everything converted and checks
    /// out, 2 when something is not supported by ebb, 3 when the result fails ebb's checks,
    /// 1 when an input cannot be read (see docs/migration.md).
    Migrate {
        /// YAML files with one or more documents; `-` reads stdin.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write the result to this file instead of stdout.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Add `scaledobject.ebb.dev/transfer-hpa-ownership: "true"` to every ScaledObject, so
        /// that it adopts the HPA KEDA created (the cutover).
        #[arg(long)]
        transfer_hpa_ownership: bool,
    },
    /// Run the operator: reconcile ScaledObjects, own 0↔1 and the HPAs (leader-elected).
    Operator(Box<OperatorArgs>),
    /// The external-metrics APIService when adapters are chained (the chart's uninstall hook).
    #[command(subcommand)]
    Apiservice(ApiserviceCommand),
    /// Describe the trigger types and their parameters, from the scalers' declarations.
    ///
    /// Without TYPE lists the types; with it prints each parameter (type, default, sources,
    /// bounds, description) and the rules. `--write-docs DIR` writes the reference pages.
    Explain(ebb_operator::cli::explain::ExplainArgs),
    /// Why a ScaledObject has the replicas it has (or every ScaledObject of a namespace).
    ///
    /// Reads the object, each trigger's value through the external metrics API, the target's
    /// /scale, the HPA and the object's Events from the cluster of the kubeconfig (or in-cluster).
    Status(ebb_operator::cli::status::StatusArgs),
    /// Print a completion script for SHELL, e.g. `ebb completions bash > /etc/bash_completion.d/ebb`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Replay a series of source values through ebb's decisions and a model of the HPA: the
    /// replica timeline, its events, and optionally a plot (see docs/simulate.md).
    Simulate(Box<SimulateArgs>),
    /// Print the CRD manifests, or write them into a directory.
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        write: Option<PathBuf>,
    },
}

/// `ebb simulate`.
fn simulate(args: SimulateArgs) -> Result<ExitCode> {
    use ebb_operator::cli::simulate::{SimulateOptions, render_text, simulate, svg::render_svg};
    let (docs, unreadable) = read_inputs(&args.files);
    if let Some(e) = unreadable.first() {
        anyhow::bail!("{e}");
    }
    let series = if args.input.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        text
    } else {
        std::fs::read_to_string(&args.input).with_context(|| format!("reading {}", args.input.display()))?
    };
    let options = SimulateOptions {
        sync_ms: args.hpa_sync_period,
        tolerance: args.hpa_tolerance,
        initial_replicas: args.initial_replicas,
        step_ms: args.step,
        partitions: args.partitions,
    };
    let report = simulate(&docs, args.name.as_deref(), &series, options)
        .with_context(|| format!("simulating {}", args.input.display()))?;
    let text = match args.output {
        SimulateOutput::Text => render_text(&report),
        SimulateOutput::Json => serde_json::to_string_pretty(&report)? + "\n",
    };
    if let Some(path) = &args.svg {
        std::fs::write(path, render_svg(&report)).with_context(|| format!("writing {}", path.display()))?;
    }
    if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e).context("writing the report");
    }
    Ok(ExitCode::SUCCESS)
}

/// `ebb apiservice ...`.
#[derive(Subcommand)]
enum ApiserviceCommand {
    /// Point the APIService back at the Service recorded before this release took it over, if it
    /// still points at this release's Service.
    Restore {
        /// The record ConfigMap, `namespace/name` (keys `service`, `caBundle`,
        /// `insecureSkipTLSVerify`).
        #[arg(long)]
        record: String,
        /// This release's adapter Service, `namespace/name`.
        #[arg(long)]
        own_service: String,
        /// The APIService.
        #[arg(long, default_value = "v1beta1.external.metrics.k8s.io")]
        apiservice: String,
    },
}

/// The chain to a delegate adapter, from the flags.
fn delegate_options(args: &OperatorArgs) -> Result<Option<DelegateOptions>> {
    let Some(service) = &args.metrics_adapter_delegate else {
        return Ok(None);
    };
    let service =
        ServiceRef::parse(service).map_err(|e| anyhow::anyhow!("--metrics-adapter-delegate: {e}"))?;
    if args.metrics_adapter_delegate_ca.is_none() && !args.metrics_adapter_delegate_insecure {
        anyhow::bail!(
            "--metrics-adapter-delegate needs --metrics-adapter-delegate-ca (or \
             --metrics-adapter-delegate-insecure when its APIService skips verification)"
        );
    }
    let auth = match (
        &args.metrics_adapter_delegate_client_cert,
        &args.metrics_adapter_delegate_client_key,
    ) {
        (Some(cert), Some(key)) => DelegateAuth::FrontProxy {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => DelegateAuth::ServiceAccount {
            token_file: args.metrics_forward_token_file.clone(),
        },
    };
    Ok(Some(DelegateOptions {
        service,
        ca: args.metrics_adapter_delegate_ca.clone(),
        insecure: args.metrics_adapter_delegate_insecure,
        auth,
    }))
}

/// `ebb apiservice restore`.
fn apiservice(command: ApiserviceCommand) -> Result<()> {
    let ApiserviceCommand::Restore {
        record,
        own_service,
        apiservice,
    } = command;
    let pair = |flag: &str, text: &str| -> Result<(String, String)> {
        text.split_once('/')
            .filter(|(a, b)| !a.is_empty() && !b.is_empty())
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .with_context(|| format!("{flag}: expected namespace/name, got {text:?}"))
    };
    let record = pair("--record", &record)?;
    let own = pair("--own-service", &own_service)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let done = runtime.block_on(async {
        let client = kube::Client::try_default().await?;
        anyhow::Ok(chain_record::restore(client, &record, &apiservice, &own).await?)
    })?;
    println!("{done}");
    Ok(())
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
        Command::Migrate {
            files,
            output,
            transfer_hpa_ownership,
        } => migrate_files(&files, output.as_deref(), transfer_hpa_ownership),
        Command::Crds { write } => crds(write).map(|()| ExitCode::SUCCESS),
        Command::Simulate(args) => simulate(*args),
        Command::Apiservice(command) => apiservice(command).map(|()| ExitCode::SUCCESS),
        Command::Explain(args) => explain(&args).map(|()| ExitCode::SUCCESS),
        Command::Status(args) => status(&args).map(|()| ExitCode::SUCCESS),
        Command::Completions { shell } => {
            completions(shell, &mut std::io::stdout().lock());
            Ok(ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Reads every file (`-` is stdin) into documents; an unreadable file or invalid YAML is noted
/// and the others are still read.
fn read_inputs(files: &[PathBuf]) -> (Vec<InputDocument>, Vec<String>) {
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
    (docs, unreadable)
}

fn validate(files: &[PathBuf], show_warnings: bool, strict: bool) -> Result<ExitCode> {
    let (docs, unreadable) = read_inputs(files);
    let report = check_documents_with(
        &docs,
        CheckOptions {
            strict,
            ..CheckOptions::default()
        },
    );
    // A closed stdout (`ebb validate … | head`) is the reader's choice, not an error.
    if let Err(e) = writeln!(
        std::io::stdout().lock(),
        "{}",
        serde_json::to_string_pretty(&report)?
    ) && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e).context("writing the report");
    }
    if show_warnings {
        for line in report.warning_lines() {
            eprintln!("{line}");
        }
    }
    for line in report.problem_lines().iter().chain(&unreadable) {
        eprintln!("{line}");
    }
    // Checking nothing is not a success: a `kind: List` once went by unread this way.
    let nothing = report.objects.is_empty();
    if nothing {
        eprintln!(
            "no ScaledObject, ScaledJob, TriggerAuthentication, ClusterTriggerAuthentication (ebb.dev or keda.sh) or annotated Deployment/StatefulSet in the input: nothing was checked"
        );
    }
    Ok(if report.is_valid() && unreadable.is_empty() && !nothing {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `ebb migrate`'s exit codes (docs/migration.md).
const MIGRATE_UNSUPPORTED: u8 = 2;
const MIGRATE_INVALID: u8 = 3;

fn migrate_files(files: &[PathBuf], output: Option<&std::path::Path>, transfer: bool) -> Result<ExitCode> {
    let (docs, unreadable) = read_inputs(files);
    let migration = migrate(
        &docs,
        MigrateOptions {
            transfer_hpa_ownership: transfer,
        },
    );
    let mut yaml = String::new();
    for doc in &migration.documents {
        yaml.push_str("---\n");
        yaml.push_str(&serde_saphyr::to_string(&doc.value).context("writing YAML")?);
    }
    match output {
        Some(path) => std::fs::write(path, &yaml).with_context(|| format!("writing {}", path.display()))?,
        None => {
            if let Err(e) = std::io::stdout().lock().write_all(yaml.as_bytes())
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(e).context("writing the result");
            }
        }
    }
    for finding in &migration.findings {
        eprintln!("{finding}");
    }
    // The result goes through every check `ebb validate` makes.
    let report = check_documents_with(&migration.documents, CheckOptions::default());
    for line in report.problem_lines() {
        eprintln!("invalid after migration: {line}");
    }
    for line in &unreadable {
        eprintln!("{line}");
    }
    if migration.converted == 0 {
        eprintln!(
            "no keda.sh ScaledObject, ScaledJob, TriggerAuthentication or ClusterTriggerAuthentication in the input: nothing converted"
        );
    }
    Ok(if !unreadable.is_empty() {
        ExitCode::from(1)
    } else if migration.has_unsupported() {
        ExitCode::from(MIGRATE_UNSUPPORTED)
    } else if !report.is_valid() {
        ExitCode::from(MIGRATE_INVALID)
    } else {
        ExitCode::SUCCESS
    })
}

/// `ebb explain`: prints the explanation, or writes the reference pages.
fn explain(args: &ebb_operator::cli::explain::ExplainArgs) -> Result<()> {
    use ebb_operator::cli::{explain, scaler_docs};
    if let Some(dir) = &args.write_docs {
        for path in scaler_docs::write_pages(dir)? {
            eprintln!("wrote {}", path.display());
        }
        return Ok(());
    }
    let text = explain::explain(args.trigger_type.as_deref(), args.output)?;
    if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e).context("writing the explanation");
    }
    Ok(())
}

/// `ebb status`: prints the report.
fn status(args: &ebb_operator::cli::status::StatusArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let text = runtime.block_on(ebb_operator::cli::status_io::run(args))?;
    if let Err(e) = std::io::stdout().lock().write_all(text.as_bytes())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(e).context("writing the report");
    }
    Ok(())
}

/// `ebb completions SHELL`: the completion script of every subcommand and flag.
fn completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "ebb", out);
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

/// How the adapter's certificates are managed, from the flags.
fn cert_mode(args: &OperatorArgs, own_namespace: &str) -> CertMode {
    if let Some(name) = &args.metrics_adapter_cert_secret {
        return CertMode::Secret {
            namespace: own_namespace.to_string(),
            name: name.clone(),
            apiservice: args.metrics_adapter_apiservice.clone(),
        };
    }
    match (&args.metrics_adapter_cert, &args.metrics_adapter_key) {
        (Some(cert), Some(key)) => CertMode::Files(CertFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: args.metrics_adapter_ca.clone(),
        }),
        _ => CertMode::SelfSigned,
    }
}

fn operator(args: OperatorArgs) -> Result<()> {
    logging::init(args.log_level.as_deref(), args.log_format)?;
    // Flags are names, addresses and paths: none is a secret.
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = option_env!("EBB_GIT_COMMIT").unwrap_or("unknown"),
        flags = ?args,
        "ebb operator starting"
    );
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "ebb".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let pod_namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .or_else(|| std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE).ok())
        .map(|ns| ns.trim().to_string())
        .filter(|ns| !ns.is_empty());
    let (own_namespace, lease_namespace) = namespaces(
        args.lease_namespace.clone(),
        pod_namespace,
        args.namespace.as_deref(),
    );
    if lease_namespace != own_namespace {
        tracing::warn!(
            lease_namespace = %lease_namespace,
            operator_namespace = %own_namespace,
            "the leader Lease is outside the operator's namespace: whoever may edit it decides who leads"
        );
    }
    let mode = cert_mode(&args, &own_namespace);
    if args.metrics_adapter_apiservice.is_some() && !matches!(mode, CertMode::Secret { .. }) {
        tracing::warn!(
            "--metrics-adapter-apiservice only applies with --metrics-adapter-cert-secret; ignored"
        );
    }
    let refresh = Duration::from_secs(args.metrics_adapter_cert_refresh_seconds.unwrap_or(match mode {
        CertMode::Files(_) => 10,
        _ => 30,
    }));
    let delegate = delegate_options(&args)?;
    let scope = args.namespace.clone();
    let options = ebb_operator::run::OperatorOptions {
        namespace: args.namespace,
        qps: args.kube_api_qps,
        burst: args.kube_api_burst,
        health_addr: args.health_addr,
        lease_name: args.lease_name,
        lease_namespace,
        own_namespace,
        owner_deployment: args.owner_deployment,
        identity,
        lease_duration: args.lease_duration,
        concurrency: args.concurrency,
        http_timeout: std::time::Duration::from_millis(args.http_timeout_ms),
        workload_annotations: args.workload_annotations,
        watch_secrets: args.watch_secrets,
        per_object_metrics: args.per_object_metrics,
        metrics_adapter: args
            .metrics_adapter_addr
            .map(|listen| ebb_operator::run::AdapterOptions {
                listen,
                certs: CertOptions {
                    mode,
                    dns_names: args.metrics_adapter_dns_names,
                    refresh: refresh.max(Duration::from_secs(1)),
                },
                forward_token_file: args.metrics_forward_token_file,
                scope,
                delegate,
            }),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(ebb_operator::run::run(options, shutdown_signal()))?;
    Ok(())
}

/// Where a pod's service-account namespace is mounted.
const SERVICE_ACCOUNT_NAMESPACE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The operator's namespace and the Lease's, from `--lease-namespace`, the pod's namespace (when
/// in a pod) and `--namespace`. In a pod both default to the pod's namespace, whatever the watched
/// namespace (a tenant's namespace must not decide who leads); outside a pod (development, the
/// host-process tests) to the watched namespace, else `default`.
fn namespaces(lease_flag: Option<String>, pod: Option<String>, watched: Option<&str>) -> (String, String) {
    let own = pod
        .or_else(|| lease_flag.clone())
        .or_else(|| watched.map(str::to_string))
        .unwrap_or_else(|| "default".to_string());
    let lease = lease_flag.unwrap_or_else(|| own.clone());
    (own, lease)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_scripts_name_every_subcommand() {
        use clap::ValueEnum;
        for shell in clap_complete::Shell::value_variants() {
            let mut out = Vec::new();
            completions(*shell, &mut out);
            let script = String::from_utf8(out).unwrap();
            for sub in [
                "validate",
                "migrate",
                "operator",
                "explain",
                "completions",
                "crds",
                "simulate",
                "status",
            ] {
                assert!(script.contains(sub), "{shell}: {sub} missing");
            }
        }
    }

    #[test]
    fn in_a_pod_the_lease_stays_in_the_operators_namespace() {
        let ns = |flag: Option<&str>, pod: Option<&str>, watched: Option<&str>| {
            namespaces(flag.map(str::to_string), pod.map(str::to_string), watched)
        };
        let both = |own: &str, lease: &str| (own.to_string(), lease.to_string());
        // watchNamespace mode in a pod: the Lease does not follow the tenant's namespace.
        assert_eq!(
            ns(None, Some("ebb-system"), Some("team-a")),
            both("ebb-system", "ebb-system")
        );
        assert_eq!(
            ns(None, Some("ebb-system"), None),
            both("ebb-system", "ebb-system")
        );
        // An explicit flag wins (main warns when it leaves the operator's namespace).
        assert_eq!(
            ns(Some("ebb-system"), Some("ebb-system"), Some("team-a")),
            both("ebb-system", "ebb-system")
        );
        assert_eq!(
            ns(Some("elsewhere"), Some("ebb-system"), None),
            both("ebb-system", "elsewhere")
        );
        // Outside a pod: the flag, else the watched namespace, else `default`.
        assert_eq!(ns(Some("ops"), None, Some("team-a")), both("ops", "ops"));
        assert_eq!(ns(None, None, Some("team-a")), both("team-a", "team-a"));
        assert_eq!(ns(None, None, None), both("default", "default"));
    }
}
