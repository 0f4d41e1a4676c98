//! The `ebb` binary: one executable, several subcommands.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use ebb_operator::bundle_check::{check_documents, read_documents};

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
    },
    /// Print the CRD manifests, or write them into a directory.
    Crds {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        write: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { files, warnings } => validate(&files, warnings),
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

fn validate(files: &[PathBuf], show_warnings: bool) -> Result<ExitCode> {
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
    let report = check_documents(&docs);
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
