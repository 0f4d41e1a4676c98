//! The fuzz harnesses of ebb: one `run(&[u8])` per `cargo fuzz` target under `fuzz/`, calling the
//! code under test and asserting what must hold for any input (no panic, and each target's own
//! invariants, such as parse → render → parse round-trips). The `fuzz_targets/*.rs` binaries are
//! one-liners over these functions; this crate's tests replay every committed corpus file
//! (`fuzz/seeds/<target>/`, `fuzz/corpus/<target>/`) and regression
//! (`fuzz/regressions/<target>/`) on stable Rust.

pub mod kafka_response;
pub mod metrics_api_value;
pub mod route;
pub mod selector;
pub mod validate;

use std::path::{Path, PathBuf};

/// A harness: runs one input, panicking when an invariant breaks.
pub type Harness = fn(&[u8]);

/// The targets, by name (as `fuzz_targets/<name>.rs`, `corpus/<name>/`), with their harnesses.
pub const TARGETS: [(&str, Harness); 5] = [
    ("validate", validate::run),
    ("kafka_response", kafka_response::run),
    ("selector", selector::run),
    ("route", route::run),
    ("metrics_api_value", metrics_api_value::run),
];

/// The `fuzz/` folder (the cargo-fuzz package), where the corpora live.
pub fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("fuzz"), Path::to_path_buf)
}

/// The committed inputs of `target`: its seeds, its corpus and its regressions, sorted by path.
pub fn committed_inputs(target: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for folder in ["seeds", "corpus", "regressions"] {
        let dir = fuzz_dir().join(folder).join(target);
        if !dir.is_dir() {
            continue;
        }
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}
