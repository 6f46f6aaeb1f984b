//! The systemd side of the daemon: readiness, watchdog pings and stop signals
//! (`Type=notify`, `WatchdogSec=` in systemd/omni-gateway.service). Outside systemd every call
//! is a no-op.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::health::Health;

/// Tells systemd `READY=1` once the gateway is logged in to Rocket.Chat and serving.
pub async fn notify_ready_when_up(health: Health) {
    loop {
        if health.readiness().is_ok() {
            notify(&[
                NotifyState::Ready,
                NotifyState::Status("logged in to rocket.chat"),
            ]);
            info!("ready");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn notify_stopping() {
    notify(&[NotifyState::Stopping]);
}

/// Pings the watchdog at half its interval, but only while the main loop makes progress
/// (`progress` keeps increasing): a stuck loop lets systemd restart us.
pub async fn watchdog(progress: Arc<AtomicU64>, cancel: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(interval / 2);
    let mut last = progress.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = progress.load(Ordering::Relaxed);
        if now != last {
            notify(&[NotifyState::Watchdog]);
        } else {
            debug!("main loop made no progress; withholding the watchdog ping");
        }
        last = now;
    }
}

/// Resolves on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn notify(state: &[NotifyState]) {
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing; a send error under systemd
    // would show as a start-up timeout in `systemctl status`, which says enough.
    if let Err(err) = sd_notify::notify(state) {
        debug!(error = %err, "sd_notify failed");
    }
}
