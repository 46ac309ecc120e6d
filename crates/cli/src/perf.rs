//! `sinew perf`: connection setup time and single-stream throughput against a node.

use std::time::{Duration, Instant};

use sinew::{Addr, DialError, NodeConfig, NoiseSuite};

use crate::run::{BoxError, client};

/// `sinew perf` options.
#[derive(clap::Args)]
pub(crate) struct PerfArgs {
    /// The node's address (it must serve perf: `sinew node --serve-perf`).
    addr: Addr,
    /// Bytes to send on one stream.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Bytes to receive back afterwards.
    #[arg(long, default_value_t = 0)]
    download: u64,
    /// Size of each write.
    #[arg(long, default_value_t = 1 << 20)]
    chunk: usize,
    /// Security: aes or chacha (Noise XX with that suite), or tls (TLS 1.3).
    #[arg(long, default_value = "aes")]
    suite: String,
    /// Connection setups to time one after another (each a fresh identity: dial to first pong).
    #[arg(long, default_value_t = 20)]
    setups: usize,
    /// Connection setups to run at once, for connections per second under concurrency.
    #[arg(long, default_value_t = 0)]
    concurrent: usize,
    /// Print one JSON line.
    #[arg(long)]
    json: bool,
}

fn config(suite: Option<NoiseSuite>) -> NodeConfig {
    let mut config = NodeConfig::default();
    match suite {
        Some(suite) => config.tcp.noise.suite = suite,
        None => config.tcp.dial_tls = true,
    }
    config.request_timeout = Duration::from_secs(600);
    config
}

/// How often a setup the server refused for a limit is tried again.
const REFUSED_RETRIES: usize = 200;

/// Dial to first response (a pong), with a fresh client identity; then the connection is
/// closed (in `closing`, alongside what comes next: closing is not part of a setup), so the
/// server's slot is freed. A dial the server refuses for one of its limits (per IP, pending
/// handshakes...) is tried again after its advice or 5 ms: with more setups at once than the
/// server admits from one address, some wait their turn.
async fn one_setup(
    addr: &Addr,
    suite: Option<NoiseSuite>,
    closing: &mut tokio::task::JoinSet<()>,
) -> Result<Duration, BoxError> {
    let node = client(config(suite)).await?;
    let mut refused = 0;
    let (peer, start) = loop {
        let start = Instant::now();
        match node.dial(addr.clone()).await {
            Ok(peer) => break (peer, start),
            Err(DialError::Refused { retry_after, .. }) if refused < REFUSED_RETRIES => {
                refused += 1;
                tokio::time::sleep(retry_after.unwrap_or(Duration::from_millis(5))).await;
            }
            Err(error) => return Err(error.into()),
        }
    };
    node.ping(peer).await?;
    let elapsed = start.elapsed();
    closing.spawn(async move { node.shutdown().await });
    Ok(elapsed)
}

fn cpu_seconds() -> f64 {
    #[allow(unsafe_code)]
    // SAFETY: getrusage fills the struct we own; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

pub(crate) async fn run(args: PerfArgs) -> Result<(), BoxError> {
    let suite = match args.suite.as_str() {
        "aes" | "aesgcm" => Some(NoiseSuite::AesGcm),
        "chacha" | "chachapoly" => Some(NoiseSuite::ChaChaPoly),
        "tls" => None,
        other => return Err(format!("unknown security {other} (aes, chacha or tls)").into()),
    };
    let mut setups = Vec::with_capacity(args.setups);
    let mut closing = tokio::task::JoinSet::new();
    let sequential_start = Instant::now();
    for _ in 0..args.setups {
        setups.push(one_setup(&args.addr, suite, &mut closing).await?);
        // Closes that have finished are reaped as we go.
        while closing.try_join_next().is_some() {}
    }
    let sequential_elapsed = sequential_start.elapsed();
    setups.sort();
    let median = setups.get(setups.len() / 2).copied().unwrap_or_default();
    let sequential_rate = args.setups as f64 / sequential_elapsed.as_secs_f64().max(1e-9);

    let concurrent_rate = if args.concurrent > 0 {
        let start = Instant::now();
        let tasks: Vec<_> = (0..args.concurrent)
            .map(|_| {
                let addr = args.addr.clone();
                tokio::spawn(async move {
                    let mut closing = tokio::task::JoinSet::new();
                    let setup = one_setup(&addr, suite, &mut closing).await;
                    closing.join_all().await;
                    setup.map_err(|e| e.to_string())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        Some(args.concurrent as f64 / start.elapsed().as_secs_f64())
    } else {
        None
    };

    // Every connection is closed before anything else is measured.
    closing.join_all().await;
    let throughput = throughput(&args, suite).await?;
    if args.json {
        let mut line = serde_json::json!({
            "suite": args.suite,
            "setup_median_ms": median.as_secs_f64() * 1e3,
            "setups": args.setups,
            "setups_per_sec_sequential": sequential_rate,
            "setups_per_sec_concurrent": concurrent_rate,
        });
        match &throughput {
            Ok((report, cpu)) => {
                let gb = (report.uploaded + report.downloaded) as f64 / 1e9;
                line["bytes"] = report.uploaded.into();
                line["upload_mbps"] = report.upload_mbps().into();
                line["download_mbps"] = report.download_mbps().into();
                line["client_cpu_s"] = (*cpu).into();
                line["client_cpu_s_per_gb"] = (cpu / gb.max(1e-9)).into();
            }
            Err(skipped) => line["throughput_skipped"] = skipped.clone().into(),
        }
        println!("{line}");
    } else {
        println!(
            "connection setup (dial to first pong): median {:.3} ms over {} setups",
            median.as_secs_f64() * 1e3,
            args.setups
        );
        println!("sequential setups: {sequential_rate:.0}/s");
        if let Some(rate) = concurrent_rate {
            println!("concurrent setups ({}): {rate:.0}/s", args.concurrent);
        }
        match &throughput {
            Ok((report, cpu)) => {
                let gb = (report.uploaded + report.downloaded) as f64 / 1e9;
                println!(
                    "throughput ({}): {:.0} MB/s upload ({} bytes in {:.2} s), client CPU {:.2} s/GB",
                    args.suite,
                    report.upload_mbps(),
                    report.uploaded,
                    report.upload_time.as_secs_f64(),
                    cpu / gb.max(1e-9)
                );
                if report.downloaded > 0 {
                    println!("download: {:.0} MB/s", report.download_mbps());
                }
            }
            Err(skipped) => println!("throughput: not measured: {skipped}"),
        }
    }
    Ok(())
}

/// The throughput test, with the client's CPU time; `Err` says why it was not run (nothing was
/// asked for, or the node does not serve perf: a one-byte probe finds out before a whole
/// upload is sent).
async fn throughput(
    args: &PerfArgs,
    suite: Option<NoiseSuite>,
) -> Result<Result<(sinew::PerfReport, f64), String>, BoxError> {
    if args.bytes == 0 && args.download == 0 {
        return Ok(Err("no bytes asked for".into()));
    }
    let node = client(config(suite)).await?;
    let peer = node.dial(args.addr.clone()).await?;
    if let Err(error) = node.perf(peer, 1, 0, 1).await {
        node.shutdown().await;
        return Ok(Err(format!(
            "the node refused a perf stream ({error}); start it with --serve-perf"
        )));
    }
    let cpu_before = cpu_seconds();
    let report = node.perf(peer, args.bytes, args.download, args.chunk).await;
    let cpu = cpu_seconds() - cpu_before;
    node.shutdown().await;
    Ok(Ok((report?, cpu)))
}
