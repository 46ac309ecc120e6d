//! `sinew`: the reference node, and tools around it.
//!
//! - `sinew keygen [--out FILE]`: make an identity key (mode 0600).
//! - `sinew node --listen ADDR... [--peer ADDR...]`: run a node; the first stdout line is JSON
//!   `{"peer_id":...,"listen":[...]}`, then events are logged.
//! - `sinew ping ADDR`: dial and ping.
//! - `sinew send ADDR --opcode N --file F`: send a file as one message and wait for the ack.
//! - `sinew perf ADDR --bytes N [--json]`: connection setup time and single-stream throughput.
//! - `sinew demo`: three nodes in one process, a short tour and report.

mod demo;
mod perf;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sinew::Addr;

#[derive(Parser)]
#[command(name = "sinew", version, about = "sinew peer-to-peer node and tools")]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Generate an identity key file (mode 0600) and print its peer id.
    Keygen {
        /// Where to write the key.
        #[arg(long, default_value = "sinew.key")]
        out: PathBuf,
    },
    /// Run a node until interrupted.
    Node(run::NodeArgs),
    /// Dial a node and measure round trips.
    Ping {
        /// The node's address.
        addr: Addr,
        /// How many pings.
        #[arg(long, default_value_t = 3)]
        count: u32,
    },
    /// Send a file to a node as one message and wait for its acknowledgement.
    Send {
        /// The node's address.
        addr: Addr,
        /// Application opcode (1000 and up).
        #[arg(long)]
        opcode: u32,
        /// The file to send (up to 512 MiB).
        #[arg(long)]
        file: PathBuf,
    },
    /// Measure connection setup and single-stream throughput against a node.
    Perf(perf::PerfArgs),
    /// Run three nodes in this process and show what sinew does.
    Demo {
        /// Size of the large message, in MiB.
        #[arg(long, default_value_t = 64)]
        large_mib: usize,
        /// Bytes moved in the throughput run, in MiB.
        #[arg(long, default_value_t = 512)]
        throughput_mib: u64,
    },
}

/// Raises glibc's mmap and trim thresholds so large, short-lived buffers (yamux frame bodies,
/// message buffers) are recycled instead of mapped and unmapped each time: measured at +25% on
/// an encrypted stream (docs/performance.md). The library never does this by itself.
#[allow(unsafe_code)]
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads
    // start and takes plain integers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 * 1024 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024 * 1024);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    if std::env::var_os("RUST_LOG").is_some() && !matches!(cli.command, Commands::Node(_)) {
        run::init_logging(false);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sinew: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Commands::Keygen { out } => run::keygen(&out),
            Commands::Node(args) => run::node(args).await,
            Commands::Ping { addr, count } => run::ping(addr, count).await,
            Commands::Send { addr, opcode, file } => run::send(addr, opcode, &file).await,
            Commands::Perf(args) => perf::run(args).await,
            Commands::Demo { large_mib, throughput_mib } => {
                demo::run(large_mib, throughput_mib).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sinew: {error}");
            ExitCode::FAILURE
        }
    }
}
