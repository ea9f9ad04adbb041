//! Where the Valkey 8.0.1 binaries are, for tests that run a real Valkey: `VALKEY_BIN_DIR`,
//! default `../shared/bin` (a relative path is taken from the crate's directory).
//!
//! A missing `valkey-server` fails the test in CI (`CI` set) and prints SKIPPED elsewhere, as the
//! lib tests of the command and config tables do (`src/test_servers.rs`).

use std::path::{Path, PathBuf};

pub const VALKEY_BIN_DIR_ENV: &str = "VALKEY_BIN_DIR";

pub fn bin_dir() -> PathBuf {
    let dir = std::env::var_os(VALKEY_BIN_DIR_ENV).unwrap_or_else(|| "../shared/bin".into());
    Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)
}

/// `valkey-server` (panics when it is missing: call [`available`] first).
pub fn server_binary() -> PathBuf {
    let path = bin_dir().join("valkey-server");
    assert!(
        path.is_file(),
        "{} not found: set {VALKEY_BIN_DIR_ENV}",
        path.display()
    );
    path
}

/// Whether the Valkey tests can run; `false` after printing SKIPPED (outside CI only: in CI a
/// missing binary panics).
pub fn available(test: &str) -> bool {
    let path = bin_dir().join("valkey-server");
    if path.is_file() {
        return true;
    }
    let why = format!(
        "{} not found: set {VALKEY_BIN_DIR_ENV} to the directory of the Valkey 8.0.1 binaries",
        path.display()
    );
    assert!(
        std::env::var_os("CI").is_none_or(|v| v.is_empty()),
        "{test}: {why} (CI runs every Valkey test)"
    );
    println!("SKIPPED: {test}: {why}");
    false
}
