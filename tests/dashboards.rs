//! The Grafana dashboard and the Prometheus alert rules in `dashboards/` query only metrics the
//! gateway exports: a running gateway's `/metrics` is read and every `omni_gateway_*` name the
//! two files use must be one of its series (histograms as `_bucket`/`_sum`/`_count`, counters as
//! `_total`). `promtool check rules` checks the rules' syntax in CI (packaging/check-deb).

use std::collections::BTreeSet;
use std::path::Path;

use omni_testkit::messenger::{Facebook, PageSetup, connect_page, start_gateway};
use omni_testkit::{Chat, until_ready};

/// Every series name `/metrics` can hold, from its `# TYPE` lines (a family without samples yet
/// is still declared there).
fn exported(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

fn used(text: &str) -> BTreeSet<String> {
    let name = regex::Regex::new(r"omni_gateway_[a-z_]+").expect("literal regex");
    name.find_iter(text)
        .map(|m| m.as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let dashboard = std::fs::read_to_string(root.join("omni-gateway.json")).expect("dashboard");
    let rules = std::fs::read_to_string(root.join("alerts.yml")).expect("alert rules");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let panels = parsed["panels"].as_array().map_or(0, Vec::len);
    assert!(panels >= 10, "{panels} panels");

    let chat = Chat::start().await;
    let fb = Facebook::start().await;
    let running = start_gateway(&chat, &fb).await;
    until_ready(&running.gateway).await;
    // A connected page, so the per-page token state has a series.
    connect_page(&running.gateway, &fb, PageSetup::default()).await;
    let metrics = reqwest::get(format!("http://{}/metrics", running.gateway.http_addr))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text");
    let exported = exported(&metrics);

    for (file, text, least) in [
        ("omni-gateway.json", &dashboard, 12),
        ("alerts.yml", &rules, 5),
    ] {
        let names = used(text);
        assert!(names.len() >= least, "{file} uses only {names:?}");
        let missing: Vec<&String> = names.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics the gateway does not export: {missing:?}\nexported: {exported:?}"
        );
    }
    // What the issue asks the dashboard to show, by metric.
    for needed in [
        "omni_gateway_webhook_events_total",
        "omni_gateway_inbound_delivered_total",
        "omni_gateway_held_conversations",
        "omni_gateway_inbox_depth",
        "omni_gateway_outbox_depth",
        "omni_gateway_rocketchat_errors_total",
        "omni_gateway_replies_total",
        "omni_gateway_rocketchat_rate_limited_total",
        "omni_gateway_page_status",
        "omni_gateway_rocketchat_link_up",
    ] {
        assert!(dashboard.contains(needed), "the dashboard lacks {needed}");
    }
    for needed in [
        "omni_gateway_page_status",
        "omni_gateway_held_oldest_seconds",
        "omni_gateway_rocketchat_link_up",
        "omni_gateway_replies_total",
        "omni_gateway_inbound_delivered_total",
    ] {
        assert!(rules.contains(needed), "the alert rules lack {needed}");
    }
}
