//! Test fixtures on this machine: a real UPnP IGD / NAT-PMP / PCP gateway (miniupnpd) between
//! network namespaces.
//!
//! ```text
//! client (lan1 10.77.0.2/24) <-veth-> gateway (lan0 10.77.0.1/24 | wan0 WAN) <-veth-> wan (wan1)
//!   behind the NAT                   miniupnpd, nftables, ip_forward=1           the "internet"
//! ```
//!
//! [`Gateway::start`] makes three namespaces with names unique to the process and the fixture
//! (`swtb<pid>x<n>g`, `...c`, `...w`), veth pairs created directly inside them (so parallel
//! fixtures never clash), nftables chains for miniupnpd plus masquerading of LAN-to-WAN
//! traffic and acceptance of established return traffic, and a miniupnpd whose configuration,
//! pid file, lease file and log live in a temporary directory. Code runs inside a namespace
//! with [`Gateway::run_in`] / [`Gateway::spawn_in`] (a thread that entered the namespace, with
//! a current-thread tokio runtime) or [`Gateway::runtime`] (a long-lived one); commands with
//! [`Gateway::exec`]. [`Gateway::mappings`] is the gateway's own view (its nftables DNAT
//! rules). Dropping the last clone stops miniupnpd, reaps it and deletes the namespaces, also
//! when a test panics (then miniupnpd's log is printed).
//!
//! Tests call [`Gateway::start_or_skip`] (or [`require_root_and_packages`] and
//! [`skip_or_fail`]): without root or the packages they skip with a message, and fail instead
//! when `CI=true`.
//!
//! # What miniupnpd 2.3.1 does here
//!
//! - A private or reserved WAN address (10/8, 100.64/10, 192.0.2/24, ...) makes it refuse to
//!   forward: NAT-PMP external address requests get result 3 (network failure), UPnP
//!   GetExternalIPAddress an empty address, AddPortMapping error 501. The default WAN address
//!   100.128.0.1 looks public (it is just above 100.64/10).
//! - Killed, it leaves its nftables rules in place, and on start it reads its lease file back:
//!   [`Gateway::restart_miniupnpd`] therefore also flushes its chains and deletes the lease file
//!   (a reboot that loses state). With `system_uptime=no` its NAT-PMP/PCP epoch starts again at 0.
//! - `min_lifetime` raises shorter leases; the fixture sets it low (default 1 s).
#![allow(unsafe_code)]

mod gateway;
mod link;
mod netns;
mod parse;

pub use gateway::{Gateway, GatewayOptions, LAN_CLIENT, LAN_GATEWAY, NAME_PREFIX, Namespace};
pub use link::{ShapedLink, Side};
pub use netns::{NsRuntime, NsTask};
pub use parse::{Mapping, Protocol, UpnpcEntry, parse_nft_chain, parse_upnpc_list};

use std::fmt;
use std::path::Path;

/// Why the fixture could not do something.
#[non_exhaustive]
#[derive(Debug)]
pub enum TestbedError {
    /// A command failed.
    Command {
        /// The command line.
        command: String,
        /// Its stderr (and stdout).
        output: String,
    },
    /// An I/O error (spawning, files).
    Io(std::io::Error),
    /// The machine cannot run the fixture (not root, a program missing).
    Unavailable(String),
    /// miniupnpd exited or did not open its sockets in time.
    Miniupnpd {
        /// What went wrong.
        reason: String,
        /// Its log.
        log: String,
    },
}

impl fmt::Display for TestbedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Command { command, output } => write!(f, "`{command}` failed: {output}"),
            Self::Io(error) => write!(f, "I/O error: {error}"),
            Self::Unavailable(reason) => f.write_str(reason),
            Self::Miniupnpd { reason, log } => write!(f, "miniupnpd: {reason}\n--- log ---\n{log}"),
        }
    }
}

impl std::error::Error for TestbedError {}

impl From<std::io::Error> for TestbedError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

/// The programs the gateway fixture runs.
pub const REQUIRED_PROGRAMS: [&str; 5] = ["ip", "nft", "miniupnpd", "upnpc", "natpmpc"];

/// Checks that the gateway fixture can run here: root, and `ip`, `nft`, `miniupnpd`,
/// `upnpc` and `natpmpc` installed. The error says what is missing and how to install it.
pub fn require_root_and_packages() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("needs root (network namespaces, nftables, miniupnpd)".to_owned());
    }
    let missing: Vec<&str> = REQUIRED_PROGRAMS
        .iter()
        .copied()
        .filter(|program| find_program(program).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing programs {missing:?}: apt-get install -y --no-install-recommends miniupnpd \
             miniupnpd-nftables nftables miniupnpc natpmpc iproute2"
        ));
    }
    if !Path::new("/proc/self/ns/net").exists() {
        return Err("no network namespace support (/proc/self/ns/net)".to_owned());
    }
    Ok(())
}

/// Checks that network namespaces, veth and tc can be used here: root, `ip` and `tc`.
pub fn require_root() -> Result<(), TestbedError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(TestbedError::Unavailable("needs root (network namespaces, tc)".to_owned()));
    }
    for program in ["ip", "tc"] {
        if find_program(program).is_none() {
            return Err(TestbedError::Unavailable(format!(
                "missing {program}: apt-get install -y iproute2"
            )));
        }
    }
    Ok(())
}

/// Where `program` is on `PATH` (plus the sbin directories root uses).
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| candidate.is_file())
}

/// Whether tests must not skip (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A test that cannot run here skips with `reason` on stderr, or fails (panics) when
/// `CI=true`.
pub fn skip_or_fail(reason: &str) {
    if in_ci() {
        panic!("CI=true, so this test may not skip: {reason}");
    }
    eprintln!("skipping: {reason}");
}

/// Removes namespaces (and their miniupnpd processes) left by fixtures of processes that are
/// gone, recognised by the [`NAME_PREFIX`] and the pid in their names. Returns how many
/// namespaces it removed.
pub fn cleanup_stale() -> usize {
    let Ok(entries) = std::fs::read_dir("/run/netns") else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = gateway::pid_of_name(&name) else { continue };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        gateway::kill_namespace_processes(&name);
        if gateway::run("ip", &["netns", "del", &name]).is_ok() {
            removed += 1;
        }
    }
    removed
}
