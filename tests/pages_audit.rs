//! The audit trail: every admin action writes one log line saying who did what to which page.
//! Alone in its binary so that no other test's threads race the log capture (tracing caches
//! per-callsite interest process-wide).

use std::io::Write;
use std::sync::{Arc, Mutex};

use omni_testkit::pages::World;

/// Collects formatted log lines for one test.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn audit_lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(" audit: "))
            .map(str::to_owned)
            .collect()
    }

    /// The audit lines after the first `before`.
    fn since(&self, before: usize) -> Vec<String> {
        self.audit_lines().split_off(before)
    }
}

#[tokio::test]
async fn every_admin_action_writes_one_audit_line() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // The test runtime has one thread, so the gateway's tasks log through this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);

    let w = World::start("").await;
    w.chat.sim.add_department("Sales", &[]);
    w.connect_pages().await;
    let lines = logs.since(0);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].contains("command accepted")
            && lines[0].contains("user=alice")
            && lines[0].contains("command=\"authorize\""),
        "{lines:#?}"
    );
    assert!(
        lines[1].contains("facebook login completed")
            && lines[1].contains("user=alice")
            && lines[1].contains("Acme Bakery (1001), Acme Books (1002)"),
        "{lines:#?}"
    );

    // (command, fragments its one audit line must hold)
    let rows: [(&str, &[&str]); 8] = [
        ("pages", &["command=\"pages\"", "page=\"-\""]),
        ("status", &["command=\"status\""]),
        ("edit 1001", &["command=\"edit\"", "page=\"1001\""]),
        (
            "edit 1001 department Sales",
            &[
                "command=\"edit\"",
                "setting=\"department\"",
                "page=\"1001\"",
            ],
        ),
        (
            "edit 1002 welcome Hello",
            &["command=\"edit\"", "setting=\"welcome\"", "page=\"1002\""],
        ),
        (
            "unsubscribe 1002",
            &["command=\"unsubscribe\"", "page=\"1002\""],
        ),
        (
            "unauthorize 1002",
            &["command=\"unauthorize\"", "page=\"1002\""],
        ),
        ("unauthorize", &["command=\"unauthorize\"", "page=\"-\""]),
    ];
    for (command, fragments) in rows {
        let before = logs.audit_lines().len();
        w.ask(&format!("/facebook {command}")).await;
        let lines = logs.since(before);
        assert_eq!(lines.len(), 1, "{command}: {lines:#?}");
        assert!(lines[0].contains("user=alice"), "{command}: {}", lines[0]);
        for fragment in fragments {
            assert!(
                lines[0].contains(fragment),
                "{command}: {fragment} in {}",
                lines[0]
            );
        }
    }

    // A refusal is audited too: who tried what.
    let before = logs.audit_lines().len();
    w.chat
        .sim
        .post("bob", &w.chat.bob_dm, "/facebook unauthorize");
    w.chat
        .bot_says(&w.chat.bob_dm, |m| m.contains("only Rocket.Chat admins"))
        .await;
    let lines = logs.since(before);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("user=bob") && lines[0].contains("not an admin"),
        "{}",
        lines[0]
    );
    w.stop().await;
}
