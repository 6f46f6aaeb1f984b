//! The audit trail: every admin action writes one log line saying who did what to which page.
//! Alone in its binary so that no other test's threads race the log capture (tracing caches
//! per-callsite interest process-wide).

use omni_testkit::logs::Logs;
use omni_testkit::pages::World;

/// The audit lines captured so far after the first `before`.
fn audit_since(logs: &Logs, before: usize) -> Vec<String> {
    logs.lines(&[" audit: "]).split_off(before)
}

#[tokio::test]
async fn every_admin_action_writes_one_audit_line() {
    let logs = Logs::capture("info");

    let w = World::start("").await;
    w.chat.sim.add_department("Sales", &[]);
    w.connect_pages().await;
    let lines = audit_since(&logs, 0);
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
        let before = logs.lines(&[" audit: "]).len();
        w.ask(&format!("/facebook {command}")).await;
        let lines = audit_since(&logs, before);
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
    let before = logs.lines(&[" audit: "]).len();
    w.chat
        .sim
        .post("bob", &w.chat.bob_dm, "/facebook unauthorize");
    w.chat
        .bot_says(&w.chat.bob_dm, |m| m.contains("only Rocket.Chat admins"))
        .await;
    let lines = audit_since(&logs, before);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("user=bob") && lines[0].contains("not an admin"),
        "{}",
        lines[0]
    );
    w.stop().await;
}
