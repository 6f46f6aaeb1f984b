//! `omni-gateway sandbox`: the same tour `cargo run -- sandbox` plays, in-process, must pass
//! every hop; and a broken hop is named.

use std::time::Duration;

use omni_gateway::sandbox::{self, Error, Sandbox};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tour_completes_every_hop_and_metrics_show_it() {
    let sandbox = Sandbox::start().await.expect("sandbox starts");
    let mut lines = Vec::new();
    let result = sandbox.tour(&mut |line| lines.push(line.to_owned())).await;
    let shown = lines.join("\n");
    assert!(result.is_ok(), "{result:?}\n{shown}");
    assert_eq!(
        lines.len(),
        23,
        "one line per hop:
{shown}"
    );
    for (n, line) in lines.iter().enumerate() {
        assert!(line.starts_with(&format!("{:>2}. ", n + 1)), "{line}");
    }

    let metrics = reqwest::get(format!("{}/metrics", sandbox.gateway_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    sandbox.stop().await;
    for family in [
        "omni_gateway_rocketchat_link_up 1",
        "omni_gateway_inbox_depth 0",
        "omni_gateway_outbox_depth 0",
        "omni_gateway_held_conversations 0",
        "omni_gateway_page_status{page=\"111111111111111\",state=\"connected\"} 1",
        "omni_gateway_webhook_events_total{outcome=\"stored\"} 6",
        "omni_gateway_inbound_delivered_total 6",
        "omni_gateway_inbound_held_total 1",
        "omni_gateway_webhook_request_seconds_count 6",
        "omni_gateway_inbound_delivery_latency_seconds_count 6",
        "omni_gateway_rocketchat_errors_total{kind=\"no_agent_online\"}",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hop_is_named_with_the_reason() {
    let mut sandbox = Sandbox::start().await.expect("sandbox starts");
    sandbox.patience = Duration::from_secs(3);
    // Without this permission the bot cannot validate a department name.
    sandbox
        .chat
        .revoke_permission("bot", "view-livechat-departments");
    let mut lines = Vec::new();
    let result = sandbox.tour(&mut |line| lines.push(line.to_owned())).await;
    sandbox.stop().await;
    match result {
        Err(Error::Hop {
            number,
            name,
            reason,
        }) => {
            assert_eq!((number, name), (5, "configure pages"), "{lines:?}");
            assert!(reason.contains("view-livechat-departments"), "{reason}");
            assert_eq!(lines.len(), 4, "the hops before it were printed: {lines:?}");
        }
        other => panic!("expected hop 5 to fail, got {other:?}; printed {lines:?}"),
    }
}

/// The binary's own JSON logs of a whole tour, at debug level: every line is a JSON object and
/// none holds a customer's PSID, a page or visitor token, or the verify token.
#[test]
fn json_logs_hold_no_psid_or_token() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_omni-gateway"))
        .args(["--log-format", "json", "sandbox"])
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| !l.starts_with("omni-gateway: "))
        .collect();
    for line in &lines {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(
            parsed.is_ok_and(|v| v.is_object()),
            "not a JSON object: {line}"
        );
    }
    assert!(
        logs.contains("conversation opened") && logs.contains("message sent to the customer"),
        "the tour's flow is in the logs:\n{logs}"
    );
    let secrets = regex::Regex::new(&format!(
        "{}|{}|EAA[A-Za-z0-9]{{20,}}|fb-[0-9a-f]{{16,}}|sandbox-verify-token",
        sandbox::CARLA,
        sandbox::DAN
    ))
    .unwrap();
    let leaks: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| secrets.is_match(l))
        .collect();
    assert!(
        leaks.is_empty(),
        "leaked into the logs:\n{}",
        leaks.join("\n")
    );
}
