//! Shared by the real-server tests: the test environment's variables and unique names.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The test environment's variables (`$EBB_TESTENV_FILE`, else `~/.cache/ebb-testenv/run/env`);
/// panics (fails the test) when it is not running.
pub fn testenv() -> BTreeMap<String, String> {
    let path = std::env::var_os("EBB_TESTENV_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
            home.join(".cache/ebb-testenv/run/env")
        });
    let Ok(text) = std::fs::read_to_string(&path) else {
        panic!(
            "test environment not running: {} is missing. Start it with `tests/env/testenv.sh up`",
            path.display()
        );
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// One variable of the environment; panics when it is missing.
pub fn var<'a>(env: &'a BTreeMap<String, String>, key: &str) -> &'a str {
    env.get(key)
        .unwrap_or_else(|| panic!("{key} is not in the test environment file; run `tests/env/testenv.sh up`"))
}

/// A name no other test (or run) uses: letters, digits and `_` only, valid for every broker.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
