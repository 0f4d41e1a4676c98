//! `ebb_build_info{version, commit} 1`: which build is running, for dashboards and alerts that
//! compare replicas or follow a rollout.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The crate version the binary was built from.
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binary was built from (`build.rs`: `EBB_GIT_COMMIT`, else
/// `git rev-parse HEAD`, else `unknown`).
pub const BUILD_COMMIT: &str = env!("EBB_GIT_COMMIT");

/// Registers `build_info` with its one series set to 1.
pub(super) fn register(registry: &mut Registry) {
    let info = Family::<[(&'static str, &'static str); 2], Gauge>::default();
    info.get_or_create(&[("version", BUILD_VERSION), ("commit", BUILD_COMMIT)])
        .set(1);
    registry.register(
        "build_info",
        "1, labelled with the version and git commit of the running build",
        info,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_is_one_series_with_version_and_commit() {
        let mut registry = Registry::with_prefix("ebb");
        register(&mut registry);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        let line = format!(r#"ebb_build_info{{version="{BUILD_VERSION}",commit="{BUILD_COMMIT}"}} 1"#);
        assert!(out.lines().any(|l| l == line), "{out}");
        assert!(!BUILD_COMMIT.is_empty());
    }
}
