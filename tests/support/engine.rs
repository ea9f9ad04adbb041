//! The one engine selection of the real-server suites: `SESSIONSTORE_TEST_ENGINE=redis|valkey`
//! (default `redis`). Redis runs Debian's binaries from `PATH`; Valkey runs `valkey-server`,
//! `valkey-cli` (and Sentinel) from `VALKEY_BIN_DIR` (default `<crate>/../shared/bin`:
//! `super::valkey::bin_dir`).
//!
//! The stores under test declare the same engine (`spec.engine`, through `declare` and
//! `declare_json`), so the product renders exactly what a pod of that engine would run: the
//! probe scripts name `valkey-cli`, `startup.sh` execs `valkey-server`. Those scripts find the
//! binaries by name, so every process the tests start gets `path()` (the engine's directory
//! first). Every server and script command goes through `server_command[_for]`,
//! `sentinel_command`, `cli_command` or `script_command`; nothing else names a binary. A test that
//! starts a store of its own engine (a Valkey-only proof in a Redis run) uses the `_for` forms.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sessionstore_operator::crd::{Engine, SessionStore};

pub use super::valkey::VALKEY_BIN_DIR_ENV;

/// Environment variable selecting the engine.
pub const ENGINE_ENV: &str = "SESSIONSTORE_TEST_ENGINE";

/// The engine this test run uses (panics on a value that is neither `redis` nor `valkey`).
pub fn engine() -> Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    *ENGINE.get_or_init(|| match std::env::var(ENGINE_ENV).as_deref() {
        Err(_) | Ok("") | Ok("redis") => Engine::Redis,
        Ok("valkey") => Engine::Valkey,
        Ok(other) => panic!("{ENGINE_ENV}={other:?}: expected redis or valkey"),
    })
}

pub fn is_valkey() -> bool {
    engine() == Engine::Valkey
}

/// The engine's name as `spec.engine` and `status.health.engine` write it.
pub fn name() -> &'static str {
    engine().as_str()
}

/// Where `engine`'s binaries are (`None` for Redis: Debian's, on `PATH`).
pub fn bin_dir_for(engine: Engine) -> Option<PathBuf> {
    (engine == Engine::Valkey).then(super::valkey::bin_dir)
}

/// Where the test engine's binaries are.
pub fn bin_dir() -> Option<PathBuf> {
    bin_dir_for(engine())
}

/// `PATH` with `engine`'s directory first: scripts the product renders call the engine's
/// binaries by name, as in the engine's image.
pub fn path_for(engine: Engine) -> OsString {
    let current = std::env::var_os("PATH").unwrap_or_default();
    match bin_dir_for(engine) {
        None => current,
        Some(dir) => {
            let mut dirs = vec![dir];
            dirs.extend(std::env::split_paths(&current));
            std::env::join_paths(dirs).expect("PATH entries hold no separator")
        }
    }
}

/// `path_for` the test engine.
pub fn path() -> OsString {
    path_for(engine())
}

fn program(engine: Engine, name: &str) -> PathBuf {
    match bin_dir_for(engine) {
        None => PathBuf::from(name),
        Some(dir) => {
            let path = dir.join(name);
            assert!(
                is_executable(&path),
                "{} is not an executable file: set {VALKEY_BIN_DIR_ENV} to the directory of the \
                 Valkey 8 binaries (valkey-server, valkey-cli)",
                path.display()
            );
            path
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `engine`'s server binary (`redis-server` on `PATH`, or `$VALKEY_BIN_DIR/valkey-server`).
pub fn server_program_for(engine: Engine) -> PathBuf {
    program(engine, engine.server_binary())
}

/// The test engine's server binary.
pub fn server_program() -> PathBuf {
    server_program_for(engine())
}

/// The command-line client (`redis-cli`, or `$VALKEY_BIN_DIR/valkey-cli`).
pub fn cli_program() -> PathBuf {
    program(engine(), engine().cli_binary())
}

/// `server_program_for(engine)` with `path_for(engine)`.
pub fn server_command_for(engine: Engine) -> Command {
    let mut command = Command::new(server_program_for(engine));
    command.env("PATH", path_for(engine));
    command
}

/// The test engine's server with `path()`.
pub fn server_command() -> Command {
    server_command_for(engine())
}

/// The client with `path()`.
pub fn cli_command() -> Command {
    let mut command = Command::new(cli_program());
    command.env("PATH", path());
    command
}

/// A Sentinel reading `conf`. Valkey's images make `valkey-sentinel` a link to `valkey-server`;
/// where the directory has no runnable link (a copy that lost it), `valkey-server CONF
/// --sentinel` is the same program in the same mode.
pub fn sentinel_command(conf: &Path) -> Command {
    let mut command = match bin_dir() {
        None => Command::new(engine().sentinel_binary()),
        Some(dir) if is_executable(&dir.join(engine().sentinel_binary())) => {
            Command::new(dir.join(engine().sentinel_binary()))
        }
        Some(_) => {
            let mut server = Command::new(server_program());
            server.arg(conf).arg("--sentinel");
            server.env("PATH", path());
            return server;
        }
    };
    command.arg(conf).env("PATH", path());
    command
}

/// A POSIX shell for the product's scripts (`startup.sh`, exec probes), with `path()`.
pub fn script_command() -> Command {
    let mut command = Command::new("sh");
    command.env("PATH", path());
    command
}

/// Fails (never skips) when the engine's server, Sentinel or client is missing: CI installs
/// Redis, and the Valkey pass of `scripts/test.sh` runs only when the Valkey binaries exist.
pub fn require_binaries() {
    for bin in [
        engine().server_binary(),
        engine().cli_binary(),
        engine().sentinel_binary(),
    ] {
        let found = match bin_dir() {
            // The Sentinel may be `valkey-server --sentinel` (see `sentinel_command`).
            Some(dir) => is_executable(&dir.join(bin)) || bin == engine().sentinel_binary(),
            None => Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {bin}"))
                .stdout(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success()),
        };
        assert!(
            found,
            "{bin} is required for the real-server tests ({}): Redis from Debian (apt-get install \
             redis-server redis-sentinel), Valkey from {VALKEY_BIN_DIR_ENV}",
            name()
        );
    }
    if bin_dir().is_some() {
        server_program();
    }
}

/// Makes a parsed manifest that names no engine declare the test engine (`spec.engine` parses to
/// `redis` whether or not the manifest names it, so this keeps only an explicit `valkey`; a test
/// that pins `engine: redis` parses through `super::store_from_yaml`, which leaves it).
pub fn declare(store: &mut SessionStore) {
    if store.spec.engine == Engine::Redis {
        store.spec.engine = engine();
    }
}

/// `declare` on a manifest's `spec` as JSON (the mocked API server's stored object).
pub fn declare_json(spec: &mut serde_json::Value) {
    if is_valkey() && spec.get("engine").is_none() {
        spec["engine"] = serde_json::json!(name());
    }
}

/// `engine`'s own version from a server's `INFO server` text: `valkey_version` on Valkey (whose
/// `redis_version` is the Redis version it is compatible with), `redis_version` on Redis.
pub fn version_in_info(engine: Engine, info: &str) -> Option<String> {
    let field = |key: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}:")))
            .map(|v| v.trim().to_string())
    };
    match engine {
        Engine::Redis => field("redis_version"),
        Engine::Valkey => field("valkey_version"),
    }
}
