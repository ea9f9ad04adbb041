//! The test port allocator (`support::ports`) keeps its promise: ports outside the kernel's
//! ephemeral range, never handed out twice while reserved (in this process or another), never one
//! something already listens on. Every real-process test relies on it to start its servers.

mod support;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::Command;

use support::ports::{is_candidate, lock_file, reserve_port, try_reserve_port};

fn ephemeral_range() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .expect("Linux exposes the ephemeral port range");
    let mut bounds = text
        .split_whitespace()
        .map(|b| b.parse::<u16>().expect("a port number"));
    (
        bounds.next().expect("low bound"),
        bounds.next().expect("high bound"),
    )
}

#[test]
fn reserved_ports_are_distinct_and_outside_the_ephemeral_range() {
    let (low, high) = ephemeral_range();
    let leases: Vec<_> = (0..64).map(|_| reserve_port()).collect();
    let ports: BTreeSet<u16> = leases.iter().map(|l| l.port()).collect();
    assert_eq!(ports.len(), leases.len(), "a port was handed out twice");
    for port in &ports {
        assert!(
            !(low..=high).contains(port),
            "{port} is in the ephemeral range {low}-{high}"
        );
        assert!(is_candidate(*port));
    }
    for port in [16443, 16444, 23790, 23791] {
        assert!(!is_candidate(port), "{port} belongs to the control plane");
    }
}

#[test]
fn a_reserved_port_is_locked_for_other_processes_and_this_one() {
    let lease = reserve_port();
    // Another process: flock(1) cannot take the lock while the lease lives.
    let other = Command::new("flock")
        .arg("--nonblock")
        .arg(lock_file(lease.port()))
        .arg("true")
        .status()
        .expect("flock(1) runs (util-linux)");
    assert!(!other.success(), "another process took a reserved port");
    // This process (another thread or helper asking again).
    assert!(try_reserve_port(lease.port()).is_none());
}

#[test]
fn a_port_something_listens_on_is_not_handed_out() {
    let lease = reserve_port();
    let port = lease.port();
    // A program outside the allocator listens there (not through a lease).
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the reserved port");
    drop(lease);
    assert!(
        try_reserve_port(port).is_none(),
        "port {port} is in use but was reserved"
    );
    drop(listener);
}
