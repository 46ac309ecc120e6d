//! The gateway fixture: three namespaces, nftables, miniupnpd.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use crate::netns::{NsRuntime, NsTask};
use crate::parse::{Mapping, UpnpcEntry, parse_nft_chain, parse_upnpc_list};
use crate::{TestbedError, cleanup_stale, require_root_and_packages, skip_or_fail};

/// The start of every namespace name this fixture makes.
pub const NAME_PREFIX: &str = "swtb";
/// The gateway's LAN address (lan0).
pub const LAN_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The client's LAN address (lan1).
pub const LAN_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);

/// How long miniupnpd may take to open its sockets.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// The chains miniupnpd writes to (named in its configuration).
const MINIUPNPD_CHAINS: [&str; 3] = ["miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd"];

static COUNTER: AtomicU32 = AtomicU32::new(0);
static CLEANUP: Once = Once::new();

/// One of the fixture's namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// Behind the NAT: lan1 10.77.0.2/24, default route via 10.77.0.1.
    Client,
    /// The gateway: lan0 10.77.0.1/24, wan0 with the WAN address; miniupnpd runs here.
    Gateway,
    /// The "internet": wan1 with the WAN peer address, in the WAN subnet.
    Wan,
}

/// How to build the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayOptions {
    /// The gateway's WAN address. Default 100.128.0.1 (looks public to miniupnpd); a private
    /// one (see [`GatewayOptions::double_nat`]) makes miniupnpd refuse to map.
    pub wan_address: Ipv4Addr,
    /// The WAN subnet's prefix length. Default 24.
    pub wan_prefix: u8,
    /// The address of the WAN namespace's wan1. Default 100.128.0.2.
    pub wan_peer: Ipv4Addr,
    /// Enable NAT-PMP and PCP (one switch in miniupnpd). Default true.
    pub natpmp_pcp: bool,
    /// Enable UPnP IGD. Default true.
    pub upnp: bool,
    /// miniupnpd's `min_lifetime`: shorter leases are raised to this. Default 1 s.
    pub min_lifetime: u32,
    /// Start miniupnpd in [`Gateway::start`]. Default true.
    pub start_miniupnpd: bool,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            wan_address: Ipv4Addr::new(100, 128, 0, 1),
            wan_prefix: 24,
            wan_peer: Ipv4Addr::new(100, 128, 0, 2),
            natpmp_pcp: true,
            upnp: true,
            min_lifetime: 1,
            start_miniupnpd: true,
        }
    }
}

impl GatewayOptions {
    /// A gateway whose WAN address is private (10.99.0.1/24): a double NAT.
    pub fn double_nat() -> Self {
        Self {
            wan_address: Ipv4Addr::new(10, 99, 0, 1),
            wan_peer: Ipv4Addr::new(10, 99, 0, 2),
            ..Self::default()
        }
    }
}

/// A running gateway fixture; clones share it, and the last one dropped tears it down.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: u32,
    names: [String; 3],
    created: Mutex<Vec<String>>,
    options: GatewayOptions,
    dir: tempfile::TempDir,
    daemon: Mutex<Option<Child>>,
}

/// Runs a command, failing with its output when it exits non-zero.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<Output, TestbedError> {
    let output = Command::new(program).args(args).stdin(Stdio::null()).output()?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(TestbedError::Command {
            command: format!("{program} {}", args.join(" ")),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            ),
        })
    }
}

/// The creating pid in a fixture namespace name (`swtb<pid>x<n><g|c|w>`).
pub(crate) fn pid_of_name(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let (pid, _) = rest.split_once('x')?;
    pid.parse().ok()
}

/// Kills (SIGKILL) every process in namespace `name`, such as a leftover miniupnpd.
pub(crate) fn kill_namespace_processes(name: &str) {
    if let Ok(output) = run("ip", &["netns", "pids", name]) {
        for pid in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>()
                && u32::try_from(pid).ok() != Some(std::process::id())
            {
                // SAFETY: kill has no memory preconditions; the pid was read just now from
                // the namespace of a dead fixture, which only its own processes use.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Gateway {
    /// Builds the namespaces, links, addresses, routes and nftables chains, writes
    /// miniupnpd's configuration and (by default) starts it. Needs root.
    pub fn start(options: GatewayOptions) -> Result<Self, TestbedError> {
        CLEANUP.call_once(|| {
            cleanup_stale();
        });
        let id = COUNTER.fetch_add(1, Ordering::Relaxed);
        let base = format!("{NAME_PREFIX}{}x{id}", std::process::id());
        let inner = Inner {
            id,
            names: [format!("{base}c"), format!("{base}g"), format!("{base}w")],
            created: Mutex::new(Vec::new()),
            options,
            dir: tempfile::Builder::new().prefix("sinew-testbed-").tempdir()?,
            daemon: Mutex::new(None),
        };
        let gateway = Self { inner: Arc::new(inner) };
        gateway.build()?;
        if gateway.inner.options.start_miniupnpd {
            gateway.start_miniupnpd()?;
        }
        Ok(gateway)
    }

    /// [`Gateway::start`] after [`require_root_and_packages`]: `None` (with a message) when
    /// the machine cannot run it, which fails instead when `CI=true`. A failure to build the
    /// gateway on a machine that has everything panics.
    pub fn start_or_skip(options: GatewayOptions) -> Option<Self> {
        if let Err(reason) = require_root_and_packages() {
            skip_or_fail(&reason);
            return None;
        }
        match Self::start(options) {
            Ok(gateway) => Some(gateway),
            Err(error) => panic!("starting the gateway fixture: {error}"),
        }
    }

    /// The system-wide name of a namespace.
    pub fn namespace_name(&self, namespace: Namespace) -> &str {
        &self.inner.names[match namespace {
            Namespace::Client => 0,
            Namespace::Gateway => 1,
            Namespace::Wan => 2,
        }]
    }

    /// The options it was built with.
    pub fn options(&self) -> &GatewayOptions {
        &self.inner.options
    }

    /// The gateway's WAN address.
    pub fn wan_address(&self) -> Ipv4Addr {
        self.inner.options.wan_address
    }

    /// The WAN namespace's address.
    pub fn wan_peer(&self) -> Ipv4Addr {
        self.inner.options.wan_peer
    }

    /// The temporary directory with miniupnpd's configuration, pid, lease and log files.
    pub fn dir(&self) -> PathBuf {
        self.inner.dir.path().to_owned()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.inner.dir.path().join(name)
    }

    fn build(&self) -> Result<(), TestbedError> {
        let [client, gw, wan] = self.inner.names.clone();
        for name in [&client, &gw, &wan] {
            run("ip", &["netns", "add", name])?;
            lock(&self.inner.created).push(name.clone());
        }
        let o = &self.inner.options;
        let wan_cidr = format!("{}/{}", o.wan_address, o.wan_prefix);
        let peer_cidr = format!("{}/{}", o.wan_peer, o.wan_prefix);
        let steps: Vec<Vec<&str>> = vec![
            vec![
                "link", "add", "lan0", "netns", &gw, "type", "veth", "peer", "name", "lan1",
                "netns", &client,
            ],
            vec![
                "link", "add", "wan0", "netns", &gw, "type", "veth", "peer", "name", "wan1",
                "netns", &wan,
            ],
            vec!["-n", &gw, "addr", "add", "10.77.0.1/24", "dev", "lan0"],
            vec!["-n", &gw, "addr", "add", &wan_cidr, "dev", "wan0"],
            vec!["-n", &client, "addr", "add", "10.77.0.2/24", "dev", "lan1"],
            vec!["-n", &wan, "addr", "add", &peer_cidr, "dev", "wan1"],
            vec!["-n", &gw, "link", "set", "lo", "up"],
            vec!["-n", &gw, "link", "set", "lan0", "up"],
            vec!["-n", &gw, "link", "set", "wan0", "up"],
            vec!["-n", &client, "link", "set", "lo", "up"],
            vec!["-n", &client, "link", "set", "lan1", "up"],
            vec!["-n", &wan, "link", "set", "lo", "up"],
            vec!["-n", &wan, "link", "set", "wan1", "up"],
            vec!["-n", &client, "route", "add", "default", "via", "10.77.0.1"],
        ];
        for step in steps {
            run("ip", &step)?;
        }
        run("ip", &["netns", "exec", &gw, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        let nft = self.file("nft-init.nft");
        std::fs::write(&nft, NFT_RULES)?;
        run("ip", &["netns", "exec", &gw, "nft", "-f", &nft.to_string_lossy()])?;
        std::fs::write(self.file("miniupnpd.conf"), self.miniupnpd_conf(self.inner.id))?;
        Ok(())
    }

    fn miniupnpd_conf(&self, id: u32) -> String {
        let o = &self.inner.options;
        let yes = |on: bool| if on { "yes" } else { "no" };
        format!(
            "ext_ifname=wan0\nlistening_ip=lan0\nhttp_port=5000\nenable_natpmp={}\nenable_upnp={}\n\
             ipv6_disable=yes\nsecure_mode=yes\nsystem_uptime=no\n\
             min_lifetime={}\nmax_lifetime=86400\n\
             lease_file={}\nupnp_table_name=filter\nupnp_nat_table_name=filter\n\
             upnp_forward_chain=miniupnpd\nupnp_nat_chain=prerouting_miniupnpd\n\
             upnp_nat_postrouting_chain=postrouting_miniupnpd\n\
             uuid=3d3cec3a-8cf0-11e0-98ee-{:012x}\n\
             allow 1024-65535 10.77.0.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
            yes(o.natpmp_pcp),
            yes(o.upnp),
            o.min_lifetime,
            self.file("miniupnpd.leases").display(),
            u64::from(std::process::id()) << 16 | u64::from(id),
        )
    }

    /// Starts miniupnpd (stderr to the log file) and waits until its sockets are open.
    pub fn start_miniupnpd(&self) -> Result<(), TestbedError> {
        let mut daemon = lock(&self.inner.daemon);
        if daemon.is_some() {
            return Ok(());
        }
        let log = File::options().create(true).append(true).open(self.file("miniupnpd.log"))?;
        let conf = self.file("miniupnpd.conf");
        let pid_file = self.file("miniupnpd.pid");
        let gw = self.namespace_name(Namespace::Gateway);
        // `ip netns exec` execs miniupnpd in place: the child's pid is miniupnpd's.
        let child = Command::new("ip")
            .args(["netns", "exec", gw, "miniupnpd", "-d", "-f"])
            .arg(&conf)
            .arg("-P")
            .arg(&pid_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        *daemon = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = daemon.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                *daemon = None;
                return Err(self.miniupnpd_error(format!("exited at start with {status}")));
            }
            if self.sockets_open(pid) {
                return Ok(());
            }
            if Instant::now() > deadline {
                drop(daemon);
                let _ = self.stop_miniupnpd();
                return Err(self.miniupnpd_error("did not open its sockets within 5 s".into()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether miniupnpd (`pid`) listens on everything enabled: UDP 5351, UDP 1900, TCP 5000.
    fn sockets_open(&self, pid: u32) -> bool {
        let read = |table: &str| std::fs::read_to_string(format!("/proc/{pid}/net/{table}"));
        let (Ok(udp), Ok(tcp)) = (read("udp"), read("tcp")) else { return false };
        let bound = |table: &str, port: u16, state: &str| {
            table.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(1).is_some_and(|l| l.ends_with(&format!(":{port:04X}")))
                    && fields.get(3) == Some(&state)
            })
        };
        let o = &self.inner.options;
        (!o.natpmp_pcp || bound(&udp, 5351, "07"))
            && (!o.upnp || (bound(&udp, 1900, "07") && bound(&tcp, 5000, "0A")))
    }

    fn miniupnpd_error(&self, reason: String) -> TestbedError {
        TestbedError::Miniupnpd { reason, log: self.log() }
    }

    /// Stops miniupnpd (SIGTERM, then SIGKILL after 2 s) and reaps it. Its nftables rules
    /// stay, as they would on a real gateway whose daemon died.
    pub fn stop_miniupnpd(&self) -> Result<(), TestbedError> {
        let Some(mut child) = lock(&self.inner.daemon).take() else { return Ok(()) };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill has no memory preconditions; `pid` is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// A gateway reboot: stops miniupnpd, flushes its nftables chains and deletes its lease
    /// file (killed, it would leave both, and read the leases back at start), then starts it
    /// again. With `system_uptime=no` its epoch starts again at 0.
    pub fn restart_miniupnpd(&self) -> Result<(), TestbedError> {
        self.stop_miniupnpd()?;
        self.flush_mappings()?;
        match std::fs::remove_file(self.file("miniupnpd.leases")) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error.into()),
            _ => {}
        }
        self.start_miniupnpd()
    }

    /// Deletes every rule miniupnpd added (its three chains).
    pub fn flush_mappings(&self) -> Result<(), TestbedError> {
        for chain in MINIUPNPD_CHAINS {
            self.exec_ok(Namespace::Gateway, &["nft", "flush", "chain", "inet", "filter", chain])?;
        }
        Ok(())
    }

    /// Whether miniupnpd is running.
    pub fn miniupnpd_running(&self) -> bool {
        lock(&self.inner.daemon).as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// miniupnpd's log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.file("miniupnpd.log")).unwrap_or_default()
    }

    /// Runs a command inside a namespace (`ip netns exec`), whatever its exit status.
    pub fn exec(&self, namespace: Namespace, args: &[&str]) -> Result<Output, TestbedError> {
        let mut full = vec!["netns", "exec", self.namespace_name(namespace)];
        full.extend_from_slice(args);
        Ok(Command::new("ip").args(&full).stdin(Stdio::null()).output()?)
    }

    /// Like [`Gateway::exec`], failing on a non-zero exit; returns stdout.
    pub fn exec_ok(&self, namespace: Namespace, args: &[&str]) -> Result<String, TestbedError> {
        let mut full = vec!["netns", "exec", self.namespace_name(namespace)];
        full.extend_from_slice(args);
        let output = run("ip", &full)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The gateway's own view: miniupnpd's DNAT rules in nftables, sorted.
    pub fn mappings(&self) -> Result<Vec<Mapping>, TestbedError> {
        let args = ["nft", "list", "chain", "inet", "filter", "prerouting_miniupnpd"];
        let mut mappings = parse_nft_chain(&self.exec_ok(Namespace::Gateway, &args)?);
        mappings.sort();
        Ok(mappings)
    }

    /// Polls [`Gateway::mappings`] every 20 ms until `done` accepts them, for at most
    /// `timeout`; returns the last list either way. Async, so the runtime's other tasks (a
    /// port mapper under test) keep running between polls.
    pub async fn wait_for_mappings(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&[Mapping]) -> bool,
    ) -> Result<Vec<Mapping>, TestbedError> {
        let deadline = Instant::now() + timeout;
        loop {
            let mappings = self.mappings()?;
            if done(&mappings) || Instant::now() >= deadline {
                return Ok(mappings);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The mappings `upnpc -l` lists from the client (an independent UPnP client), sorted.
    pub fn upnpc_list(&self) -> Result<Vec<UpnpcEntry>, TestbedError> {
        let url = "http://10.77.0.1:5000/rootDesc.xml";
        let output = self.exec(Namespace::Client, &["upnpc", "-u", url, "-l"])?;
        let mut mappings = parse_upnpc_list(&String::from_utf8_lossy(&output.stdout));
        mappings.sort();
        Ok(mappings)
    }

    /// The external address and epoch `natpmpc` (an independent NAT-PMP client) gets from
    /// the client namespace; `None` when the gateway has none to give.
    pub fn natpmpc_public_address(&self) -> Result<Option<(Ipv4Addr, u32)>, TestbedError> {
        let output = self.exec(Namespace::Client, &["natpmpc", "-g", "10.77.0.1"])?;
        let text = String::from_utf8_lossy(&output.stdout);
        let field = |prefix: &str| {
            text.lines().find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_owned()))
        };
        let address = field("Public IP address :").and_then(|v| v.parse().ok());
        let epoch = field("epoch =").and_then(|v| v.parse().ok());
        Ok(address.zip(epoch))
    }

    fn open_namespace(&self, namespace: Namespace) -> File {
        let name = self.namespace_name(namespace);
        File::open(format!("/run/netns/{name}"))
            .unwrap_or_else(|error| panic!("opening network namespace {name}: {error}"))
    }

    /// Runs the future `f` returns on a new thread inside `namespace`, on a current-thread
    /// tokio runtime, and returns a handle to await or join. Sockets the future creates live
    /// in the namespace; tasks it spawns end with it.
    pub fn spawn_in<F, Fut, T>(&self, namespace: Namespace, f: F) -> NsTask<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let name = self.namespace_name(namespace).to_owned();
        NsTask::spawn(self.open_namespace(namespace), name, f)
    }

    /// [`Gateway::spawn_in`] and wait for the output (blocking). A panic inside is resumed.
    pub fn run_in<F, Fut, T>(&self, namespace: Namespace, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        self.spawn_in(namespace, f).join()
    }

    /// A long-lived runtime inside `namespace` (see [`NsRuntime`]).
    pub fn runtime(&self, namespace: Namespace) -> Result<NsRuntime, TestbedError> {
        let name = self.namespace_name(namespace).to_owned();
        Ok(NsRuntime::start(self.open_namespace(namespace), name)?)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(mut child) = lock(&self.daemon).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("miniupnpd.log"));
            eprintln!("--- miniupnpd log ({}) ---\n{}", self.names[1], log.unwrap_or_default());
        }
        for name in lock(&self.created).iter() {
            kill_namespace_processes(name);
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// The gateway's nftables: miniupnpd's chains (as in its nft-init), with forwarding dropped by
/// default except LAN-to-WAN traffic, established/related return traffic, and what miniupnpd
/// accepts in its own `miniupnpd` chain (DNAT'ed inbound traffic of its mappings); LAN-to-WAN
/// traffic is masqueraded.
const NFT_RULES: &str = "table inet filter {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname \"lan0\" oifname \"wan0\" accept
        jump miniupnpd
    }
    chain miniupnpd { }
    chain prerouting {
        type nat hook prerouting priority -100; policy accept;
        jump prerouting_miniupnpd
    }
    chain postrouting {
        type nat hook postrouting priority 100; policy accept;
        jump postrouting_miniupnpd
        oifname \"wan0\" masquerade
    }
    chain prerouting_miniupnpd { }
    chain postrouting_miniupnpd { }
}
";
