//! The real binary as a child process, for the crash tests: started on a fixed port, killed with
//! SIGKILL (no shutdown, no final flush), and started again on the same store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::PATIENCE;

/// The daemon as a child process, killed (SIGKILL) when dropped so a failing test leaves nothing.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Runs `omni-gateway run --config <config>`, appending its log to `log`.
    pub fn start(config: &Path, log: PathBuf) -> Daemon {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_omni-gateway"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("the binary starts");
        Daemon { child, log }
    }

    /// SIGKILL: no shutdown, no final flush.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL delivered");
        self.child.wait().expect("the process is reaped");
    }

    /// Everything the daemon logged so far (all runs that shared the log file).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/healthz` answers 200 at `base`.
    pub async fn until_healthy(&self, http: &reqwest::Client, base: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(answer) = http.get(format!("{base}/healthz")).send().await {
                if answer.status().is_success() {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the daemon did not become healthy; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback bind");
    listener.local_addr().expect("bound address").port()
}
