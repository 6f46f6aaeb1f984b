//! `omni-gateway check` against the simulators: every line ✓ on a good set-up, and each thing an
//! admin can get wrong named by the line that fails, with its fix.

use std::path::Path;

use omni_gateway::check::{self, Report, Status};
use omni_gateway::messenger::graph::SUBSCRIBED_FIELDS;
use omni_sim::graph::{AppSubscription, GraphSim};
use omni_sim::rocketchat::{ServerVersion, SimOptions};
use omni_testkit::{
    BOT, BOT_PASSWORD, Chat, Running, password_credentials, start_gateway, until_ready,
};
use serde_json::json;

const APP_ID: &str = "555000000000001";
const APP_SECRET: &str = "app-secret-for-check";

/// What one case changes in a good set-up.
#[derive(Clone, Copy, Debug)]
enum Change {
    None,
    LivechatOff,
    SlashCommandsOff,
    CannotReadRoles,
    CannotListDepartments,
    CannotReact,
    CannotPostInLivechatRooms,
    RateLimiterAtDefault,
    RateLimiterUnreadable,
    WrongPassword,
    WrongAppSecret,
    PlainHttpPublicUrl,
    GatewayNotRunning,
    StoreInUse,
    AppWebhooksElsewhere,
    AppWebhooksPartial,
    /// More departments than one page of `livechat/department` holds (100).
    ManyDepartments,
}

struct Setup {
    chat: Chat,
    facebook: GraphSim,
    running: Running,
}

async fn good_setup_on(version: ServerVersion) -> Setup {
    let chat = Chat::start_with(SimOptions {
        rest_rate_limiter: false,
        version,
        ..SimOptions::default()
    })
    .await;
    chat.sim
        .set_setting("Message_AllowUnrecognizedSlashCommand", json!(true));
    chat.sim
        .grant_permission("bot", "view-livechat-departments");
    chat.sim.grant_permission("bot", "view-privileged-setting");
    chat.sim.grant_permission("bot", "view-livechat-rooms");
    chat.sim
        .add_user("sam", "sam-pw", &["user", "livechat-agent"]);
    chat.sim.add_department("Support", &["sam"]);
    let facebook = GraphSim::start(APP_ID, APP_SECRET).await.unwrap();
    let running = start_gateway(&chat, &password_credentials()).await;
    until_ready(&running.gateway).await;
    facebook.set_app_subscription(Some(AppSubscription {
        callback_url: format!("http://{}/webhooks/messenger", running.gateway.http_addr),
        fields: SUBSCRIBED_FIELDS.iter().map(|f| (*f).to_owned()).collect(),
        verify_token: "verify-token-for-check".into(),
    }));
    Setup {
        chat,
        facebook,
        running,
    }
}

/// A bot.toml for `check` aimed at the simulators and the running gateway.
fn check_config(setup: &Setup, change: Change, dir: &Path) -> std::path::PathBuf {
    let password = match change {
        Change::WrongPassword => "not-the-password",
        _ => BOT_PASSWORD,
    };
    let secret = match change {
        Change::WrongAppSecret => "not-the-secret",
        _ => APP_SECRET,
    };
    let addr = setup.running.gateway.http_addr;
    let public_url = match change {
        Change::PlainHttpPublicUrl => "http://fb-gateway.example.com".to_owned(),
        // A port nothing listens on: the gateway "is not running".
        Change::GatewayNotRunning => "http://127.0.0.1:9".to_owned(),
        _ => format!("http://{addr}"),
    };
    let listen = match change {
        Change::GatewayNotRunning => "127.0.0.1:9".to_owned(),
        _ => addr.to_string(),
    };
    let store = match change {
        Change::StoreInUse => setup.running.dir.path().join("data"),
        _ => dir.join("data"),
    };
    let text = format!(
        r#"
[rocketchat]
url = "{rc}"
username = "{BOT}"
password = "{password}"

[facebook]
app_id = "{APP_ID}"
app_secret = "{secret}"
verify_token = "verify-token-for-check"
graph_url = "{graph}"
dialog_url = "{graph}"

[http]
listen = "{listen}"
public_url = "{public_url}"

[store]
path = "{store}"
"#,
        rc = setup.chat.sim.url().as_str().trim_end_matches('/'),
        graph = setup.facebook.url().as_str().trim_end_matches('/'),
        store = store.display(),
    );
    let path = dir.join("bot.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn apply(setup: &Setup, change: Change) {
    let sim = &setup.chat.sim;
    match change {
        Change::LivechatOff => sim.set_setting("Livechat_enabled", json!(false)),
        Change::SlashCommandsOff => {
            sim.set_setting("Message_AllowUnrecognizedSlashCommand", json!(false))
        }
        Change::CannotReadRoles => sim.revoke_permission("bot", "view-full-other-user-info"),
        Change::CannotListDepartments => sim.revoke_permission("bot", "view-livechat-departments"),
        Change::CannotReact => sim.revoke_permission("bot", "view-livechat-rooms"),
        Change::CannotPostInLivechatRooms => sim.revoke_permission("bot", "view-livechat-rooms"),
        Change::RateLimiterAtDefault => sim.set_setting("API_Enable_Rate_Limiter", json!(true)),
        // A real server's default: the limiter on, and a bot that may not read the setting.
        Change::ManyDepartments => {
            for n in 0..150 {
                sim.add_department(&format!("Team {n}"), &["sam"]);
            }
        }
        Change::RateLimiterUnreadable => {
            sim.set_setting("API_Enable_Rate_Limiter", json!(true));
            sim.revoke_permission("bot", "view-privileged-setting");
        }
        // The app's webhooks follow the public URL these cases change.
        Change::PlainHttpPublicUrl | Change::GatewayNotRunning => {
            let mut sub = setup.facebook.app_subscription().unwrap();
            sub.callback_url = match change {
                Change::PlainHttpPublicUrl => "http://fb-gateway.example.com/webhooks/messenger",
                _ => "http://127.0.0.1:9/webhooks/messenger",
            }
            .into();
            setup.facebook.set_app_subscription(Some(sub));
        }
        Change::AppWebhooksElsewhere | Change::AppWebhooksPartial => {
            let mut sub = setup.facebook.app_subscription().unwrap();
            if matches!(change, Change::AppWebhooksElsewhere) {
                sub.callback_url = "https://other.example.com/hook".into();
            } else {
                sub.fields
                    .retain(|f| f != "standby" && f != "message_echoes");
            }
            setup.facebook.set_app_subscription(Some(sub));
        }
        _ => {}
    }
}

async fn check_with(change: Change) -> Report {
    check_on(ServerVersion::default(), change).await
}

async fn check_on(version: ServerVersion, change: Change) -> Report {
    let setup = good_setup_on(version).await;
    apply(&setup, change);
    let dir = tempfile::tempdir().unwrap();
    let path = check_config(&setup, change, dir.path());
    let mut printed = Vec::new();
    let report = check::run(&path, &mut |f| printed.push(f.to_string())).await;
    assert_eq!(
        printed.len(),
        report.findings.len(),
        "every finding is printed as it is made"
    );
    setup.running.gateway.shutdown().await.unwrap();
    report
}

fn lines(report: &Report) -> String {
    report
        .findings
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_good_setup_passes_every_check() {
    let report = check_with(Change::None).await;
    let all = lines(&report);
    for name in [
        "config",
        "store",
        "rocketchat",
        "login",
        "omnichannel",
        "slash commands",
        "roles",
        "page inbox replies",
        "departments",
        "rate limiter",
        "reactions",
        "graph api",
        "app webhooks",
        "permissions",
        "public url",
        "public url reachable",
    ] {
        let finding = report
            .get(name)
            .unwrap_or_else(|| panic!("no {name} line in:\n{all}"));
        assert_eq!(finding.status, Status::Pass, "{name}:\n{all}");
    }
    assert!(report.passed(), "{all}");
    assert!(
        !all.contains(BOT_PASSWORD) && !all.contains(APP_SECRET),
        "no secret is printed:\n{all}"
    );
}

/// 6.x ignores `settings.public?_id=` and answers its first page (the filter came with 7.0):
/// `check` still reads Omnichannel's and the slash commands' settings, on every release line.
#[tokio::test]
async fn every_release_line_reports_omnichannel_from_its_settings() {
    for version in [ServerVersion::V6, ServerVersion::V7, ServerVersion::V8] {
        let report = check_on(version, Change::None).await;
        let all = lines(&report);
        for name in ["omnichannel", "slash commands", "rate limiter"] {
            assert_eq!(
                report.get(name).map(|f| f.status),
                Some(Status::Pass),
                "{version:?} {name}:\n{all}"
            );
        }
        let report = check_on(version, Change::LivechatOff).await;
        assert_eq!(
            report.get("omnichannel").map(|f| f.status),
            Some(Status::Fail),
            "{version:?}: {}",
            lines(&report)
        );
    }
}

/// The server pages `livechat/department` at 100 (`API_Upper_Count_Limit`): every page is read.
#[tokio::test]
async fn departments_beyond_one_page_are_all_listed() {
    let report = check_with(Change::ManyDepartments).await;
    let line = report.get("departments").map(|f| f.to_string());
    assert_eq!(
        line.as_deref(),
        Some("✓ departments: the bot can list Omnichannel departments (151 found)"),
        "{}",
        lines(&report)
    );
}

#[tokio::test]
async fn each_misconfiguration_is_named_with_its_fix() {
    // (change, the check that must fail or warn, its status, words the line must contain)
    let cases: &[(Change, &str, Status, &[&str])] = &[
        (
            Change::LivechatOff,
            "omnichannel",
            Status::Fail,
            &["Livechat_enabled", "Omnichannel enabled"],
        ),
        (
            Change::SlashCommandsOff,
            "slash commands",
            Status::Fail,
            &["Message_AllowUnrecognizedSlashCommand", "!facebook"],
        ),
        (
            Change::CannotReadRoles,
            "roles",
            Status::Fail,
            &["view-full-other-user-info", "admins"],
        ),
        (
            Change::CannotListDepartments,
            "departments",
            Status::Fail,
            &["view-livechat-departments"],
        ),
        (
            Change::CannotReact,
            "reactions",
            Status::Warn,
            &["view-livechat-rooms", "appear as a line"],
        ),
        (
            Change::CannotPostInLivechatRooms,
            "page inbox replies",
            Status::Warn,
            &["view-livechat-rooms", "Page Inbox"],
        ),
        (
            Change::RateLimiterAtDefault,
            "rate limiter",
            Status::Fail,
            &[
                "5 calls per 60 s per client IP",
                "10 calls per 60000 ms",
                "API_Enable_Rate_Limiter = false",
                "at most 5 new conversations a minute per gateway IP",
            ],
        ),
        (
            Change::RateLimiterUnreadable,
            "rate limiter",
            Status::Fail,
            &[
                "at most 5 new conversations a minute",
                "API_Enable_Rate_Limiter = false",
            ],
        ),
        (
            Change::WrongPassword,
            "login",
            Status::Fail,
            &["refused", "personal access token"],
        ),
        (
            Change::WrongAppSecret,
            "graph api",
            Status::Fail,
            &["#190", "App Secret"],
        ),
        (
            Change::PlainHttpPublicUrl,
            "public url",
            Status::Fail,
            &["not https", "reverse proxy"],
        ),
        (
            Change::GatewayNotRunning,
            "public url reachable",
            Status::Warn,
            &["not running", "check again"],
        ),
        (Change::StoreInUse, "store", Status::Warn, &["in use"]),
        (
            Change::AppWebhooksElsewhere,
            "app webhooks",
            Status::Fail,
            &[
                "https://other.example.com/hook",
                "does not overwrite",
                "Webhooks → Page",
            ],
        ),
        (
            Change::AppWebhooksPartial,
            "app webhooks",
            Status::Warn,
            &["message_echoes,standby", "health check"],
        ),
    ];
    for (change, name, status, words) in cases {
        let report = check_with(*change).await;
        let all = lines(&report);
        let finding = report
            .get(name)
            .unwrap_or_else(|| panic!("{change:?}: no {name} line in:\n{all}"));
        assert_eq!(finding.status, *status, "{change:?}:\n{all}");
        let line = finding.to_string();
        for word in *words {
            assert!(
                line.contains(word),
                "{change:?}: {word:?} missing from {line}"
            );
        }
        assert_eq!(
            report.passed(),
            *status != Status::Fail,
            "{change:?}: the exit status follows the ✗ lines:\n{all}"
        );
        let others_failing: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.check != *name && f.status == Status::Fail)
            .collect();
        assert!(
            others_failing.is_empty(),
            "{change:?}: only {name} fails:\n{all}"
        );
    }
}

#[tokio::test]
async fn the_shipped_example_is_valid_but_its_placeholders_fail() {
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/bot.toml")).unwrap();
    // Nothing listens on port 9 of loopback: no request leaves the machine.
    let text = example
        .replace("http://127.0.0.1:3000", "http://127.0.0.1:9")
        .replace("https://graph.facebook.com", "http://127.0.0.1:9")
        .replace("https://www.facebook.com", "http://127.0.0.1:9");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bot.toml");
    std::fs::write(&path, text).unwrap();
    let report = check::run(&path, &mut |_| {}).await;
    let all = lines(&report);
    assert_eq!(
        report.get("config").map(|f| f.status),
        Some(Status::Pass),
        "{all}"
    );
    let placeholders: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.check == "placeholder")
        .collect();
    assert_eq!(
        placeholders.len(),
        4,
        "password, app_secret, verify_token and app_id:\n{all}"
    );
    assert_eq!(
        report.get("rocketchat").map(|f| f.status),
        Some(Status::Fail),
        "{all}"
    );
    assert!(!report.passed());
}

#[test]
fn the_binary_exits_non_zero_and_names_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bot.toml");
    std::fs::write(&path, "[rocketchat]\nurl = \"not a url\"\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_omni-gateway"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.starts_with("✗ config:") && stdout.contains("[rocketchat].url"),
        "{stdout}"
    );
}
