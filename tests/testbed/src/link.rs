//! A shaped link: two network namespaces joined by a veth pair whose both ends are
//! rate-limited with `tbf` (this kernel has no netem), for tests where the kernel's own
//! buffers matter (`TCP_NOTSENT_LOWAT`, queueing behind a slow link).

use std::fs::File;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::gateway::{NAME_PREFIX, run};
use crate::netns::NsRuntime;
use crate::{TestbedError, cleanup_stale, skip_or_fail};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One end of a [`ShapedLink`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `10.78.N.1`.
    A,
    /// `10.78.N.2`.
    B,
}

/// Two namespaces and a veth pair, each direction shaped to `rate_kbit` by `tbf`.
#[derive(Debug)]
pub struct ShapedLink {
    names: [String; 2],
    subnet: u8,
}

impl ShapedLink {
    /// Builds the link: `tbf rate {rate_kbit}kbit burst 32kb latency 50ms` on both ends.
    pub fn start(rate_kbit: u32) -> Result<Self, TestbedError> {
        crate::require_root()?;
        cleanup_stale();
        let id = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("{NAME_PREFIX}{}xl{id}", std::process::id());
        let link =
            Self { names: [format!("{base}a"), format!("{base}b")], subnet: (id % 200) as u8 };
        link.build(rate_kbit)?;
        Ok(link)
    }

    /// Like [`ShapedLink::start`], or `None` after a skip message when this machine cannot
    /// (not root); under `CI=true` it fails instead.
    pub fn start_or_skip(rate_kbit: u32) -> Option<Self> {
        match Self::start(rate_kbit) {
            Ok(link) => Some(link),
            Err(error) => {
                skip_or_fail(&error.to_string());
                None
            }
        }
    }

    fn build(&self, rate_kbit: u32) -> Result<(), TestbedError> {
        let [a, b] = &self.names;
        for name in &self.names {
            run("ip", &["netns", "add", name])?;
        }
        run(
            "ip",
            &["link", "add", "sh0", "netns", a, "type", "veth", "peer", "name", "sh1", "netns", b],
        )?;
        let rate = format!("{rate_kbit}kbit");
        for (name, dev, side) in [(a, "sh0", Side::A), (b, "sh1", Side::B)] {
            let addr = format!("{}/24", self.address(side));
            let exec = |args: &[&str]| {
                let mut full = vec!["netns", "exec", name.as_str()];
                full.extend_from_slice(args);
                run("ip", &full).map(|_| ())
            };
            exec(&["ip", "addr", "add", &addr, "dev", dev])?;
            exec(&["ip", "link", "set", dev, "up"])?;
            exec(&["ip", "link", "set", "lo", "up"])?;
            exec(&[
                "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate, "burst", "32kb",
                "latency", "50ms",
            ])?;
        }
        Ok(())
    }

    /// The address of one end.
    pub fn address(&self, side: Side) -> Ipv4Addr {
        Ipv4Addr::new(10, 78, self.subnet, if side == Side::A { 1 } else { 2 })
    }

    /// The namespace name of one end (for `ip netns exec`).
    pub fn name(&self, side: Side) -> &str {
        &self.names[side as usize]
    }

    /// A runtime whose tasks run inside one end's namespace.
    pub fn runtime(&self, side: Side) -> Result<NsRuntime, TestbedError> {
        let name = &self.names[side as usize];
        let file = File::open(format!("/run/netns/{name}"))?;
        Ok(NsRuntime::start(file, name.clone())?)
    }
}

impl Drop for ShapedLink {
    fn drop(&mut self) {
        for name in &self.names {
            crate::gateway::kill_namespace_processes(name);
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}
