//! sinew's TCP and QUIC transports on a lossy link: throughput and connection setup at several
//! random-loss rates, measured with the `sinew` binary between two network namespaces.
//!
//! ```sh
//! CARGO_TARGET_DIR=/work/target-lossy cargo build --release -p sinew-cli
//! sudo CARGO_TARGET_DIR=/work/target-lossy cargo run --release -p sinew-testbed --example lossy -- \
//!     --sinew /work/target-lossy/release/sinew
//! ```
//!
//! The link is [`ShapedLink`]: two namespaces joined by a veth pair, each end shaped by `tbf`
//! (`--rates`, in kbit/s; default `100000,0`: 100 Mbit/s each way, then a rate of 0, which
//! deletes the `tbf` qdiscs: the bare veth). Segmentation offload is capped to one segment
//! (`gso_max_segs 1`, unless `--offload`) so every packet the loss rule sees is wire-sized. This kernel has no netem, so no delay is added: the round trip is the veth's (tens of
//! microseconds) plus whatever queues up in `tbf` (up to 50 ms of it at the shaped rate).
//!
//! Loss is nftables' `numgen random mod 100 < P drop` on TCP and UDP packets in the input hook
//! of *both* namespaces, so each direction loses P % on arrival (data one way, acks the other),
//! after the packet has crossed the shaped link, as a lossy wire would. The rule's counters are
//! read back and reported, so the loss that was really applied is in the results.
//!
//! Per link and loss rate, one `sinew node --serve-perf` runs in namespace B and, three times
//! (`--runs`), `sinew perf <addr> --bytes N --setups 5 --json` runs from namespace A for each
//! transport in turn (the order rotates every run): TCP with the kernel's default congestion
//! control (BBR on the machine this was written on), TCP with Reno (the only other one a
//! namespace may choose here, `net.ipv4.tcp_allowed_congestion_control`), TCP with Reno and the
//! route's `rto_min` lowered to 5 ms (`--rto-min-ms`; Linux's floor is 200 ms), and QUIC (quinn,
//! its default Cubic). Every run has a timeout (`--timeout-secs`); a run that times out or fails is
//! counted as a failure with its error. Results: a table on stdout, JSON in `--out`
//! (default `benches/results/lossy.json`).
//!
//! Clean-up: the namespaces (and with them the nftables tables, which live inside them) and
//! every process in them go when the [`ShapedLink`] is dropped, on success, error or panic; on
//! Ctrl-C the runs stop and the same drop runs. A killed process's namespaces are removed by
//! the next testbed fixture that starts ([`sinew_testbed::cleanup_stale`]).

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sinew_testbed::{ShapedLink, Side};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The veth ends inside the namespaces, as `ShapedLink` names them.
const DEVICES: [(Side, &str); 2] = [(Side::A, "sh0"), (Side::B, "sh1")];
/// The nftables table the loss rules live in (one per namespace).
const TABLE: &str = "sinew_lossy";

#[derive(Debug, Clone)]
struct Options {
    sinew: PathBuf,
    rates_kbit: Vec<u32>,
    losses: Vec<u32>,
    runs: usize,
    bytes: u64,
    /// Bytes at loss rates of `high_loss` % and above.
    bytes_high_loss: u64,
    high_loss: u32,
    setups: usize,
    timeout: Duration,
    out: PathBuf,
    /// Keep the veths' segmentation offload (then a "packet" the loss rule sees can be a
    /// 64 KiB TCP or UDP GSO aggregate).
    offload: bool,
    /// The `rto_min` of the "tcp (reno, rto_min)" runs.
    rto_min_ms: u32,
}

impl Options {
    fn parse() -> Result<Self, BoxError> {
        let mut options = Self {
            sinew: PathBuf::from("target/release/sinew"),
            rates_kbit: vec![100_000, 0],
            losses: vec![0, 1, 2, 5],
            runs: 3,
            bytes: 32 << 20,
            bytes_high_loss: 16 << 20,
            high_loss: 5,
            setups: 5,
            timeout: Duration::from_secs(120),
            out: PathBuf::from("benches/results/lossy.json"),
            offload: false,
            rto_min_ms: 5,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "--offload" {
                options.offload = true;
                continue;
            }
            if flag == "--help" || flag == "-h" {
                println!(
                    "lossy [--sinew PATH] [--rates KBIT,..(0 = unshaped)] [--loss PCT,..] \
                     [--runs N] [--bytes N] [--bytes-high-loss N] [--high-loss PCT] \
                     [--setups N] [--timeout-secs N] [--out PATH] [--offload] [--rto-min-ms N]"
                );
                std::process::exit(0);
            }
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let list = |v: &str| -> Result<Vec<u32>, BoxError> {
                v.split(',').map(|x| x.trim().parse::<u32>().map_err(Into::into)).collect()
            };
            match flag.as_str() {
                "--sinew" => options.sinew = value.into(),
                "--rates" => options.rates_kbit = list(&value)?,
                "--loss" => options.losses = list(&value)?,
                "--runs" => options.runs = value.parse()?,
                "--bytes" => options.bytes = value.parse()?,
                "--bytes-high-loss" => options.bytes_high_loss = value.parse()?,
                "--high-loss" => options.high_loss = value.parse()?,
                "--setups" => options.setups = value.parse()?,
                "--timeout-secs" => options.timeout = Duration::from_secs(value.parse()?),
                "--out" => options.out = value.into(),
                "--rto-min-ms" => options.rto_min_ms = value.parse()?,
                other => return Err(format!("unknown flag {other} (see --help)").into()),
            }
        }
        if options.losses.iter().any(|&p| p > 100) {
            return Err("a loss rate is a percentage, 0 to 100".into());
        }
        options.sinew = std::fs::canonicalize(&options.sinew)
            .map_err(|e| format!("the sinew binary {}: {e}", options.sinew.display()))?;
        Ok(options)
    }

    fn bytes_at(&self, loss: u32) -> u64 {
        if loss >= self.high_loss { self.bytes_high_loss } else { self.bytes }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// TCP with the namespace's default congestion control.
    TcpDefault,
    /// TCP with Reno.
    TcpReno,
    /// TCP with Reno and the route's `rto_min` lowered from Linux's 200 ms.
    TcpRenoRtoMin,
    Quic,
}

impl Transport {
    const ALL: [Self; 4] = [Self::TcpDefault, Self::TcpReno, Self::TcpRenoRtoMin, Self::Quic];
}

/// One `sinew perf` run.
#[derive(Debug, Clone)]
struct Run {
    mbps: Option<f64>,
    setup_ms: Option<f64>,
    wall_s: f64,
    error: Option<String>,
}

/// All runs of one transport at one loss rate on one link.
#[derive(Debug, Clone)]
struct Cell {
    loss: u32,
    transport: String,
    bytes: u64,
    runs: Vec<Run>,
}

/// What the loss rules counted at one loss rate, arriving at A and at B.
#[derive(Debug, Clone, Copy, Default)]
struct Drops {
    at_a: Count,
    at_b: Count,
}

/// One namespace's loss-rule counters.
#[derive(Debug, Clone, Copy, Default)]
struct Count {
    packets: u64,
    bytes: u64,
    dropped: u64,
}

impl Count {
    fn pct(self) -> f64 {
        if self.packets == 0 { 0.0 } else { self.dropped as f64 * 100.0 / self.packets as f64 }
    }

    fn mean_size(self) -> f64 {
        if self.packets == 0 { 0.0 } else { self.bytes as f64 / self.packets as f64 }
    }
}

#[derive(Debug)]
struct LinkResult {
    rate_kbit: u32,
    tcp_default_cc: String,
    ping_ms: Option<String>,
    cells: Vec<Cell>,
    drops: Vec<(u32, Drops)>,
}

fn main() {
    match real_main() {
        Ok(()) => {}
        Err(error) => {
            eprintln!("lossy: {error}");
            std::process::exit(1);
        }
    }
}

fn real_main() -> Result<(), BoxError> {
    let options = Options::parse()?;
    let stop = Arc::new(AtomicBool::new(false));
    watch_ctrl_c(stop.clone());
    let started = Instant::now();
    let mut links = Vec::new();
    for &rate in &options.rates_kbit {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        // The link (and its namespaces, nftables tables and processes) is dropped at the end
        // of this iteration, or on `?`, or on a panic.
        let link = ShapedLink::start(rate.max(1))?;
        links.push(measure_link(&link, rate, &options, &stop)?);
    }
    print_table(&links);
    let json = to_json(&links, &options, started.elapsed());
    if let Some(dir) = options.out.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&options.out, json)?;
    println!("wrote {}", options.out.display());
    if stop.load(Ordering::Relaxed) {
        return Err("interrupted: the results are partial".into());
    }
    Ok(())
}

/// Sets `stop` on Ctrl-C, so the loops end and the link is dropped (cleaned up) normally.
fn watch_ctrl_c(stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        if runtime.block_on(tokio::signal::ctrl_c()).is_ok() {
            eprintln!("lossy: interrupted, cleaning up");
            stop.store(true, Ordering::Relaxed);
        }
    });
}

/// Runs `args` inside one end's namespace, failing with its output.
fn exec(link: &ShapedLink, side: Side, args: &[&str]) -> Result<Output, BoxError> {
    let output = Command::new("ip")
        .args(["netns", "exec", link.name(side)])
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !output.status.success() {
        return Err(format!(
            "`{}` in {}: {}{}",
            args.join(" "),
            link.name(side),
            String::from_utf8_lossy(&output.stderr),
            String::from_utf8_lossy(&output.stdout)
        )
        .into());
    }
    Ok(output)
}

/// Replaces the loss table in both namespaces: P % of arriving TCP and UDP packets dropped.
fn set_loss(link: &ShapedLink, loss: u32) -> Result<(), BoxError> {
    for (side, _) in DEVICES {
        let _ = exec(link, side, &["nft", "delete", "table", "inet", TABLE]);
        let rules = format!(
            "table inet {TABLE} {{\n\
             \tchain input {{\n\
             \t\ttype filter hook input priority -300; policy accept;\n\
             \t\tmeta l4proto {{ tcp, udp }} counter\n\
             \t\tmeta l4proto {{ tcp, udp }} numgen random mod 100 < {loss} counter drop\n\
             \t}}\n\
             }}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", link.name(side), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, rules.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        if !output.status.success() {
            return Err(format!("nft -f: {}", String::from_utf8_lossy(&output.stderr)).into());
        }
    }
    Ok(())
}

/// The loss rules' counters in one namespace.
fn read_drops(link: &ShapedLink, side: Side) -> Count {
    let Ok(output) = exec(link, side, &["nft", "list", "chain", "inet", TABLE, "input"]) else {
        return Count::default();
    };
    let text = String::from_utf8_lossy(&output.stdout);
    // `counter packets N bytes M`: the first rule counts every TCP/UDP packet, the second
    // the dropped ones.
    let counts: Vec<(u64, u64)> = text
        .lines()
        .filter_map(|line| {
            let rest = &line[line.find("counter packets ")? + "counter packets ".len()..];
            let mut words = rest.split_whitespace();
            let packets = words.next()?.parse().ok()?;
            let bytes = words.nth(1)?.parse().ok()?;
            Some((packets, bytes))
        })
        .collect();
    let (packets, bytes) = counts.first().copied().unwrap_or_default();
    Count { packets, bytes, dropped: counts.get(1).map_or(0, |c| c.0) }
}

fn set_tcp_cc(link: &ShapedLink, cc: &str) -> Result<(), BoxError> {
    for (side, _) in DEVICES {
        exec(
            link,
            side,
            &["sysctl", "-q", "-w", &format!("net.ipv4.tcp_congestion_control={cc}")],
        )?;
    }
    Ok(())
}

/// Sets (or, with `None`, removes) `rto_min` on the link's route at both ends: Linux TCP
/// waits at least 200 ms for a retransmission timeout unless the route says otherwise.
fn set_rto_min(link: &ShapedLink, rto_min_ms: Option<u32>) -> Result<(), BoxError> {
    for (side, dev) in DEVICES {
        let own = link.address(side);
        let [a, b, c, _] = own.octets();
        let mut args = vec![
            "ip".to_owned(),
            "route".to_owned(),
            "replace".to_owned(),
            format!("{a}.{b}.{c}.0/24"),
            "dev".to_owned(),
            dev.to_owned(),
            "proto".to_owned(),
            "kernel".to_owned(),
            "scope".to_owned(),
            "link".to_owned(),
            "src".to_owned(),
            own.to_string(),
        ];
        if let Some(ms) = rto_min_ms {
            args.extend(["rto_min".to_owned(), format!("{ms}ms")]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        exec(link, side, &args)?;
    }
    Ok(())
}

fn measure_link(
    link: &ShapedLink,
    rate: u32,
    options: &Options,
    stop: &AtomicBool,
) -> Result<LinkResult, BoxError> {
    if rate == 0 {
        for (side, dev) in DEVICES {
            exec(link, side, &["tc", "qdisc", "del", "dev", dev, "root"])?;
        }
    }
    if !options.offload {
        // A veth passes TSO/GSO aggregates (up to 64 KiB, dozens of packets) through whole,
        // and the input hook would drop such an aggregate as one "packet": a burst loss, and
        // a different one for TCP (TSO) and QUIC (UDP GSO). One segment per GSO packet makes
        // the stack segment before the veth, so every dropped packet is one wire-sized packet.
        for (side, dev) in DEVICES {
            exec(link, side, &["ip", "link", "set", "dev", dev, "gso_max_segs", "1"])?;
        }
    }
    let cc_output = exec(link, Side::A, &["sysctl", "-n", "net.ipv4.tcp_congestion_control"])?;
    let default_cc = String::from_utf8_lossy(&cc_output.stdout).trim().to_owned();
    let label = if rate == 0 { "unshaped veth".to_owned() } else { format!("{rate} kbit/s tbf") };
    println!("== link: {label}, namespaces {} / {}", link.name(Side::A), link.name(Side::B));
    let server = link.address(Side::B);
    let mut result = LinkResult {
        rate_kbit: rate,
        tcp_default_cc: default_cc.clone(),
        ping_ms: None,
        cells: Vec::new(),
        drops: Vec::new(),
    };
    for &loss in &options.losses {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        set_loss(link, loss)?;
        let mut node = Node::start(link, &options.sinew, options.timeout)?;
        let tcp = format!("tcp://{server}:{}", node.tcp_port);
        let quic = format!("quic://{server}:{}", node.quic_port);
        if loss == 0 && result.ping_ms.is_none() {
            result.ping_ms = idle_ping(link, &options.sinew, &tcp);
        }
        let bytes = options.bytes_at(loss);
        let names = [
            format!("tcp ({default_cc})"),
            "tcp (reno)".to_owned(),
            format!("tcp (reno, rto_min {} ms)", options.rto_min_ms),
            "quic".to_owned(),
        ];
        let mut cells: Vec<Cell> = names
            .iter()
            .map(|name| Cell { loss, transport: name.clone(), bytes, runs: Vec::new() })
            .collect();
        for run in 0..options.runs {
            for k in 0..Transport::ALL.len() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // The order rotates every run, so no transport always goes first.
                let index = (k + run) % Transport::ALL.len();
                let transport = Transport::ALL[index];
                let addr = match transport {
                    Transport::TcpDefault => {
                        set_tcp_cc(link, &default_cc)?;
                        &tcp
                    }
                    Transport::TcpReno => {
                        set_tcp_cc(link, "reno")?;
                        &tcp
                    }
                    Transport::TcpRenoRtoMin => {
                        set_tcp_cc(link, "reno")?;
                        set_rto_min(link, Some(options.rto_min_ms))?;
                        &tcp
                    }
                    Transport::Quic => &quic,
                };
                let outcome = perf(link, options, addr, bytes, stop);
                if transport == Transport::TcpRenoRtoMin {
                    set_rto_min(link, None)?;
                }
                println!(
                    "  loss {loss:>2} % {:<24} run {}: {}",
                    names[index],
                    run + 1,
                    match (&outcome.error, outcome.mbps, outcome.setup_ms) {
                        (Some(error), ..) =>
                            format!("FAILED after {:.1} s: {error}", outcome.wall_s),
                        (None, Some(mbps), Some(setup)) =>
                            format!("{mbps:.3} MB/s, setup {setup:.3} ms ({:.1} s)", outcome.wall_s),
                        _ => "no figures".to_owned(),
                    }
                );
                cells[index].runs.push(outcome);
            }
        }
        set_tcp_cc(link, &default_cc)?;
        result.drops.push((
            loss,
            Drops { at_a: read_drops(link, Side::A), at_b: read_drops(link, Side::B) },
        ));
        if !node.alive() {
            println!(
                "  the node in {} exited during the runs; its log:\n{}",
                link.name(Side::B),
                node.log_tail()
            );
        }
        drop(node);
        result.cells.extend(cells);
    }
    Ok(result)
}

/// `sinew node --serve-perf` in namespace B.
struct Node {
    child: Child,
    tcp_port: u16,
    quic_port: u16,
    log: tempfile::NamedTempFile,
}

impl Node {
    fn start(link: &ShapedLink, sinew: &Path, timeout: Duration) -> Result<Self, BoxError> {
        let log = tempfile::NamedTempFile::new()?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", link.name(Side::B)])
            .arg(sinew)
            .args(["node", "--listen", "quic://0.0.0.0:0", "--listen", "tcp://0.0.0.0:0"])
            .arg("--serve-perf")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log.reopen()?)
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        // The first line is the listen addresses; the rest (logs) is read and dropped, so the
        // node never blocks on a full pipe. The thread ends when the node does.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {}
        });
        let mut node = Self { child, tcp_port: 0, quic_port: 0, log };
        let line = rx
            .recv_timeout(timeout.min(Duration::from_secs(20)))
            .map_err(|_| format!("the node printed no addresses; log:\n{}", node.log_tail()))?;
        for addr in json_strings(&line, "listen") {
            let port = addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
            if addr.starts_with("tcp://") {
                node.tcp_port = port;
            } else if addr.starts_with("quic://") {
                node.quic_port = port;
            }
        }
        if node.tcp_port == 0 || node.quic_port == 0 {
            return Err(format!("no tcp and quic listen addresses in {line}").into());
        }
        Ok(node)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command to its end or until `timeout` (then kills it), collecting its output.
fn run_bounded(
    mut command: Command,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<(bool, String, String), BoxError> {
    let mut child =
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let reader = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let out = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let err = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(status) => Ok((status.success(), stdout, stderr)),
        None if stop.load(Ordering::Relaxed) => Err("interrupted".into()),
        None => Err(format!("timed out after {} s", timeout.as_secs()).into()),
    }
}

fn perf(link: &ShapedLink, options: &Options, addr: &str, bytes: u64, stop: &AtomicBool) -> Run {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", link.name(Side::A)])
        .arg(&options.sinew)
        .args(["perf", addr, "--bytes", &bytes.to_string()])
        .args(["--setups", &options.setups.to_string(), "--json"])
        .env("RUST_LOG", "warn");
    let start = Instant::now();
    let outcome = run_bounded(command, options.timeout, stop);
    let wall_s = start.elapsed().as_secs_f64();
    let failed = |error: String| Run { mbps: None, setup_ms: None, wall_s, error: Some(error) };
    match outcome {
        Err(error) => failed(error.to_string()),
        Ok((false, stdout, stderr)) => {
            failed(format!("exit failure: {}{}", stderr.trim(), stdout.trim()).replace('\n', " | "))
        }
        Ok((true, stdout, _)) => {
            let Some(line) = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')) else {
                return failed(format!("no JSON line in: {}", stdout.trim()));
            };
            if let Some(skipped) = json_strings(line, "throughput_skipped").first() {
                return failed(format!("throughput skipped: {skipped}"));
            }
            match (json_number(line, "upload_mbps"), json_number(line, "setup_median_ms")) {
                (Some(mbps), Some(setup)) => {
                    Run { mbps: Some(mbps), setup_ms: Some(setup), wall_s, error: None }
                }
                _ => failed(format!("unexpected output: {line}")),
            }
        }
    }
}

/// The median `sinew ping` round trip on the idle, loss-free link (over TCP).
fn idle_ping(link: &ShapedLink, sinew: &Path, tcp: &str) -> Option<String> {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", link.name(Side::A)])
        .arg(sinew)
        .args(["ping", tcp, "--count", "9"]);
    let (ok, stdout, _) =
        run_bounded(command, Duration::from_secs(20), &AtomicBool::new(false)).ok()?;
    if !ok {
        return None;
    }
    let mut rtts: Vec<f64> = stdout
        .lines()
        .filter(|l| l.starts_with("pong"))
        .filter_map(|l| l.rsplit(": ").next()?.trim_end_matches(" ms").parse().ok())
        .collect();
    rtts.sort_by(f64::total_cmp);
    let median = rtts.get(rtts.len() / 2)?;
    Some(format!("{median:.3}"))
}

/// A number field of a flat JSON object line (`"key":1.5`).
fn json_number(line: &str, key: &str) -> Option<f64> {
    let start = line.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &line[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// The strings of a JSON field that is a string or an array of strings (no escapes in them).
fn json_strings(line: &str, key: &str) -> Vec<String> {
    let Some(at) = line.find(&format!("\"{key}\":")) else { return Vec::new() };
    let rest = line[at + key.len() + 3..].trim_start();
    let body = if let Some(array) = rest.strip_prefix('[') {
        &array[..array.find(']').unwrap_or(array.len())]
    } else if let Some(string) = rest.strip_prefix('"') {
        let end = string.find('"').map_or(rest.len(), |e| e + 2);
        &rest[..end]
    } else {
        return Vec::new();
    };
    body.split('"').skip(1).step_by(2).map(str::to_owned).collect()
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 })
}

fn cell_medians(cell: &Cell) -> (Option<f64>, Option<f64>, usize) {
    let ok: Vec<&Run> = cell.runs.iter().filter(|r| r.error.is_none()).collect();
    (
        median(ok.iter().filter_map(|r| r.mbps).collect()),
        median(ok.iter().filter_map(|r| r.setup_ms).collect()),
        cell.runs.len() - ok.len(),
    )
}

fn fmt_opt(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

fn print_table(links: &[LinkResult]) {
    for link in links {
        let label = if link.rate_kbit == 0 {
            "unshaped veth".to_owned()
        } else {
            format!("tbf {} Mbit/s each way", f64::from(link.rate_kbit) / 1000.0)
        };
        println!(
            "\nlink: {label}, no added delay (idle sinew ping over TCP: {} ms median)",
            link.ping_ms.as_deref().unwrap_or("?")
        );
        println!(
            "| loss % | transport | bytes | median MB/s | median setup ms | failures | runs (MB/s) |"
        );
        println!("|---:|---|---:|---:|---:|---:|---|");
        for cell in &link.cells {
            let (mbps, setup, failures) = cell_medians(cell);
            let runs: Vec<String> = cell
                .runs
                .iter()
                .map(|r| r.mbps.map_or_else(|| "fail".to_owned(), |v| format!("{v:.3}")))
                .collect();
            println!(
                "| {} | {} | {} | {} | {} | {}/{} | {} |",
                cell.loss,
                cell.transport,
                cell.bytes,
                fmt_opt(mbps),
                fmt_opt(setup),
                failures,
                cell.runs.len(),
                runs.join(", ")
            );
        }
        for (loss, drops) in &link.drops {
            println!(
                "loss {loss} %: dropped arriving at client A {}/{} ({:.3} %, mean packet {:.0} B), \
                 at server B {}/{} ({:.3} %, mean packet {:.0} B)",
                drops.at_a.dropped,
                drops.at_a.packets,
                drops.at_a.pct(),
                drops.at_a.mean_size(),
                drops.at_b.dropped,
                drops.at_b.packets,
                drops.at_b.pct(),
                drops.at_b.mean_size()
            );
        }
        for cell in &link.cells {
            for (i, run) in cell.runs.iter().enumerate() {
                if let Some(error) = &run.error {
                    println!(
                        "failure: loss {} % {} run {}: {error}",
                        cell.loss,
                        cell.transport,
                        i + 1
                    );
                }
            }
        }
    }
}

fn json_str(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(value: Option<f64>) -> String {
    value.filter(|v| v.is_finite()).map_or_else(|| "null".to_owned(), |v| format!("{v:.3}"))
}

fn to_json(links: &[LinkResult], options: &Options, elapsed: Duration) -> String {
    let mut out = String::from("{\n");
    out.push_str(
        "  \"what\": \"sinew perf (upload MB/s = 10^6 bytes/s, setup = median dial-to-first-pong \
         of --setups fresh connections) between two network namespaces; loss = nftables numgen \
         random drop of arriving TCP and UDP packets in both namespaces; no added delay (no netem \
         on this kernel)\",\n",
    );
    out.push_str("  \"command\": \"CARGO_TARGET_DIR=/work/target-lossy cargo build --release -p sinew-cli && CARGO_TARGET_DIR=/work/target-lossy cargo run --release -p sinew-testbed --example lossy -- --sinew /work/target-lossy/release/sinew\",\n");
    out.push_str(&format!(
        "  \"runs\": {}, \"setups\": {}, \"timeout_s\": {}, \"elapsed_s\": {:.1},\n",
        options.runs,
        options.setups,
        options.timeout.as_secs(),
        elapsed.as_secs_f64()
    ));
    out.push_str("  \"links\": [\n");
    for (l, link) in links.iter().enumerate() {
        out.push_str(&format!(
            "    {{\n      \"rate_kbit\": {},\n      \"segmentation_offload\": {},\n      \"shaping\": {},\n      \"tcp_default_congestion_control\": {},\n      \"idle_ping_ms_median\": {},\n",
            link.rate_kbit,
            options.offload,
            json_str(if link.rate_kbit == 0 {
                "none (bare veth)"
            } else {
                "tbf burst 32kb latency 50ms on both veth ends"
            }),
            json_str(&link.tcp_default_cc),
            link.ping_ms.as_deref().unwrap_or("null")
        ));
        out.push_str("      \"applied_loss\": [\n");
        for (i, (loss, drops)) in link.drops.iter().enumerate() {
            out.push_str(&format!(
                "        {{\"loss_pct\": {loss}, \"arriving_at_client\": {{\"packets\": {}, \"bytes\": {}, \"dropped\": {}}}, \"arriving_at_server\": {{\"packets\": {}, \"bytes\": {}, \"dropped\": {}}}}}{}\n",
                drops.at_a.packets,
                drops.at_a.bytes,
                drops.at_a.dropped,
                drops.at_b.packets,
                drops.at_b.bytes,
                drops.at_b.dropped,
                if i + 1 < link.drops.len() { "," } else { "" }
            ));
        }
        out.push_str("      ],\n      \"results\": [\n");
        for (c, cell) in link.cells.iter().enumerate() {
            let (mbps, setup, failures) = cell_medians(cell);
            let runs: Vec<String> = cell
                .runs
                .iter()
                .map(|r| {
                    format!(
                        "{{\"upload_mbps\": {}, \"setup_median_ms\": {}, \"wall_s\": {:.3}, \"error\": {}}}",
                        json_num(r.mbps),
                        json_num(r.setup_ms),
                        r.wall_s,
                        r.error.as_deref().map_or_else(|| "null".to_owned(), json_str)
                    )
                })
                .collect();
            out.push_str(&format!(
                "        {{\"loss_pct\": {}, \"transport\": {}, \"bytes\": {}, \"median_upload_mbps\": {}, \"median_setup_ms\": {}, \"failures\": {}, \"runs\": [\n          {}\n        ]}}{}\n",
                cell.loss,
                json_str(&cell.transport),
                cell.bytes,
                json_num(mbps),
                json_num(setup),
                failures,
                runs.join(",\n          "),
                if c + 1 < link.cells.len() { "," } else { "" }
            ));
        }
        out.push_str(&format!("      ]\n    }}{}\n", if l + 1 < links.len() { "," } else { "" }));
    }
    out.push_str("  ]\n}\n");
    out
}
