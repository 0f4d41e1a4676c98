//! The flags of `ebb simulate` (parsed by clap in `main.rs`).

use std::path::PathBuf;

/// A duration flag that does not read as one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    /// A unit other than ms, s, m, h.
    #[error("unknown unit {0:?} (ms, s, m, h)")]
    Unit(String),
    /// Not a positive, finite number of that unit.
    #[error("{0:?} is not a positive duration")]
    NotPositive(String),
}

/// Flags of `ebb simulate`.
#[derive(clap::Args)]
pub struct SimulateArgs {
    /// YAML with the ScaledObject (and the TriggerAuthentications, Secrets it reads, if any).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// The ScaledObject's name, when the files hold several.
    #[arg(long)]
    pub name: Option<String>,
    /// The series: CSV (`time,<trigger>...`) or JSON (`[{"time": 0, "values": {...}}]`); `-`
    /// reads stdin.
    #[arg(long)]
    pub input: PathBuf,
    /// Also write a plot of values, targets and replicas to this SVG file.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// The HPA controller's sync period (`15s`, `500ms`, `1m`).
    #[arg(long, default_value = "15s", value_parser = duration_ms)]
    pub hpa_sync_period: i64,
    /// The HPA controller's tolerance.
    #[arg(long, default_value_t = 0.1)]
    pub hpa_tolerance: f64,
    /// The target's replicas at the start (default: minReplicaCount).
    #[arg(long)]
    pub initial_replicas: Option<i32>,
    /// The time step of the replay.
    #[arg(long, default_value = "1s", value_parser = duration_ms)]
    pub step: i64,
    /// The partition count of kafka triggers' topics (caps their replica count).
    #[arg(long)]
    pub partitions: Option<u64>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = SimulateOutput::Text)]
    pub output: SimulateOutput,
}

/// `ebb simulate -o`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SimulateOutput {
    /// A table of polls and syncs, then the events.
    Text,
    /// The whole report as JSON.
    Json,
}

/// A duration flag (`15s`, `500ms`, `2m`, or seconds) in milliseconds.
pub fn duration_ms(text: &str) -> Result<i64, DurationError> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let factor = match unit {
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return Err(DurationError::Unit(unit.to_string())),
    };
    match number.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n * factor < 1e15 => Ok((n * factor).round() as i64),
        _ => Err(DurationError::NotPositive(text.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(duration_ms("15s"), Ok(15_000));
        assert_eq!(duration_ms("500ms"), Ok(500));
        assert_eq!(duration_ms("2m"), Ok(120_000));
        assert_eq!(duration_ms("1.5"), Ok(1500));
        assert!(duration_ms("-1s").is_err() && duration_ms("3d").is_err() && duration_ms("s").is_err());
    }
}
