//! The real binary as a child process, for the crash tests: started on a fixed port, killed with
//! SIGKILL (no shutdown, no final flush), and started again on the same store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use omni_gateway::config::Config;
use omni_gateway::store::{Store, TokenKey};
use tempfile::TempDir;

use crate::instagram::instagram_record;
use crate::messenger::{Facebook, PageSetup, page_record};
use crate::{Chat, PATIENCE, config_text_with, password_credentials};

/// The path of the `omni-gateway` binary cargo built for the calling test or bench. A macro so
/// `env!` reads the caller's build environment (cargo sets `CARGO_BIN_EXE_*` only for the
/// package's own tests and benches).
#[macro_export]
macro_rules! gateway_binary {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_omni-gateway"))
    };
}

/// The daemon as a child process, killed (SIGKILL) when dropped so a failing test leaves nothing.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Runs `<binary> run --config <config>` at log level info, appending its log to `log`.
    pub fn start(binary: &Path, config: &Path, log: PathBuf) -> Daemon {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(binary)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        Daemon { child, log }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no final flush.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL delivered");
        self.child.wait().expect("the process is reaped");
    }

    /// SIGTERM, as systemd stops a service; does not wait.
    pub fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid; it has not been reaped yet, so the pid is ours.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM delivered");
    }

    /// Waits up to `limit` for the child to exit; its status, or `None` if it still runs.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the daemon logged so far (all runs that shared the log file).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/healthz` answers 200 at `base` (the process serves HTTP).
    pub async fn until_healthy(&mut self, http: &reqwest::Client, base: &str) {
        self.until_ok(http, &format!("{base}/healthz")).await;
    }

    /// Waits until `/readyz` answers 200 at `base` (logged in, streams subscribed).
    pub async fn until_ready(&mut self, http: &reqwest::Client, base: &str) {
        self.until_ok(http, &format!("{base}/readyz")).await;
    }

    /// Polls `url` until it answers 200; panics with the log if the daemon exits or the
    /// patience runs out.
    async fn until_ok(&mut self, http: &reqwest::Client, url: &str) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(answer) = http.get(url).send().await {
                if answer.status().is_success() {
                    return;
                }
            }
            let exited = self.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && tokio::time::Instant::now() < deadline,
                "{url} never answered 200 (exit: {exited:?}); the daemon's log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback bind");
    listener.local_addr().expect("bound address").port()
}

/// A gateway installed for the binary: bot.toml on a fixed port and a store in which the page is
/// already connected (as after an earlier `authorize`), in a temporary directory.
pub struct Installed {
    /// Holds the directory for the test's life.
    pub dir: TempDir,
    pub config: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    pub log: PathBuf,
}

impl Installed {
    pub async fn new(chat: &Chat, fb: &Facebook, setup: PageSetup) -> Installed {
        Installed::with(chat, fb, setup, None).await
    }

    /// Like [`Installed::new`], with the Page's linked Instagram account connected too (its
    /// settings from `account`), as `authorize` leaves a Page that has one.
    pub async fn with_instagram(
        chat: &Chat,
        fb: &Facebook,
        page: PageSetup,
        account: PageSetup,
    ) -> Installed {
        fb.link_instagram();
        Installed::with(chat, fb, page, Some(account)).await
    }

    async fn with(
        chat: &Chat,
        fb: &Facebook,
        setup: PageSetup,
        instagram: Option<PageSetup>,
    ) -> Installed {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let text = config_text_with(
            chat.sim.url().as_str(),
            fb.sim.url().as_str(),
            &dir.path().join("data"),
            &password_credentials(),
            "",
        )
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        );
        let config_path = dir.path().join("bot.toml");
        std::fs::write(&config_path, &text).expect("bot.toml written");
        let config = Config::parse(&text, &config_path, &|_| None).expect("valid config");
        let key = TokenKey::load_or_create(&config.store.key_file).expect("token key");
        let store = Store::open(&config.store.path, key, config.store.cache_capacity_bytes)
            .expect("store opens");
        let page = page_record(fb, setup).await;
        store.put_page(&page).expect("page stored");
        if let Some(account) = instagram {
            store
                .put_page(&instagram_record(&page, account))
                .expect("instagram account stored");
        }
        store.flush_blocking().expect("page flushed");
        Installed {
            log: dir.path().join("daemon.log"),
            config: config_path,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    /// Starts `binary` ([`gateway_binary!`](crate::gateway_binary)) on this installation (the
    /// log accumulates across runs).
    pub fn start(&self, binary: &Path) -> Daemon {
        Daemon::start(binary, &self.config, self.log.clone())
    }
}
