//! `omni-gateway sandbox`: the same tour `cargo run -- sandbox` plays, in-process, must pass
//! every hop; and a broken hop is named.

use std::time::Duration;

use omni_gateway::sandbox::{self, Error, Sandbox};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tour_completes_every_hop() {
    let mut lines = Vec::new();
    let result = sandbox::run(false, &mut |line| lines.push(line.to_owned())).await;
    let shown = lines.join("\n");
    assert!(result.is_ok(), "{result:?}\n{shown}");
    let hops = lines
        .iter()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .count();
    assert_eq!(hops, 16, "one line per hop:\n{shown}");
    assert!(
        lines.last().is_some_and(|l| l.starts_with("tour complete")),
        "{shown}"
    );
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
