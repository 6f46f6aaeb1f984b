//! `bot.toml` validation: every bad file gives one line naming the file, the key and the fix, and
//! no line ever shows a secret. Also: the shipped example parses, and secrets resolve in the
//! documented order (environment, `*_file` with `CREDENTIALS_DIRECTORY`, the key itself).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use omni_gateway::config::Config;
use secrecy::ExposeSecret;

/// A valid file. Every secret in it contains `S3CRET`, which no error message may show.
const BASE: &str = r#"
[rocketchat]
url = "https://chat.example.com"
username = "facebook.bot"
password = "S3CRET-rc-password"
admins = ["alice"]

[facebook]
app_id = "1234567890"
app_secret = "S3CRET-app-secret"
verify_token = "S3CRET-verify-token"

[http]
listen = "127.0.0.1:8080"
public_url = "https://fb.example.com"

[store]
path = "data"
"#;

/// Substrings that are secret values somewhere in the cases below.
const FORBIDDEN: [&str; 2] = ["S3CRET", "9876501234"];

struct Case {
    name: &'static str,
    text: String,
    env: Vec<(&'static str, &'static str)>,
    expect: &'static str,
}

/// `BASE` with each `(from, to)` replaced once; panics (failing the test) if `from` is absent.
fn edit(edits: &[(&str, &str)]) -> String {
    let mut text = BASE.to_owned();
    for (from, to) in edits {
        assert!(text.contains(from), "test bug: {from:?} not in BASE");
        text = text.replacen(from, to, 1);
    }
    text
}

fn case(name: &'static str, edits: &[(&str, &str)], expect: &'static str) -> Case {
    Case {
        name,
        text: edit(edits),
        env: Vec::new(),
        expect,
    }
}

fn bad_cases() -> Vec<Case> {
    let mut cases = vec![
        case(
            "unknown key",
            &[(
                "admins = [\"alice\"]",
                "admins = [\"alice\"]\npasword = \"x\"",
            )],
            "[rocketchat].pasword: unknown key; expected",
        ),
        case(
            "unknown section",
            &[("[store]", "[facebok]\nx = 1\n\n[store]")],
            "[facebok]: unknown section; expected one of [rocketchat], [facebook], [http], [store]",
        ),
        case(
            "unknown key in dotted header",
            &[("[store]", "[store.extra]\nx = 1\n\n[store]")],
            "[store].extra: unknown key; expected one of path, key_file, cache_capacity_bytes",
        ),
        case(
            "missing section",
            &[("[store]\npath = \"data\"", "")],
            "[store]: section missing",
        ),
        case(
            "missing url",
            &[("url = \"https://chat.example.com\"\n", "")],
            "[rocketchat].url: missing; expected the Rocket.Chat base URL",
        ),
        case(
            "empty username",
            &[("username = \"facebook.bot\"", "username = \"  \"")],
            "[rocketchat].username: is empty",
        ),
        case(
            "websocket scheme",
            &[("https://chat.example.com", "wss://chat.example.com")],
            "[rocketchat].url: scheme 'wss' is not supported; expected an http:// or https:// URL",
        ),
        case(
            "url not a url",
            &[("https://chat.example.com", "chat.example.com")],
            "[rocketchat].url: 'chat.example.com' is not a URL",
        ),
        case(
            "url with query",
            &[("https://chat.example.com", "https://chat.example.com/?x=1")],
            "[rocketchat].url: 'https://chat.example.com/?x=1' has a query",
        ),
        case(
            "url with fragment",
            &[("https://chat.example.com", "https://chat.example.com/#top")],
            "has a query (?…) or fragment (#…)",
        ),
        case(
            "public_url trailing slash",
            &[("https://fb.example.com", "https://fb.example.com/")],
            "[http].public_url: 'https://fb.example.com/' ends with '/'; expected no trailing slash",
        ),
        case(
            "public_url with credentials",
            &[(
                "https://fb.example.com",
                "https://user:S3CRET-in-url@fb.example.com",
            )],
            "[http].public_url: must not contain a user name or password",
        ),
        case(
            "graph_url scheme",
            &[(
                "verify_token = \"S3CRET-verify-token\"",
                "verify_token = \"S3CRET-verify-token\"\ngraph_url = \"ftp://graph.facebook.com\"",
            )],
            "[facebook].graph_url: scheme 'ftp' is not supported",
        ),
        case(
            "listen host name",
            &[("127.0.0.1:8080", "localhost:8080")],
            "[http].listen: 'localhost:8080' is not an IP address and port",
        ),
        case(
            "listen without port",
            &[("127.0.0.1:8080", "127.0.0.1")],
            "[http].listen: '127.0.0.1' is not an IP address and port",
        ),
        case(
            "missing public_url",
            &[("public_url = \"https://fb.example.com\"", "")],
            "[http].public_url: missing",
        ),
        case(
            "api_version without v",
            &[(
                "verify_token = \"S3CRET-verify-token\"",
                "verify_token = \"S3CRET-verify-token\"\napi_version = \"23.0\"",
            )],
            "[facebook].api_version: '23.0' is not a Graph API version; expected the form \"v23.0\"",
        ),
        case(
            "app_id not digits",
            &[("1234567890", "my-app")],
            "[facebook].app_id: 'my-app' is not a number",
        ),
        case(
            "missing app_secret",
            &[("app_secret = \"S3CRET-app-secret\"\n", "")],
            "[facebook].app_secret: missing; expected the App Secret",
        ),
        case(
            "empty verify_token",
            &[("\"S3CRET-verify-token\"", "\"\"")],
            "[facebook].verify_token: is empty",
        ),
        case(
            "password and password_file",
            &[(
                "password = \"S3CRET-rc-password\"",
                "password = \"S3CRET-rc-password\"\npassword_file = \"pw.secret\"",
            )],
            "[rocketchat].password: both password and password_file are set; keep only one",
        ),
        case(
            "no password and no token",
            &[("password = \"S3CRET-rc-password\"\n", "")],
            "[rocketchat].password: missing; set password, password_file or OMNI_GATEWAY_ROCKETCHAT_PASSWORD, or a personal access token",
        ),
        case(
            "auth_token without user_id",
            &[(
                "password = \"S3CRET-rc-password\"",
                "auth_token = \"S3CRET-token\"",
            )],
            "[rocketchat].user_id: missing while auth_token is set",
        ),
        case(
            "user_id without auth_token",
            &[(
                "admins = [\"alice\"]",
                "admins = [\"alice\"]\nuser_id = \"abc\"",
            )],
            "[rocketchat].auth_token: missing while user_id is set",
        ),
        case(
            "password_file missing",
            &[(
                "password = \"S3CRET-rc-password\"",
                "password_file = \"nope.secret\"",
            )],
            "[rocketchat].password_file: cannot read",
        ),
        case(
            "password_file empty",
            &[(
                "password = \"S3CRET-rc-password\"",
                "password_file = \"empty.secret\"",
            )],
            "[rocketchat].password_file: '",
        ),
        case(
            "wrong type",
            &[("url = \"https://chat.example.com\"", "url = 3")],
            "[rocketchat].url: invalid type: integer `3`; expected a string",
        ),
        case(
            "wrong type on a secret",
            &[("password = \"S3CRET-rc-password\"", "password = 9876501234")],
            "[rocketchat].password: invalid type: integer; expected a string",
        ),
        case(
            "wrong type in a list",
            &[("admins = [\"alice\"]", "admins = [\"alice\", 7]")],
            "[rocketchat].admins: invalid type: integer `7`; expected a string",
        ),
        case(
            "boolean as string",
            &[(
                "verify_token = \"S3CRET-verify-token\"",
                "verify_token = \"S3CRET-verify-token\"\nhuman_agent_tag = \"yes\"",
            )],
            "[facebook].human_agent_tag: invalid type: string \"yes\"; expected a boolean",
        ),
        case(
            "negative duration",
            &[(
                "admins = [\"alice\"]",
                "admins = [\"alice\"]\nkeepalive_ms = -5",
            )],
            "[rocketchat].keepalive_ms: invalid value: integer `-5`; expected a whole number",
        ),
        case(
            "zero duration",
            &[(
                "admins = [\"alice\"]",
                "admins = [\"alice\"]\nkeepalive_ms = 0",
            )],
            "[rocketchat].keepalive_ms: is 0; expected a positive number (default 20000)",
        ),
        case(
            "zero health check interval",
            &[(
                "verify_token = \"S3CRET-verify-token\"",
                "verify_token = \"S3CRET-verify-token\"\nhealth_check_secs = 0",
            )],
            "[facebook].health_check_secs: is 0; expected a positive number (default 3600)",
        ),
        case(
            "dead link not after keepalive",
            &[(
                "admins = [\"alice\"]",
                "admins = [\"alice\"]\nkeepalive_ms = 2000\ndead_link_ms = 1000",
            )],
            "[rocketchat].dead_link_ms: 1000 is not longer than keepalive_ms (2000)",
        ),
        case(
            "admin with @",
            &[("[\"alice\"]", "[\"@alice\"]")],
            "[rocketchat].admins: '@alice' starts with '@'; expected the bare username \"alice\"",
        ),
        case(
            "nobody is admin",
            &[("admins = [\"alice\"]", "admins = []\nadmin_roles = []")],
            "[rocketchat].admin_roles: is empty and so is admins",
        ),
        case(
            "key_file inside the store",
            &[(
                "path = \"data\"",
                "path = \"data\"\nkey_file = \"data/key\"",
            )],
            "[store].key_file: '",
        ),
        case(
            "zero cache",
            &[(
                "path = \"data\"",
                "path = \"data\"\ncache_capacity_bytes = 0",
            )],
            "[store].cache_capacity_bytes: is 0",
        ),
        case(
            "store path without a name",
            &[("path = \"data\"", "path = \"/\"")],
            "[store].path: '/' does not end in a directory name",
        ),
        case(
            "duplicate key",
            &[(
                "username = \"facebook.bot\"",
                "username = \"facebook.bot\"\nusername = \"other\"",
            )],
            "[rocketchat].username: duplicate key; fix the TOML syntax",
        ),
        case(
            "unquoted string",
            &[("username = \"facebook.bot\"", "username = bot")],
            "[rocketchat].username: string values must be quoted",
        ),
        case(
            "unquoted secret",
            &[("password = \"S3CRET-rc-password\"", "password = S3CRET")],
            "[rocketchat].password: ",
        ),
        case(
            "unterminated string",
            &[("\"S3CRET-app-secret\"", "\"S3CRET-app-secret")],
            "[facebook].app_secret: invalid basic string; expected `\"`; fix the TOML syntax",
        ),
        case("broken header", &[("[http]", "[http")], "line 13, column"),
    ];
    cases.push(Case {
        name: "empty secret in the environment",
        text: BASE.to_owned(),
        env: vec![("OMNI_GATEWAY_FACEBOOK_APP_SECRET", "")],
        expect: "[facebook].app_secret: environment variable OMNI_GATEWAY_FACEBOOK_APP_SECRET is set but empty",
    });
    cases.push(Case {
        name: "secret from the environment, error elsewhere",
        text: edit(&[("127.0.0.1:8080", "nowhere")]),
        env: vec![("OMNI_GATEWAY_ROCKETCHAT_PASSWORD", "S3CRET-env")],
        expect: "[http].listen: 'nowhere' is not an IP address and port",
    });
    cases
}

fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("pw.secret"), "S3CRET-from-file\n").expect("write");
    fs::write(dir.path().join("empty.secret"), "\n").expect("write");
    dir
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn base_file_is_valid() {
    let dir = config_dir();
    let config =
        Config::parse(BASE, &dir.path().join("bot.toml"), &|_| None).expect("BASE is valid");
    assert_eq!(config.rocketchat.admins, ["alice"]);
    assert!(config.placeholder_warnings().is_empty());
}

#[test]
fn every_bad_file_gives_one_line_naming_file_and_key() {
    let dir = config_dir();
    let origin = dir.path().join("bot.toml");
    let prefix = format!("{}: ", origin.display());
    let cases = bad_cases();
    assert!(cases.len() >= 15);
    let mut failures = Vec::new();
    for case in &cases {
        let env = env_of(&case.env);
        let message = match Config::parse(&case.text, &origin, &env) {
            Ok(_) => {
                failures.push(format!("{}: accepted", case.name));
                continue;
            }
            Err(err) => err.to_string(),
        };
        let ok = message.starts_with(&prefix)
            && message.contains(case.expect)
            && !message.contains('\n')
            && !FORBIDDEN.iter().any(|secret| message.contains(secret));
        if !ok {
            failures.push(format!(
                "{}: got {message:?}, expected {:?}",
                case.name, case.expect
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn unreadable_file_names_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("missing.toml");
    let message = Config::load(&path)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        message.starts_with(&format!("{}: cannot read the config file", path.display())),
        "{message}"
    );
    assert!(message.contains("--config"), "{message}");
}

#[test]
fn example_bot_toml_parses_and_lists_its_placeholders() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("bot.toml");
    let text = fs::read_to_string(&path).expect("bot.toml is in the repository");
    let config = Config::parse(&text, &path, &|_| None).expect("the example bot.toml parses");
    assert_eq!(
        config.rocketchat.websocket_url().as_str(),
        "ws://127.0.0.1:3000/websocket"
    );
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:8080");
    assert!(config.rocketchat.personal_token.is_none());

    let warnings = config.placeholder_warnings();
    let keys: Vec<&str> = warnings
        .iter()
        .filter_map(|w| w.split(':').next())
        .collect();
    assert_eq!(
        keys,
        [
            "[rocketchat].password",
            "[facebook].app_secret",
            "[facebook].verify_token",
            "[facebook].app_id"
        ]
    );
    assert!(
        warnings
            .iter()
            .all(|w| w.contains("still has the example value")),
        "{warnings:?}"
    );
    let refused: Vec<String> = config
        .reject_placeholders(&path)
        .err()
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(refused.len(), 4, "one line per placeholder: {refused:?}");
    assert_eq!(
        refused[0],
        format!(
            "{}: [rocketchat].password: still has the example value \"change-me\"; set password, password_file or OMNI_GATEWAY_ROCKETCHAT_PASSWORD",
            path.display()
        )
    );
    for (line, key) in refused.iter().zip(&keys) {
        assert!(
            line.starts_with(&format!("{}: {key}: ", path.display())),
            "{line}"
        );
    }

    let env = env_of(&[
        ("OMNI_GATEWAY_ROCKETCHAT_PASSWORD", "real-1"),
        ("OMNI_GATEWAY_FACEBOOK_APP_SECRET", "real-2"),
        ("OMNI_GATEWAY_FACEBOOK_VERIFY_TOKEN", "real-3"),
    ]);
    let config = Config::parse(&text, &path, &env).expect("parses");
    let warnings = config.placeholder_warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("[facebook].app_id:"),
        "{warnings:?}"
    );
}

/// Where the password comes from, given the file's keys, the environment and the files present.
#[test]
fn secret_precedence() {
    struct Row {
        name: &'static str,
        keys: String,
        env: Vec<(&'static str, String)>,
        expect: &'static str,
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let creds = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("pw.secret"), "from-config-dir\n").expect("write");
    fs::write(
        dir.path().join("only-here.secret"),
        "only-in-config-dir\r\n",
    )
    .expect("write");
    fs::write(dir.path().join("multi.secret"), "line1\nline2\n\n").expect("write");
    fs::write(creds.path().join("pw.secret"), "from-credentials-dir").expect("write");
    let absolute = dir.path().join("pw.secret");
    let creds_dir = creds.path().display().to_string();
    let env_pw = ("OMNI_GATEWAY_ROCKETCHAT_PASSWORD", "from-env".to_owned());
    let cred = ("CREDENTIALS_DIRECTORY", creds_dir.clone());
    let absolute_keys = format!("password_file = {:?}", absolute.display().to_string());

    let rows = vec![
        Row {
            name: "key",
            keys: "password = \"from-key\"".to_owned(),
            env: vec![],
            expect: "from-key",
        },
        Row {
            name: "env over key",
            keys: "password = \"from-key\"".to_owned(),
            env: vec![env_pw.clone()],
            expect: "from-env",
        },
        Row {
            name: "env over file",
            keys: "password_file = \"pw.secret\"".to_owned(),
            env: vec![env_pw.clone()],
            expect: "from-env",
        },
        Row {
            name: "env alone",
            keys: "".to_owned(),
            env: vec![env_pw.clone()],
            expect: "from-env",
        },
        Row {
            name: "file beside config",
            keys: "password_file = \"pw.secret\"".to_owned(),
            env: vec![],
            expect: "from-config-dir",
        },
        Row {
            name: "credentials dir wins",
            keys: "password_file = \"pw.secret\"".to_owned(),
            env: vec![cred.clone()],
            expect: "from-credentials-dir",
        },
        Row {
            name: "credentials dir lacks it",
            keys: "password_file = \"only-here.secret\"".to_owned(),
            env: vec![cred.clone()],
            expect: "only-in-config-dir",
        },
        Row {
            name: "absolute path ignores credentials dir",
            keys: absolute_keys.clone(),
            env: vec![cred.clone()],
            expect: "from-config-dir",
        },
        Row {
            name: "only trailing newlines trimmed",
            keys: "password_file = \"multi.secret\"".to_owned(),
            env: vec![],
            expect: "line1\nline2",
        },
    ];
    let origin = dir.path().join("bot.toml");
    let mut failures = Vec::new();
    for row in &rows {
        let text = BASE.replacen("password = \"S3CRET-rc-password\"", &row.keys, 1);
        let pairs: Vec<(&str, &str)> = row.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let got = Config::parse(&text, &origin, &env_of(&pairs))
            .map(|c| c.rocketchat.password.map(|p| p.expose_secret().to_owned()));
        match got {
            Ok(Some(value)) if value == row.expect => {}
            other => failures.push(format!(
                "{}: got {:?}",
                row.name,
                other.map_err(|e| e.to_string())
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn other_secrets_and_personal_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("verify"), "verify-from-file\n").expect("write");
    let text = BASE
        .replacen(
            "verify_token = \"S3CRET-verify-token\"",
            "verify_token_file = \"verify\"",
            1,
        )
        .replacen(
            "admins = [\"alice\"]",
            "admins = [\"alice\"]\nauth_token = \"tok\"\nuser_id = \"u1\"",
            1,
        );
    let env = env_of(&[
        ("OMNI_GATEWAY_FACEBOOK_APP_SECRET", "app-from-env"),
        ("OMNI_GATEWAY_ROCKETCHAT_AUTH_TOKEN", "tok-from-env"),
    ]);
    let config = Config::parse(&text, &dir.path().join("bot.toml"), &env).expect("parses");
    assert_eq!(config.facebook.app_secret.expose_secret(), "app-from-env");
    assert_eq!(
        config.facebook.verify_token.expose_secret(),
        "verify-from-file"
    );
    let token = config.rocketchat.personal_token.expect("token set");
    assert_eq!(token.auth_token.expose_secret(), "tok-from-env");
    assert_eq!(token.user_id.as_str(), "u1");
    assert!(
        config.rocketchat.password.is_some(),
        "password kept beside the token"
    );
    assert_eq!(config.store.path, dir.path().join("data"));
    assert_eq!(config.store.key_file, dir.path().join("data.key"));
}

#[test]
fn debug_output_hides_secrets() {
    let config = Config::parse(BASE, Path::new("bot.toml"), &|_| None).expect("parses");
    let debug = format!("{config:?}");
    assert!(!debug.contains("S3CRET"), "{debug}");
}
