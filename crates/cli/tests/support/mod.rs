//! Running `sinew` processes and reading what they print.

#![allow(dead_code)] // each test binary uses part of this

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// How long a test waits for a process to print something.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A running `sinew node` and the lines it prints.
pub(crate) struct NodeProcess {
    pub(crate) child: Child,
    pub(crate) peer_id: String,
    pub(crate) listen: Vec<String>,
    lines: mpsc::Receiver<String>,
}

impl NodeProcess {
    /// Starts `sinew node` with `args` and reads its first line (JSON: peer id, addresses).
    pub(crate) async fn start(args: &[&str]) -> Self {
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_sinew")), args).await
    }

    /// Like [`NodeProcess::start`], inside the network namespace `netns` (`ip netns exec`
    /// replaces itself with `sinew`, so the pid is the node's).
    pub(crate) async fn start_in(netns: &str, args: &[&str]) -> Self {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_sinew")]);
        Self::spawn(command, args).await
    }

    async fn spawn(mut command: Command, args: &[&str]) -> Self {
        let mut child = command
            .arg("node")
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("sinew starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, mut lines) = mpsc::channel(4096);
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).await.is_err() {
                    break;
                }
            }
        });
        let first = tokio::time::timeout(WAIT, lines.recv())
            .await
            .expect("first line in time")
            .expect("a first line");
        let json: serde_json::Value = serde_json::from_str(&first).expect("the first line is JSON");
        let peer_id = json["peer_id"].as_str().expect("peer_id").to_owned();
        let listen = json["listen"]
            .as_array()
            .expect("listen")
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect();
        Self { child, peer_id, listen, lines }
    }

    /// The first listen address with the peer id.
    pub(crate) fn addr(&self) -> String {
        self.listen[0].replacen("tcp://", &format!("tcp://{}@", self.peer_id), 1)
    }

    /// Waits for a printed line containing every one of `needles`.
    pub(crate) async fn wait_for_line(&mut self, needles: &[&str]) -> String {
        tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                if needles.iter().all(|n| line.contains(n)) {
                    return line;
                }
            }
            panic!("sinew exited before printing {needles:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no line with {needles:?} in time"))
    }

    /// The process id.
    pub(crate) fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }
}

/// Runs a `sinew` subcommand to completion and returns its stdout.
pub(crate) async fn run(args: &[&str]) -> String {
    run_command(Command::new(env!("CARGO_BIN_EXE_sinew")).args(args), args).await
}

/// Runs a `sinew` subcommand inside the network namespace `netns`.
pub(crate) async fn run_in(netns: &str, args: &[&str]) -> String {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns, env!("CARGO_BIN_EXE_sinew")]).args(args);
    run_command(&mut command, args).await
}

async fn run_command(command: &mut Command, args: &[&str]) -> String {
    let output = tokio::time::timeout(WAIT * 3, command.output())
        .await
        .expect("finishes in time")
        .expect("runs");
    assert!(
        output.status.success(),
        "sinew {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8")
}
