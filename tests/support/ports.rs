//! The one port allocator of every test helper that starts a Redis or a Sentinel (or needs a port
//! where nothing listens): a port outside the kernel's ephemeral range, reserved across processes
//! for as long as its `PortLease` lives.
//!
//! Why not "bind 127.0.0.1:0, read the port, close it": that port is free only at that instant.
//! nextest runs every test in its own process, and until redis-server or redis-sentinel binds the
//! port (seconds later for an HA cluster, whose Sentinels start after the replicas have synced),
//! any other process may get the same port from the kernel: another test's probe, or a Sentinel's
//! outgoing connection (a Sentinel binds its source address with port 0 before connecting). The
//! server then exits with "Address already in use" and the test waits for it in vain.
//!
//! Here the kernel never hands out these ports on its own (they are outside
//! `/proc/sys/net/ipv4/ip_local_port_range`), and test processes coordinate through an exclusive,
//! non-blocking `flock` on `<tmp>/sessionstore-test-ports/<port>.lock`, held by the lease. The lock
//! dies with the process, so a crashed test leaves no stale reservation; a port some other program
//! listens on is skipped because the allocator binds it once before handing it out.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;
use std::path::PathBuf;

/// The ports tried first: below the usual ephemeral range (32768-60999) and Kubernetes' NodePort
/// range (30000-32767).
const PREFERRED: RangeInclusive<u16> = 10000..=29999;

/// Ports other local programs listen on while the tests run: the loopback control plane
/// (API server, controller manager, etcd) and the Redis and Sentinel defaults.
const AVOID: [u16; 6] = [16443, 16444, 23790, 23791, 6379, 26379];

/// A reserved port: no other test process gets it until this is dropped. Keep it for as long as
/// the server that listens on it (or the test that needs it closed) lives.
#[derive(Debug)]
pub struct PortLease {
    port: u16,
    /// Holds the `flock`; closed (and so unlocked) on drop.
    _lock: File,
}

impl PortLease {
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Reserves a free loopback port. Panics (naming the lock directory) when every candidate is
/// taken, which would mean thousands of live servers: a leak, not a busy machine.
pub fn reserve_port() -> PortLease {
    let candidates = candidates();
    let dir = lock_dir();
    let start = random_index(candidates.len());
    for i in 0..candidates.len() {
        let port = candidates[(start + i) % candidates.len()];
        if let Some(lease) = try_reserve_in(&dir, port) {
            return lease;
        }
    }
    panic!(
        "no free port among {} candidates outside the ephemeral range (locks in {})",
        candidates.len(),
        dir.display()
    );
}

/// Reserves `port` if no test process holds it and nothing listens on it.
pub fn try_reserve_port(port: u16) -> Option<PortLease> {
    try_reserve_in(&lock_dir(), port)
}

/// The lock file of `port` (for tests of the allocator itself).
pub fn lock_file(port: u16) -> PathBuf {
    lock_dir().join(format!("{port}.lock"))
}

/// The ports `reserve_port` hands out.
pub fn is_candidate(port: u16) -> bool {
    candidates().contains(&port)
}

fn try_reserve_in(dir: &std::path::Path, port: u16) -> Option<PortLease> {
    let path = dir.join(format!("{port}.lock"));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open the port lock {}: {e}", path.display()));
    // Another test process (or thread: every open is its own lock) holds this port.
    lock.try_lock().ok()?;
    // Nobody else that listens here: 0.0.0.0 conflicts with a listener on any IPv4 address
    // (the HA harness's Sentinels listen on all of them).
    TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).ok()?;
    Some(PortLease { port, _lock: lock })
}

/// `PREFERRED` minus the ephemeral range and `AVOID`; if that leaves too few (an unusual
/// ephemeral range), every unprivileged port outside the ephemeral range.
fn candidates() -> Vec<u16> {
    let ephemeral = ephemeral_range();
    let usable = |p: &u16| !ephemeral.contains(p) && !AVOID.contains(p);
    let preferred: Vec<u16> = PREFERRED.filter(usable).collect();
    if preferred.len() >= 1000 {
        return preferred;
    }
    let all: Vec<u16> = (1024..=u16::MAX).filter(usable).collect();
    assert!(
        !all.is_empty(),
        "the ephemeral port range {ephemeral:?} leaves no port for test servers"
    );
    all
}

/// `net.ipv4.ip_local_port_range`, or Linux's default when it cannot be read.
fn ephemeral_range() -> RangeInclusive<u16> {
    let text =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut bounds = text.split_whitespace().map(str::parse::<u16>);
    match (bounds.next(), bounds.next()) {
        (Some(Ok(low)), Some(Ok(high))) if low <= high => low..=high,
        _ => 32768..=60999,
    }
}

/// The lock directory, shared by every test process on the machine (any checkout, any user).
fn lock_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("sessionstore-test-ports");
    if std::fs::create_dir(&dir).is_ok() {
        use std::os::unix::fs::PermissionsExt;
        // Like /tmp: everyone may add lock files.
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777));
    }
    assert!(
        dir.is_dir(),
        "cannot create the port lock directory {}",
        dir.display()
    );
    dir
}

/// Where to start scanning, different per call, so concurrent processes rarely contend for the
/// same lock (correctness does not depend on it).
fn random_index(len: usize) -> usize {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (random % len as u64) as usize
}
