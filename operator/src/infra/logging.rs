//! The operator's log: the filter (`--log-level`, else `RUST_LOG`, else [`DEFAULT_FILTER`]), the
//! format (text, coloured only on a terminal, or one JSON object per line with the spans'
//! fields), and the caps on third-party crates that print what they send or receive.
//!
//! Whatever the filter says, the crates in [`CAPS`] log at most at the level given there: at
//! trace, AMQP's client prints the frames it sends (the login's `PLAIN` response holds the
//! password), HTTP and TLS clients print headers (`Authorization`) and bodies (a Secret's data).
//! A capped crate's target and every target below it (`lapin::frames`) are capped.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The filter when neither `--log-level` nor `RUST_LOG` says one.
pub const DEFAULT_FILTER: &str = "info,kube=warn";

/// Crates (target prefixes) whose lines are capped at a level, whatever the filter says: they
/// print credentials or Secret bodies at more verbose levels.
pub const CAPS: &[(&str, LevelFilter)] = &[
    ("lapin", LevelFilter::INFO),
    ("amq_protocol", LevelFilter::INFO),
    ("async_nats", LevelFilter::INFO),
    ("hyper", LevelFilter::INFO),
    ("hyper_util", LevelFilter::INFO),
    ("h2", LevelFilter::INFO),
    ("reqwest", LevelFilter::INFO),
    ("rustls", LevelFilter::INFO),
    ("tokio_rustls", LevelFilter::INFO),
    ("tower", LevelFilter::INFO),
    ("tower_http", LevelFilter::INFO),
    ("aws", LevelFilter::INFO),
    ("kube_client", LevelFilter::DEBUG),
];

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, the enclosing spans' fields under `spans`.
    Json,
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The filter does not parse.
    #[error("invalid log level {directives:?}")]
    Filter {
        /// The directives as given.
        directives: String,
        /// Why they do not parse.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// A subscriber was installed already.
    #[error("cannot install the log subscriber")]
    Install(#[source] tracing_subscriber::util::TryInitError),
}

/// The filter directives: `flag` when set and not blank, else `rust_log` when so, else
/// [`DEFAULT_FILTER`].
pub fn directives(flag: Option<&str>, rust_log: Option<&str>) -> String {
    [flag, rust_log]
        .into_iter()
        .flatten()
        .find(|v| !v.trim().is_empty())
        .unwrap_or(DEFAULT_FILTER)
        .to_string()
}

/// [`CAPS`] as a filter: everything else passes.
pub fn caps() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(CAPS.iter().copied())
}

/// Installs the process's log subscriber writing to stderr.
pub fn init(flag: Option<&str>, format: LogFormat) -> Result<(), LoggingError> {
    let directives = directives(flag, std::env::var("RUST_LOG").ok().as_deref());
    let filter = EnvFilter::try_new(&directives).map_err(|source| LoggingError::Filter {
        directives: directives.clone(),
        source,
    })?;
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        // Colours only on a terminal: a container's log is a file.
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(filter).with_filter(caps()))
        .try_init()
        .map_err(LoggingError::Install)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn the_flag_wins_then_rust_log_then_the_default_and_blank_counts_as_unset() {
        assert_eq!(directives(Some("debug"), Some("trace")), "debug");
        assert_eq!(directives(Some("  "), Some("trace")), "trace");
        assert_eq!(directives(None, Some("")), DEFAULT_FILTER);
        assert_eq!(directives(None, None), DEFAULT_FILTER);
    }

    #[test]
    fn capped_crates_and_their_modules_stop_at_their_cap_and_others_pass() {
        let caps = caps();
        assert!(!caps.would_enable("lapin::frames", &Level::TRACE));
        assert!(!caps.would_enable("lapin", &Level::DEBUG));
        assert!(caps.would_enable("lapin", &Level::INFO));
        assert!(!caps.would_enable("h2::codec::framed_write", &Level::DEBUG));
        assert!(!caps.would_enable("aws_smithy_runtime::client", &Level::DEBUG));
        assert!(!caps.would_enable("kube_client::client", &Level::TRACE));
        assert!(caps.would_enable("kube_client::client", &Level::DEBUG));
        assert!(caps.would_enable("ebb_scalers::rabbitmq::clients", &Level::TRACE));
        assert!(caps.would_enable("ebb_operator::scale::scale_loop", &Level::TRACE));
    }
}
