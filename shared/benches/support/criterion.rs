//! What the benches share: finding criterion's results for this run.

use std::path::PathBuf;

/// `target/criterion`, found from the bench binary (`target/<profile>/deps/<bench>-*`).
pub(crate) fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(target).join("criterion"));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// The mean, in nanoseconds, criterion estimated for `group`/`case` in this run.
pub(crate) fn mean_ns(dir: &std::path::Path, group: &str, case: &str) -> Option<f64> {
    let path = dir.join(group).join(case).join("new/estimates.json");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    value["mean"]["point_estimate"].as_f64()
}
